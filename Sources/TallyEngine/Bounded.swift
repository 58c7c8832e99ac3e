/// Runs `work` on each item, at most `limit` at a time, and hands each result to `finished` as it
/// comes (in the order the work finishes): how a bill run keeps a few chunks under way, so that
/// the next is settled and encoded while the last is written, without starting them all at once.
/// The first error stops it; work still under way is cancelled.
public func forEach<Item: Sendable, Result: Sendable>(
    _ items: [Item], atMost limit: Int, _ work: @escaping @Sendable (Item) async throws -> Result,
    finished: (Result) throws -> Void = { _ in }
) async throws {
    precondition(limit > 0, "at least one at a time")
    try await withThrowingTaskGroup(of: Result.self) { group in
        var next = items.startIndex
        var running = 0
        while next < items.endIndex || running > 0 {
            while running < limit, next < items.endIndex {
                let item = items[next]
                group.addTask { try await work(item) }
                next += 1
                running += 1
            }
            guard let result = try await group.next() else { break }
            running -= 1
            try finished(result)
        }
    }
}

extension Array {
    /// The array cut into consecutive pieces of at most `size` elements, in order: the steps of a
    /// bill run, a sweep's slices, a report's slices.
    func chunks(of size: Int) -> [[Element]] {
        precondition(size > 0, "a chunk holds at least one element")
        return stride(from: 0, to: count, by: size).map { Array(self[$0..<Swift.min($0 + size, count)]) }
    }
}
