import Yams

/// A node of a YAML document together with its path from the root, so that every complaint about
/// a catalog or a scenario names the exact field ("versions[0].products[1].apis[0].packs[2].price").
public struct YAMLField {
    public let node: Node
    public let path: String
    let code: TallyError.Code

    public init(node: Node, path: String, code: TallyError.Code) {
        self.node = node
        self.path = path
        self.code = code
    }

    /// Parses a whole document; `code` is the error code every complaint about it carries.
    public static func parse(_ text: String, code: TallyError.Code, root: String = "") throws(TallyError) -> YAMLField {
        let node: Node?
        do {
            node = try Yams.compose(yaml: text)
        } catch {
            throw TallyError(code, "the document is not valid YAML: \(error)")
        }
        guard let node else { throw TallyError(code, "the document is empty") }
        return YAMLField(node: node, path: root, code: code)
    }

    public func fail(_ message: String) -> TallyError {
        TallyError(code, path.isEmpty ? message : "\(path): \(message)")
    }

    private func child(_ key: String) -> String { path.isEmpty ? key : "\(path).\(key)" }

    public var keys: [String] {
        guard let mapping = node.mapping else { return [] }
        return mapping.keys.compactMap { $0.string }
    }

    public func optional(_ key: String) throws(TallyError) -> YAMLField? {
        guard let mapping = node.mapping else { throw fail("expected a mapping") }
        guard let value = mapping[key] else { return nil }
        if case .scalar(let scalar) = value, scalar.string == "~" || (scalar.string == "null" && scalar.style == .plain) {
            return nil
        }
        return YAMLField(node: value, path: child(key), code: code)
    }

    public func required(_ key: String) throws(TallyError) -> YAMLField {
        guard let field = try optional(key) else { throw fail("the field `\(key)` is required") }
        return field
    }

    /// Refuses keys outside `allowed`, so that a misspelt setting is an error, not a silent default.
    public func onlyKeys(_ allowed: Set<String>) throws(TallyError) {
        guard node.mapping != nil else { throw fail("expected a mapping") }
        for key in keys where !allowed.contains(key) {
            throw TallyError(code, "\(child(key)): unknown field (expected one of: \(allowed.sorted().joined(separator: ", ")))")
        }
    }

    public func string() throws(TallyError) -> String {
        guard case .scalar(let scalar) = node else { throw fail("expected a text value") }
        return scalar.string
    }

    public func nonEmptyString() throws(TallyError) -> String {
        let text = try string()
        guard !text.isEmpty else { throw fail("must not be empty") }
        return text
    }

    /// A whole number within `range` (digits only: no sign tricks, no decimals, no exponents).
    public func integer(in range: ClosedRange<Int64>) throws(TallyError) -> Int64 {
        let text = try string().filter { $0 != "_" }
        guard let value = Int64(text) else { throw fail("expected a whole number, got \"\(text)\"") }
        guard range.contains(value) else { throw fail("\(value) is out of range \(range.lowerBound)...\(range.upperBound)") }
        return value
    }

    public func bool() throws(TallyError) -> Bool {
        switch try string() {
        case "true", "yes", "on": return true
        case "false", "no", "off": return false
        case let other: throw fail("expected true or false, got \"\(other)\"")
        }
    }

    /// Money: a decimal string with at most `decimalsMax` decimals, never a float.
    public func money(decimalsMax: Int = 2) throws(TallyError) -> Money {
        let text = try string()
        guard let money = Money(parsing: text, decimalsMax: decimalsMax) else {
            throw fail("expected an amount like \"12.34\" (at most \(decimalsMax) decimals, not negative), got \"\(text)\"")
        }
        return money
    }

    public func instant() throws(TallyError) -> Instant {
        let text = try string()
        guard let instant = Instant(rfc3339: text) else {
            throw fail("expected an RFC 3339 timestamp with an offset, like 2026-01-01T09:00:00+08:00, got \"\(text)\"")
        }
        return instant
    }

    public func list() throws(TallyError) -> [YAMLField] {
        guard case .sequence(let sequence) = node else { throw fail("expected a list") }
        return sequence.enumerated().map { YAMLField(node: $0.element, path: "\(path)[\($0.offset)]", code: code) }
    }

    /// The entries of a mapping in document order.
    public func entries() throws(TallyError) -> [(key: String, value: YAMLField)] {
        guard let mapping = node.mapping else { throw fail("expected a mapping") }
        return mapping.compactMap { pair in
            guard let key = pair.key.string else { return nil }
            return (key, YAMLField(node: pair.value, path: child(key), code: code))
        }
    }
}
