import TallyCore
import Yams

/// A scenario file for `tally simulate` (SPEC 8), checked whole before anything runs: a broken
/// file is refused with `invalid_scenario`, naming the step and the field.
public struct Scenario: Sendable {
    public static let stepsMax = 100_000
    /// The most calls a `use` step in check mode makes one by one.
    public static let checkCallsMax: Int64 = 1_000_000
    public static let ratePerSecondMax: Int64 = 1_000_000

    public let start: Instant
    public let steps: [Step]

    public struct Step: Sendable {
        public let index: Int
        public let at: Instant?
        public let action: Action
    }

    public enum Action: Sendable {
        case openAccount(OpenAccount)
        case verify(Verify)
        case topUp(TopUp)
        case grantVoucher(GrantVoucher)
        case activate(Activate)
        case buy(Buy)
        case renew(Renew)
        case upgrade(Upgrade)
        case use(Use)
        case refund(Refund)
        case closeMonth(Month)
        case suspend(Suspend)
        case unsuspend(Unsuspend)
        case reviewRefunds(ReviewRefunds)
        case assignSeat(AssignSeat)
        case checkEntitlement(CheckEntitlement)
        case publishCatalog(PublishCatalog)
        case wait

        var name: String {
            switch self {
            case .openAccount: "open_account"
            case .verify: "verify"
            case .topUp: "top_up"
            case .grantVoucher: "grant_voucher"
            case .activate: "activate"
            case .buy: "buy"
            case .renew: "renew"
            case .upgrade: "upgrade"
            case .use: "use"
            case .refund: "refund"
            case .closeMonth: "close_month"
            case .suspend: "suspend"
            case .unsuspend: "unsuspend"
            case .reviewRefunds: "review_refunds"
            case .assignSeat: "assign_seat"
            case .checkEntitlement: "check_entitlement"
            case .publishCatalog: "publish_catalog"
            case .wait: "wait"
            }
        }
    }

    /// A `use` step: `calls` through check-and-record one by one (spaced at `rate` a second), or
    /// reported as one event.
    public struct Use: Sendable {
        public let account: String
        public let api: String
        public let edition: String?
        public let calls: Int64
        public let mode: RecordUsage.Mode
        public let rate: Int64?
        public let time: Instant?
        public let id: String?
    }

    public static func parse(_ text: String) throws(TallyError) -> Scenario {
        let root = try YAMLField.parse(text, code: .invalidScenario)
        try root.onlyKeys(["start", "steps", "note"])
        let start = try root.required("start").instant()
        let stepsField = try root.required("steps")
        let fields = try stepsField.list()
        guard fields.count <= stepsMax else { throw stepsField.fail("at most \(stepsMax) steps") }
        var steps: [Step] = []
        var clock = start
        for (index, field) in fields.enumerated() {
            let at = try field.optional("at")?.instant()
            if let at {
                guard at >= clock else { throw try field.required("at").fail("the clock never moves back (it is at a later time already)") }
                clock = at
            }
            steps.append(Step(index: index, at: at, action: try action(field)))
        }
        return Scenario(start: start, steps: steps)
    }

    private static func action(_ f: YAMLField) throws(TallyError) -> Action {
        let doField = try f.required("do")
        let account = { () throws(TallyError) -> String in try f.required("account").nonEmptyString() }
        func keys(_ allowed: Set<String>) throws(TallyError) { try f.onlyKeys(allowed.union(["at", "do", "note"])) }
        func money(_ key: String) throws(TallyError) -> Money { try f.optional(key)?.money() ?? .zero }
        func quantity() throws(TallyError) -> Buy.Quantity {
            let count = try f.optional("count"), months = try f.optional("months"), years = try f.optional("years")
            switch (count, months, years) {
            case (nil, nil, nil): return .count(1)
            case (let c?, nil, nil): return .count(try c.integer(in: 1...Limits.packCountMax))
            case (nil, let m?, nil): return .months(try m.integer(in: 1...Limits.membershipMonthsMax))
            case (nil, nil, let y?): return .years(try y.integer(in: 1...Limits.membershipYearsMax))
            default: throw f.fail("give one of count, months or years")
            }
        }
        switch try doField.string() {
        case "open_account":
            try keys(["account", "subject", "verified"])
            let subjectField = try f.required("subject")
            guard let subject = Subject(rawValue: try subjectField.string()) else { throw subjectField.fail("expected personal or enterprise") }
            return .openAccount(OpenAccount(account: try account(), subject: subject, verified: try f.optional("verified")?.bool() ?? false))
        case "verify":
            try keys(["account", "subject"])
            let subject = try f.optional("subject").map { (s) throws(TallyError) -> Subject in
                guard let subject = Subject(rawValue: try s.string()) else { throw s.fail("expected personal or enterprise") }
                return subject
            }
            return .verify(Verify(account: try account(), subject: subject))
        case "top_up":
            try keys(["account", "cash", "income", "gift"])
            return .topUp(TopUp(account: try account(), cash: try money("cash"), income: try money("income"), gift: try money("gift")))
        case "grant_voucher":
            try keys(["account", "amount", "expires", "product"])
            return .grantVoucher(GrantVoucher(account: try account(), amount: try f.required("amount").money(),
                                              expires: try f.required("expires").instant(), product: try f.optional("product")?.string()))
        case "activate":
            try keys(["account", "product"])
            return .activate(Activate(account: try account(), product: try f.required("product").string()))
        case "buy":
            try keys(["account", "item", "count", "months", "years", "ref"])
            return .buy(Buy(account: try account(), item: try f.required("item").string(), quantity: try quantity(),
                            ref: try f.optional("ref")?.string()))
        case "renew":
            try keys(["account", "product", "months", "years", "ref"])
            return .renew(Renew(account: try account(), product: try f.required("product").string(), quantity: try quantity(),
                                ref: try f.optional("ref")?.string()))
        case "upgrade":
            try keys(["account", "to", "ref"])
            return .upgrade(Upgrade(account: try account(), to: try f.required("to").string(), ref: try f.optional("ref")?.string()))
        case "use":
            try keys(["account", "api", "edition", "calls", "mode", "rate", "time", "id"])
            let modeField = try f.optional("mode")
            let mode = try modeField.map { (m) throws(TallyError) -> RecordUsage.Mode in
                guard let mode = RecordUsage.Mode(rawValue: try m.string()) else { throw m.fail("expected check or report") }
                return mode
            } ?? .report
            let id = try f.optional("id")?.nonEmptyString()
            let callsMax = mode == .check && id == nil ? checkCallsMax : Limits.eventCallsMax
            let use = Use(account: try account(), api: try f.required("api").string(), edition: try f.optional("edition")?.string(),
                          calls: try f.required("calls").integer(in: 1...callsMax), mode: mode,
                          rate: try f.optional("rate")?.integer(in: 1...ratePerSecondMax), time: try f.optional("time")?.instant(), id: id)
            if use.rate != nil && mode != .check { throw try f.required("rate").fail("rate applies to mode: check only") }
            if use.time != nil && mode != .report { throw try f.required("time").fail("time applies to mode: report only") }
            return .use(use)
        case "refund":
            try keys(["account", "ref"])
            return .refund(Refund(account: try account(), ref: try f.required("ref").nonEmptyString()))
        case "close_month":
            try keys(["month"])
            let monthField = try f.required("month")
            guard let month = Month(parsing: try monthField.string()) else { throw monthField.fail("expected a month like 2026-01") }
            return .closeMonth(month)
        case "suspend":
            try keys(["account", "reason"])
            if let reason = try f.optional("reason"), try reason.string() != "content" {
                throw reason.fail("the only suspension reason is content")
            }
            return .suspend(Suspend(account: try account()))
        case "unsuspend":
            try keys(["account"])
            return .unsuspend(Unsuspend(account: try account()))
        case "review_refunds":
            try keys(["account", "hold"])
            return .reviewRefunds(ReviewRefunds(account: try account(), hold: try f.optional("hold")?.bool() ?? true))
        case "assign_seat":
            try keys(["account", "product", "user"])
            return .assignSeat(AssignSeat(account: try account(), product: try f.optional("product")?.string(), user: try f.required("user").nonEmptyString()))
        case "check_entitlement":
            try keys(["account", "feature", "user", "use"])
            return .checkEntitlement(CheckEntitlement(account: try account(), feature: try f.required("feature").nonEmptyString(),
                                                      user: try f.optional("user")?.string(), use: try f.optional("use")?.bool() ?? false))
        case "publish_catalog":
            try keys(["effective", "changes", "products", "force"])
            var change: [(Node, Node)] = []
            for key in ["changes", "products"] {
                if let field = try f.optional(key) { change.append((Node(key), field.node)) }
            }
            guard change.count == 1 else { throw f.fail("give changes or products") }
            let yaml: String
            do { yaml = try Yams.serialize(node: .mapping(Node.Mapping(change))) } catch {
                throw f.fail("the change could not be read: \(error)")
            }
            let effective = try f.required("effective").instant()
            return .publishCatalog(PublishCatalog(effective: effective, changes: yaml, force: try f.optional("force")?.bool() ?? false))
        case "wait":
            try keys([])
            return .wait
        case let other:
            throw doField.fail("unknown step \"\(other)\"")
        }
    }
}
