#if os(Linux)
import Glibc
import NIOCore
import NIOPosix
import Testing
@testable import TallyServer

@Suite("Thread priorities", .timeLimit(.minutes(5)))
struct PriorityTests {
    @Test("NIO's event loop threads run at the raised nice value (at 0 where the process may not lower it)")
    func eventLoopsAreRaised() async throws {
        let group = MultiThreadedEventLoopGroup(numberOfThreads: 2)
        TallyServer.raiseEventLoops(group)
        var values: [Int32] = []
        for loop in group.makeIterator() {
            values.append(try await loop.submit { getpriority(__priority_which_t(PRIO_PROCESS.rawValue), 0) }.get())
        }
        try await group.shutdownGracefully()
        #expect(values.count == 2)
        for value in values {
            #expect(value == TallyServer.eventLoopNice || (geteuid() != 0 && value == 0), "an event loop thread at \(value)")
        }
    }
}
#endif
