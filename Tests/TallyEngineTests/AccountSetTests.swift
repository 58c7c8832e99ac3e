import Testing
import TallyCore
@testable import TallyEngine

/// The journal's sets of accounts (`AccountSet`) answer as sets of the ids would.
@Suite(.timeLimit(.minutes(5))) struct AccountSetTests {
    static func set(_ ids: [String]) -> AccountSet {
        var set = AccountSet()
        for id in ids { set.insert(AccountSet.fingerprint(id)) }
        return set
    }

    @Test(.timeLimit(.minutes(1)))
    func answersAsASetOfTheIdsWould() {
        var generator = SystemRandomNumberGenerator()
        for _ in 0..<200 {
            let left = (0..<Int.random(in: 0...300, using: &generator)).map { _ in "acct\(Int.random(in: 0..<1_000, using: &generator))" }
            let right = (0..<Int.random(in: 0...40, using: &generator)).map { _ in "acct\(Int.random(in: 0..<1_000, using: &generator))" }
            let (a, b) = (Self.set(left), Self.set(right))
            #expect(a.count == Set(left).count)
            #expect(a.isDisjoint(with: b) == Set(left).isDisjoint(with: Set(right)))
            #expect(b.isDisjoint(with: a) == Set(left).isDisjoint(with: Set(right)))
            var union = a
            union.formUnion(b)
            #expect(union.count == Set(left).union(right).count)
            for id in left + right { #expect(union.contains(AccountSet.fingerprint(id))) }
            #expect(!union.contains(AccountSet.fingerprint("acct1000")))
        }
    }

    @Test(.timeLimit(.minutes(1)))
    func theAccountsOfFactsAreNilWhenOneIsShared() {
        let verified = Fact.accountVerified(account: "a1", subject: .enterprise, at: Instant(microseconds: 0))
        let shared = Fact.keyRevoked(id: "k1", at: Instant(microseconds: 0))
        #expect(AccountSet.of([verified])?.contains(AccountSet.fingerprint("a1")) == true)
        #expect(AccountSet.of([verified, shared]) == nil)
        #expect(AccountSet.of([])?.isEmpty == true)
    }
}
