import Hummingbird
import TallyCore
import TallyEngine

/// Bills (JSON, CSV, a printable page) and bill runs (SPEC 4).
enum BillingRoutes {
    static let all: [Endpoint] = [
        Endpoint(.get, "/v1/accounts/{account}/bills", .holders) { call in
            .json(try call.tally.read(account: call.account) { state in
                let bills = state.bills(of: call.account)
                return try Pagination.json(bills, id: \.id, call: call, render: Report.bill)
            })
        },
        Endpoint(.get, "/v1/bills/{bill}", .holders) { call in
            let id = call.parameter("bill")
            guard let bill = call.tally.find({ $0.bills[id] }), call.principal.mayTouch(bill.account) else {
                throw TallyError(.billNotFound, "there is no bill \(id)")
            }
            switch call.query("format") ?? "json" {
            case "json": return .json(Report.bill(bill))
            case "csv": return .text(BillDocuments.csv(bill), contentType: "text/csv; charset=utf-8")
            case "html": return .text(BillDocuments.html(bill, zone: call.tally.readShared { $0.zone }), contentType: "text/html; charset=utf-8")
            default: throw TallyError(.invalidRequest, "format is json, csv or html")
            }
        },
        Endpoint(.post, "/v1/bill-runs", .operators) { call in
            let text = try call.fields.string("month", lengthMax: 7)
            try call.fields.end()
            guard let month = Month(parsing: text) else { throw TallyError(.invalidRequest, "month must be YYYY-MM") }
            let totals = try await call.server.billRun(month)
            return .json(.object([
                ("month", .string(month.description)), ("accounts", .int(Int64(totals.accounts))),
                ("bills_created", .int(Int64(totals.created))), ("bills_existing", .int(Int64(totals.existing))),
                ("total", Report.money(totals.total)),
            ]), status: .created)
        },
    ]
}

/// A bill as a CSV file and as a printable HTML page.
enum BillDocuments {
    static func csv(_ bill: Bill) -> String {
        var lines = ["bill,account,month,product,api,calls,free,pack,postpaid,tier,unit_price,amount"]
        for line in bill.lines {
            lines.append([bill.id, bill.account, bill.month.description, bill.product, line.api, String(line.calls), String(line.free),
                          String(line.pack), String(line.postpaid), String(line.tier), line.unitPrice.unitPriceDescription,
                          line.amount.description].map(field).joined(separator: ","))
        }
        lines.append([bill.id, bill.account, bill.month.description, bill.product, "total", "", "", "", "", "", "", bill.total.description]
            .map(field).joined(separator: ","))
        return lines.joined(separator: "\r\n") + "\r\n"
    }

    /// RFC 4180 quoting, and a leading quote for text a spreadsheet would run as a formula.
    static func field(_ text: String) -> String {
        var text = text
        if let first = text.first, "=+-@".contains(first), Money(parsing: String(text.dropFirst())) == nil { text = "'" + text }
        guard text.contains(where: { ",\"\r\n".contains($0) }) else { return text }
        return "\"" + String(text.flatMap { $0 == "\"" ? ["\"", "\""] : [$0] }) + "\""
    }

    static func html(_ bill: Bill, zone: Zone) -> String {
        let rows = bill.lines.map { line in
            "<tr><td>\(escape(line.api))</td><td>\(line.calls)</td><td>\(line.free)</td><td>\(line.pack)</td><td>\(line.postpaid)</td>"
                + "<td>\(line.tier)</td><td>\(escape(line.unitPrice.unitPriceDescription))</td><td>\(escape(line.amount.description))</td></tr>"
        }.joined(separator: "\n")
        return """
        <!doctype html>
        <html lang="zh-CN"><head><meta charset="utf-8"><title>账单 Bill \(escape(bill.id))</title>
        <style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td,th{border:1px solid #999;padding:4px 8px;text-align:right}
        th:first-child,td:first-child{text-align:left}@media print{.noprint{display:none}}</style></head>
        <body><h1>账单 Bill \(escape(bill.id))</h1>
        <p>账户 Account: \(escape(bill.account)) · 月份 Month: \(bill.month) · 产品 Product: \(escape(bill.product))</p>
        <table><thead><tr><th>API</th><th>调用 Calls</th><th>免费 Free</th><th>资源包 Pack</th><th>后付费 Post-paid</th><th>阶梯 Tier</th><th>单价 Unit price</th><th>金额 Amount</th></tr></thead>
        <tbody>
        \(rows)
        </tbody><tfoot><tr><th colspan="7">合计 Total (CNY)</th><th>\(escape(bill.total.description))</th></tr></tfoot></table>
        <p>已支付 Paid: 赠送 gift \(escape(bill.paid.gift.description)) · 收益 income \(escape(bill.paid.income.description)) · 现金 cash \(escape(bill.paid.cash.description))</p>
        </body></html>
        """
    }

    static func escape(_ text: String) -> String {
        var out = ""
        for character in text {
            switch character {
            case "&": out += "&amp;"
            case "<": out += "&lt;"
            case ">": out += "&gt;"
            case "\"": out += "&quot;"
            case "'": out += "&#39;"
            default: out.append(character)
            }
        }
        return out
    }
}
