import Metrics
import Prometheus
import Synchronization
import TallyCore
import TallyEngine
import TallyStore

/// What `/metrics` shows, in Prometheus's text format: Hummingbird's request counts and latencies
/// (through swift-metrics), and Tally's own: events ingested, decisions by reason, store flush
/// batch sizes, bill-run progress, webhook deliveries.
public final class ServerMetrics: Sendable {
    /// One registry a process: swift-metrics has one global backend, bootstrapped once.
    public static let registry: PrometheusCollectorRegistry = {
        let registry = PrometheusCollectorRegistry()
        MetricsSystem.bootstrap(PrometheusMetricsFactory(registry: registry))
        return registry
    }()

    let events: Prometheus.Counter
    let flushBatchSize: Prometheus.ValueHistogram
    let billRunAccountsDone: Prometheus.Gauge
    let billRunAccountsTotal: Prometheus.Gauge
    let webhooksDelivered: Prometheus.Counter
    let webhookFailures: Prometheus.Counter
    private let decisions = Mutex<[String: Prometheus.Counter]>([:])

    public init() {
        let registry = ServerMetrics.registry
        events = registry.makeCounter(name: "tally_usage_events_total", help: "Usage events settled (new, not duplicates).")
        flushBatchSize = registry.makeValueHistogram(name: "tally_store_flush_batch_facts", buckets: [1, 4, 16, 64, 256, 1_024, 4_096, 16_384],
                                                     help: "Facts per group-commit write to the store.")
        billRunAccountsDone = registry.makeGauge(name: "tally_bill_run_accounts_done", help: "Accounts billed by the bill run under way or last run.")
        billRunAccountsTotal = registry.makeGauge(name: "tally_bill_run_accounts_total", help: "Accounts the bill run under way or last run bills.")
        webhooksDelivered = registry.makeCounter(name: "tally_webhooks_delivered_total", help: "Webhook deliveries answered with 2xx.")
        webhookFailures = registry.makeCounter(name: "tally_webhook_failures_total", help: "Webhook attempts that failed and will be retried.")
    }

    /// Counts decisions by outcome: the paying source, or the refusal's reason.
    func decided(_ outcomes: [UsageOutcome]) {
        // Counted per reason first: a batch of a thousand takes the counters' lock once a reason.
        var byReason: [String: Int64] = [:]
        for outcome in outcomes where !outcome.duplicate {
            byReason[outcome.refused > 0 ? outcome.refusal?.rawValue ?? "refused" : outcome.source ?? "none", default: 0] += 1
        }
        for (reason, count) in byReason {
            events.increment(by: count)
            counter(reason).increment(by: count)
        }
    }

    private func counter(_ reason: String) -> Prometheus.Counter {
        decisions.withLock { counters in
            if let counter = counters[reason] { return counter }
            let counter = ServerMetrics.registry.makeCounter(name: "tally_usage_decisions_total", labels: [("reason", reason)],
                                                             help: "Usage decisions by paying source or refusal reason.")
            counters[reason] = counter
            return counter
        }
    }

    public func text() -> String { ServerMetrics.registry.emitToString() }
}

/// A store that reports each group-commit batch's size to the metrics.
struct ObservedStore: TallyStore {
    let base: any TallyStore
    let metrics: ServerMetrics

    var kind: String { base.kind }
    func loadFacts() async throws -> [Fact] { try await base.loadFacts() }
    func recountUsage(zone: Zone) async throws -> UsageRecount { try await base.recountUsage(zone: zone) }
    func rebuild(_ state: TallyState) async throws -> TallyState { try await base.rebuild(state) }
    func storedUsage(_ keys: [TallyState.UsageKey]) async throws -> [TallyState.UsageKey: UsageEntry] { try await base.storedUsage(keys) }
    func answer(for key: String) async throws -> StoredAnswer? { try await base.answer(for: key) }
    func saveAnswer(_ answer: StoredAnswer) async throws { try await base.saveAnswer(answer) }
    func pruneAnswers(before instant: Instant) async throws { try await base.pruneAnswers(before: instant) }
    func append(_ batch: EncodedBatch) async throws {
        try await base.append(batch)
        metrics.flushBatchSize.record(Double(batch.count))
    }
}
