import NIOPosix

/// Work that grows with a request's size, done on NIO's blocking-work threads instead of the
/// cooperative pool's (one thread a core): parsing a report's JSON body, reading its events and
/// writing its answer take milliseconds for 10,000 events, and on the pool they would keep a
/// gateway's single check off a thread for as long.
public enum OffPool {
    /// Bodies at least this large are parsed off the pool (a check's body is about 100 bytes; a
    /// report of 512 events about 40 KiB).
    static let bodyBytesMin = 64 * 1024
    /// Batches of at least this many events are read and answered off the pool.
    static let batchEventsMin = 512

    /// Runs `work` on a blocking-work thread and returns its result.
    public static func run<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
        try await NIOThreadPool.singleton.runIfActive(work)
    }
}
