import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Logging
import NIOCore
import TallyCore
import TallyEngine
import TallyPostgres
import TallySQLite
import TallyStore
import Testing
@testable import TallyServer

/// Paths inside the repository, found from this file's location.
enum Repository {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    static let catalog: Catalog = {
        let text = String(decoding: FileManager.default.contents(atPath: root.appendingPathComponent("catalogs/tally.yaml").path) ?? Data(), as: UTF8.self)
        do { return try CatalogFile.parse(text) } catch { fatalError("the shipped catalog does not load: \(error)") }
    }()
}

/// The stores the route tests run on: SQLite always, PostgreSQL when the test command has started
/// its throw-away cluster (TALLY_TEST_POSTGRES_URL).
enum StoreKind: String, CaseIterable, Sendable, CustomTestStringConvertible {
    case sqlite, postgres

    var testDescription: String { rawValue }

    static var available: [StoreKind] { ProcessInfo.processInfo.environment["TALLY_TEST_POSTGRES_URL"] == nil ? [.sqlite] : allCases }

    func make() async throws -> any TallyStore {
        switch self {
        case .sqlite:
            return try SQLiteStore(path: FileManager.default.temporaryDirectory.appendingPathComponent("tally-server-\(UUID().uuidString).sqlite").path)
        case .postgres:
            let base = ProcessInfo.processInfo.environment["TALLY_TEST_POSTGRES_URL"]!
            let url = try await PostgresStore.createDatabase(near: base, name: "s_\(UUID().uuidString.prefix(8).lowercased())")
            // The suites open many stores at once on two cores: their migrations then took more
            // than the default 5 s now and then.
            return try await PostgresStore(url: url, connectTimeoutSeconds: 30)
        }
    }
}

/// A server on a store with a virtual clock, an operator key, and helpers to call it.
struct Harness {
    static let operatorKey = "tk_op_harness"
    let server: ServerEnvironment
    let clock: VirtualClock

    static func make(_ kind: StoreKind = .sqlite, start: String = "2026-11-02T09:00:00+08:00") async throws -> Harness {
        try await make(store: try await kind.make(), clock: VirtualClock(start: Instant(rfc3339: start)!))
    }

    /// A server on `store`: a second harness on the same store is the server after a restart.
    static func make(store: any TallyStore, clock: VirtualClock) async throws -> Harness {
        var configuration = ServerConfiguration()
        configuration.backgroundServices = false
        let server = try await TallyServer.start(store: store, catalog: Repository.catalog, configuration: configuration,
                                                 clock: clock.clock, logger: Logger(label: "test"))
        _ = try await Keys.bootstrapOperator(server.tally, secret: operatorKey)
        return Harness(server: server, clock: clock)
    }

    var app: some ApplicationProtocol { TallyServer.application(server, logger: Logger(label: "test")) }

    /// Issues a key of `role` directly through the engine and returns its secret.
    func key(_ role: Role, account: String? = nil) async throws -> String {
        let secret = Keys.secret(role: role)
        try await server.tally.perform(IssueKey(role: role, account: account, digest: Keys.digest(secret)))
        return secret
    }
}

/// A parsed answer.
struct Reply {
    let status: HTTPResponse.Status
    let headers: HTTPFields
    let text: String

    var json: JSON { (try? JSON.parse(text)) ?? .null }
    var code: String? { if case .string(let code)? = json["code"] { return code } else { return nil } }
    subscript(key: String) -> JSON? { json[key] }
}

extension TestClientProtocol {
    /// Calls the API with a key and an optional JSON body.
    func call(_ method: HTTPRequest.Method, _ path: String, key: String? = Harness.operatorKey, json body: String? = nil,
              headers extra: HTTPFields = [:]) async throws -> Reply {
        var headers = extra
        if let key { headers[.authorization] = "Bearer \(key)" }
        if body != nil { headers[.contentType] = "application/json" }
        return try await execute(uri: path, method: method, headers: headers, body: body.map { ByteBuffer(string: $0) }) { response in
            Reply(status: response.status, headers: response.headers, text: String(buffer: response.body))
        }
    }
}
