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
        events = registry.makeCounter(descriptor: .init(metricName: "tally_usage_events", unitName: "total",
                                                        helpText: "Usage events settled (new, not duplicates)."))
        flushBatchSize = registry.makeValueHistogram(descriptor: .init(metricName: "tally_store_flush_batch", unitName: "facts",
                                                                       helpText: "Facts per group-commit write to the store."),
                                                     buckets: [1, 4, 16, 64, 256, 1_024, 4_096, 16_384])
        billRunAccountsDone = registry.makeGauge(descriptor: .init(metricName: "tally_bill_run_accounts", unitName: "done",
                                                                   helpText: "Accounts billed by the bill run under way or last run."))
        billRunAccountsTotal = registry.makeGauge(descriptor: .init(metricName: "tally_bill_run_accounts", unitName: "planned",
                                                                    helpText: "Accounts the bill run under way or last run bills."))
        webhooksDelivered = registry.makeCounter(descriptor: .init(metricName: "tally_webhooks_delivered", unitName: "total",
                                                                   helpText: "Webhook deliveries answered with 2xx."))
        webhookFailures = registry.makeCounter(descriptor: .init(metricName: "tally_webhook_failures", unitName: "total",
                                                                 helpText: "Webhook attempts that failed and will be retried."))
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
            let counter = ServerMetrics.registry.makeCounter(descriptor: .init(metricName: "tally_usage_decisions", unitName: "total",
                                                                               helpText: "Usage decisions by paying source or refusal reason."),
                                                             labels: [("reason", reason)])
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
