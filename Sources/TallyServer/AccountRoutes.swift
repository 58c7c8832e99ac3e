import Hummingbird
import TallyCore
import TallyEngine

/// Role sets, named for who may call.
extension Set where Element == Role {
    static let operators: Set<Role> = [.operator]
    static let holders: Set<Role> = [.operator, .customer]
    static let meters: Set<Role> = [.operator, .gateway]
    static let everyone: Set<Role> = [.operator, .customer, .gateway]
}

/// Accounts, money and status (SPEC 3, 6).
enum AccountRoutes {
    static let all: [Endpoint] = [
        Endpoint(.post, "/v1/accounts", .operators) { call in
            let id = try call.fields.string("id")
            guard let subject = Subject(rawValue: try call.fields.string("subject")) else {
                throw TallyError(.invalidRequest, "subject is personal or enterprise")
            }
            let verified = try call.fields.bool("verified", default: false)
            try call.fields.end()
            try await call.tally.perform(OpenAccount(account: id, subject: subject, verified: verified))
            return try accountAnswer(call, id, status: .created)
        },
        Endpoint(.get, "/v1/accounts", .operators) { call in
            let status = call.query("status")
            if let status, !["active", "arrears", "suspended"].contains(status) {
                throw TallyError(.invalidRequest, "status is active, arrears or suspended")
            }
            let now = call.now
            // Each partition's first page, rendered under its own lock; then the first of those.
            let pages = try call.tally.readEach { state throws(TallyError) in
                let accounts = state.accounts.values.lazy.filter { status == nil || $0.status == status }
                return try Pagination.smallest(unordered: accounts, id: \.id, call: call).map { ($0.id, Views.account($0, state, now: now)) }
            }
            return .json(try Pagination.json(pages: pages, call: call))
        },
        Endpoint(.get, "/v1/accounts/{account}", .holders) { call in try accountAnswer(call, call.account) },
        Endpoint(.post, "/v1/accounts/{account}/verification", .operators) { call in
            let subject = try call.fields.optionalString("subject").map { text throws(TallyError) in
                guard let subject = Subject(rawValue: text) else { throw TallyError(.invalidRequest, "subject is personal or enterprise") }
                return subject
            }
            try call.fields.end()
            try await call.tally.perform(Verify(account: call.account, subject: subject))
            return try accountAnswer(call, call.account)
        },
        Endpoint(.post, "/v1/accounts/{account}/top-ups", .operators) { call in
            let cash = try call.fields.money("cash") ?? .zero
            let income = try call.fields.money("income") ?? .zero
            let gift = try call.fields.money("gift") ?? .zero
            try call.fields.end()
            let balance = try await call.tally.perform(TopUp(account: call.account, cash: cash, income: income, gift: gift))
            return .json(.object([("account", .string(call.account)), ("balance", Report.money(balance)),
                                  ("status", .string(call.tally.read(account: call.account) { $0.accounts[call.account]!.status }))]), status: .created)
        },
        Endpoint(.post, "/v1/accounts/{account}/vouchers", .operators) { call in
            guard let amount = try call.fields.money("amount") else { throw TallyError(.invalidRequest, "amount is required") }
            guard let expires = try call.fields.instant("expires") else { throw TallyError(.invalidRequest, "expires is required") }
            let product = try call.fields.optionalString("product", lengthMax: 64)
            try call.fields.end()
            let voucher = try await call.tally.perform(GrantVoucher(account: call.account, amount: amount, expires: expires, product: product))
            let zone = call.tally.readShared { $0.zone }
            var fields: [(String, JSON)] = [("id", .string(voucher.id)), ("amount", Report.money(voucher.amount)),
                                            ("remaining", Report.money(voucher.remaining)), ("expires", .string(voucher.expires.rfc3339(in: zone)))]
            if let product = voucher.product { fields.append(("product", .string(product))) }
            return .json(.object(fields), status: .created)
        },
        Endpoint(.post, "/v1/accounts/{account}/suspension", .operators) { call in
            let suspended = try call.fields.bool("suspended", default: true)
            try call.fields.end()
            try await call.tally.perform(Suspend(account: call.account, suspended: suspended))
            return try accountAnswer(call, call.account)
        },
        Endpoint(.post, "/v1/accounts/{account}/refund-review", .operators) { call in
            let hold = try call.fields.bool("hold", default: true)
            try call.fields.end()
            try await call.tally.perform(ReviewRefunds(account: call.account, hold: hold))
            return .json(.object([("account", .string(call.account)), ("refund_review", .bool(hold))]))
        },
        Endpoint(.post, "/v1/accounts/{account}/activations", .holders) { call in
            let product = try call.fields.string("product", lengthMax: 64)
            try call.fields.end()
            try await call.tally.perform(Activate(account: call.account, product: product))
            return try accountAnswer(call, call.account, status: .created)
        },
        Endpoint(.get, "/v1/accounts/{account}/packs", .holders) { call in
            let now = call.now
            return .json(try call.tally.read(account: call.account) { state throws(TallyError) in
                let holder = state.accounts[call.account]!
                let packs = holder.packs.compactMap { state.packs[$0] }.sorted { $0.id < $1.id }
                return try Pagination.json(packs, id: \.id, call: call) { Views.pack($0, zone: state.zone, now: now) }
            })
        },
        Endpoint(.get, "/v1/accounts/{account}/usage", .holders) { call in
            let month = try call.month()
            return .json(call.tally.read(account: call.account) { state in
                .object([("account", .string(call.account)), ("month", .string(month.description)),
                         ("apis", .object(Report.usage(account: call.account, month: month, state, daily: true)))])
            })
        },
        Endpoint(.get, "/v1/accounts/{account}/notifications", .holders) { call in
            .json(try call.tally.read(account: call.account) { state throws(TallyError) in
                let notices = state.notices(of: call.account)
                return try Pagination.json(notices, id: \.id, call: call, render: Report.notice(state.zone))
            })
        },
    ]

    static func accountAnswer(_ call: Call, _ id: String, status: HTTPResponse.Status = .ok) throws -> Answer {
        let now = call.now
        return .json(try call.tally.read(account: id) { state throws(TallyError) in Views.account(try state.account(id), state, now: now) }, status: status)
    }
}
