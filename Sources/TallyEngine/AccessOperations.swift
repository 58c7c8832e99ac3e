import TallyCore

/// Issues an API key. The caller hashes the secret; the engine keeps only the digest.
public struct IssueKey: Operation {
    public var placement: Placement { .shared(account: account) }
    public let role: Role
    public let account: String?
    public let digest: String

    public init(role: Role, account: String?, digest: String) {
        self.role = role
        self.account = account
        self.digest = digest
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> APIKey {
        switch (role, account) {
        case (.customer, nil): throw TallyError(.invalidRequest, "a customer key names the account it is for")
        case (.customer, let account?), (.gateway, let account?): _ = try state.tally.account(account)
        case (.operator, .some): throw TallyError(.invalidRequest, "an operator key is not scoped to an account")
        case (_, nil): break
        }
        guard digest.utf8.count == 64, digest.utf8.allSatisfy({ ($0 >= 48 && $0 <= 57) || ($0 >= 97 && $0 <= 102) }) else {
            throw TallyError(.invalidRequest, "a key digest is 64 lowercase hex digits (SHA-256)")
        }
        guard state.tally.keyIDsByDigest[digest] == nil else { throw TallyError(.invalidRequest, "that key exists already") }
        let key = APIKey(id: env.ids.next("key"), role: role, account: account, digest: digest, created: env.now)
        state.emit(.keyIssued(key: key))
        return key
    }
}

/// Revokes an API key: from then on it authenticates nothing.
public struct RevokeKey: Operation {
    public var placement: Placement { .shared(account: nil) }
    public let id: String

    public init(id: String) { self.id = id }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) {
        guard let key = state.tally.keys[id] else { throw TallyError(.keyNotFound, "there is no key \(id)") }
        guard key.revoked == nil else { return }
        state.emit(.keyRevoked(id: id, at: env.now))
    }
}

/// Adds a webhook endpoint; it receives the notices made from now on.
public struct AddWebhookEndpoint: Operation {
    public var placement: Placement { .shared(account: account) }
    public static let endpointsPerAccountMax = 16
    public static let urlLengthMax = 2_048

    public let url: String
    public let secret: String
    public let account: String?

    public init(url: String, secret: String, account: String?) {
        self.url = url
        self.secret = secret
        self.account = account
    }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> WebhookEndpoint {
        if let account { _ = try state.tally.account(account) }
        guard url.utf8.count <= AddWebhookEndpoint.urlLengthMax, url.hasPrefix("http://") || url.hasPrefix("https://"),
              url.utf8.count > 8, !url.contains(where: { $0.isWhitespace }) else {
            throw TallyError(.invalidRequest, "a webhook url is an http:// or https:// address of at most \(AddWebhookEndpoint.urlLengthMax) characters")
        }
        let owned = state.tally.webhookEndpoints.values.filter { $0.account == account }.count
        guard owned < AddWebhookEndpoint.endpointsPerAccountMax else {
            throw TallyError(.limitExceeded, "at most \(AddWebhookEndpoint.endpointsPerAccountMax) webhook endpoints per owner")
        }
        let endpoint = WebhookEndpoint(id: env.ids.next("whe"), url: url, secret: secret, account: account, created: env.now,
                                       firstNotice: 0)
        state.emit(.webhookEndpointAdded(endpoint: endpoint))
        return endpoint
    }
}

/// Removes a webhook endpoint: nothing more is delivered to it.
public struct RemoveWebhookEndpoint: Operation {
    public var placement: Placement { .shared(account: nil) }
    public let id: String

    public init(id: String) { self.id = id }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) {
        guard state.tally.webhookEndpoints[id] != nil else { throw TallyError(.webhookEndpointNotFound, "there is no webhook endpoint \(id)") }
        state.emit(.webhookEndpointRemoved(id: id, at: env.now))
    }
}

/// Records that notices reached an endpoint (a 2xx answer), which ends their retries.
public struct RecordDeliveries: Operation {
    public var placement: Placement { .shared(account: nil) }
    public let deliveries: [DeliveryKey]

    public init(deliveries: [DeliveryKey]) { self.deliveries = deliveries }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) {
        for delivery in deliveries where !state.tally.deliveries.contains(delivery) {
            state.emit(.webhookDelivered(delivery: delivery, at: env.now))
        }
    }
}
