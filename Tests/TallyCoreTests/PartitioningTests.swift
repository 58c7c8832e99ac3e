import Testing
@testable import TallyCore

/// Accounts go to partitions by a hash that never changes between processes or releases.
@Suite(.timeLimit(.minutes(5))) struct PartitioningTests {
    /// The values were computed apart from this code (FNV-1a 64 and SplitMix64's finalizer, in
    /// Python): the hash is the same in every process, unlike Swift's seeded `Hasher`.
    @Test func theHashIsStable() throws {
        #expect(Partitioning.hash("acme") == 0x130a_7622_2d44_27ef)
        #expect(Partitioning.hash("late-payer") == 0xf0b7_0d92_1226_cea2)
        #expect(Partitioning.hash("") == 0xf52a_15e9_a9b5_e89b)
        #expect(Partitioning.hash("账户") == 0xa7fa_a9b3_0156_f0e5)
        let partitioning = try Partitioning(count: 64)
        #expect(partitioning.partition(of: "acme") == 47 && partitioning.partition(of: "late-payer") == 34)
    }

    @Test func accountsSpreadOverEveryPartition() throws {
        let partitioning = try Partitioning(count: Partitioning.countDefault)
        var sizes = Array(repeating: 0, count: partitioning.count)
        for n in 0..<64_000 { sizes[partitioning.partition(of: "acct-\(n)")] += 1 }
        // 1,000 a partition on average: every one within a fifth of it.
        #expect(sizes.allSatisfy { (800...1_200).contains($0) }, "\(sizes.min()!) to \(sizes.max()!)")
    }

    @Test func theCountIsBounded() {
        #expect(throws: TallyError.self) { try Partitioning(count: 0) }
        #expect(throws: TallyError.self) { try Partitioning(count: Partitioning.countMax + 1) }
        #expect(throws: Never.self) { try Partitioning(count: 1) }
    }
}
