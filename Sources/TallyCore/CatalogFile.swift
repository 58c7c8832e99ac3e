/// Reads the catalog file (YAML; see `catalogs/tally.yaml`) into a `Catalog`, refusing anything
/// malformed with `invalid_catalog` and the path of the offending field. Nothing about any product
/// lives in Swift: every id, price, tier, pack, edition, entitlement, validity and rule comes from here.
public enum CatalogFile {
    /// Limits on what a catalog may hold, so a broken file cannot exhaust memory.
    public static let versionsMax = 1_000
    public static let productsMax = 1_000
    public static let tiersMax = 100
    public static let packsMax = 1_000
    public static let callsMax: Int64 = 1_000_000_000_000

    public static func parse(_ text: String) throws(TallyError) -> Catalog {
        let root = try YAMLField.parse(text, code: .invalidCatalog)
        try root.onlyKeys(["catalog", "currency", "time_zone", "versions", "note"])
        let name = try root.required("catalog").nonEmptyString()
        let currencyField = try root.required("currency")
        let currency = try currencyField.string()
        guard currency == "CNY" else { throw currencyField.fail("only CNY is supported, got \(currency)") }
        let zone = try parseZone(try root.required("time_zone"))
        let versionFields = try root.required("versions").list()
        guard !versionFields.isEmpty, versionFields.count <= versionsMax else {
            throw try root.required("versions").fail("expected 1 to \(versionsMax) versions")
        }
        var versions: [CatalogVersion] = []
        for field in versionFields {
            try field.onlyKeys(["effective", "note", "products"])
            let effective = try field.required("effective").instant()
            if versions.contains(where: { $0.effective == effective }) {
                throw try field.required("effective").fail("two versions take effect at the same instant")
            }
            let note = try field.optional("note")?.string() ?? ""
            versions.append(try parseVersion(field.required("products"), effective: effective, note: note))
        }
        return Catalog(name: name, currency: currency, zone: zone, versions: versions)
    }

    static func parseZone(_ field: YAMLField) throws(TallyError) -> Zone {
        try field.onlyKeys(["name", "utc_offset"])
        let name = try field.required("name").nonEmptyString()
        let offsetField = try field.required("utc_offset")
        let text = try offsetField.string()
        guard text.count == 6, let probe = Instant(rfc3339: "1970-01-01T00:00:00" + text) else {
            throw offsetField.fail("expected a fixed offset like +08:00, got \"\(text)\"")
        }
        return Zone(name: name, offsetSeconds: -probe.seconds)
    }

    /// A version's `products` list.
    public static func parseVersion(_ field: YAMLField, effective: Instant, note: String) throws(TallyError) -> CatalogVersion {
        let productFields = try field.list()
        guard !productFields.isEmpty, productFields.count <= productsMax else {
            throw field.fail("expected 1 to \(productsMax) products")
        }
        var products: [Product] = []
        var seenIDs: Set<String> = []
        for productField in productFields {
            let product = try parseProduct(productField)
            for id in [product.id] + product.apis.map(\.id) + product.editions.map(\.item) + product.apis.flatMap(\.packs).map(\.item) {
                guard seenIDs.insert(id).inserted else { throw productField.fail("the id \(id) is defined twice") }
            }
            products.append(product)
        }
        return CatalogVersion(effective: effective, note: note, products: products)
    }

    static func identifier(_ field: YAMLField) throws(TallyError) -> String {
        let text = try field.nonEmptyString()
        let allowed = text.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_" || $0 == ".") }
        guard allowed, text.count <= 64 else {
            throw field.fail("an id is 1 to 64 letters, digits, '-', '_' or '.', got \"\(text)\"")
        }
        return text
    }

    static func displayName(_ field: YAMLField?, fallback: String) throws(TallyError) -> String {
        guard let field else { return fallback }
        if case .scalar = field.node { return try field.string() }
        try field.onlyKeys(["zh", "en"])
        let zh = try field.optional("zh")?.string()
        let en = try field.optional("en")?.string()
        return [zh, en].compactMap { $0 }.joined(separator: " / ")
    }

    static func parseProduct(_ field: YAMLField) throws(TallyError) -> Product {
        try field.onlyKeys(["id", "name", "activation", "verification", "refund", "editions", "apis", "note"])
        let id = try identifier(field.required("id"))
        let name = try displayName(field.optional("name"), fallback: id)
        let activationField = try field.required("activation")
        let requiresActivation: Bool
        switch try activationField.string() {
        case "required": requiresActivation = true
        case "none": requiresActivation = false
        case let other: throw activationField.fail("expected required or none, got \"\(other)\"")
        }
        let verificationField = try field.required("verification")
        let requiresVerification: Bool
        switch try verificationField.string() {
        case "required": requiresVerification = true
        case "none": requiresVerification = false
        case let other: throw verificationField.fail("expected required or none, got \"\(other)\"")
        }
        var refundWindowDays: Int64?
        let refundField = try field.required("refund")
        if case .scalar = refundField.node {
            guard try refundField.string() == "none" else { throw refundField.fail("expected none or {window_days: N}") }
        } else {
            try refundField.onlyKeys(["window_days"])
            refundWindowDays = try refundField.required("window_days").integer(in: 0...366)
        }
        var editions: [Edition] = []
        for editionField in try field.optional("editions")?.list() ?? [] {
            editions.append(try parseEdition(editionField, product: id))
        }
        var apis: [APIOffer] = []
        for apiField in try field.optional("apis")?.list() ?? [] {
            apis.append(try parseAPI(apiField, product: id, productRefundable: refundWindowDays != nil))
        }
        guard !editions.isEmpty || !apis.isEmpty else { throw field.fail("a product sells editions, APIs or both") }
        return Product(id: id, name: name, requiresActivation: requiresActivation, requiresVerification: requiresVerification,
                       refundWindowDays: refundWindowDays, editions: editions, apis: apis)
    }

    static func parseEdition(_ field: YAMLField, product: String) throws(TallyError) -> Edition {
        try field.onlyKeys(["id", "name", "subject", "seats", "scope", "rank", "prices", "entitlements", "note"])
        let id = try identifier(field.required("id"))
        let subjectField = try field.required("subject")
        guard let subject = Subject(rawValue: try subjectField.string()) else {
            throw subjectField.fail("expected personal or enterprise")
        }
        let pricesField = try field.required("prices")
        var prices: [MembershipPeriod: Money] = [:]
        for (key, value) in try pricesField.entries() {
            guard let period = MembershipPeriod(rawValue: key) else { throw value.fail("expected month or year") }
            let price = try value.money()
            guard price.isPositive else { throw value.fail("a price is more than 0.00") }
            prices[period] = price
        }
        guard !prices.isEmpty else { throw pricesField.fail("an edition has a month price, a year price or both") }
        var entitlements: [String: Entitlement] = [:]
        for (feature, value) in try field.optional("entitlements")?.entries() ?? [] {
            if case .scalar = value.node {
                guard try value.bool() else { throw value.fail("list only the features an edition grants") }
                entitlements[feature] = .included
            } else {
                try value.onlyKeys(["monthly_limit", "note"])
                entitlements[feature] = .monthlyLimit(try value.required("monthly_limit").integer(in: 1...1_000_000_000))
            }
        }
        return Edition(
            id: id, item: "\(product)/\(id)", product: product,
            name: try displayName(field.optional("name"), fallback: id), subject: subject,
            seats: try field.required("seats").integer(in: 1...100_000),
            scope: try field.optional("scope")?.list().map { (f) throws(TallyError) in try f.string() } ?? [],
            rank: try field.required("rank").integer(in: 0...1_000),
            prices: prices, entitlements: entitlements)
    }

    static func parseAPI(_ field: YAMLField, product: String, productRefundable: Bool) throws(TallyError) -> APIOffer {
        try field.onlyKeys(["id", "name", "editions", "postpaid", "free_monthly", "packs", "note"])
        let id = try identifier(field.required("id"))
        guard id.hasPrefix(product + ".") else { throw try field.required("id").fail("an API's id starts with its product's id and a dot") }
        var editions: [String] = []
        for editionField in try field.optional("editions")?.list() ?? [] {
            let edition = try identifier(editionField)
            guard !editions.contains(edition) else { throw editionField.fail("the edition \(edition) is listed twice") }
            editions.append(edition)
        }
        let postpaidField = try field.required("postpaid")
        let postpaid: (any PricingModel)?
        if case .scalar = postpaidField.node {
            guard try postpaidField.string() == "none" else { throw postpaidField.fail("expected none or a pricing model") }
            postpaid = nil
        } else {
            postpaid = try parsePricing(postpaidField)
        }
        let packFields = try field.optional("packs")?.list() ?? []
        guard packFields.count <= packsMax else { throw field.fail("at most \(packsMax) packs") }
        var packs: [PackOffer] = []
        for packField in packFields {
            let pack = try parsePack(packField, api: id, productRefundable: productRefundable)
            guard !packs.contains(where: { $0.id == pack.id }) else { throw packField.fail("the pack \(pack.id) is listed twice") }
            packs.append(pack)
        }
        guard postpaid != nil || !packs.isEmpty else { throw field.fail("an API is sold post-paid, in packs, or both") }
        return APIOffer(id: id, product: product, name: try displayName(field.optional("name"), fallback: id),
                        editions: editions, postpaid: postpaid,
                        freeMonthly: try field.optional("free_monthly")?.integer(in: 0...callsMax) ?? 0, packs: packs)
    }

    public static func parsePricing(_ field: YAMLField) throws(TallyError) -> any PricingModel {
        let modelField = try field.required("model")
        switch try modelField.string() {
        case "tier-reached", "graduated":
            try field.onlyKeys(["model", "basis", "tiers"])
            let basisField = try field.required("basis")
            guard let basis = TierBasis(rawValue: try basisField.string()) else {
                throw basisField.fail("expected all-calls or postpaid-calls")
            }
            let tiersField = try field.required("tiers")
            let tierFields = try tiersField.list()
            guard !tierFields.isEmpty, tierFields.count <= tiersMax else { throw tiersField.fail("expected 1 to \(tiersMax) tiers") }
            var tiers: [Tier] = []
            for tierField in tierFields {
                try tierField.onlyKeys(["from", "unit_price"])
                let fromField = try tierField.required("from")
                let from = try fromField.integer(in: 0...callsMax)
                if tiers.isEmpty, from != 0 { throw fromField.fail("the first tier starts at 0") }
                if let last = tiers.last, from <= last.from { throw fromField.fail("tiers rise strictly") }
                tiers.append(Tier(from: from, unitPrice: try tierField.required("unit_price").money(decimalsMax: 6)))
            }
            return try modelField.string() == "graduated"
                ? GraduatedPricing(tiers: tiers, basis: basis) : TierReachedPricing(tiers: tiers, basis: basis)
        case "package":
            try field.onlyKeys(["model", "calls", "price"])
            return PackagePricing(callsPerPackage: try field.required("calls").integer(in: 1...callsMax),
                                  packagePrice: try field.required("price").money(decimalsMax: 6))
        case "flat":
            try field.onlyKeys(["model", "unit_price"])
            return FlatPricing(unitPrice: try field.required("unit_price").money(decimalsMax: 6))
        case let other:
            throw modelField.fail("expected tier-reached, graduated, package or flat, got \"\(other)\"")
        }
    }

    static func parsePack(_ field: YAMLField, api: String, productRefundable: Bool) throws(TallyError) -> PackOffer {
        try field.onlyKeys(["id", "name", "calls", "qps", "valid", "price", "refundable", "promotion", "note"])
        let id = try identifier(field.required("id"))
        let validField = try field.required("valid")
        try validField.onlyKeys(["days", "months"])
        let validity: Validity
        switch (try validField.optional("days"), try validField.optional("months")) {
        case (let days?, nil): validity = .days(try days.integer(in: 1...36_600))
        case (nil, let months?): validity = .months(try months.integer(in: 1...1_200))
        default: throw validField.fail("give either days or months")
        }
        let price = try field.required("price").money()
        guard price.isPositive else { throw try field.required("price").fail("a price is more than 0.00") }
        var refundable = productRefundable
        if let refundableField = try field.optional("refundable") {
            refundable = try refundableField.bool()
            if refundable && !productRefundable {
                throw refundableField.fail("the product has no refund window, so its packs cannot be refundable")
            }
        }
        var promotion: String?
        var promotionAllowsRefund = true
        if let promotionField = try field.optional("promotion") {
            try promotionField.onlyKeys(["name", "refundable"])
            promotion = try promotionField.required("name").nonEmptyString()
            promotionAllowsRefund = try promotionField.required("refundable").bool()
        }
        return PackOffer(
            id: id, item: "\(api)/\(id)", api: api, name: try displayName(field.optional("name"), fallback: id),
            calls: try field.required("calls").integer(in: 1...callsMax),
            qps: try field.optional("qps")?.integer(in: 1...1_000_000), validity: validity, price: price,
            refundable: refundable, promotion: promotion, promotionAllowsRefund: promotionAllowsRefund)
    }
}
