import TallyCore
import TallyStore

/// Runs a scenario against the real engine with a virtual clock (SPEC 8). It drives the same
/// operations as the server; only the clock and the store differ.
public struct Simulator: Sendable {
    public let catalog: Catalog
    public let store: any TallyStore

    public init(catalog: Catalog, store: any TallyStore = InMemoryStore()) {
        self.catalog = catalog
        self.store = store
    }

    /// Runs the scenario and returns its outcome: every step, then the accounts and bills.
    public func run(_ scenario: Scenario) async throws -> JSON {
        let clock = VirtualClock(start: scenario.start)
        let tally = try await Tally.start(catalog: catalog, store: store, clock: clock.clock, ids: SequentialIDs())
        var lastTick: Month?
        var steps: [JSON] = []
        for step in scenario.steps {
            if let at = step.at { try clock.advance(to: at) }
            if step.at != nil || lastTick != catalog.zone.month(of: clock.now) {
                try await tick(tally, &lastTick, clock)
            }
            var fields: [(String, JSON)] = [("index", .int(Int64(step.index))), ("do", .string(step.action.name))]
            do {
                let result = try await perform(step.action, tally, clock, index: step.index, lastTick: &lastTick)
                fields.append(("ok", .bool(true)))
                fields.append(contentsOf: result)
            } catch {
                guard let error = error as? TallyError else { throw error }
                fields.append(("ok", .bool(false)))
                fields.append(("error", .string(error.code.rawValue)))
                fields.append(("message", .string(error.message)))
            }
            steps.append(.object(fields))
        }
        return try await Report.outcome(tally: tally, steps: steps, now: clock.now)
    }

    /// What real time fires: free quotas at the start of each month, expiry notices.
    private func tick(_ tally: Tally, _ lastTick: inout Month?, _ clock: VirtualClock) async throws {
        try await tally.perform(GrantFreeQuota())
        try await tally.perform(Expire())
        lastTick = catalog.zone.month(of: clock.now)
    }

    private func perform(_ action: Scenario.Action, _ tally: Tally, _ clock: VirtualClock, index: Int, lastTick: inout Month?) async throws -> [(String, JSON)] {
        switch action {
        case .openAccount(let op): try await tally.perform(op); return []
        case .verify(let op): try await tally.perform(op); return []
        case .topUp(let op): return [("balance", .string(try await tally.perform(op).description))]
        case .grantVoucher(let op): return [("voucher", .string(try await tally.perform(op).id))]
        case .activate(let op): try await tally.perform(op); return []
        case .buy(let op): return [("order", Report.order(try await tally.perform(op)))]
        case .renew(let op): return [("order", Report.order(try await tally.perform(op)))]
        case .upgrade(let op): return [("order", Report.order(try await tally.perform(op)))]
        case .refund(let op): return [("refunded", .string(try await tally.perform(op).description))]
        case .closeMonth(let month):
            let result = try await tally.perform(RunBills(month: month))
            return [("bills", .int(Int64(result.created.count))), ("existing", .int(Int64(result.existing)))]
        case .suspend(let op): try await tally.perform(op); return []
        case .unsuspend(let op): try await tally.perform(op); return []
        case .reviewRefunds(let op): try await tally.perform(op); return []
        case .assignSeat(let op): return [("seats_left", .int(try await tally.perform(op)))]
        case .checkEntitlement(let op):
            let decision = try await tally.perform(op)
            var fields: [(String, JSON)] = [("allowed", .bool(true)), ("edition", .string(decision.edition))]
            if let remaining = decision.remaining { fields.append(("remaining", .int(remaining))) }
            return fields
        case .publishCatalog(let op): return [("notified", .array(try await tally.perform(op).map { .string($0) }))]
        case .wait: return []
        case .use(let use): return try await self.use(use, tally, clock, index: index, lastTick: &lastTick)
        }
    }

    private func use(_ use: Scenario.Use, _ tally: Tally, _ clock: VirtualClock, index: Int, lastTick: inout Month?) async throws -> [(String, JSON)] {
        var totals = UsageTotals()
        if use.mode == .report || use.id != nil {
            let outcome = try await tally.perform(RecordUsage(
                account: use.account, id: use.id ?? "sim-\(index)", api: use.api, edition: use.edition,
                calls: use.calls, at: use.time, mode: use.mode))
            totals.add(outcome)
            var fields = totals.fields
            if use.id != nil { fields.append(("duplicate", .bool(outcome.duplicate))) }
            return fields
        }
        // Check mode: one call at a time, spaced evenly at `rate` a second from the step's time.
        let start = clock.now
        for call in 0..<use.calls {
            if let rate = use.rate {
                try clock.advance(to: start.adding(microseconds: call * Instant.microsecondsPerSecond / rate))
                if lastTick != catalog.zone.month(of: clock.now) { try await tick(tally, &lastTick, clock) }
            }
            totals.add(try await tally.perform(RecordUsage(
                account: use.account, id: "sim-\(index)-\(call)", api: use.api, edition: use.edition, calls: 1, mode: .check)))
        }
        return totals.fields
    }
}

/// Adds up the outcomes of a step's usage events.
struct UsageTotals {
    var free: Int64 = 0, pack: Int64 = 0, postpaid: Int64 = 0
    var refused: [String: Int64] = [:]

    mutating func add(_ outcome: UsageOutcome) {
        free += outcome.free
        pack += outcome.pack
        postpaid += outcome.postpaid
        if let code = outcome.refusal, outcome.refused > 0 { refused[code.rawValue, default: 0] += outcome.refused }
    }

    var fields: [(String, JSON)] {
        let accepted = [("free", free), ("pack", pack), ("postpaid", postpaid)].filter { $0.1 > 0 }.map { ($0.0, JSON.int($0.1)) }
        return [("accepted", .object(accepted)),
                ("refused", .object(refused.keys.sorted().map { ($0, .int(refused[$0]!)) }))]
    }
}
