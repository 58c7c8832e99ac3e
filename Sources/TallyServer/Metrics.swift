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
        MetricsSystem.bootstrap(DescribedMetricsFactory(registry: registry))
        return registry
    }()

    let events: Prometheus.Counter
    let flushBatchSize: Prometheus.ValueHistogram
    let billRunAccountsDone: Prometheus.Gauge
    let billRunAccountsTotal: Prometheus.Gauge
    let webhooksDelivered: Prometheus.Counter
    let webhookFailures: Prometheus.Counter
    /// How long a group-commit write to the store takes, and the writes that failed (a lost race
    /// with another process, or a store that refused the write).
    let storeCommitSeconds: Prometheus.DurationHistogram
    let storeWriteFailures: Prometheus.Counter
    /// Read when scraped: operations waiting at the engine's gate, journal entries not yet
    /// committed, and reloads from the store after a lost race.
    let gateWaiting: Prometheus.Gauge
    let journalOutstanding: Prometheus.Gauge
    let reloads: Prometheus.Gauge
    /// 1 while the engine takes work, 0 from a write the store refused until it has reloaded.
    let ready: Prometheus.Gauge
    /// Accounts in arrears when scraped (one pass over the accounts): a bill run that puts many
    /// accounts in arrears at once shows as a jump.
    let inArrears: Prometheus.Gauge
    /// Partitions the start loaded from a snapshot (the others were replayed from their facts).
    let fromSnapshots: Prometheus.Gauge
    /// Partitions' snapshots the store has taken since the process started.
    let snapshotsWritten: Prometheus.Counter
    private let decisions = Mutex<[String: Prometheus.Counter]>([:])
    private let decisionSeconds = Mutex<[DecisionProtocol: Prometheus.DurationHistogram]>([:])

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
        storeCommitSeconds = registry.makeDurationHistogram(
            descriptor: .init(metricName: "tally_store_commit", unitName: "seconds", helpText: "Time a group-commit write to the store takes."),
            buckets: [.microseconds(250), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(25),
                      .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1)])
        storeWriteFailures = registry.makeCounter(descriptor: .init(metricName: "tally_store_write_failures", unitName: "total",
                                                                    helpText: "Group-commit writes the store refused or lost to another process."))
        gateWaiting = registry.makeGauge(descriptor: .init(metricName: "tally_gate_waiting", unitName: "operations",
                                                           helpText: "Operations waiting at the engine's gate when scraped."))
        journalOutstanding = registry.makeGauge(descriptor: .init(metricName: "tally_journal_queue", unitName: "entries",
                                                                  helpText: "Journal entries queued and not yet committed when scraped."))
        reloads = registry.makeGauge(descriptor: .init(metricName: "tally_engine_reloads", unitName: "",
                                                       helpText: "Reloads of the state from the store (after a lost race or a failed write), since start."))
        ready = registry.makeGauge(descriptor: .init(metricName: "tally_engine_ready", unitName: "",
                                                     helpText: "1 while the engine takes work; 0 after a write the store refused, until it has reloaded from the store."))
        inArrears = registry.makeGauge(descriptor: .init(metricName: "tally_accounts_in_arrears", unitName: "",
                                                         helpText: "Accounts in arrears when scraped."))
        snapshotsWritten = registry.makeCounter(descriptor: .init(metricName: "tally_snapshots_written", unitName: "total",
                                                                  helpText: "Partitions' snapshots written to the store since the process started."))
        fromSnapshots = registry.makeGauge(descriptor: .init(metricName: "tally_partitions_from_snapshots", unitName: "",
                                                             helpText: "Partitions the start loaded from a snapshot; the others were replayed from their facts."))
    }

    /// How a decision was asked for: the JSON usage routes, Envoy's ext_authz or nginx's
    /// auth_request (`/v1/gateway/authorize`), or Envoy's rate limit service over gRPC.
    enum DecisionProtocol: String, Sendable {
        case http, authorize = "ext_authz", grpc
    }

    /// Counts decisions by outcome: the paying source, or the refusal's reason.
    func decided(_ outcomes: [UsageOutcome], protocol: DecisionProtocol) {
        // Counted per reason first: a batch of a thousand takes the counters' lock once a reason.
        var byReason: [String: Int64] = [:]
        for outcome in outcomes where !outcome.duplicate {
            byReason[outcome.refused > 0 ? outcome.refusal?.rawValue ?? "refused" : outcome.source ?? "none", default: 0] += 1
        }
        for (reason, count) in byReason {
            events.increment(by: count)
            counter(reason, `protocol`).increment(by: count)
        }
    }

    /// Counts a call refused before any settlement (an unknown account, a bad key, a malformed
    /// call): a decision the gateway acts on all the same.
    func refusedBeforeSettlement(_ code: TallyError.Code, protocol: DecisionProtocol) {
        counter(code.rawValue, `protocol`).increment()
    }

    /// Records how long one decision took to answer, from the request's arrival.
    func timed(_ protocol: DecisionProtocol, since started: ContinuousClock.Instant) {
        let histogram = decisionSeconds.withLock { histograms in
            if let histogram = histograms[`protocol`] { return histogram }
            let histogram = ServerMetrics.registry.makeDurationHistogram(
                descriptor: .init(metricName: "tally_decision", unitName: "seconds",
                                  helpText: "Time to answer one gateway decision, by protocol (check-and-record, durable before answered)."),
                labels: [("protocol", `protocol`.rawValue)],
                buckets: [.microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10), .milliseconds(20),
                          .milliseconds(50), .milliseconds(100), .milliseconds(250), .seconds(1)])
            histograms[`protocol`] = histogram
            return histogram
        }
        histogram.record(ContinuousClock.now - started)
    }

    private func counter(_ reason: String, _ protocol: DecisionProtocol) -> Prometheus.Counter {
        decisions.withLock { counters in
            let key = "\(reason)|\(`protocol`.rawValue)"
            if let counter = counters[key] { return counter }
            let counter = ServerMetrics.registry.makeCounter(descriptor: .init(metricName: "tally_usage_decisions", unitName: "total",
                                                                               helpText: "Usage decisions by paying source or refusal reason, and by protocol."),
                                                             labels: [("reason", reason), ("protocol", `protocol`.rawValue)])
            counters[key] = counter
            return counter
        }
    }

    /// The registry as text, with the engine's gauges read now.
    public func text(_ tally: Tally) -> String {
        let depth = tally.queueDepth
        gateWaiting.set(Double(depth.gate))
        journalOutstanding.set(Double(depth.journal))
        reloads.set(Double(tally.reloads))
        ready.set(Double(tally.isReady ? 1 : 0))
        fromSnapshots.set(Double(tally.snapshotsLoaded))
        inArrears.set(Double(tally.readEach { $0.accounts.values.lazy.filter(\.inArrears).count }.reduce(0, +)))
        return ServerMetrics.registry.emitToString()
    }
}

/// A store that reports each group-commit batch's size to the metrics.
struct ObservedStore: TallyStore {
    let base: any TallyStore
    let metrics: ServerMetrics

    var kind: String { base.kind }
    var concurrentWrites: Bool { base.concurrentWrites }
    func loadFacts() async throws -> [Fact] { try await base.loadFacts() }
    func recountUsage(zone: Zone) async throws -> UsageRecount { try await base.recountUsage(zone: zone) }
    func rebuild<State: FactFolding>(_ state: State, after position: Int64) async throws -> State { try await base.rebuild(state, after: position) }
    func position() async throws -> Int64 { try await base.position() }
    func saveSnapshot(_ snapshot: StoredSnapshot) async throws {
        try await base.saveSnapshot(snapshot)
        metrics.snapshotsWritten.increment()
    }
    func snapshots(rank: Int?, partitions: [Int]?) async throws -> [StoredSnapshot] { try await base.snapshots(rank: rank, partitions: partitions) }
    func storedUsage(_ keys: [TallyState.UsageKey]) async throws -> [TallyState.UsageKey: UsageEntry] { try await base.storedUsage(keys) }
    func answer(for key: String) async throws -> StoredAnswer? { try await base.answer(for: key) }
    func saveAnswer(_ answer: StoredAnswer) async throws { try await base.saveAnswer(answer) }
    func pruneAnswers(before instant: Instant) async throws { try await base.pruneAnswers(before: instant) }
    func recordedPartitionCount() async throws -> Int? { try await base.recordedPartitionCount() }
    func recordPartitionCount(_ count: Int) async throws { try await base.recordPartitionCount(count) }
    func consoleSession(digest: [UInt8]) async throws -> StoredSession? { try await base.consoleSession(digest: digest) }
    func saveConsoleSession(_ session: StoredSession) async throws { try await base.saveConsoleSession(session) }
    func endConsoleSession(digest: [UInt8]) async throws { try await base.endConsoleSession(digest: digest) }
    func pruneConsoleSessions(expiredBefore instant: Instant) async throws { try await base.pruneConsoleSessions(expiredBefore: instant) }
    var expressWrites: Bool { base.expressWrites }
    func append(_ batch: EncodedBatch) async throws { try await observe(batch) { try await base.append(batch) } }
    func appendExpress(_ batch: EncodedBatch) async throws { try await observe(batch) { try await base.appendExpress(batch) } }

    private func observe(_ batch: EncodedBatch, _ write: () async throws -> Void) async throws {
        let started = ContinuousClock.now
        do {
            try await write()
        } catch {
            metrics.storeWriteFailures.increment()
            throw error
        }
        metrics.storeCommitSeconds.record(ContinuousClock.now - started)
        metrics.flushBatchSize.record(Double(batch.count))
    }
}

/// swift-metrics' backend: Prometheus, with a help text for every series and `_total` on every
/// counter, so that `promtool check metrics` passes on what libraries (Hummingbird's request
/// metrics) report as well as on Tally's own series.
struct DescribedMetricsFactory: MetricsFactory {
    let registry: PrometheusCollectorRegistry
    /// Only for its buckets and its `destroy…`, which unregister from the same registry.
    let plain: PrometheusMetricsFactory

    init(registry: PrometheusCollectorRegistry) {
        self.registry = registry
        plain = PrometheusMetricsFactory(registry: registry)
    }

    /// What the libraries' series mean.
    static let helpTexts: [String: String] = [
        "hb_requests_total": "HTTP requests answered, by method, route and status (Hummingbird).",
        "hb_request_errors_total": "HTTP requests that ended in an error, by method, route and error (Hummingbird).",
        "http_server_active_requests": "HTTP requests in flight (Hummingbird).",
        "http_server_request_duration": "HTTP request duration in seconds, by method, route and status (Hummingbird).",
    ]

    /// `label` as a Prometheus name (swift-metrics labels may hold dots), with its help text.
    static func descriptor(_ label: String) -> MetricNameDescriptor {
        let name = String(label.map { $0 == "." ? "_" : $0 })
        return MetricNameDescriptor(metricName: name, unitName: "", helpText: helpTexts[name] ?? "\(name), reported by a library through swift-metrics.")
    }

    static func counterName(_ label: String) -> String { label.hasSuffix("_total") ? label : label + "_total" }

    func makeCounter(label: String, dimensions: [(String, String)]) -> any CounterHandler {
        registry.makeCounter(descriptor: Self.descriptor(Self.counterName(label)), labels: dimensions)
    }

    func makeFloatingPointCounter(label: String, dimensions: [(String, String)]) -> any FloatingPointCounterHandler {
        registry.makeCounter(descriptor: Self.descriptor(Self.counterName(label)), labels: dimensions)
    }

    func makeRecorder(label: String, dimensions: [(String, String)], aggregate: Bool) -> any RecorderHandler {
        guard aggregate else { return registry.makeGauge(descriptor: Self.descriptor(label), labels: dimensions) }
        return registry.makeValueHistogram(descriptor: Self.descriptor(label), labels: dimensions,
                                           buckets: plain.valueHistogramBuckets[label] ?? plain.defaultValueHistogramBuckets)
    }

    func makeMeter(label: String, dimensions: [(String, String)]) -> any MeterHandler {
        registry.makeGauge(descriptor: Self.descriptor(label), labels: dimensions)
    }

    func makeTimer(label: String, dimensions: [(String, String)]) -> any TimerHandler {
        registry.makeDurationHistogram(descriptor: Self.descriptor(label), labels: dimensions,
                                       buckets: plain.durationHistogramBuckets[label] ?? plain.defaultDurationHistogramBuckets)
    }

    func destroyCounter(_ handler: any CounterHandler) { plain.destroyCounter(handler) }
    func destroyFloatingPointCounter(_ handler: any FloatingPointCounterHandler) { plain.destroyFloatingPointCounter(handler) }
    func destroyRecorder(_ handler: any RecorderHandler) { plain.destroyRecorder(handler) }
    func destroyMeter(_ handler: any MeterHandler) { plain.destroyMeter(handler) }
    func destroyTimer(_ handler: any TimerHandler) { plain.destroyTimer(handler) }
}
