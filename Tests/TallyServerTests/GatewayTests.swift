import EnvoyRateLimitAPI
import Foundation
import GRPCCore
import GRPCNIOTransportHTTP2
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import TallyCore
import TallyEngine
import Testing
@testable import TallyServer

/// The gateways' own protocols: ext_authz / auth_request over HTTP, and Envoy's rate limit
/// service over gRPC. Both decide exactly as `/v1/usage/check`.
@Suite("Gateway decisions: ext_authz and auth_request over HTTP, Envoy's rate limit service over gRPC", .timeLimit(.minutes(5)))
struct GatewayTests {
    /// acme: Image Tagging activated (1,000 free calls a month, then post-paid); cover: a Smart
    /// Cover p1 pack (3,000 calls, QPS 2, prepaid only).
    static func harness(_ kind: StoreKind = .sqlite) async throws -> Harness {
        let harness = try await Harness.make(kind)
        let tally = harness.server.tally
        try await tally.perform(OpenAccount(account: "acme", subject: .enterprise, verified: true))
        try await tally.perform(Activate(account: "acme", product: "image-tagging"))
        try await tally.perform(OpenAccount(account: "cover", subject: .enterprise, verified: true))
        try await tally.perform(TopUp(account: "cover", cash: Money(yuan: 6000)))
        try await tally.perform(Buy(account: "cover", item: "taishan.smart-cover/p1", quantity: .count(1), ref: "p1"))
        return harness
    }

    static func calls(_ harness: Harness, _ account: String, _ api: String) -> Int64 {
        harness.server.tally.read { state in
            state.monthly.filter { $0.key.account == account && $0.key.api == api }.values.reduce(0) { $0 + $1.calls }
        }
    }

    static func headers(account: String?, api: String?, id: String?, calls: Int? = nil) -> HTTPFields {
        var headers = HTTPFields()
        if let account { headers[.tallyAccount] = account }
        if let api { headers[.tallyApi] = api }
        if let id { headers[.requestID] = id }
        if let calls { headers[.tallyCalls] = String(calls) }
        return headers
    }

    @Test("authorize allows with the payer, counts a repeated request id once, refuses with the reason and 429 for the gateway", arguments: StoreKind.available)
    func authorize(kind: StoreKind) async throws {
        let harness = try await GatewayTests.harness(kind)
        let gateway = try await harness.key(.gateway)
        try await harness.app.test(.router) { client in
            let first = try await client.call(.get, "/v1/gateway/authorize", key: gateway,
                                              headers: GatewayTests.headers(account: "acme", api: "image-tagging.general", id: "req-1"))
            #expect(first.status == .ok)
            #expect(first.headers[.tallyPayer] == "free")
            #expect(first.headers[.tallyRemaining] == nil, "post-paid takes over after the free quota: nothing bounds the account")
            let retry = try await client.call(.get, "/v1/gateway/authorize", key: gateway,
                                              headers: GatewayTests.headers(account: "acme", api: "image-tagging.general", id: "req-1"))
            #expect(retry.status == .ok)
            #expect(retry["duplicate"] == .bool(true))
            #expect(GatewayTests.calls(harness, "acme", "image-tagging.general") == 1, "a retry with the same request id is counted once")

            // Any method, and any path below the prefix (ext_authz appends the client's path).
            for method in [HTTPRequest.Method.post, .put, .delete, .patch, .head, .options] {
                let answer = try await client.call(method, "/v1/gateway/authorize/images/42?size=large", key: gateway,
                                                   headers: GatewayTests.headers(account: "acme", api: "image-tagging.general", id: "req-\(method)"))
                #expect(answer.status == .ok, "\(method)")
            }
            #expect(GatewayTests.calls(harness, "acme", "image-tagging.general") == 7)

            // The pack bounds a prepaid-only API: what is left is said.
            let cover = try await client.call(.post, "/v1/gateway/authorize", key: gateway,
                                              headers: GatewayTests.headers(account: "cover", api: "taishan.smart-cover", id: "c-1"))
            #expect(cover.headers[.tallyPayer] == "pack")
            #expect(cover.headers[.tallyRemaining] == "2999")
            // QPS 2: the bucket holds two calls at one instant, and the virtual clock stands still.
            let burst = try await client.call(.get, "/v1/gateway/authorize?deny_status=429", key: gateway,
                                              headers: GatewayTests.headers(account: "cover", api: "taishan.smart-cover", id: "c-2"))
            #expect(burst.status == .ok)
            let over = try await client.call(.get, "/v1/gateway/authorize?deny_status=429", key: gateway,
                                             headers: GatewayTests.headers(account: "cover", api: "taishan.smart-cover", id: "c-3"))
            #expect(over.status == .tooManyRequests)
            #expect(over.headers[.tallyRefusal] == "rate_limited")
            #expect(over.headers[.tallyStatus] == "429")
            #expect(GatewayTests.calls(harness, "cover", "taishan.smart-cover") == 2, "a refused check records nothing")
            // The pack used up (calls already served, reported): the next call is refused whole.
            try await harness.server.tally.perform(RecordUsage(account: "cover", id: "served", api: "taishan.smart-cover", calls: 2998, mode: .report))
            try harness.clock.advance(to: harness.clock.now.adding(seconds: 1))
            let exhausted = try await client.call(.get, "/v1/gateway/authorize", key: gateway,
                                                  headers: GatewayTests.headers(account: "cover", api: "taishan.smart-cover", id: "c-4"))
            #expect(exhausted.status == .forbidden)
            #expect(exhausted.headers[.tallyRefusal] == "quota_exhausted")
            #expect(exhausted.headers[.tallyStatus] == "429")
            #expect(exhausted.headers[.tallyRemaining] == "0")
            #expect(exhausted.code == "quota_exhausted")

            // Editions: the legacy API counts each edition used; one it does not offer is refused.
            var camera = GatewayTests.headers(account: "acme", api: "image-tagging.legacy", id: "ed-1")
            camera[.tallyEdition] = "camera"
            let edition = try await client.call(.get, "/v1/gateway/authorize", key: gateway, headers: camera)
            #expect(edition.headers[.tallyPayer] == "postpaid")
            camera[.tallyEdition] = "radio"
            camera[.requestID] = "ed-2"
            #expect(try await client.call(.get, "/v1/gateway/authorize", key: gateway, headers: camera).headers[.tallyRefusal] == "unknown_edition")
            #expect(harness.server.tally.read { $0.monthly.values.reduce(0) { $0 + ($1.byEdition["camera"] ?? 0) } } == 1)

            let unknown = try await client.call(.get, "/v1/gateway/authorize", key: gateway,
                                                headers: GatewayTests.headers(account: "nobody", api: "image-tagging.general", id: "n-1"))
            #expect(unknown.status == .forbidden)
            #expect(unknown.headers[.tallyRefusal] == "account_not_found")
            let reused = try await client.call(.get, "/v1/gateway/authorize", key: gateway,
                                               headers: GatewayTests.headers(account: "acme", api: "image-tagging.general", id: "req-1", calls: 2))
            #expect(reused.headers[.tallyRefusal] == "id_reused")
        }
    }

    @Test("authorize refuses malformed requests and bad keys with problems, recording nothing")
    func authorizeRefusesBadInput() async throws {
        let harness = try await GatewayTests.harness()
        let gateway = try await harness.key(.gateway)
        let customer = try await harness.key(.customer, account: "acme")
        try await harness.app.test(.router) { client in
            let cases: [(HTTPFields, String, String)] = [
                (GatewayTests.headers(account: "acme", api: nil, id: "x"), "invalid_request", "no API"),
                (GatewayTests.headers(account: "acme", api: "image-tagging.general", id: nil), "invalid_request", "no request id"),
                (GatewayTests.headers(account: nil, api: "image-tagging.general", id: "x"), "invalid_request", "no account"),
                (GatewayTests.headers(account: "acme", api: "image-tagging.general", id: "x", calls: 0), "count_out_of_range", "zero calls"),
                (GatewayTests.headers(account: "acme", api: "image-tagging.general", id: "a b"), "invalid_request", "an id with a space"),
            ]
            for (headers, code, what) in cases {
                let answer = try await client.call(.get, "/v1/gateway/authorize", key: gateway, headers: headers)
                #expect(answer.status == .badRequest, "\(what)")
                #expect(answer.code == code, "\(what)")
            }
            let badDeny = try await client.call(.get, "/v1/gateway/authorize?deny_status=500", key: gateway,
                                                headers: GatewayTests.headers(account: "acme", api: "image-tagging.general", id: "d-1"))
            #expect(badDeny.status == .badRequest)
            let valid = GatewayTests.headers(account: "acme", api: "image-tagging.general", id: "k-1")
            #expect(try await client.call(.get, "/v1/gateway/authorize", key: nil, headers: valid).status == .unauthorized)
            #expect(try await client.call(.get, "/v1/gateway/authorize", key: "tk_gw_unknown", headers: valid).status == .unauthorized)
            #expect(try await client.call(.get, "/v1/gateway/authorize", key: customer, headers: valid).status == .forbidden)
            #expect(GatewayTests.calls(harness, "acme", "image-tagging.general") == 0)
        }
    }

    @Test("A gateway key scoped to one account meters that account only, on every usage route")
    func scopedGatewayKey() async throws {
        let harness = try await GatewayTests.harness()
        try await harness.app.test(.router) { client in
            let issued = try await client.call(.post, "/v1/keys", json: #"{"role":"gateway","account":"acme"}"#)
            #expect(issued.status == .created)
            guard case .string(let scoped)? = issued["secret"] else { Issue.record("no secret: \(issued.text)"); return }
            #expect(try await client.call(.post, "/v1/keys", json: #"{"role":"gateway","account":"nobody"}"#).code == "account_not_found")
            #expect(try await client.call(.post, "/v1/keys", json: #"{"role":"operator","account":"acme"}"#).code == "invalid_request")

            let own = try await client.call(.get, "/v1/gateway/authorize", key: scoped,
                                            headers: GatewayTests.headers(account: nil, api: "image-tagging.general", id: "s-1"))
            #expect(own.headers[.tallyPayer] == "free")
            let other = try await client.call(.get, "/v1/gateway/authorize", key: scoped,
                                              headers: GatewayTests.headers(account: "cover", api: "taishan.smart-cover", id: "s-2"))
            #expect(other.headers[.tallyRefusal] == "account_not_found")
            let check = try await client.call(.post, "/v1/usage/check", key: scoped, json: #"{"account":"cover","id":"s-3","api":"taishan.smart-cover"}"#)
            #expect(check.code == "account_not_found")
            let report = try await client.call(.post, "/v1/usage/report", key: scoped,
                                               json: #"{"events":[{"account":"cover","id":"s-4","api":"taishan.smart-cover"},{"account":"acme","id":"s-5","api":"image-tagging.general"}]}"#)
            #expect(report["refused"] == .int(1))
            #expect(report["accepted"] == .int(1))
            // The scoped key may leave the account out, on every usage route.
            let implicit = try await client.call(.post, "/v1/usage/check", key: scoped, json: #"{"id":"s-6","api":"image-tagging.general"}"#)
            #expect(implicit["accepted"] == .bool(true))
            let implicitBatch = try await client.call(.post, "/v1/usage/check-batch", key: scoped, json: #"{"events":[{"id":"s-7","api":"image-tagging.general"}]}"#)
            #expect(implicitBatch["accepted"] == .int(1))
            let implicitReport = try await client.call(.post, "/v1/usage/report", key: scoped, json: #"{"events":[{"id":"s-8","api":"image-tagging.general"}]}"#)
            #expect(implicitReport["accepted"] == .int(1))
            // A key for every account still must name it.
            let unscoped = try await harness.key(.gateway)
            let missing = try await client.call(.post, "/v1/usage/check", key: unscoped, json: #"{"id":"s-9","api":"image-tagging.general"}"#)
            #expect(missing.code == "invalid_request")
            #expect(GatewayTests.calls(harness, "cover", "taishan.smart-cover") == 0)
            #expect(GatewayTests.calls(harness, "acme", "image-tagging.general") == 5)
        }
    }

    /// Runs `body` with a client of `RateLimitService` on a loopback port of its own.
    static func withRateLimitService(_ harness: Harness,
                                     _ body: (Envoy_Service_Ratelimit_V3_RateLimitService.Client<HTTP2ClientTransport.Posix>) async throws -> Void) async throws {
        let transport = HTTP2ServerTransport.Posix(address: .ipv4(host: "127.0.0.1", port: 0), transportSecurity: .plaintext,
                                                   config: RateLimitServer.transport)
        let server = GRPCServer(transport: transport, services: [RateLimitService(server: harness.server)])
        try await withThrowingTaskGroup(of: Void.self) { group in
            group.addTask { try await server.serve() }
            guard let port = try await transport.listeningAddress.ipv4?.port else {
                Issue.record("the server listens on no IPv4 port")
                server.beginGracefulShutdown()
                return
            }
            try await withGRPCClient(transport: try .http2NIOPosix(target: .ipv4(address: "127.0.0.1", port: port), transportSecurity: .plaintext)) { client in
                try await body(Envoy_Service_Ratelimit_V3_RateLimitService.Client(wrapping: client))
            }
            server.beginGracefulShutdown()
            try await group.waitForAll()
        }
    }

    static func request(_ entries: [(String, String)], hits: UInt32 = 0, descriptorHits: UInt64? = nil) -> RateLimitRequest {
        var descriptor = Envoy_Service_Ratelimit_V3_RateLimitDescriptor()
        descriptor.entries = entries.map { key, value in
            var entry = Envoy_Service_Ratelimit_V3_RateLimitDescriptor.Entry()
            entry.key = key
            entry.value = value
            return entry
        }
        if let descriptorHits { descriptor.hitsAddend.value = descriptorHits }
        var request = RateLimitRequest()
        request.domain = "tally"
        request.descriptors = [descriptor]
        request.hitsAddend = hits
        return request
    }

    static func header(_ headers: [Envoy_Service_Ratelimit_V3_HeaderValue], _ key: String) -> String? {
        headers.first { $0.key == key }?.value
    }

    @Test("ShouldRateLimit: OK with the payer for the upstream, OVER_LIMIT with the reason, a retried request id counted once", arguments: StoreKind.available)
    func shouldRateLimit(kind: StoreKind) async throws {
        let harness = try await GatewayTests.harness(kind)
        let gateway = try await harness.key(.gateway)
        let metadata: Metadata = ["authorization": "Bearer \(gateway)"]
        try await GatewayTests.withRateLimitService(harness) { rls in
            let allowed = try await rls.shouldRateLimit(GatewayTests.request([("account", "cover"), ("api", "taishan.smart-cover"), ("request_id", "g-1")]),
                                                        metadata: metadata)
            #expect(allowed.overallCode == .ok)
            #expect(GatewayTests.header(allowed.requestHeadersToAdd, "x-tally-payer") == "pack")
            #expect(allowed.statuses.map(\.limitRemaining) == [2999])
            let retried = try await rls.shouldRateLimit(GatewayTests.request([("account", "cover"), ("api", "taishan.smart-cover"), ("request_id", "g-1")]),
                                                        metadata: metadata)
            #expect(retried.overallCode == .ok)
            #expect(GatewayTests.calls(harness, "cover", "taishan.smart-cover") == 1)

            // hits_addend is the call count: the descriptor's wins over the request's.
            let many = try await rls.shouldRateLimit(GatewayTests.request([("account", "acme"), ("api", "image-tagging.general"), ("request_id", "g-2")],
                                                                          hits: 7, descriptorHits: 40), metadata: metadata)
            #expect(many.overallCode == .ok)
            #expect(GatewayTests.header(many.requestHeadersToAdd, "x-tally-payer") == "free")
            let seven = try await rls.shouldRateLimit(GatewayTests.request([("account", "acme"), ("api", "image-tagging.general"), ("request_id", "g-3")],
                                                                           hits: 7), metadata: metadata)
            #expect(seven.overallCode == .ok)
            #expect(GatewayTests.calls(harness, "acme", "image-tagging.general") == 47)

            // QPS 2 holds 2 calls at once: 3 are refused whole, before settling.
            let over = try await rls.shouldRateLimit(GatewayTests.request([("account", "cover"), ("api", "taishan.smart-cover"), ("request_id", "g-4")],
                                                                          hits: 3), metadata: metadata)
            #expect(over.overallCode == .overLimit)
            #expect(over.statuses.map(\.code) == [.overLimit])
            #expect(GatewayTests.header(over.responseHeadersToAdd, "x-tally-refusal") == "rate_limited")
            try await harness.server.tally.perform(RecordUsage(account: "cover", id: "served", api: "taishan.smart-cover", calls: 2999, mode: .report))
            try harness.clock.advance(to: harness.clock.now.adding(seconds: 1))
            let exhausted = try await rls.shouldRateLimit(GatewayTests.request([("account", "cover"), ("api", "taishan.smart-cover"), ("request_id", "g-4b")]),
                                                          metadata: metadata)
            #expect(exhausted.overallCode == .overLimit)
            #expect(exhausted.statuses.map(\.limitRemaining) == [0])
            #expect(GatewayTests.header(exhausted.responseHeadersToAdd, "x-tally-refusal") == "quota_exhausted")
            let edition = try await rls.shouldRateLimit(GatewayTests.request([("account", "acme"), ("api", "image-tagging.legacy"), ("edition", "album"),
                                                                              ("request_id", "g-ed")]), metadata: metadata)
            #expect(GatewayTests.header(edition.requestHeadersToAdd, "x-tally-payer") == "postpaid")
            let noEdition = try await rls.shouldRateLimit(GatewayTests.request([("account", "acme"), ("api", "image-tagging.legacy"), ("request_id", "g-ed2")]),
                                                          metadata: metadata)
            #expect(GatewayTests.header(noEdition.responseHeadersToAdd, "x-tally-refusal") == "unknown_edition")
            let unknown = try await rls.shouldRateLimit(GatewayTests.request([("account", "nobody"), ("api", "taishan.smart-cover"), ("request_id", "g-5")]),
                                                        metadata: metadata)
            #expect(GatewayTests.header(unknown.responseHeadersToAdd, "x-tally-refusal") == "account_not_found")

            // Errors, not decisions: Envoy's failure_mode_deny refuses the call.
            let malformed: [(RateLimitRequest, Metadata, RPCError.Code)] = [
                (GatewayTests.request([("account", "acme"), ("api", "image-tagging.general")]), metadata, .invalidArgument),
                (GatewayTests.request([("account", "acme"), ("request_id", "g-6")]), metadata, .invalidArgument),
                (GatewayTests.request([("account", "acme"), ("api", "image-tagging.general"), ("request_id", "g-7"), ("colour", "red")]), metadata, .invalidArgument),
                (GatewayTests.request([("account", "acme"), ("api", "image-tagging.general"), ("request_id", "g-8")], descriptorHits: 0), metadata, .invalidArgument),
                (GatewayTests.request([("account", "acme"), ("api", "image-tagging.general"), ("request_id", "g-9")]), [:], .unauthenticated),
                (GatewayTests.request([("account", "acme"), ("api", "image-tagging.general"), ("request_id", "g-9")]),
                 ["authorization": "Bearer tk_gw_unknown"], .unauthenticated),
            ]
            for (request, metadata, code) in malformed {
                await #expect(throws: RPCError.self) {
                    do {
                        _ = try await rls.shouldRateLimit(request, metadata: metadata)
                    } catch let error as RPCError {
                        #expect(error.code == code, "\(error)")
                        throw error
                    }
                }
            }
            // Over the service's request limit: refused by the transport before any decision.
            let huge = GatewayTests.request([("account", "acme"), ("api", "image-tagging.general"),
                                             ("request_id", String(repeating: "x", count: RateLimitServer.requestBytesMax))])
            do {
                _ = try await rls.shouldRateLimit(huge, metadata: metadata)
                Issue.record("a request over the limit was answered")
            } catch let error as RPCError {
                // The transport drops the stream (the client hears it as unavailable or exhausted);
                // without the limit it would reach the descriptor's check and be invalid_argument.
                #expect([.resourceExhausted, .unavailable].contains(error.code), "\(error)")
            }
            var two = GatewayTests.request([("account", "acme"), ("api", "image-tagging.general"), ("request_id", "g-10")])
            two.descriptors.append(two.descriptors[0])
            await #expect(throws: RPCError.self) { _ = try await rls.shouldRateLimit(two, metadata: metadata) }
            #expect(GatewayTests.calls(harness, "acme", "image-tagging.general") == 47, "nothing recorded for a malformed request")
        }
    }
}

@Suite("The README's gateway configurations", .timeLimit(.minutes(5)))
struct GatewayDocumentationTests {
    @Test("Every configuration block in the README's Gateways section is copied from the files scripts/gateway-test runs")
    func readmeBlocksAreTheTestedOnes() throws {
        func text(_ path: String) throws -> String {
            try String(contentsOf: Repository.root.appendingPathComponent(path), encoding: .utf8)
        }
        let readme = try text("README.md")
        let tested = try text("scripts/gateway/envoy.yaml.in") + "\n" + text("scripts/gateway/nginx.conf.in")
        let section = try #require(readme.components(separatedBy: "\n## Gateways\n").dropFirst().first?.components(separatedBy: "\n## ").first)
        let blocks = section.components(separatedBy: "```").enumerated().filter { $0.offset % 2 == 1 }.map { block in
            block.element.drop { $0 != "\n" }.dropFirst()
        }
        #expect(blocks.count >= 6)
        for block in blocks { #expect(tested.contains(block), "not in the tested files:\n\(block)") }
    }
}
