import Testing
import TallyCore
import TallyStore
@testable import TallyPostgres

/// The PostgreSQL store's COPY text: one line a row, tabs between columns, `\N` for null, and the
/// four characters COPY reads specially escaped (ids cannot hold them today; texts that could
/// must not shift a column).
@Suite(.timeLimit(.minutes(5))) struct UsageCopyTests {
    @Test func rowsAreTabSeparatedWithNullsAndEscapes() {
        var settlement = Settlement()
        settlement.free = 2
        settlement.draws = [.init(pack: "pk_1", calls: 2, isFree: true)]
        let plain = UsageRecord(account: "acme", id: "e1", api: "image-tagging.general", edition: nil, calls: 2,
                                at: Instant(microseconds: 5), recorded: Instant(microseconds: 6), settlement: settlement)
        let odd = UsageRecord(account: "a\tb", id: "x\\y\nz\r", api: "image-tagging.general", edition: "std", calls: 2,
                              at: Instant(microseconds: 5), recorded: Instant(microseconds: 6), settlement: settlement)
        var copy = UsageCopy()
        copy.append(plain, seq: 41, transaction: "txn_9")
        copy.append(odd, seq: 42, transaction: nil)
        let lines = String(decoding: copy.text.readableBytesView, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false)
        #expect(copy.rows == 2 && lines.count == 3 && lines[2].isEmpty)
        let draws = UsageRow.encode(draws: settlement.draws)
        #expect(lines[0] == "acme\te1\t41\timage-tagging.general\t\\N\t2\t5\t6\t2\t0\t0\t0\t\\N\t\(draws)\ttxn_9")
        #expect(lines[1] == "a\\tb\tx\\\\y\\nz\\r\t42\timage-tagging.general\tstd\t2\t5\t6\t2\t0\t0\t0\t\\N\t\(draws)\t\\N")
        #expect(lines[1].split(separator: "\t").count == UsageCopy.columns.count)
    }
}
