import Foundation
import TallyCore
import TallyEngine
import TallyPostgres
import TallySQLite
import TallyStore

/// Opens the store a `--db` URL names: `postgres://...` for PostgreSQL; `sqlite:PATH`,
/// `file:PATH` or a path for the embedded SQLite file.
enum Stores {
    /// Opens the store; with `mustExist`, for commands that only read, an SQLite file that is not
    /// there is refused rather than created empty (a mistyped path must never look like a clean
    /// audit).
    static func open(_ url: String, mustExist: Bool = false,
                     connectTimeoutSeconds: Int64 = PostgresStore.connectTimeoutSecondsDefault) async throws -> any TallyStore {
        try refuseUnknownScheme(url)
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") {
            guard (1...600).contains(connectTimeoutSeconds) else {
                throw TallyError(.countOutOfRange, "--connect-timeout is from 1 to 600 seconds, got \(connectTimeoutSeconds)")
            }
            return try await PostgresStore(url: url, connectTimeoutSeconds: connectTimeoutSeconds)
        }
        let path = try existingPath(url, mustExist: mustExist)
        return try SQLiteStore(path: path)
    }

    /// The SQLite file a `--db` URL names, refused when a command that only reads finds none.
    static func existingPath(_ url: String, mustExist: Bool) throws(TallyError) -> String {
        guard let path = sqlitePath(url) else { throw TallyError(.invalidRequest, "--db needs a path") }
        if mustExist, !FileManager.default.fileExists(atPath: path) {
            throw TallyError(.storeNotFound, "there is no SQLite database at \(path); a command that only reads does not create one")
        }
        return path
    }

    /// Refuses a URL whose scheme names no store Tally runs on, before anything is opened.
    static func refuseUnknownScheme(_ url: String) throws(TallyError) {
        guard let colon = url.firstIndex(of: ":") else { return }
        let scheme = url[..<colon]
        guard !scheme.isEmpty, scheme.allSatisfy({ $0.isLetter || $0.isNumber || "+-.".contains($0) }), !scheme.contains("/") else { return }
        guard ["postgres", "postgresql", "sqlite", "file"].contains(scheme.lowercased()) else {
            throw TallyError(.unsupportedStore,
                             "--db takes sqlite:PATH, a path, or postgres://user@host/db; \(scheme): is not a store Tally runs on")
        }
    }

    /// The file an SQLite `--db` URL names (`sqlite:PATH`, `sqlite://PATH`, `file:PATH` or a
    /// path); nil for PostgreSQL or an empty path.
    static func sqlitePath(_ url: String) -> String? {
        if url.hasPrefix("postgres://") || url.hasPrefix("postgresql://") { return nil }
        var path = url
        for prefix in ["sqlite://", "sqlite:", "file:"] where path.hasPrefix(prefix) {
            path = String(path.dropFirst(prefix.count))
            break
        }
        return path.isEmpty ? nil : path
    }

    /// A fresh SQLite file in the temporary directory, for a run that leaves nothing behind.
    static func temporarySQLitePath(_ purpose: String) -> String {
        FileManager.default.temporaryDirectory.appendingPathComponent("tally-\(purpose)-\(UUID().uuidString).sqlite").path
    }
}

/// The real clock, for commands that act now.
extension TallyClock {
    static let system = TallyClock {
        let now = Date().timeIntervalSince1970
        // Whole microseconds since the epoch: time, not money, so a Double is fine here.
        return Instant(microseconds: Int64((now * 1_000_000).rounded()))
    }
}

/// A progress line on a terminal (standard error), silent when it is not one.
struct Progress {
    let label: String
    let total: Int
    let enabled = isatty(STDERR_FILENO) == 1
    var lastPercent = -1

    mutating func update(_ done: Int) {
        guard enabled, total > 0 else { return }
        let percent = done * 100 / total
        guard percent != lastPercent else { return }
        lastPercent = percent
        let width = 30
        let filled = width * done / total
        let bar = String(repeating: "#", count: filled) + String(repeating: ".", count: width - filled)
        FileHandle.standardError.write(Data("\r\(label) [\(bar)] \(percent)% (\(done)/\(total))".utf8))
        if done >= total { FileHandle.standardError.write(Data("\n".utf8)) }
    }
}
