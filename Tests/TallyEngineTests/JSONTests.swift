import Testing
import TallyCore
import TallyEngine

@Suite(.timeLimit(.minutes(5))) struct JSONTests {
    /// Writing then reading gives back the same value, whatever the strings hold: quotes,
    /// backslashes, control characters, non-ASCII text (both the fast and the escaping paths).
    @Test(arguments: ["", "plain", "账单 Bill", "quote \" and \\ backslash", "line\nbreak\ttab\r", "\u{01}\u{1F}", "emoji 🧾", "a\"", "\\"])
    func roundTrip(_ text: String) throws {
        let value = JSON.object([(text, .array([.string(text), .int(-42), .bool(true), .null])), ("k", .string(text))])
        #expect(try JSON.parse(value.serialized()) == value)
        #expect(try JSON.parse(value.serialized(pretty: true)) == value)
    }

    @Test func writesTheExpectedText() {
        let value = JSON.object([("a", .array([.int(0), .int(-7), .int(Int64.min), .int(Int64.max)])), ("b", .object([])),
                                 ("c", .array([])), ("d", .string("\u{01}\"\\\n账")), ("e", .object([("f", .null), ("g", .bool(false))]))])
        #expect(value.serialized() == #"{"a":[0,-7,-9223372036854775808,9223372036854775807],"b":{},"c":[],"d":"\u0001\"\\\n账","e":{"f":null,"g":false}}"#)
        #expect(value.serialized(pretty: true) == #"""
            {
              "a": [
                0,
                -7,
                -9223372036854775808,
                9223372036854775807
              ],
              "b": {},
              "c": [],
              "d": "\u0001\"\\\n账",
              "e": {
                "f": null,
                "g": false
              }
            }
            """#)
        #expect(value.utf8() == Array(value.serialized().utf8))
    }

    /// JSON Schema's integer allows 3.0: a whole number with a zero fraction is that number.
    @Test func readsAZeroFractionAsAWholeNumber() throws {
        #expect(try JSON.parse("3.0") == .int(3))
        #expect(try JSON.parse("[-12.000, 7]") == .array([.int(-12), .int(7)]))
        #expect(try JSON.parse(#"{"count": 1.0}"#) == .object([("count", .int(1))]))
    }

    @Test func refusesWhatIsNotJSON() {
        for text in ["{", "[1,]", "\"open", "{\"a\" 1}", "1.5", "1.05", "1.0e3", "1e3", "1.", "1.x", "tru", "\"\u{01}\""] {
            #expect(throws: TallyError.self, "\(text)") { try JSON.parse(text) }
        }
    }
}
