import Synchronization
import Testing
import TallyCore
import TallyEngine
import TallyStore

/// Reports are applied a slice at a time, each slice through the engine's gate on its own: a
/// check waits for at most one slice of a report queued before it, never for the whole report.
@Suite(.timeLimit(.minutes(5))) struct SlicedReportTests {
    static func engine(_ store: any TallyStore, _ clock: VirtualClock) async throws -> Tally {
        try await Tally.start(catalog: StoreConformanceTests.catalog, store: store, clock: clock.clock, ids: RandomIDs())
    }

    static func report(_ account: String, _ count: Int, from first: Int = 0) -> RecordUsageBatch {
        RecordUsageBatch(events: (first..<first + count).map {
            RecordUsage(account: account, id: "r\($0)", api: "image-tagging.general", calls: 1, mode: .report)
        })
    }

    /// A check for account A is answered, durable, while a 10,000-event report for account B is
    /// held between its first two slices.
    @Test(arguments: StoreKind.available)
    func aCheckPassesAReportPausedBetweenSlices(kind: StoreKind) async throws {
        let (store, reopen) = try await kind.make()
        let clock = VirtualClock(start: try #require(Instant(rfc3339: "2026-01-05T10:00:00+08:00")))
        let tally = try await Self.engine(store, clock)
        for account in ["a", "b"] {
            try await tally.perform(OpenAccount(account: account, subject: .enterprise, verified: true))
            try await tally.perform(TopUp(account: account, cash: Money(parsing: "100.00")!))
            try await tally.perform(Activate(account: account, product: "image-tagging"))
        }
        let paused = Mutex(false), released = Mutex(false)
        tally.onSliceApplied { slice in
            guard slice == 0 else { return }
            paused.withLock { $0 = true }
            while !released.withLock({ $0 }) { try? await Task.sleep(for: .milliseconds(1)) }
        }
        let report = Task { try await tally.perform(Self.report("b", RecordUsageBatch.eventsMax)) }
        while !paused.withLock({ $0 }) { try await Task.sleep(for: .milliseconds(1)) }

        let check = try await tally.perform(RecordUsage(account: "a", id: "check", api: "image-tagging.general", calls: 1, mode: .check))
        #expect(check.accepted == 1)
        // Answered while the report still waits after its first slice.
        #expect(paused.withLock { $0 } && !released.withLock { $0 })
        #expect(tally.read { $0.usageEvents } == Int64(RecordUsageBatch.sliceEventsMax) + 1)

        released.withLock { $0 = true }
        let outcomes = try await report.value
        tally.onSliceApplied(nil)
        #expect(outcomes.count == RecordUsageBatch.eventsMax)
        #expect(outcomes.allSatisfy { (try? $0.get())?.accepted == 1 })
        let again = try await Self.engine(try await reopen(), clock)
        #expect(again.read { $0.usageEvents } == Int64(RecordUsageBatch.eventsMax) + 1)
    }

    /// Slices keep each event's own answer: a repeated id in a later slice is a duplicate, an id
    /// reused for another event is refused, and the whole report sent again counts nothing twice.
    @Test(arguments: StoreKind.available)
    func eachEventKeepsItsAnswerAcrossSlices(kind: StoreKind) async throws {
        let (store, _) = try await kind.make()
        let clock = VirtualClock(start: try #require(Instant(rfc3339: "2026-01-05T10:00:00+08:00")))
        let tally = try await Self.engine(store, clock)
        try await tally.perform(OpenAccount(account: "b", subject: .enterprise, verified: true))
        try await tally.perform(Activate(account: "b", product: "image-tagging"))
        var events = Self.report("b", 1_500).events
        events[1_200] = RecordUsage(account: "b", id: "r10", api: "image-tagging.general", calls: 1, mode: .report)
        events[1_300] = RecordUsage(account: "b", id: "r20", api: "image-tagging.general", calls: 7, mode: .report)
        events[1_400] = RecordUsage(account: "nobody", id: "x", api: "image-tagging.general", calls: 1, mode: .report)
        let batch = RecordUsageBatch(events: events)
        #expect(batch.slices.count == 3)
        let first = try await tally.perform(batch)
        #expect(first.count == 1_500)
        #expect((try? first[1_200].get())?.duplicate == true)
        #expect(throws: TallyError.self) { try first[1_300].get() }
        #expect(throws: TallyError.self) { try first[1_400].get() }
        let counted = tally.read { $0.usageEvents }
        #expect(counted == 1_497)
        let second = try await tally.perform(batch)
        #expect(tally.read { $0.usageEvents } == counted)
        for index in events.indices where ![1_300, 1_400].contains(index) {
            #expect((try? second[index].get())?.duplicate == true, "event \(index)")
        }
    }
}
