import TallyCore
import TallyEngine

/// A request body's fields, read by name with errors that name the field. Every field must be
/// read before `end()`: a field the route does not know is refused (`invalid_request`) rather than
/// ignored, so that a typo never passes silently.
struct Fields {
    /// The most fields one object may hold: more than any route reads, so a larger object could
    /// only be refused for unknown fields; refusing it first keeps the checks below linear.
    static let countMax = 64

    private let pairs: [(String, JSON)]
    /// Which of `pairs` were read, one bit each.
    private var read: UInt64 = 0

    init(_ json: JSON) throws(TallyError) {
        guard case .object(let pairs) = json else { throw TallyError(.invalidRequest, "the request body must be a JSON object") }
        guard pairs.count <= Fields.countMax else {
            throw TallyError(.invalidRequest, "an object holds at most \(Fields.countMax) fields, got \(pairs.count)")
        }
        // A handful of keys: comparing each with those before it beats hashing them.
        for index in pairs.indices where pairs[..<index].contains(where: { $0.0 == pairs[index].0 }) {
            throw TallyError(.invalidRequest, "the field \(pairs[index].0) appears twice")
        }
        self.pairs = pairs
    }

    static let empty = try! Fields(.object([]))

    /// Refuses fields nobody read.
    func end() throws(TallyError) {
        guard read.nonzeroBitCount < pairs.count else { return }
        let unknown = pairs.indices.filter { read & (1 << $0) == 0 }.map { pairs[$0].0 }.sorted()
        throw TallyError(.invalidRequest, "unknown field \(unknown.joined(separator: ", "))")
    }

    private mutating func value(_ key: String) -> JSON? {
        guard let index = pairs.firstIndex(where: { $0.0 == key }) else { return nil }
        read |= 1 << index
        if case .null = pairs[index].1 { return nil }
        return pairs[index].1
    }

    mutating func optionalString(_ key: String, lengthMax: Int = 256) throws(TallyError) -> String? {
        guard let value = value(key) else { return nil }
        guard case .string(let text) = value else { throw TallyError(.invalidRequest, "\(key) must be a string") }
        guard text.utf8.count <= lengthMax else { throw TallyError(.invalidRequest, "\(key) is at most \(lengthMax) bytes") }
        return text
    }

    mutating func string(_ key: String, lengthMax: Int = 256) throws(TallyError) -> String {
        guard let text = try optionalString(key, lengthMax: lengthMax) else { throw TallyError(.invalidRequest, "\(key) is required") }
        return text
    }

    mutating func optionalInt(_ key: String) throws(TallyError) -> Int64? {
        guard let value = value(key) else { return nil }
        guard case .int(let number) = value else { throw TallyError(.invalidRequest, "\(key) must be a whole number") }
        return number
    }

    mutating func int(_ key: String) throws(TallyError) -> Int64 {
        guard let number = try optionalInt(key) else { throw TallyError(.invalidRequest, "\(key) is required") }
        return number
    }

    mutating func bool(_ key: String, default fallback: Bool) throws(TallyError) -> Bool {
        guard let value = value(key) else { return fallback }
        guard case .bool(let flag) = value else { throw TallyError(.invalidRequest, "\(key) must be true or false") }
        return flag
    }

    /// An amount in yuan as a decimal string with at most two decimals ("12.50").
    mutating func money(_ key: String) throws(TallyError) -> Money? {
        guard let text = try optionalString(key, lengthMax: 32) else { return nil }
        guard let amount = Money(parsing: text) else { throw Money.parsingError(text, field: key) }
        return amount
    }

    /// An RFC 3339 timestamp.
    mutating func instant(_ key: String) throws(TallyError) -> Instant? {
        guard let text = try optionalString(key, lengthMax: 64) else { return nil }
        guard let instant = Instant(rfc3339: text) else { throw TallyError(.invalidTimestamp, "\(key) must be an RFC 3339 timestamp") }
        return instant
    }

    /// A catalog change: a YAML document as a string, or the list of edits as JSON. JSON is YAML,
    /// so a list becomes the document `changes: [...]` and is read by the same rules.
    mutating func catalogChanges(_ key: String, lengthMax: Int) throws(TallyError) -> String {
        guard let value = value(key) else { throw TallyError(.invalidRequest, "\(key) is required") }
        let text: String
        switch value {
        case .string(let document): text = document
        case .array: text = "changes: " + value.serialized()
        default: throw TallyError(.invalidRequest, "\(key) must be a YAML document (a string) or a list of changes")
        }
        guard text.utf8.count <= lengthMax else { throw TallyError(.invalidRequest, "\(key) is at most \(lengthMax) bytes") }
        return text
    }

    mutating func array(_ key: String) throws(TallyError) -> [JSON] {
        guard let value = value(key) else { throw TallyError(.invalidRequest, "\(key) is required") }
        guard case .array(let items) = value else { throw TallyError(.invalidRequest, "\(key) must be an array") }
        return items
    }
}
