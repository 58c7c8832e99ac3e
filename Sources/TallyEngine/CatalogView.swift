import TallyCore

/// The items on sale, as `tally catalog` prints them: what a customer can buy, by the name an
/// order takes, with what it gives and what it costs.
public enum CatalogView {
    /// One row an item: packs (by count) and memberships (by months or years), product by product.
    public static func rows(_ version: CatalogVersion) -> [[String]] {
        var rows: [[String]] = []
        for product in version.products {
            for edition in product.editions {
                let prices = [MembershipPeriod.month, .year].compactMap { period in
                    edition.prices[period].map { "\($0) a \(period.rawValue)" }
                }
                rows.append([edition.item, "membership (months or years)", "\(edition.subject.rawValue), \(edition.seats) seat(s)",
                             prices.joined(separator: ", "), edition.name])
            }
            for api in product.apis {
                for pack in api.packs {
                    var gives = "\(pack.calls) calls of \(api.id), \(validity(pack.validity))"
                    if let qps = pack.qps { gives += ", \(qps) QPS" }
                    rows.append([pack.item, "pack (count)", gives, pack.price.description, pack.name])
                }
            }
        }
        return rows
    }

    /// The rows as a text table; the name, which may be Chinese, comes last so that its width
    /// does not move the other columns.
    public static func table(_ version: CatalogVersion) -> String {
        let header = ["item", "bought by", "gives", "price (CNY)", "name"]
        let rows = rows(version)
        let widths = header.indices.map { column in ([header] + rows).map { $0[column].count }.max()! }
        func line(_ cells: [String]) -> String {
            cells.enumerated().map { $0.offset == cells.count - 1 ? $0.element : $0.element.padding(toLength: widths[$0.offset]) }
                .joined(separator: "  ")
        }
        return ([line(header), line(widths.map { String(repeating: "-", count: $0) })] + rows.map(line)).joined(separator: "\n")
    }

    static func validity(_ validity: Validity) -> String {
        switch validity {
        case .days(let days): "valid \(days) days"
        case .months(let months): "valid \(months) months"
        }
    }
}
