import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import Testing
import TallyCore
import TallyEngine
import Yams
@testable import TallyServer

@Suite("Keys, roles and the OpenAPI contract", .timeLimit(.minutes(5)))
struct AccessTests {
    /// Every route, with every role, without a key, and with another customer's key.
    @Test("The authorisation matrix")
    func matrix() async throws {
        let harness = try await Harness.make()
        try await harness.app.test(.router) { client in
            for id in ["acme", "rival"] { _ = try await client.call(.post, "/v1/accounts", json: #"{"id":"\#(id)","subject":"personal"}"#) }
            let keys: [Role: String] = [
                .operator: Harness.operatorKey,
                .customer: try await harness.key(.customer, account: "acme"),
                .gateway: try await harness.key(.gateway),
            ]
            let revoked = try await harness.key(.operator)
            try await harness.server.tally.perform(RevokeKey(id: harness.server.tally.read { $0.keyIDsByDigest[Keys.digest(revoked)]! }))
            for endpoint in TallyServer.endpoints {
                let own = endpoint.path.replacingOccurrences(of: "{account}", with: "acme").replacingOccurrences(of: "{", with: "x").replacingOccurrences(of: "}", with: "")
                let body = endpoint.method == .post ? "{}" : nil
                let label = "\(endpoint.method) \(endpoint.path)"
                #expect(try await client.call(endpoint.method, own, key: nil, json: body).status == .unauthorized, "\(label) without a key")
                #expect(try await client.call(endpoint.method, own, key: "tk_op_wrong", json: body).status == .unauthorized, "\(label) unknown key")
                #expect(try await client.call(endpoint.method, own, key: revoked, json: body).status == .unauthorized, "\(label) revoked key")
                for (role, key) in keys {
                    let reply = try await client.call(endpoint.method, own, key: key, json: body)
                    if endpoint.roles.contains(role) {
                        #expect(![.unauthorized, .forbidden].contains(reply.status), "\(label) as \(role): \(reply.text)")
                        #expect(reply.code != "account_not_found", "\(label) as \(role) on its own account")
                    } else {
                        #expect(reply.status == .forbidden, "\(label) as \(role)")
                        #expect(reply.code == "forbidden")
                    }
                }
                guard endpoint.path.contains("{account}"), endpoint.roles.contains(.customer) else { continue }
                // Another customer's account answers exactly as an account that does not exist.
                let rival = endpoint.path.replacingOccurrences(of: "{account}", with: "rival").replacingOccurrences(of: "{", with: "x").replacingOccurrences(of: "}", with: "")
                let ghost = endpoint.path.replacingOccurrences(of: "{account}", with: "ghost").replacingOccurrences(of: "{", with: "x").replacingOccurrences(of: "}", with: "")
                let theirs = try await client.call(endpoint.method, rival, key: keys[.customer], json: body)
                let nobodys = try await client.call(endpoint.method, ghost, key: keys[.customer], json: body)
                #expect(theirs.status == .notFound, "\(label) on another customer's account")
                #expect(theirs.text == nobodys.text.replacingOccurrences(of: "ghost", with: "rival"), "\(label)")
            }
        }
    }

    @Test("A customer sees only its own bills, webhook endpoints and usage")
    func scoping() async throws {
        let harness = try await Harness.make()
        try await harness.app.test(.router) { client in
            for id in ["acme", "rival"] {
                _ = try await client.call(.post, "/v1/accounts", json: #"{"id":"\#(id)","subject":"enterprise","verified":true}"#)
                _ = try await client.call(.post, "/v1/accounts/\(id)/activations", json: #"{"product":"image-tagging"}"#)
                _ = try await client.call(.post, "/v1/usage/report", json: #"{"events":[{"account":"\#(id)","id":"u","api":"image-tagging.general","calls":5000}]}"#)
            }
            try harness.clock.advance(to: Instant(rfc3339: "2026-12-01T02:00:00+08:00")!)
            #expect(try await client.call(.post, "/v1/bill-runs", json: #"{"month":"2026-11"}"#).status == .created)
            let rivalBill = try #require(harness.server.tally.read { $0.bills.values.first { $0.account == "rival" }?.id })
            let customer = try await harness.key(.customer, account: "acme")
            let theirs = try await client.call(.get, "/v1/bills/\(rivalBill)", key: customer)
            let nobodys = try await client.call(.get, "/v1/bills/no-such-bill", key: customer)
            #expect(theirs.status == .notFound)
            #expect(theirs.code == nobodys.code)
            #expect(try await client.call(.get, "/v1/bills/\(rivalBill)").status == .ok, "the operator sees every bill")

            let added = try await client.call(.post, "/v1/webhook-endpoints", key: customer, json: #"{"url":"http://127.0.0.1:9/hook"}"#)
            #expect(added["account"] == .string("acme"))
            #expect(try await client.call(.post, "/v1/webhook-endpoints", key: customer, json: #"{"url":"http://127.0.0.1:9/x","account":"rival"}"#).status == .notFound)
            let operatorEndpoint = try await client.call(.post, "/v1/webhook-endpoints", json: #"{"url":"http://127.0.0.1:9/ops"}"#)
            guard case .string(let opsID)? = operatorEndpoint["id"] else { Issue.record("no endpoint id"); return }
            #expect(try await client.call(.delete, "/v1/webhook-endpoints/\(opsID)", key: customer).code == "webhook_endpoint_not_found")
            let listed = try await client.call(.get, "/v1/webhook-endpoints", key: customer)
            guard case .array(let mine)? = listed["data"] else { Issue.record("no list"); return }
            #expect(mine.count == 1)
            #expect(mine.first?["secret"] == nil, "a secret is shown once, when the endpoint is added")
            let gatewayReport = try await client.call(.post, "/v1/usage/report", key: customer,
                                                      json: #"{"events":[{"account":"acme","id":"c","api":"image-tagging.general"}]}"#)
            #expect(gatewayReport.status == .forbidden, "a customer does not record usage")
        }
    }

    @Test("Keys are stored as digests; the secret is shown once")
    func keysHashed() async throws {
        let harness = try await Harness.make()
        try await harness.app.test(.router) { client in
            _ = try await client.call(.post, "/v1/accounts", json: #"{"id":"acme","subject":"personal"}"#)
            let issued = try await client.call(.post, "/v1/keys", json: #"{"role":"customer","account":"acme"}"#)
            guard case .string(let secret)? = issued["secret"] else { Issue.record("no secret: \(issued.text)"); return }
            let facts = try await harness.server.tally.store.loadFacts()
            let stored = facts.compactMap { if case .keyIssued(let key) = $0 { key } else { nil } }
            #expect(stored.contains { $0.digest == Keys.digest(secret) })
            #expect(!String(describing: facts).contains(secret), "the secret itself is never stored")
            let listed = try await client.call(.get, "/v1/keys")
            #expect(!listed.text.contains(secret))
            #expect(try await client.call(.get, "/v1/accounts/acme", key: secret).status == .ok)
            #expect(try await client.call(.post, "/v1/keys", json: #"{"role":"customer"}"#).code == "invalid_request")
            #expect(try await client.call(.post, "/v1/keys", json: #"{"role":"operator","account":"acme"}"#).code == "invalid_request")
        }
    }

    @Test("The OpenAPI document and the router agree: every route, its method and its roles")
    func openAPIAgrees() throws {
        let document = try #require(try Yams.load(yaml: TallyServer.openAPIDocument) as? [String: Any])
        #expect(document["openapi"] as? String == "3.1.0")
        let paths = try #require(document["paths"] as? [String: [String: Any]])
        var documented: [String: String] = [:]
        for (path, operations) in paths {
            for (method, operation) in operations {
                let description = (operation as? [String: Any])?["description"] as? String ?? ""
                documented["\(method.uppercased()) \(path)"] = description
            }
        }
        var routed: [String: String] = [:]
        for endpoint in TallyServer.endpoints {
            let roles = Role.allCases.filter { endpoint.roles.contains($0) }.map(\.rawValue).joined(separator: ", ")
            routed["\(endpoint.method) \(endpoint.path)"] = "Roles: \(roles)."
        }
        #expect(Set(documented.keys) == Set(routed.keys))
        for (route, roles) in routed { #expect(documented[route] == roles, "\(route)") }
    }
}
