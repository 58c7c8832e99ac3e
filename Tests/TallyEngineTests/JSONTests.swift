import Testing
import TallyCore
import TallyEngine

@Suite struct JSONTests {
    /// Writing then reading gives back the same value, whatever the strings hold: quotes,
    /// backslashes, control characters, non-ASCII text (both the fast and the escaping paths).
    @Test(arguments: ["", "plain", "账单 Bill", "quote \" and \\ backslash", "line\nbreak\ttab\r", "\u{01}\u{1F}", "emoji 🧾", "a\"", "\\"])
    func roundTrip(_ text: String) throws {
        let value = JSON.object([(text, .array([.string(text), .int(-42), .bool(true), .null])), ("k", .string(text))])
        #expect(try JSON.parse(value.serialized()) == value)
        #expect(try JSON.parse(value.serialized(pretty: true)) == value)
    }

    @Test func refusesWhatIsNotJSON() {
        for text in ["{", "[1,]", "\"open", "{\"a\" 1}", "1.5", "tru", "\"\u{01}\""] {
            #expect(throws: TallyError.self, "\(text)") { try JSON.parse(text) }
        }
    }
}
