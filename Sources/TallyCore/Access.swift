/// Who may call Tally's API (SPEC 6): operators run the business, a customer sees and acts on its
/// own account only, and a gateway only checks and records usage.
public enum Role: String, Hashable, Sendable, Codable, CaseIterable {
    case `operator`
    case customer
    case gateway
}

/// An API key as Tally keeps it: never the secret itself, only its SHA-256 digest (hex), so that a
/// stolen database yields no usable key.
public struct APIKey: Hashable, Sendable, Codable {
    public let id: String
    public let role: Role
    /// The one account a customer key is scoped to, or a gateway key that meters one account
    /// only; nil for operator keys and for gateway keys that meter every account.
    public let account: String?
    public let digest: String
    public let created: Instant
    public var revoked: Instant?

    public init(id: String, role: Role, account: String?, digest: String, created: Instant) {
        precondition(role == .customer ? account != nil : role == .gateway || account == nil,
                     "a customer key names its account, a gateway key may, an operator key does not")
        self.id = id
        self.role = role
        self.account = account
        self.digest = digest
        self.created = created
    }
}

/// Where webhooks go (SPEC 7). An operator endpoint (no account) receives every notice; a
/// customer's receives its own account's. Each receives only notices made at or after the
/// instant it was added (`created`).
public struct WebhookEndpoint: Hashable, Sendable, Codable {
    public let id: String
    public let url: String
    /// The HMAC-SHA256 signing secret, shown to whoever added the endpoint.
    public let secret: String
    public let account: String?
    public let created: Instant
    /// Kept for facts written before partitions, when it was the index in the one list of notices
    /// of the first notice this endpoint received; notices are now a list a partition, and an
    /// endpoint receives those made at or after `created`. New endpoints write 0.
    public let firstNotice: Int

    public init(id: String, url: String, secret: String, account: String?, created: Instant, firstNotice: Int) {
        self.id = id
        self.url = url
        self.secret = secret
        self.account = account
        self.created = created
        self.firstNotice = firstNotice
    }

    /// Whether this endpoint is owed `notice`.
    public func receives(_ notice: Notice) -> Bool { account == nil || notice.account == account }
}

/// One notice delivered to one endpoint: the delivery record that ends its retries.
public struct DeliveryKey: Hashable, Sendable, Codable {
    public let notice: String
    public let endpoint: String

    public init(notice: String, endpoint: String) {
        self.notice = notice
        self.endpoint = endpoint
    }
}
