import TallyCore

/// The accounts a journal entry's facts belong to, kept as 64-bit fingerprints of their ids in an
/// open-addressed table. The journal's writer asks only whether two entries may share an account,
/// many times a write and under its lock; a `Set<String>` hashed each id with a seeded SipHash at
/// every insert and union (about a tenth of a loaded server's CPU, on the writer's threads). Two
/// ids with one fingerprint count as one account, which only keeps two entries in their order:
/// always safe.
struct AccountSet: Sendable {
    /// Fingerprints, 0 for an empty slot; a power of two long, at most half full.
    private var slots: [UInt64] = []
    private(set) var count = 0

    static let empty = AccountSet()

    var isEmpty: Bool { count == 0 }

    /// The accounts of `facts`; nil when one of them is not one account's alone (it must keep its
    /// place among every other fact).
    static func of(_ facts: [Fact]) -> AccountSet? {
        var set = AccountSet()
        for fact in facts {
            guard let id = FactRoute.account(of: fact) else { return nil }
            set.insert(fingerprint(id))
        }
        return set
    }

    /// FNV-1a over the id's UTF-8 bytes, then MurmurHash3's finalizer so that every bit of the
    /// result depends on every byte (the table indexes by the low bits); never 0.
    static func fingerprint(_ id: String) -> UInt64 {
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in id.utf8 { hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3 }
        hash ^= hash >> 33
        hash &*= 0xff51_afd7_ed55_8ccd
        hash ^= hash >> 33
        hash &*= 0xc4ce_b93e_53ca_4f83
        hash ^= hash >> 33
        return hash == 0 ? 1 : hash
    }

    mutating func insert(_ fingerprint: UInt64) {
        if (count + 1) * 2 > slots.count { grow() }
        let index = slot(of: fingerprint)
        if slots[index] == fingerprint { return }
        slots[index] = fingerprint
        count += 1
    }

    func contains(_ fingerprint: UInt64) -> Bool {
        count > 0 && slots[slot(of: fingerprint)] == fingerprint
    }

    /// The slot that holds `fingerprint`, or the empty one where it would go (linear probing;
    /// the table is never full).
    private func slot(of fingerprint: UInt64) -> Int {
        let mask = slots.count - 1
        var index = Int(truncatingIfNeeded: fingerprint) & mask
        while slots[index] != 0 && slots[index] != fingerprint { index = (index + 1) & mask }
        return index
    }

    /// Whether no account is in both: the smaller set is looked up in the larger.
    func isDisjoint(with other: AccountSet) -> Bool {
        let (small, large) = count <= other.count ? (self, other) : (other, self)
        if small.count == 0 { return true }
        for fingerprint in small.slots where fingerprint != 0 && large.contains(fingerprint) { return false }
        return true
    }

    mutating func formUnion(_ other: AccountSet) {
        if other.count == 0 { return }
        if count == 0 {
            self = other
            return
        }
        for fingerprint in other.slots where fingerprint != 0 { insert(fingerprint) }
    }

    private mutating func grow() {
        let old = slots
        slots = Array(repeating: 0, count: max(16, old.count * 2))
        count = 0
        for fingerprint in old where fingerprint != 0 { insert(fingerprint) }
    }
}
