import Foundation
import TallyCore

enum Shipped {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let text = String(decoding: FileManager.default.contents(atPath: root.appendingPathComponent("catalogs/tally.yaml").path) ?? Data(), as: UTF8.self)
    static let catalog: Catalog = {
        do { return try CatalogFile.parse(text) } catch { fatalError("the shipped catalog does not load: \(error)") }
    }()
    static var version: CatalogVersion { catalog.versions.last! }
}

/// Money from a literal decimal string; a test typo is a programmer error.
func yuan(_ text: String) -> Money {
    guard let money = Money(parsing: text, decimalsMax: 6) else { preconditionFailure("bad literal \(text)") }
    return money
}

func at(_ text: String) -> Instant {
    guard let instant = Instant(rfc3339: text) else { preconditionFailure("bad timestamp \(text)") }
    return instant
}
