import Foundation
import Logging
import Synchronization
import TallyEngine

/// One log line on standard error, as text (`time level label: key=value … [source] message`,
/// like swift-log's `StreamLogHandler`) or, with `TALLY_LOG_FORMAT=json`, as one JSON object:
/// `time`, `level`, `label`, `message`, `source` and the metadata's keys (Hummingbird's
/// `hb.request.id` among them), for log collectors that read structured lines.
///
/// Metadata is formatted when a line is written, never when it is set: Hummingbird sets a request
/// id on every request's logger, and `StreamLogHandler` formatted all its metadata again on each
/// set (about 3% of the server's CPU on single checks, for lines that the level then drops).
struct LineLogHandler: LogHandler {
    enum Format { case text, json }

    let label: String
    let format: Format
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    private static let output = Mutex(FileHandle.standardError)

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        let time = ISO8601DateFormatter().string(from: Date())
        let line: String
        switch format {
        case .json:
            var fields: [(String, JSON)] = [
                ("time", .string(time)), ("level", .string(event.level.rawValue)), ("label", .string(label)),
                ("message", .string(event.message.description)), ("source", .string(event.source)),
            ]
            for key in merged.keys.sorted() { fields.append((key, .string(merged[key]!.description))) }
            line = JSON.object(fields).serialized()
        case .text:
            let pairs = merged.keys.sorted().map { "\($0)=\(merged[$0]!)" }.joined(separator: " ")
            line = "\(time) \(event.level) \(label):\(pairs.isEmpty ? "" : " " + pairs) [\(event.source)] \(event.message)"
        }
        LineLogHandler.output.withLock { $0.write(Data((line + "\n").utf8)) }
    }
}
