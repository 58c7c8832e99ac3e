import TallyCore

/// The purchase advisor's request and answer as the command line and the server show them.
public enum QuoteView {
    /// Finds the API a quote names: its id, the part after its product's id, or a product whose
    /// APIs include exactly one sold in packs.
    public static func resolve(_ name: String, in version: CatalogVersion) throws(TallyError) -> APIOffer {
        if let api = version.apisByID[name] { return api }
        let suffixed = version.apisByID.values.filter { $0.id.hasSuffix(".\(name)") }
        if suffixed.count == 1 { return suffixed[0] }
        if let product = version.productsByID[name] {
            let sold = product.apis.filter { !$0.packs.isEmpty }
            if sold.count == 1 { return sold[0] }
            throw TallyError(.unknownApi, "\(name) sells several APIs; name one of: \(product.apis.map(\.id).joined(separator: ", "))")
        }
        throw TallyError(.unknownApi, "there is no API or product \(name)")
    }

    public static func json(_ quote: Advisor.Quote) -> JSON {
        var fields: [(String, JSON)] = [("api", .string(quote.api)), ("calls", .int(quote.calls)), ("months", .int(quote.months))]
        if let qps = quote.qps { fields.append(("qps", .int(qps))) }
        fields.append(("best", plan(quote.best)))
        fields.append(("options", .array(quote.options.map(plan))))
        return .object(fields)
    }

    static func plan(_ plan: Advisor.Plan) -> JSON {
        .object([
            ("name", .string(plan.name)),
            ("items", .array(plan.items.map { .object([("item", .string($0.item)), ("count", .int($0.count))]) })),
            ("free_calls", .int(plan.freeCalls)),
            ("pack_calls", .int(plan.packCalls)),
            ("postpaid_calls", .int(plan.postpaidCalls)),
            ("prepaid", .string(plan.prepaid.description)),
            ("postpaid", .string(plan.postpaid.description)),
            ("total", .string(plan.total.description)),
        ])
    }

    public static func table(_ quote: Advisor.Quote) -> String {
        let header = ["plan", "packs", "post-paid calls", "prepaid", "post-paid", "total"]
        let rows = ([quote.best] + quote.options).map { plan in
            [plan.name, plan.items.isEmpty ? "-" : plan.items.map { "\($0.count) × \($0.item)" }.joined(separator: " + "),
             String(plan.postpaidCalls), plan.prepaid.description, plan.postpaid.description, plan.total.description]
        }
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max()! }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { $0.element.padding(toLength: widths[$0.offset]) }.joined(separator: "  ")
        }
        var title = "\(quote.api): \(quote.calls) calls over \(quote.months) month(s)"
        if let qps = quote.qps { title += " at \(qps) QPS" }
        return ([title, line(header), line(widths.map { String(repeating: "-", count: $0) })] + rows.map(line)).joined(separator: "\n")
    }
}

extension String {
    func padding(toLength length: Int) -> String { self + String(repeating: " ", count: max(0, length - count)) }
}
