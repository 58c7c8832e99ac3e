import TallyCore

/// How one usage event was answered.
public struct UsageOutcome: Sendable, Hashable {
    public let id: String
    /// True when the event had been recorded before: nothing was counted again.
    public let duplicate: Bool
    public let free: Int64
    public let pack: Int64
    public let postpaid: Int64
    public let refused: Int64
    /// Why calls were refused, when some were.
    public let refusal: TallyError.Code?

    init(id: String, duplicate: Bool, settlement: Settlement) {
        self.id = id
        self.duplicate = duplicate
        free = settlement.free
        pack = settlement.pack
        postpaid = settlement.postpaid
        refused = settlement.refused
        refusal = settlement.refusal
    }

    /// The answer to a duplicate: what the first event was told.
    init(id: String, duplicate entry: UsageEntry) {
        self.id = id
        duplicate = true
        free = entry.free
        pack = entry.pack
        postpaid = entry.postpaid
        refused = entry.refused
        refusal = entry.refusal
    }

    init(id: String, refused calls: Int64, because code: TallyError.Code) {
        var settlement = Settlement()
        settlement.refused = calls
        settlement.refusal = code
        self.init(id: id, duplicate: false, settlement: settlement)
    }

    public var accepted: Int64 { free + pack + postpaid }
    /// The source that pays, for a check-and-record answer: free, pack or postpaid.
    public var source: String? { postpaid > 0 ? "postpaid" : pack > 0 ? "pack" : free > 0 ? "free" : nil }
}

/// Records usage, idempotently by (account, id). `check` is check-and-record: the gateway asks
/// before serving, the QPS limit applies and the event is accepted or refused whole. `report`
/// settles calls already served: QPS does not apply and what nothing covers is refused in part.
///
/// Refusals before settlement (unknown API, not activated, suspended, closed period, future
/// timestamp, rate limited) record nothing, so the same id may be sent again later. A check refused
/// for quota or arrears records nothing either; a report is recorded even when refused, because
/// its calls were served.
public struct RecordUsage: Operation {
    public var placement: Placement { .account(account) }
    public enum Mode: String, Sendable, Hashable { case check, report }

    public let account: String
    public let id: String
    public let api: String
    public let edition: String?
    public let calls: Int64
    /// The calls' own timestamp; nil for now.
    public let at: Instant?
    public let mode: Mode

    public init(account: String, id: String, api: String, edition: String? = nil, calls: Int64, at: Instant? = nil, mode: Mode) {
        self.account = account
        self.id = id
        self.api = api
        self.edition = edition
        self.calls = calls
        self.at = at
        self.mode = mode
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> UsageOutcome {
        try Limits.identifier(id, "an event id", lengthMax: Limits.eventIDLengthMax)
        try Limits.count(calls, "an event's calls", max: Limits.eventCallsMax)
        // Read once and handed on: the account, the index key, the catalog version and the API
        // offer are each looked up once an event (every lookup hashes a text and copies a value).
        var holder = try state.tally.account(account)
        let key = TallyState.usageKey(account: account, id: id)
        if let previous = state.tally.usage[key] {
            guard previous.sameBody(api: api, edition: edition, calls: calls) else {
                throw TallyError(.idReused, "the event id \(id) was used before for a different event")
            }
            return UsageOutcome(id: id, duplicate: previous)
        }
        let instant = at ?? env.now
        let version = state.tally.catalog.version(at: instant)
        guard let offer = version.apisByID[api] else { return UsageOutcome(id: id, refused: calls, because: .unknownApi) }
        if let refusal = refusal(offer: offer, version: version, holder: holder, at: instant, state.tally, env) {
            return UsageOutcome(id: id, refused: calls, because: refusal)
        }
        if state.grantFreeQuotaIfDue(account: holder, month: state.tally.zone.month(of: instant), now: env.now, ids: env.ids) {
            holder = state.tally.accounts[account]!
        }
        if mode == .check, let qps = SettlementRule.qpsLimit(account: holder, api: api, state: state.tally, at: instant) {
            let bucketKey = "\(account)|\(api)"
            var bucket = state.buckets[bucketKey] ?? TokenBucket(qps: qps, at: instant)
            let allowed = bucket.take(calls, at: instant, qps: qps)
            state.buckets[bucketKey] = bucket
            guard allowed else { return UsageOutcome(id: id, refused: calls, because: .rateLimited) }
        }
        let settlement = SettlementRule.settle(calls: calls, api: offer, account: holder, state: state.tally, at: instant,
                                               allOrNothing: mode == .check)
        if mode == .check, settlement.accepted == 0 {
            return UsageOutcome(id: id, duplicate: false, settlement: settlement)
        }
        let record = UsageRecord(account: account, id: id, api: api, edition: edition, calls: calls, at: instant,
                                 recorded: env.now, settlement: settlement)
        var transaction: LedgerTransaction?
        if !settlement.draws.isEmpty {
            var entries: [LedgerEntry] = []
            entries.reserveCapacity(settlement.draws.count + 1)
            var drawn: Int64 = 0
            for draw in settlement.draws {
                entries.append(.calls(.pack(draw.pack), -draw.calls))
                drawn += draw.calls
            }
            entries.append(.calls(.callsConsumed(api), drawn))
            transaction = LedgerTransaction(id: env.ids.next("txn"), at: env.now, kind: "usage", entries: entries)
        }
        state.emit(.usageRecorded(record: record, transaction: transaction), usageKey: key)
        for draw in settlement.draws where state.tally.packs[draw.pack]?.left == 0 {
            state.notify(kind: draw.isFree ? "free_quota_used_up" : "pack_exhausted", account: account, at: env.now, ids: env.ids,
                         once: "\(draw.isFree ? "free_quota_used_up" : "pack_exhausted"):\(draw.pack)", ["pack": draw.pack, "api": api])
        }
        return UsageOutcome(id: id, duplicate: false, settlement: settlement)
    }

    public func suspects(in retired: RetiredUsageKeys) -> [TallyState.UsageKey] {
        let key = TallyState.usageKey(account: account, id: id)
        return retired.mightContain(key, recordedFrom: earliestRecording) ? [key] : []
    }

    /// The earliest the event can have been recorded if it was before: its time less the clock's
    /// tolerance (an event more than that ahead of the clock is refused), less a day for a retry
    /// that a gateway stamped anew, later than its first attempt; nil when it has no time. The
    /// filter of retired ids is asked only for the days from then on.
    var earliestRecording: Instant? { at?.adding(seconds: -Limits.futureToleranceSeconds - RecordUsage.restampedRetrySeconds) }

    /// How much later than its first attempt a retry's time may be and still be looked for in the
    /// filter's days (a later one is refused by the store's unique index, and costs a reload).
    static let restampedRetrySeconds: Int64 = 86_400

    /// The reason to refuse the whole event before settling it, if any (an unknown API is refused
    /// before this is asked).
    private func refusal(offer: APIOffer, version: CatalogVersion, holder: Account, at instant: Instant, _ tally: TallyState,
                         _ env: Environment) -> TallyError.Code? {
        if offer.editions.isEmpty ? edition != nil : !offer.editions.contains(edition ?? "") { return .unknownEdition }
        if instant > env.now.adding(seconds: Limits.futureToleranceSeconds) { return .timestampInFuture }
        if let closed = tally.closedThrough, tally.zone.month(of: instant) <= closed { return .periodClosed }
        if holder.suspended { return .accountSuspended }
        if version.activationRequired.contains(offer.product), holder.activated[offer.product] == nil { return .notActivated }
        return nil
    }
}

/// Grants the month's free packs to every account with a product activated (00:00 on the 1st,
/// and at activation). Idempotent: a pack already granted for the month is not granted again.
public struct GrantFreeQuota: AccountSweep {
    public var placement: Placement { .across }
    /// The accounts to grant to in this call; nil for all (`Tally.grantFreeQuota()` sweeps in slices).
    public let accounts: [String]?

    public init(accounts: [String]? = nil) { self.accounts = accounts }

    public var isBulk: Bool { true }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> Int {
        let month = state.tally.zone.month(of: env.now)
        let before = state.emitted.count
        for id in accounts ?? state.tally.accounts.keys.sorted() where state.tally.accounts[id].map({ !$0.activated.isEmpty }) ?? false {
            state.grantFreeQuota(account: id, month: month, now: env.now, ids: env.ids)
        }
        return state.emitted.count - before
    }
}

/// An operation over some accounts, or every account (nil): a part in each partition that holds
/// some, side by side; the answer is the sum of the parts' counts.
public protocol AccountSweep: AcrossPartitions where Output == Int {
    var accounts: [String]? { get }
    init(accounts: [String]?)
}

extension AccountSweep {
    public func parts(_ partitioning: Partitioning) -> [(partition: Int, part: Self)] {
        guard let accounts else { return (0..<partitioning.count).map { ($0, Self(accounts: nil)) } }
        return partitioning.split(accounts).map { ($0.partition, Self(accounts: $0.accounts)) }
    }

    public func sharesFacts(_ global: GlobalState) -> Bool { false }

    public func gather(_ parts: [(part: Self, output: Int)]) -> Int { parts.reduce(0) { $0 + $1.output } }
}

/// The month an account's free packs were last granted for, and for how many activated products.
struct FreeQuotaCheck: Sendable, Hashable {
    let month: Month
    let products: Int
}

extension EngineState {
    /// `grantFreeQuota` for usage, which asks on every event: once the account's packs for the
    /// month are granted, nothing can make the grant give more until the month or the activated
    /// products change (products are only ever added, free packs never removed).
    /// True when it granted a pack (the caller's copy of the account is then out of date).
    mutating func grantFreeQuotaIfDue(account holder: Account, month: Month, now: Instant, ids: any IDSource) -> Bool {
        let check = FreeQuotaCheck(month: month, products: holder.activated.count)
        if freeQuotaChecked[holder.id] == check { return false }
        let before = emitted.count
        grantFreeQuota(account: holder.id, month: month, now: now, ids: ids)
        freeQuotaChecked[holder.id] = check
        return emitted.count != before
    }

    /// Grants `account` its free packs for `month`, for every activated product, once. The grant
    /// is nominally made when the month starts (or at activation, if later), and uses the catalog
    /// version in force then.
    mutating func grantFreeQuota(account id: String, month: Month, now: Instant, ids: any IDSource) {
        guard let holder = tally.accounts[id] else { return }
        let zone = tally.zone
        let products = holder.activated.count == 1 ? Array(holder.activated) : holder.activated.sorted { $0.key < $1.key }
        for (product, activated) in products where zone.month(of: activated) <= month {
            let granted = max(zone.start(of: month), activated)
            guard let offer = tally.catalog.version(at: granted).productsByID[product] else { continue }
            for api in offer.apis where api.freeMonthly > 0 && tally.freePack(account: holder, api: api.id, month: month) == nil {
                let pack = Pack(id: ids.next("pk"), account: id, api: api.id, item: "\(api.id)/free", source: .free(month: month),
                                size: api.freeMonthly, left: api.freeMonthly, qps: nil, delivered: granted,
                                expires: zone.end(of: month), sequence: tally.packSequence, refundable: false,
                                promotionAllowsRefund: false)
                let transaction = LedgerTransaction(id: ids.next("txn"), at: now, kind: "free_quota", entries: [
                    .calls(.pack(pack.id), pack.size), .calls(.callsIssued, -pack.size),
                ])
                emit(.packGranted(pack: pack, transaction: transaction))
            }
        }
    }
}

/// The scheduler's expiry pass: notices for packs and memberships that expire within 7 days
/// (once each). Expiry itself needs no action: a pack or membership past its instant is simply
/// no longer usable.
public struct Expire: AccountSweep {
    public var placement: Placement { .across }
    /// The accounts to look at in this call; nil for all (`Tally.expire()` sweeps in slices).
    public let accounts: [String]?

    public init(accounts: [String]? = nil) { self.accounts = accounts }

    public var isBulk: Bool { true }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> Int {
        let horizon = env.now.adding(seconds: Limits.expiringNoticeDays * 86_400)
        let before = state.emitted.count
        let zone = state.tally.zone
        let tally = state.tally
        let candidates: [Pack] = accounts.map { ids in ids.flatMap { tally.accounts[$0]?.packs ?? [] }.compactMap { tally.packs[$0] } }
            ?? Array(tally.packs.values)
        let expiring = candidates
            .filter { !$0.isFree && $0.isUsable(at: env.now) && $0.expires <= horizon }
            .sorted { ($0.expires, $0.sequence) < ($1.expires, $1.sequence) }
        for pack in expiring {
            state.notify(kind: "pack_expiring", account: pack.account, at: env.now, ids: env.ids, once: "pack_expiring:\(pack.id)",
                         ["pack": pack.id, "item": pack.item, "left": String(pack.left), "expires": pack.expires.rfc3339(in: zone)])
        }
        for id in accounts ?? state.tally.accounts.keys.sorted() {
            guard let holder = state.tally.accounts[id] else { continue }
            for membership in holder.memberships.values.sorted(by: { $0.product < $1.product })
            where membership.isActive(at: env.now) && membership.expires <= horizon {
                let expires = membership.expires.rfc3339(in: zone)
                state.notify(kind: "membership_expiring", account: id, at: env.now, ids: env.ids,
                             once: "membership_expiring:\(id):\(membership.product):\(expires)",
                             ["edition": membership.edition, "expires": expires])
            }
        }
        return state.emitted.count - before
    }
}

/// Records many usage events under one lock and one journal ticket: the report path's batch, and
/// what `tally ingest` feeds. Each event gets its own result, as TigerBeetle's batches do: one bad
/// event refuses only itself.
public struct RecordUsageBatch: SlicedOperation, AcrossPartitions {
    public var placement: Placement { .across }
    /// The most events one batch may carry (the HTTP report route's limit too).
    public static let eventsMax = 10_000

    public let events: [RecordUsage]

    /// For a part of a batch split by partition: each event's position in the whole batch.
    let positions: [Int]?
    /// Whether the whole batch this is a part or a slice of is bulk work.
    let bulk: Bool

    public init(events: [RecordUsage]) { self.init(events: events, positions: nil, bulk: events.count > Journal.smallEntryFactsMax) }

    init(events: [RecordUsage], positions: [Int]?, bulk: Bool) {
        self.events = events
        self.positions = positions
        self.bulk = bulk
    }

    /// The events of each partition, in their order; a batch over `eventsMax` stays whole, to be
    /// refused.
    public func parts(_ partitioning: Partitioning) -> [(partition: Int, part: RecordUsageBatch)] {
        guard partitioning.count > 1, events.count <= RecordUsageBatch.eventsMax, !events.isEmpty else { return [(0, self)] }
        let groups = partitioning.positions(of: events.lazy.map(\.account))
        guard groups.count > 1 else { return [(groups[0].partition, self)] }
        return groups.map { ($0.partition, RecordUsageBatch(events: $0.positions.map { events[$0] }, positions: $0.positions, bulk: bulk)) }
    }

    public func sharesFacts(_ global: GlobalState) -> Bool { false }

    /// Each event's answer in the batch's order.
    public func gather(_ parts: [(part: RecordUsageBatch, output: [Result<UsageOutcome, TallyError>])]) -> [Result<UsageOutcome, TallyError>] {
        if parts.count == 1, parts[0].part.positions == nil { return parts[0].output }
        var results = [Result<UsageOutcome, TallyError>?](repeating: nil, count: events.count)
        for (part, output) in parts {
            for (position, result) in zip(part.positions!, output) { results[position] = result }
        }
        return results.map { $0! }
    }

    /// A part is applied a slice at a time, and waited for with the others.
    public func applyPart(on engine: Tally, in partition: Int) async throws(TallyError) -> PartPending<[Result<UsageOutcome, TallyError>]> {
        let applied = try await engine.applySlices(self, in: partition)
        return PartPending {
            do throws(TallyError) {
                return .success(try await engine.awaitSlices(self, applied, in: partition))
            } catch {
                return .failure(error)
            }
        }
    }

    public func suspects(in retired: RetiredUsageKeys) -> [TallyState.UsageKey] {
        retired.suspects(among: events.lazy.map { (TallyState.usageKey(account: $0.account, id: $0.id), $0.earliestRecording) })
    }

    /// The most events applied in one pass through the engine's gate: what a check queued behind
    /// a report waits for (docs/decisions.md, "Bounded lock holds").
    public static let sliceEventsMax = 512

    /// Slices of at most `sliceEventsMax` events; a batch over `eventsMax` stays whole, to be refused.
    public var slices: [RecordUsageBatch] {
        guard events.count > RecordUsageBatch.sliceEventsMax, events.count <= RecordUsageBatch.eventsMax else { return [self] }
        return events.chunks(of: RecordUsageBatch.sliceEventsMax).map { RecordUsageBatch(events: $0, positions: nil, bulk: bulk) }
    }

    /// A batch of more events than a small journal entry holds is bulk work, and so are its parts
    /// and slices, however few events they carry: they wait behind checks at the gate and in the
    /// journal.
    public var isBulk: Bool { bulk }

    public func combine(_ outputs: [[Result<UsageOutcome, TallyError>]]) -> [Result<UsageOutcome, TallyError>] {
        outputs.count == 1 ? outputs[0] : Array(outputs.joined())
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> [Result<UsageOutcome, TallyError>] {
        guard events.count <= RecordUsageBatch.eventsMax else {
            throw TallyError(.countOutOfRange, "a batch carries at most \(RecordUsageBatch.eventsMax) events, got \(events.count)")
        }
        return events.map { event in
            do throws(TallyError) {
                return .success(try event.execute(&state, env))
            } catch {
                return .failure(error)
            }
        }
    }
}

extension Tally {
    /// Accounts per slice of a sweep over every account (free quota grants, expiry notices): one
    /// pass through the gate each, as a bill run's step.
    public static let sweepSliceAccounts = 256

    /// Grants the month's free packs to every account with a product activated, a slice of
    /// accounts at a time. Returns the packs granted.
    @discardableResult
    public func grantFreeQuota() async throws(TallyError) -> Int {
        try await sweep { GrantFreeQuota(accounts: $0) }
    }

    /// Sends the notices of packs and memberships about to expire, a slice of accounts at a time.
    /// Returns the facts emitted.
    @discardableResult
    public func expire() async throws(TallyError) -> Int {
        try await sweep { Expire(accounts: $0) }
    }

    /// A partition at a time, a slice of its accounts at a time.
    private func sweep<Op: Operation>(_ slice: ([String]) -> Op) async throws(TallyError) -> Int where Op.Output == Int {
        var total = 0
        for accounts in readEach({ $0.accounts.keys.sorted() }) {
            for chunk in accounts.chunks(of: Tally.sweepSliceAccounts) { total += try await perform(slice(chunk)) }
        }
        return total
    }
}
