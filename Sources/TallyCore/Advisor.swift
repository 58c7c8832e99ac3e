/// The purchase advisor: the cheapest way to serve an expected volume of calls, exactly.
///
/// Why a dynamic program: pack sizes divide by their greatest common divisor `g`, so "which packs
/// add up to exactly t·g calls most cheaply" is an unbounded knapsack over at most `statesMax`
/// totals. For each total the advisor prices the rest month by month with the real post-paid
/// model (free quota first, then packs drained in month order, each month's tier and rounding), so
/// the answer is the true minimum, not a greedy guess. A QPS requirement adds one bit to the state:
/// whether a pack with enough QPS is in the set.
public enum Advisor {
    /// The most totals one search may visit; larger requests are refused with `quote_too_large`.
    public static let statesMax: Int64 = 2_000_000
    public static let callsMax: Int64 = 1_000_000_000_000
    public static let monthsMax: Int64 = 120

    public struct Line: Hashable, Sendable {
        public let item: String
        public let count: Int64
    }

    public struct Plan: Hashable, Sendable {
        public let name: String
        public let items: [Line]
        public let freeCalls: Int64
        public let packCalls: Int64
        public let postpaidCalls: Int64
        public let prepaid: Money
        public let postpaid: Money
        public var total: Money { prepaid + postpaid }
    }

    public struct Quote: Sendable {
        public let api: String
        public let calls: Int64
        public let months: Int64
        public let qps: Int64?
        public let best: Plan
        /// Beside the best, the cheapest plan of each kind, where it exists: packs only (every call
        /// after the free quota on packs, nothing post-paid) and post-paid only (no packs).
        public let options: [Plan]
    }

    /// Quotes `calls` of `api` spread evenly over `months` (the first months take the remainder),
    /// needing `qps` calls a second when given.
    public static func quote(api: APIOffer, calls: Int64, months: Int64, qps: Int64?) throws(TallyError) -> Quote {
        guard (1...callsMax).contains(calls) else { throw TallyError(.countOutOfRange, "calls must be from 1 to \(callsMax)") }
        guard (1...monthsMax).contains(months) else { throw TallyError(.countOutOfRange, "months must be from 1 to \(monthsMax)") }
        if let qps { guard qps >= 1 && qps <= 1_000_000 else { throw TallyError(.countOutOfRange, "qps must be from 1 to 1000000") } }
        let rateLimited = api.packs.contains { $0.qps != nil }
        let needQPS = rateLimited ? qps : nil
        if let needQPS, !api.packs.contains(where: { ($0.qps ?? 0) >= needQPS }) {
            throw TallyError(.quoteImpossible, "no pack of \(api.id) offers \(needQPS) QPS")
        }
        let perMonth = (0..<months).map { calls / months + ($0 < calls % months ? 1 : 0) }
        let window = Int(windowMonths(api))
        let windows = stride(from: 0, to: perMonth.count, by: window).map { Array(perMonth[$0..<min($0 + window, perMonth.count)]) }

        var plans: [String: [Plan]] = [:]
        for monthly in windows {
            let search = try Search(api: api, monthly: monthly, qps: needQPS)
            plans["best", default: []].append(try search.best())
            if let plan = search.packsOnly() { plans["packs-only", default: []].append(plan) }
            if api.postpaid != nil { plans["postpaid-only", default: []].append(search.plan(name: "postpaid-only", units: 0, qualified: false)) }
        }
        func merged(_ name: String) -> Plan? {
            guard let parts = plans[name], parts.count == windows.count else { return nil }
            var counts: [String: Int64] = [:]
            for line in parts.flatMap(\.items) { counts[line.item, default: 0] += line.count }
            let order = api.packs.map(\.item)
            return Plan(name: name, items: order.compactMap { item in counts[item].map { Line(item: item, count: $0) } },
                        freeCalls: parts.reduce(0) { $0 + $1.freeCalls }, packCalls: parts.reduce(0) { $0 + $1.packCalls },
                        postpaidCalls: parts.reduce(0) { $0 + $1.postpaidCalls },
                        prepaid: parts.reduce(.zero) { $0 + $1.prepaid }, postpaid: parts.reduce(.zero) { $0 + $1.postpaid })
        }
        guard let best = merged("best") else { throw TallyError(.quoteImpossible, "no plan serves these calls") }
        return Quote(api: api.id, calls: calls, months: months, qps: qps, best: best,
                     options: ["packs-only", "postpaid-only"].compactMap(merged))
    }

    /// How many months one purchase of packs can serve: the packs' validity.
    static func windowMonths(_ api: APIOffer) -> Int64 {
        let months = api.packs.map { pack -> Int64 in
            switch pack.validity {
            case .months(let months): return months
            case .days(let days): return max(1, days * 12 / 365)
            }
        }
        return max(1, months.min() ?? 12)
    }

    /// One window's search: the months a single purchase serves.
    struct Search {
        let api: APIOffer
        let monthly: [Int64]
        let qps: Int64?
        let unit: Int64
        let sizes: [Int64]
        /// Cheapest cost of exactly t units, without (`plain`) and with (`qualified`) a pack of enough QPS.
        var plain: [Int64] = []
        var qualified: [Int64] = []
        var choicePlain: [Int32] = []
        var choiceQualified: [Int32] = []
        let freeCalls: Int64
        let needed: Int64

        init(api: APIOffer, monthly: [Int64], qps: Int64?) throws(TallyError) {
            self.api = api
            self.monthly = monthly
            self.qps = qps
            let g = api.packs.reduce(Int64(0)) { gcd($0, $1.calls) }
            unit = g
            let total = monthly.reduce(0, +)
            freeCalls = monthly.reduce(0) { $0 + min($1, api.freeMonthly) }
            needed = total - freeCalls
            guard !api.packs.isEmpty else { sizes = []; return }
            sizes = api.packs.map { $0.calls / g }
            let states = (total + g - 1) / g + sizes.max()! + 1
            guard states <= Advisor.statesMax else {
                throw TallyError(.quoteTooLarge, "the search would visit \(states) pack totals; the limit is \(Advisor.statesMax)")
            }
            let count = Int(states)
            let infinity = Int64.max
            plain = Array(repeating: infinity, count: count)
            qualified = Array(repeating: infinity, count: count)
            choicePlain = Array(repeating: -1, count: count)
            choiceQualified = Array(repeating: -1, count: count)
            plain[0] = 0
            let prices = api.packs.map(\.price.microyuan)
            let qualifies = api.packs.map { qps == nil || ($0.qps ?? 0) >= qps! }
            for t in 1..<count {
                for (j, size) in sizes.enumerated() where Int(size) <= t {
                    let from = t - Int(size)
                    // Encode the choice as pack index × 2 + (1 when it came from a qualified state).
                    if plain[from] != infinity {
                        let cost = plain[from] + prices[j]
                        if qualifies[j] {
                            if cost < qualified[t] { qualified[t] = cost; choiceQualified[t] = Int32(j * 2) }
                        } else if cost < plain[t] {
                            plain[t] = cost; choicePlain[t] = Int32(j * 2)
                        }
                    }
                    if qualified[from] != infinity {
                        let cost = qualified[from] + prices[j]
                        if cost < qualified[t] { qualified[t] = cost; choiceQualified[t] = Int32(j * 2 + 1) }
                    }
                }
            }
        }

        /// Cost of exactly `t` units of packs, honouring the QPS bit when one is needed.
        func packCost(_ t: Int) -> (cost: Int64, qualified: Bool)? {
            guard t < plain.count || t == 0 else { return nil }
            if t == 0 { return qps == nil ? (0, false) : nil }
            if qps != nil { return qualified[t] == Int64.max ? nil : (qualified[t], true) }
            let best = min(plain[t], qualified[t])
            return best == Int64.max ? nil : (best, qualified[t] <= plain[t])
        }

        /// The post-paid calls and charge when `packCalls` calls of packs serve the window: free
        /// quota first each month, packs drained in month order, the rest priced per month.
        func postpaid(packCalls: Int64) -> (calls: Int64, amount: Money)? {
            var left = packCalls
            var calls: Int64 = 0
            var amount = Money.zero
            for month in monthly {
                let rest = month - min(month, api.freeMonthly)
                let drawn = min(left, rest)
                left -= drawn
                let post = rest - drawn
                guard post == 0 || api.postpaid != nil else { return nil }
                if post > 0, let pricing = api.postpaid {
                    amount += pricing.price(MonthlyCalls(all: month, postpaid: post)).amount
                }
                calls += post
            }
            return (calls, amount)
        }

        func plan(name: String, units: Int, qualified: Bool) -> Plan {
            var counts = Array(repeating: Int64(0), count: sizes.count)
            var t = units
            var inQualified = qualified
            while t > 0 {
                let choice = Int(inQualified ? choiceQualified[t] : choicePlain[t])
                precondition(choice >= 0, "reconstructing a plan from an unreachable total")
                counts[choice / 2] += 1
                t -= Int(sizes[choice / 2])
                inQualified = choice % 2 == 1
            }
            let packCalls = Int64(units) * unit
            let (postCalls, postAmount) = postpaid(packCalls: packCalls) ?? (0, .zero)
            let prepaid = zip(api.packs, counts).reduce(Money.zero) { $0 + Money(microyuan: $1.0.price.microyuan * $1.1) }
            return Plan(name: name, items: zip(api.packs, counts).filter { $0.1 > 0 }.map { Line(item: $0.0.item, count: $0.1) },
                        freeCalls: freeCalls, packCalls: min(packCalls, needed), postpaidCalls: postCalls,
                        prepaid: prepaid, postpaid: postAmount)
        }

        /// The cheapest plan: every pack total, each with its post-paid remainder. Ties go to the
        /// plan that pays less up front, then to fewer packs.
        func best() throws(TallyError) -> Plan {
            var best: (total: Int64, prepaid: Int64, units: Int, qualified: Bool)?
            let limit = plain.isEmpty ? 1 : plain.count
            for t in 0..<limit {
                guard let (cost, qualified) = packCost(t), let (_, post) = postpaid(packCalls: Int64(t) * max(unit, 1)) else { continue }
                let candidate = (cost + post.microyuan, cost, t, qualified)
                if best == nil || (candidate.0, candidate.1) < (best!.total, best!.prepaid) { best = candidate }
            }
            guard let best else { throw TallyError(.quoteImpossible, "no combination of packs serves these calls") }
            return plan(name: "best", units: best.units, qualified: best.qualified)
        }

        /// The cheapest plan with nothing post-paid: packs cover every call after the free quota.
        /// (Packs for every call, the free quota ignored, as a price list's example buys, is never
        /// cheaper, so it is not a kind of its own.)
        func packsOnly() -> Plan? {
            guard !plain.isEmpty else { return nil }
            let from = Int((needed + unit - 1) / unit)
            var best: (cost: Int64, units: Int, qualified: Bool)?
            for t in from..<plain.count {
                guard let (cost, qualified) = packCost(t) else { continue }
                if best == nil || cost < best!.cost { best = (cost, t, qualified) }
            }
            guard let best else { return nil }
            return plan(name: "packs-only", units: best.units, qualified: best.qualified)
        }
    }

    static func gcd(_ a: Int64, _ b: Int64) -> Int64 { b == 0 ? a : gcd(b, a % b) }
}
