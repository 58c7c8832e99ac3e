import Crypto
import TallyCore
import TallyEngine

/// Who is calling: the key's id and role, and for a customer key the one account it may touch.
public struct Principal: Sendable, Hashable {
    public let keyID: String
    public let role: Role
    public let account: String?

    /// Whether this caller may see or act on `account`. Operators may touch every account; a
    /// customer only its own; a gateway any account's usage (the routes it may call say which), or
    /// only its account's when the key is scoped to one (a gateway in front of one tenant).
    func mayTouch(_ account: String) -> Bool {
        self.account.map { $0 == account } ?? (role != .customer)
    }
}

/// API keys: made here, shown once, kept as SHA-256 digests.
public enum Keys {
    /// A new secret: a role prefix and 160 random bits in hex, so that a leaked key says what it
    /// is (as Stripe's `sk_live_` does) and cannot be guessed.
    public static func secret(role: Role) -> String {
        var generator = SystemRandomNumberGenerator()
        let prefix = switch role {
        case .operator: "tk_op_"
        case .customer: "tk_cu_"
        case .gateway: "tk_gw_"
        }
        return prefix + hex((0..<20).map { _ in UInt8.random(in: 0...255, using: &generator) })
    }

    /// The hex SHA-256 digest under which a secret is kept.
    public static func digest(_ secret: String) -> String {
        hex(SHA256.hash(data: Array(secret.utf8)))
    }

    /// Lowercase hex: runs on every request (the key's digest), so it writes bytes, not strings.
    static func hex(_ bytes: some Sequence<UInt8>) -> String {
        var out: [UInt8] = []
        out.reserveCapacity(64)
        for byte in bytes {
            out.append(Hex.digit(byte >> 4))
            out.append(Hex.digit(byte))
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// The longest secret accepted in an Authorization header; longer ones are not hashed.
    static let secretLengthMax = 128

    /// Finds the principal for an `Authorization: Bearer <key>` header value.
    static func authenticate(_ header: String?, tally: Tally) async throws(Problem) -> Principal {
        try await authenticate(header, tally: tally, account: nil).principal
    }

    /// Finds the principal (in the shared part, without waiting for any partition), and whether
    /// `account` exists (after what is queued at its partition's gate). The caller
    /// decides what the account's absence means (after the role check, so refusals keep their
    /// order: 401, then 403, then 404).
    static func authenticate(_ header: String?, tally: Tally, account: String?) async throws(Problem)
        -> (principal: Principal, accountExists: Bool) {
        guard let header, header.hasPrefix("Bearer ") else {
            throw Problem(.unauthorized, TallyError(.unauthenticated, "send an API key as Authorization: Bearer <key>"))
        }
        let secret = String(header.dropFirst("Bearer ".count))
        let unknown = Problem(.unauthorized, TallyError(.unauthenticated, "the API key is unknown or revoked"))
        guard !secret.isEmpty, secret.utf8.count <= secretLengthMax else { throw unknown }
        let digest = digest(secret)
        let key = tally.readShared { shared in shared.keyIDsByDigest[digest].flatMap { shared.keys[$0] } }
        guard let key, key.revoked == nil else { throw unknown }
        var accountExists = false
        if let account { accountExists = await tally.reading(account: account) { $0.accounts[account] != nil } }
        return (Principal(keyID: key.id, role: key.role, account: key.account), accountExists)
    }

    /// Makes sure an operator key exists: registers `secret` if given (and new), or, when the store
    /// holds no operator key at all, issues one and returns its secret so the operator can be told.
    public static func bootstrapOperator(_ tally: Tally, secret: String?) async throws -> String? {
        if let secret {
            let digest = digest(secret)
            if tally.readShared({ $0.keyIDsByDigest[digest] }) == nil {
                try await tally.perform(IssueKey(role: .operator, account: nil, digest: digest))
            }
            return nil
        }
        guard !tally.readShared({ $0.keys.values.contains { $0.role == .operator && $0.revoked == nil } }) else { return nil }
        let fresh = Keys.secret(role: .operator)
        try await tally.perform(IssueKey(role: .operator, account: nil, digest: digest(fresh)))
        return fresh
    }
}
