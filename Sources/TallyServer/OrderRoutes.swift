import Hummingbird
import TallyCore
import TallyEngine

/// Purchases, renewals, upgrades (with price previews), refunds, seats and entitlements (SPEC 2, 5).
enum OrderRoutes {
    static let all: [Endpoint] = [
        Endpoint(.get, "/v1/accounts/{account}/orders", .holders) { call in
            let now = call.now
            return .json(try call.tally.read(account: call.account) { state in
                let orders = state.orders(of: call.account)
                return try Pagination.json(orders, id: \.id, call: call) { Views.order($0, state, now: now) }
            })
        },
        Endpoint(.post, "/v1/accounts/{account}/orders", .holders) { call in
            let (item, quantity) = try purchase(&call.fields, onSale: call.onSale)
            let ref = try call.fields.optionalString("ref", lengthMax: 64)
            try call.fields.end()
            let order = try await call.tally.perform(Buy(account: call.account, item: item, quantity: quantity, ref: ref))
            return try orderAnswer(call, order, status: .created)
        },
        Endpoint(.post, "/v1/accounts/{account}/orders/preview", .holders) { call in
            let (item, quantity) = try purchase(&call.fields, onSale: call.onSale)
            try call.fields.end()
            let order = try call.tally.preview(Buy(account: call.account, item: item, quantity: quantity))
            return .json(preview(order))
        },
        Endpoint(.post, "/v1/accounts/{account}/renewals", .holders) { call in
            let product = try call.fields.string("product", lengthMax: 64)
            let quantity = try term(&call.fields)
            let ref = try call.fields.optionalString("ref", lengthMax: 64)
            try call.fields.end()
            let order = try await call.tally.perform(Renew(account: call.account, product: product, quantity: quantity, ref: ref))
            return try orderAnswer(call, order, status: .created)
        },
        Endpoint(.post, "/v1/accounts/{account}/renewals/preview", .holders) { call in
            let product = try call.fields.string("product", lengthMax: 64)
            let quantity = try term(&call.fields)
            try call.fields.end()
            let order = try call.tally.preview(Renew(account: call.account, product: product, quantity: quantity))
            return .json(preview(order))
        },
        Endpoint(.post, "/v1/accounts/{account}/upgrades", .holders) { call in
            let to = try call.fields.string("to", lengthMax: 64)
            let ref = try call.fields.optionalString("ref", lengthMax: 64)
            try call.fields.end()
            let order = try await call.tally.perform(Upgrade(account: call.account, to: to, ref: ref))
            return try orderAnswer(call, order, status: .created)
        },
        Endpoint(.post, "/v1/accounts/{account}/upgrades/preview", .holders) { call in
            let to = try call.fields.string("to", lengthMax: 64)
            try call.fields.end()
            let order = try call.tally.preview(Upgrade(account: call.account, to: to))
            return .json(preview(order))
        },
        Endpoint(.post, "/v1/accounts/{account}/orders/{order}/refund", .holders) { call in
            try call.fields.end()
            let refunded = try await call.tally.perform(Refund(account: call.account, ref: call.parameter("order")))
            let order = try call.tally.read(account: call.account) { state throws(TallyError) in
                guard let order = state.order(account: call.account, ref: call.parameter("order")) else {
                    throw TallyError(.orderNotFound, "the account has no order \(call.parameter("order"))")
                }
                return order
            }
            return .json(.object([("refunded", Report.money(refunded)), ("order", call.tally.read(account: call.account) { Views.order(order, $0, now: call.now) })]))
        },
        Endpoint(.post, "/v1/accounts/{account}/seats", .holders) { call in
            let product = try call.fields.optionalString("product", lengthMax: 64)
            let user = try call.fields.string("user", lengthMax: Limits.seatUserLengthMax)
            try call.fields.end()
            let left = try await call.tally.perform(AssignSeat(account: call.account, product: product, user: user))
            return .json(.object([("user", .string(user)), ("seats_left", .int(left))]), status: .created)
        },
        Endpoint(.post, "/v1/accounts/{account}/entitlements/check", .everyone) { call in
            let feature = try call.fields.string("feature", lengthMax: Limits.featureLengthMax)
            let user = try call.fields.optionalString("user", lengthMax: Limits.seatUserLengthMax)
            let use = try call.fields.bool("use", default: false)
            try call.fields.end()
            do {
                let decision = try await call.tally.perform(CheckEntitlement(account: call.account, feature: feature, user: user, use: use))
                var fields: [(String, JSON)] = [("allowed", .bool(true)), ("edition", .string(decision.edition))]
                if let remaining = decision.remaining { fields.append(("remaining", .int(remaining))) }
                return .json(.object(fields))
            } catch let error as TallyError where Problem.status(of: error.code) == .unprocessableContent {
                // A "no" is an answer, not a failure: the gateway gets the reason in a 200.
                return .json(.object([("allowed", .bool(false)), ("reason", .string(error.code.rawValue)), ("detail", .string(error.message))]))
            }
        },
    ]

    /// `item` and one of `count`, `months`, `years`; with none, the refusal says what this item
    /// takes (`onSale`: the catalog version on sale now, read only for that refusal).
    static func purchase(_ fields: inout Fields, onSale: () -> CatalogVersion) throws(TallyError) -> (String, Buy.Quantity) {
        let item = try fields.string("item", lengthMax: 128)
        if let count = try fields.optionalInt("count") {
            guard try fields.optionalInt("months") == nil, try fields.optionalInt("years") == nil else {
                throw TallyError(.invalidRequest, "give one of count, months or years")
            }
            return (item, .count(count))
        }
        do {
            return (item, try term(&fields))
        } catch {
            let catalog = onSale()
            if catalog.packsByItem[item] != nil {
                throw TallyError(.invalidRequest, "\(item) is a pack: give count, the number of packs to buy")
            }
            if catalog.editionsByItem[item] != nil {
                throw TallyError(.invalidRequest, "\(item) is a membership: give one of months or years")
            }
            throw TallyError(.unknownItem, "the catalog sells no item \(item); GET /v1/catalog lists the items with their prices")
        }
    }

    /// One of `months` or `years`.
    static func term(_ fields: inout Fields) throws(TallyError) -> Buy.Quantity {
        switch (try fields.optionalInt("months"), try fields.optionalInt("years")) {
        case (let months?, nil): return .months(months)
        case (nil, let years?): return .years(years)
        default: throw TallyError(.invalidRequest, "give one of months or years")
        }
    }

    static func orderAnswer(_ call: Call, _ order: Order, status: HTTPResponse.Status) throws -> Answer {
        .json(call.tally.read(account: order.account) { Views.order(order, $0, now: call.now) }, status: status)
    }

    /// What an order would cost and how it would be paid, without placing it.
    static func preview(_ order: Order) -> JSON {
        guard case .object(var fields) = Report.order(order) else { preconditionFailure("an order view is an object") }
        fields.removeFirst()  // the id it would have had
        return .object([("preview", .bool(true))] + fields)
    }
}
