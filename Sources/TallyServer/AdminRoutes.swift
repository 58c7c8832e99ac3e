import Hummingbird
import TallyCore
import TallyEngine

/// The catalog and its versions (SPEC 2.4), quotes, API keys and webhook endpoints (SPEC 6, 7).
enum AdminRoutes {
    static let all: [Endpoint] = [
        Endpoint(.get, "/v1/catalog", .everyone) { call in
            let now = call.now
            return .json(call.tally.readShared { Views.catalog($0.catalog.version(at: now), zone: $0.zone) })
        },
        Endpoint(.get, "/v1/catalog/versions", .everyone) { call in
            .json(call.tally.readShared { state in
                .object([("data", .array(state.catalog.versions.map { version in
                    var fields: [(String, JSON)] = [("effective", .string(version.effective.rfc3339(in: state.zone)))]
                    if !version.note.isEmpty { fields.append(("note", .string(version.note))) }
                    if let published = state.publications[version.effective] {
                        fields.append(("published", .string(published.rfc3339(in: state.zone))))
                    }
                    return .object(fields)
                }))])
            })
        },
        Endpoint(.post, "/v1/catalog/versions", .operators) { call in
            guard let effective = try call.fields.instant("effective") else { throw TallyError(.invalidRequest, "effective is required") }
            let changes = try call.fields.catalogChanges("changes", lengthMax: 1_000_000)
            let force = try call.fields.bool("force", default: false)
            try call.fields.end()
            let notified = try await call.tally.perform(PublishCatalog(effective: effective, changes: changes, force: force))
            let zone = call.tally.readShared { $0.zone }
            return .json(.object([("effective", .string(effective.rfc3339(in: zone))), ("notified", .array(notified.map { .string($0) }))]),
                         status: .created)
        },
        Endpoint(.get, "/v1/quote", .holders) { call in
            guard let api = call.query("api"), api.utf8.count <= Limits.apiIDLengthMax else { throw TallyError(.invalidRequest, "api is required") }
            guard let calls = try call.integer("calls") else { throw TallyError(.invalidRequest, "calls is required") }
            let months = try call.integer("months") ?? 1
            let qps = try call.integer("qps")
            let now = call.now
            let offer = try call.tally.readShared { state throws(TallyError) in try QuoteView.resolve(api, in: state.catalog.version(at: now)) }
            return .json(QuoteView.json(try Advisor.quote(api: offer, calls: calls, months: months, qps: qps)))
        },
        Endpoint(.post, "/v1/keys", .operators) { call in
            guard let role = Role(rawValue: try call.fields.string("role", lengthMax: 16)) else {
                throw TallyError(.invalidRequest, "role is operator, customer or gateway")
            }
            let account = try call.fields.optionalString("account", lengthMax: Limits.identifierLengthMax)
            try call.fields.end()
            let secret = Keys.secret(role: role)
            let key = try await call.tally.perform(IssueKey(role: role, account: account, digest: Keys.digest(secret)))
            return .json(Views.key(key, zone: call.tally.readShared { $0.zone }, secret: secret), status: .created)
        },
        Endpoint(.get, "/v1/keys", .operators) { call in
            .json(try call.tally.readShared { state in
                try Pagination.json(state.keys.values.sorted { $0.id < $1.id }, id: \.id, call: call) { Views.key($0, zone: state.zone) }
            })
        },
        Endpoint(.delete, "/v1/keys/{key}", .operators) { call in
            // Revoking the key one calls with would lock the caller out mid-request; another operator key must do it.
            guard call.parameter("key") != call.principal.keyID else {
                throw TallyError(.invalidRequest, "a key cannot revoke itself; revoke it with another operator key")
            }
            try await call.tally.perform(RevokeKey(id: call.parameter("key")))
            return .json(call.tally.readShared { Views.key($0.keys[call.parameter("key")]!, zone: $0.zone) })
        },
        Endpoint(.post, "/v1/webhook-endpoints", .holders) { call in
            let url = try call.fields.string("url", lengthMax: AddWebhookEndpoint.urlLengthMax)
            var account = try call.fields.optionalString("account", lengthMax: Limits.identifierLengthMax)
            try call.fields.end()
            if call.principal.role == .customer {
                if let account, account != call.principal.account { throw TallyError(.accountNotFound, "there is no account \(account)") }
                account = call.principal.account
            }
            let endpoint = try await call.tally.perform(AddWebhookEndpoint(url: url, secret: Keys.secret(role: .operator).replacingPrefix("whsec_"), account: account))
            return .json(Views.endpoint(endpoint, zone: call.tally.readShared { $0.zone }, withSecret: true), status: .created)
        },
        Endpoint(.get, "/v1/webhook-endpoints", .holders) { call in
            .json(try call.tally.readShared { state in
                let endpoints = state.webhookEndpoints.values.filter { call.principal.role == .operator || $0.account == call.principal.account }
                    .sorted { $0.id < $1.id }
                return try Pagination.json(endpoints, id: \.id, call: call) { Views.endpoint($0, zone: state.zone, withSecret: false) }
            })
        },
        Endpoint(.delete, "/v1/webhook-endpoints/{endpoint}", .holders) { call in
            let id = call.parameter("endpoint")
            let owned = call.tally.readShared { $0.webhookEndpoints[id].map { call.principal.role == .operator || $0.account == call.principal.account } }
            guard owned == true else { throw TallyError(.webhookEndpointNotFound, "there is no webhook endpoint \(id)") }
            try await call.tally.perform(RemoveWebhookEndpoint(id: id))
            return .json(.object([("id", .string(id)), ("deleted", .bool(true))]))
        },
    ]
}

extension String {
    /// This secret with its role prefix (`tk_op_`) swapped for `prefix`.
    func replacingPrefix(_ prefix: String) -> String { prefix + dropFirst(6) }
}
