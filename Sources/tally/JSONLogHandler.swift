import Foundation
import Logging
import Synchronization
import TallyEngine

/// One JSON object a line on standard error: `time`, `level`, `label`, `message`, `source` and
/// the metadata's keys (Hummingbird's `hb.request.id` among them), for log collectors that read
/// structured lines. Chosen with `TALLY_LOG_FORMAT=json`.
struct JSONLogHandler: LogHandler {
    let label: String
    var logLevel: Logger.Level = .info
    var metadata: Logger.Metadata = [:]

    private static let output = Mutex(FileHandle.standardError)

    subscript(metadataKey key: String) -> Logger.Metadata.Value? {
        get { metadata[key] }
        set { metadata[key] = newValue }
    }

    func log(event: LogEvent) {
        var fields: [(String, JSON)] = [
            ("time", .string(ISO8601DateFormatter().string(from: Date()))),
            ("level", .string(event.level.rawValue)),
            ("label", .string(label)),
            ("message", .string(event.message.description)),
            ("source", .string(event.source)),
        ]
        let merged = metadata.merging(event.metadata ?? [:]) { _, new in new }
        for key in merged.keys.sorted() { fields.append((key, .string(merged[key]!.description))) }
        let line = JSON.object(fields).serialized() + "\n"
        JSONLogHandler.output.withLock { $0.write(Data(line.utf8)) }
    }
}
