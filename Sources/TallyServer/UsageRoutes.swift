import Hummingbird
import TallyCore
import TallyEngine

/// Usage in (SPEC 4): check-and-record for one call or a batch, and reports of calls served.
enum UsageRoutes {
    /// The most events a check batch carries: each is a decision the gateway waits on.
    static let checkBatchEventsMax = 1_000

    static let all: [Endpoint] = [
        Endpoint(.post, "/v1/usage/check", .meters) { call in
            let event = try event(&call.fields, mode: .check, principal: call.principal)
            try call.fields.end()
            let outcome = try await call.tally.perform(event)
            call.server.metrics.decided([outcome], protocol: .http)
            return .json(Views.outcome(outcome))
        },
        Endpoint(.post, "/v1/usage/check-batch", .meters) { call in
            try await batch(&call, mode: .check, max: checkBatchEventsMax)
        },
        Endpoint(.post, "/v1/usage/report", .meters) { call in
            try await batch(&call, mode: .report, max: RecordUsageBatch.eventsMax)
        },
    ]

    /// One event's fields: `account`, `id`, `api`, `edition`, `calls` (1 when absent), `time`. A
    /// gateway key scoped to one account meters that account only: another answers as unknown, and
    /// the account may be left out.
    static func event(_ fields: inout Fields, mode: RecordUsage.Mode, principal: Principal) throws(TallyError) -> RecordUsage {
        guard let account = try fields.optionalString("account", lengthMax: Limits.identifierLengthMax) ?? principal.account else {
            throw TallyError(.invalidRequest, "account is required (a gateway key scoped to one account may leave it out)")
        }
        guard principal.mayTouch(account) else { throw TallyError(.accountNotFound, "there is no account \(account)") }
        let id = try fields.string("id", lengthMax: Limits.eventIDLengthMax)
        let api = try fields.string("api", lengthMax: Limits.apiIDLengthMax)
        let edition = try fields.optionalString("edition", lengthMax: Limits.editionLengthMax)
        let calls = try fields.optionalInt("calls") ?? 1
        let time = try fields.instant("time")
        return RecordUsage(account: account, id: id, api: api, edition: edition, calls: calls, at: time, mode: mode)
    }

    /// A batch answers one result per event, in order; a malformed event is refused alone.
    static func batch(_ call: inout Call, mode: RecordUsage.Mode, max: Int) async throws -> Answer {
        let items = try call.fields.array("events")
        try call.fields.end()
        guard !items.isEmpty else { throw TallyError(.invalidRequest, "events must hold at least one event") }
        guard items.count <= max else {
            throw Problem(.contentTooLarge, TallyError(.batchTooLarge, "a batch carries at most \(max) events, got \(items.count)"))
        }
        let principal = call.principal
        // Reading the events and writing the answer grow with the batch: a large one does both off
        // the cooperative pool (`OffPool`), so that a single check is not kept off a thread meanwhile.
        let offPool = items.count >= OffPool.batchEventsMin
        let read: @Sendable () -> [Result<RecordUsage, TallyError>] = { events(items, mode: mode, principal: principal) }
        let parsed = offPool ? try await OffPool.run(read) : read()
        let valid = parsed.compactMap { try? $0.get() }
        let outcomes = try await call.tally.perform(RecordUsageBatch(events: valid))
        call.server.metrics.decided(outcomes.compactMap { try? $0.get() }, protocol: .http)
        let answer: @Sendable () -> Answer = { .json(results(items, parsed, outcomes)) }
        return offPool ? try await OffPool.run(answer) : answer()
    }

    /// The batch's events, each read on its own: a malformed one is refused alone.
    static func events(_ items: [JSON], mode: RecordUsage.Mode, principal: Principal) -> [Result<RecordUsage, TallyError>] {
        var parsed: [Result<RecordUsage, TallyError>] = []
        parsed.reserveCapacity(items.count)
        for (index, item) in items.enumerated() {
            do throws(TallyError) {
                var fields = try Fields(item)
                let event = try event(&fields, mode: mode, principal: principal)
                try fields.end()
                parsed.append(.success(event))
            } catch {
                parsed.append(.failure(TallyError(error.code, "events[\(index)]: \(error.message)")))
            }
        }
        return parsed
    }

    /// The batch's answer: the counts, and one result per event in order.
    static func results(_ items: [JSON], _ parsed: [Result<RecordUsage, TallyError>], _ outcomes: [Result<UsageOutcome, TallyError>]) -> JSON {
        var results: [JSON] = []
        results.reserveCapacity(parsed.count)
        var next = outcomes.makeIterator()
        var accepted: Int64 = 0, refused: Int64 = 0, duplicates: Int64 = 0
        for (index, item) in parsed.enumerated() {
            switch item {
            case .failure(let error):
                results.append(Views.error(idOf(items[index]), error))
                refused += 1
            case .success(let event):
                switch next.next()! {
                case .success(let outcome):
                    results.append(Views.outcome(outcome))
                    if outcome.duplicate { duplicates += 1 } else if outcome.refused > 0 { refused += 1 } else { accepted += 1 }
                case .failure(let error):
                    results.append(Views.error(event.id, error))
                    refused += 1
                }
            }
        }
        return .object([("accepted", .int(accepted)), ("refused", .int(refused)), ("duplicates", .int(duplicates)),
                        ("results", .array(results))])
    }

    static func idOf(_ item: JSON) -> String {
        if case .string(let id)? = item["id"], id.utf8.count <= Limits.eventIDLengthMax { return id }
        return ""
    }
}
