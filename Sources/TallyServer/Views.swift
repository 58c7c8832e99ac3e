import TallyCore
import TallyEngine

/// The JSON shapes the API answers with, beyond those the simulator shares (`Report`).
enum Views {
    static func account(_ account: Account, _ state: TallyState, now: Instant) -> JSON {
        guard case .object(let fields) = Report.account(account, state, now: now) else { preconditionFailure("an account view is an object") }
        return .object([("id", .string(account.id))] + fields)
    }

    static func pack(_ pack: Pack, zone: Zone, now: Instant) -> JSON {
        var fields: [(String, JSON)] = [
            ("id", .string(pack.id)), ("api", .string(pack.api)), ("item", .string(pack.item)),
            ("source", .string(pack.isFree ? "free" : "bought")),
            ("size", .int(pack.size)), ("left", .int(pack.revoked ? 0 : pack.left)), ("state", .string(pack.state(at: now))),
            ("delivered", .string(pack.delivered.rfc3339(in: zone))), ("expires", .string(pack.expires.rfc3339(in: zone))),
        ]
        if let qps = pack.qps { fields.append(("qps", .int(qps))) }
        return .object(fields)
    }

    /// An order, with whether it may be refunded now and, if not, why (the console's button).
    static func order(_ order: Order, _ state: TallyState, now: Instant) -> JSON {
        guard case .object(var fields) = Report.order(order) else { preconditionFailure("an order view is an object") }
        fields.insert(("at", .string(order.at.rfc3339(in: state.zone))), at: 1)
        fields.append(("product", .string(order.product)))
        if !order.packs.isEmpty { fields.append(("packs", .array(order.packs.map { .string($0) }))) }
        do throws(TallyError) {
            try RefundRule.check(order: order, state: state, at: now)
            fields.append(("refund", .object([("allowed", .bool(true))])))
        } catch {
            fields.append(("refund", .object([("allowed", .bool(false)), ("reason", .string(error.code.rawValue)),
                                              ("detail", .string(error.message))])))
        }
        return .object(fields)
    }

    static func key(_ key: APIKey, zone: Zone, secret: String? = nil) -> JSON {
        var fields: [(String, JSON)] = [("id", .string(key.id)), ("role", .string(key.role.rawValue))]
        if let account = key.account { fields.append(("account", .string(account))) }
        fields.append(("created", .string(key.created.rfc3339(in: zone))))
        if let revoked = key.revoked { fields.append(("revoked", .string(revoked.rfc3339(in: zone)))) }
        if let secret { fields.append(("secret", .string(secret))) }
        return .object(fields)
    }

    static func endpoint(_ endpoint: WebhookEndpoint, zone: Zone, withSecret: Bool) -> JSON {
        var fields: [(String, JSON)] = [("id", .string(endpoint.id)), ("url", .string(endpoint.url))]
        if let account = endpoint.account { fields.append(("account", .string(account))) }
        fields.append(("created", .string(endpoint.created.rfc3339(in: zone))))
        if withSecret { fields.append(("secret", .string(endpoint.secret))) }
        return .object(fields)
    }

    static func outcome(_ outcome: UsageOutcome) -> JSON {
        // One array of the final size: a report answers a thousand of these.
        var fields: [(String, JSON)] = []
        fields.reserveCapacity(9)
        fields.append(("id", .string(outcome.id)))
        fields.append(("accepted", .bool(outcome.accepted > 0 && outcome.refused == 0)))
        if let source = outcome.source { fields.append(("source", .string(source))) }
        if let reason = outcome.refusal, outcome.refused > 0 { fields.append(("reason", .string(reason.rawValue))) }
        fields.append(("free", .int(outcome.free)))
        fields.append(("pack", .int(outcome.pack)))
        fields.append(("postpaid", .int(outcome.postpaid)))
        fields.append(("refused", .int(outcome.refused)))
        fields.append(("duplicate", .bool(outcome.duplicate)))
        return .object(fields)
    }

    static func error(_ id: String, _ error: TallyError) -> JSON {
        .object([("id", .string(id)), ("accepted", .bool(false)), ("error", .string(error.code.rawValue)), ("detail", .string(error.message))])
    }

    /// The catalog version in force: products, their APIs and what they sell, with prices.
    static func catalog(_ version: CatalogVersion, zone: Zone) -> JSON {
        .object([
            ("effective", .string(version.effective.rfc3339(in: zone))),
            ("products", .array(version.products.map { product in
                .object([
                    ("id", .string(product.id)), ("name", .string(product.name)),
                    ("apis", .array(product.apis.map { api in
                        var fields: [(String, JSON)] = [("id", .string(api.id)), ("free_monthly", .int(api.freeMonthly))]
                        if !api.editions.isEmpty { fields.append(("editions", .array(api.editions.sorted().map { .string($0) }))) }
                        fields.append(("packs", .array(api.packs.map { pack in
                            .object([("item", .string(pack.item)), ("calls", .int(pack.calls)), ("price", .string(pack.price.description))])
                        })))
                        return .object(fields)
                    })),
                    ("editions", .array(product.editions.map { edition in
                        .object([("item", .string(edition.item)), ("subject", .string(edition.subject.rawValue)),
                                 ("prices", .object(edition.prices.keys.sorted { $0.rawValue < $1.rawValue }.map {
                                     ($0.rawValue, .string(edition.prices[$0]!.description))
                                 }))])
                    })),
                ])
            })),
        ])
    }
}
