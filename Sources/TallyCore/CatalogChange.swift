import Yams

/// A published catalog change (SPEC 2.4). Its YAML is either a whole new version
/// (`products: [...]`, the same shape as a version in the catalog file) or a list of edits applied
/// to the version in force at the effective instant:
///
/// ```yaml
/// changes:
///   - {api: image-tagging.general, free_monthly: 500}
///   - {api: image-tagging.general, postpaid: {model: flat, unit_price: "0.004"}}
///   - {item: image-tagging.general/100k, price: "300.00"}
///   - {item: taishan/enterprise-basic, prices: {year: "698.00"}}
/// ```
public enum CatalogChange {
    /// Days between publishing and taking effect below which an adverse change is refused.
    public static let noticeDaysMin: Int64 = 30
    public static let editsMax = 1_000

    public static func apply(_ text: String, to base: CatalogVersion, effective: Instant) throws(TallyError) -> CatalogVersion {
        let root = try YAMLField.parse(text, code: .invalidCatalog, root: "catalog")
        try root.onlyKeys(["products", "changes", "note"])
        let note = try root.optional("note")?.string() ?? "published change"
        if let products = try root.optional("products") {
            guard try root.optional("changes") == nil else { throw root.fail("give products or changes, not both") }
            return try CatalogFile.parseVersion(products, effective: effective, note: note)
        }
        let changesField = try root.required("changes")
        let edits = try changesField.list()
        guard !edits.isEmpty, edits.count <= editsMax else { throw changesField.fail("expected 1 to \(editsMax) changes") }
        var products = base.products
        for edit in edits {
            if let apiField = try edit.optional("api") {
                try edit.onlyKeys(["api", "free_monthly", "postpaid"])
                let id = try apiField.string()
                guard let (p, a) = locate(api: id, in: products) else { throw apiField.fail("no API \(id) in the catalog") }
                if let free = try edit.optional("free_monthly") {
                    products[p].apis[a].freeMonthly = try free.integer(in: 0...CatalogFile.callsMax)
                }
                if let postpaid = try edit.optional("postpaid") {
                    if case .scalar = postpaid.node, try postpaid.string() == "none" {
                        products[p].apis[a].postpaid = nil
                    } else {
                        products[p].apis[a].postpaid = try CatalogFile.parsePricing(postpaid)
                    }
                }
            } else if let itemField = try edit.optional("item") {
                try edit.onlyKeys(["item", "price", "prices"])
                let item = try itemField.string()
                if let (p, a, k) = locate(pack: item, in: products) {
                    let priceField = try edit.required("price")
                    let price = try priceField.money()
                    guard price.isPositive else { throw priceField.fail("a price is more than 0.00") }
                    products[p].apis[a].packs[k].price = price
                } else if let (p, e) = locate(edition: item, in: products) {
                    for (key, value) in try edit.required("prices").entries() {
                        guard let period = MembershipPeriod(rawValue: key) else { throw value.fail("expected month or year") }
                        let price = try value.money()
                        guard price.isPositive else { throw value.fail("a price is more than 0.00") }
                        products[p].editions[e].prices[period] = price
                    }
                } else {
                    throw itemField.fail("no item \(item) in the catalog")
                }
            } else {
                throw edit.fail("a change names an api or an item")
            }
        }
        return CatalogVersion(effective: effective, note: note, products: products)
    }

    static func locate(api: String, in products: [Product]) -> (Int, Int)? {
        for (p, product) in products.enumerated() {
            if let a = product.apis.firstIndex(where: { $0.id == api }) { return (p, a) }
        }
        return nil
    }

    static func locate(pack item: String, in products: [Product]) -> (Int, Int, Int)? {
        for (p, product) in products.enumerated() {
            for (a, api) in product.apis.enumerated() {
                if let k = api.packs.firstIndex(where: { $0.item == item }) { return (p, a, k) }
            }
        }
        return nil
    }

    static func locate(edition item: String, in products: [Product]) -> (Int, Int)? {
        for (p, product) in products.enumerated() {
            if let e = product.editions.firstIndex(where: { $0.item == item }) { return (p, e) }
        }
        return nil
    }

    /// What makes a change adverse to customers (a cut free quota, a raised price, a withdrawn
    /// offer), by product; empty when the change only helps them.
    public static func adverseChanges(from old: CatalogVersion, to new: CatalogVersion) -> [String: [String]] {
        var found: [String: [String]] = [:]
        for api in old.apisByID.values {
            guard let next = new.apisByID[api.id] else { found[api.product, default: []].append("\(api.id) withdrawn"); continue }
            if next.freeMonthly < api.freeMonthly { found[api.product, default: []].append("\(api.id) free quota cut") }
            switch (api.postpaid, next.postpaid) {
            case (let before?, let after?):
                if after.charges(moreThan: before) { found[api.product, default: []].append("\(api.id) post-paid price raised") }
            case (.some, nil):
                found[api.product, default: []].append("\(api.id) post-paid withdrawn")
            default: break
            }
        }
        for pack in old.packsByItem.values {
            guard let next = new.packsByItem[pack.item] else { continue }
            if next.price > pack.price { found[old.apisByID[pack.api]?.product ?? pack.api, default: []].append("\(pack.item) price raised") }
        }
        for edition in old.editionsByItem.values {
            guard let next = new.editionsByItem[edition.item] else { continue }
            for (period, price) in edition.prices where (next.prices[period] ?? price) > price {
                found[edition.product, default: []].append("\(edition.item) \(period.rawValue) price raised")
            }
        }
        return found
    }
}
