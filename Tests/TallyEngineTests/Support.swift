import Foundation
import TallyCore
import TallyEngine
import TallyStore

/// Paths inside the repository, found from this file's location so tests need nothing beside it.
enum Repository {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
    static let scenarios = root.appendingPathComponent("Tests/TallyEngineTests/Scenarios")

    static func read(_ url: URL) -> String { String(decoding: FileManager.default.contents(atPath: url.path) ?? Data(), as: UTF8.self) }

    static let catalog: Catalog = {
        do { return try CatalogFile.parse(read(root.appendingPathComponent("catalogs/tally.yaml"))) } catch {
            fatalError("the shipped catalog does not load: \(error)")
        }
    }()
}

/// Runs a scenario's YAML text on a fresh in-memory engine.
func simulate(_ yaml: String) async throws -> JSON {
    try await Simulator(catalog: Repository.catalog).run(Scenario.parse(yaml))
}

/// The matching rules of the scenarios' README: expected keys must be present with equal values
/// (objects key by key), `steps` matched by `index`, every other list by length then element by
/// element, a top-level `note` ignored. Returns the mismatches as paths.
func mismatches(expected: JSON, actual: JSON, path: String = "") -> [String] {
    switch (expected, actual) {
    case (.object(let pairs), .object):
        var found: [String] = []
        for (key, value) in pairs where !(path.isEmpty && key == "note") {
            let childPath = path.isEmpty ? key : "\(path).\(key)"
            guard let other = actual[key] else { found.append("\(childPath): missing"); continue }
            if path.isEmpty, key == "steps", case .array(let wanted) = value, case .array(let got) = other {
                for step in wanted {
                    guard case .int(let index)? = step["index"] else { found.append("steps: an expected step has no index"); continue }
                    guard let match = got.first(where: { $0["index"] == .int(index) }) else {
                        found.append("steps[\(index)]: missing"); continue
                    }
                    found += mismatches(expected: step, actual: match, path: "steps[\(index)]")
                }
                continue
            }
            found += mismatches(expected: value, actual: other, path: childPath)
        }
        return found
    case (.array(let wanted), .array(let got)):
        guard wanted.count == got.count else { return ["\(path): \(got.count) elements, expected \(wanted.count)"] }
        return zip(wanted, got).enumerated().flatMap { mismatches(expected: $0.element.0, actual: $0.element.1, path: "\(path)[\($0.offset)]") }
    default:
        return expected == actual ? [] : ["\(path): \(actual.serialized()) , expected \(expected.serialized())"]
    }
}
