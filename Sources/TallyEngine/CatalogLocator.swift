import Foundation
import TallyCore

/// Finds and reads the catalog file: the path given, else `$TALLY_CATALOG`, else
/// `catalogs/tally.yaml` in the working directory or above the executable.
public enum CatalogLocator {
    public static let relativePath = "catalogs/tally.yaml"
    /// The largest catalog file read: a catalog is prose-sized, not data-sized.
    public static let fileBytesMax = 8 * 1024 * 1024

    public static func load(_ path: String?) throws -> Catalog {
        let resolved = try locate(path)
        guard let data = FileManager.default.contents(atPath: resolved) else {
            throw TallyError(.invalidCatalog, "cannot read the catalog file \(resolved)")
        }
        guard data.count <= fileBytesMax else { throw TallyError(.invalidCatalog, "\(resolved) is larger than \(fileBytesMax) bytes") }
        do {
            return try CatalogFile.parse(String(decoding: data, as: UTF8.self))
        } catch {
            throw TallyError(.invalidCatalog, "\(resolved): \(error.message)")
        }
    }

    static func locate(_ path: String?) throws -> String {
        if let path { return path }
        if let env = ProcessInfo.processInfo.environment["TALLY_CATALOG"], !env.isEmpty { return env }
        var candidates = [FileManager.default.currentDirectoryPath]
        var directory = URL(fileURLWithPath: CommandLine.arguments.first ?? ".").resolvingSymlinksInPath().deletingLastPathComponent()
        for _ in 0..<6 {
            candidates.append(directory.path)
            directory.deleteLastPathComponent()
        }
        for candidate in candidates {
            let file = candidate + "/" + relativePath
            if FileManager.default.fileExists(atPath: file) { return file }
        }
        throw TallyError(.invalidCatalog, "no catalog found: pass --catalog PATH or set TALLY_CATALOG")
    }
}
