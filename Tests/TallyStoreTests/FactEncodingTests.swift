import Foundation
import Testing
import TallyCore
import TallyEngine
import TallyStore

/// The stores write facts with `StreamingJSONEncoder` and read them with Foundation's
/// `JSONDecoder`: every kind of fact must come back equal.
@Suite(.timeLimit(.minutes(5))) struct FactEncodingTests {
    /// Every fact of every shipped scenario and of the store tour, plus the access facts.
    static func facts() async throws -> [Fact] {
        let folder = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("TallyEngineTests/Scenarios")
        var texts = try FileManager.default.contentsOfDirectory(atPath: folder.path).filter { $0.hasSuffix(".yaml") }.sorted()
            .map { try String(contentsOf: folder.appendingPathComponent($0), encoding: .utf8) }
        texts += [StoreConformanceTests.tour, everyKind]
        var facts: [Fact] = []
        for text in texts {
            let store = InMemoryStore()
            _ = try await Simulator(catalog: StoreConformanceTests.catalog, store: store).run(Scenario.parse(text))
            facts += try await store.loadFacts()
        }
        let at = Instant(seconds: 1_800_000_000)
        var revoked = APIKey(id: "key_2", role: .gateway, account: nil, digest: "ab12", created: at)
        revoked.revoked = at
        facts += [
            .keyIssued(key: APIKey(id: "key_1", role: .customer, account: "acme \"quoted\" \\ \u{1}\n\t\r 账", digest: "00ff", created: at)),
            .keyIssued(key: revoked),
            .keyRevoked(id: "key_2", at: at),
            .webhookEndpointAdded(endpoint: WebhookEndpoint(id: "we_1", url: "https://example.com/hook?a=1&b=/", secret: "s", account: nil,
                                                            created: at, firstNotice: 3)),
            .webhookEndpointRemoved(id: "we_1", at: at),
            .webhookDelivered(delivery: DeliveryKey(notice: "n_1", endpoint: "we_1"), at: at),
        ]
        return facts
    }

    /// The kinds of fact the shipped scenarios do not make.
    static let everyKind = """
    start: 2026-01-05T09:00:00+08:00
    steps:
      - {do: open_account, account: li, subject: personal}
      - {do: verify, account: li, subject: enterprise}
      - {do: top_up, account: li, cash: "20000.00"}
      - {do: buy, account: li, item: taishan/enterprise-premium, years: 1}
      - {do: assign_seat, account: li, user: u1@corp.example}
      - {do: open_account, account: wang, subject: personal, verified: true}
      - {do: top_up, account: wang, cash: "1000.00"}
      - {do: buy, account: wang, item: taishan/personal-pro, months: 1}
      - {do: check_entitlement, account: wang, feature: templates, use: true}
      - {do: buy, account: li, item: image-tagging.general/10k, ref: spare}
      - {do: refund, account: li, ref: spare}
      - {do: suspend, account: li, reason: content}
      - {do: unsuspend, account: li}
      - {do: publish_catalog, effective: 2026-03-01T00:00:00+08:00, changes: [{api: image-tagging.general, free_monthly: 500}]}
    """

    @Test func everyFactComesBackEqual() async throws {
        let facts = try await Self.facts()
        let decoder = JSONDecoder()
        for fact in facts {
            let bytes = try StreamingJSONEncoder.encode(fact)
            #expect(try decoder.decode(Fact.self, from: Data(bytes)) == fact, "\(String(decoding: bytes, as: UTF8.self))")
        }
        // The sample holds every kind of fact there is.
        let kinds = Set(facts.map(\.kind))
        for kind in ["account_opened", "account_verified", "money_credited", "voucher_granted", "product_activated", "pack_granted",
                     "order_placed", "usage_recorded", "month_closed", "bill_posted", "order_refunded", "status_changed",
                     "seat_assigned", "entitlement_used", "catalog_published", "notified", "key_issued", "key_revoked",
                     "webhook_endpoint_added", "webhook_endpoint_removed", "webhook_delivered"] {
            #expect(kinds.contains(kind), "no \(kind) fact in the sample")
        }
    }

    /// A bill fact as stores held it before money, instants and ledger accounts became bare
    /// scalars: it still reads back, as the same fact the compact form holds.
    @Test func factsWrittenBeforeTheCompactFormStillRead() throws {
        let old = """
            {"billPosted":{"bill":{"id":"bill_x_image-tagging_2026-05","account":"x","product":"image-tagging","month":{"year":2026,"month":5},\
            "lines":[{"api":"image-tagging.general","calls":2000000,"free":1000,"pack":0,"postpaid":1999000,"tier":2,\
            "unitPrice":{"microyuan":2800},"amount":{"microyuan":5597200000}}],"total":{"microyuan":5597200000},\
            "at":{"microseconds":1780246800000000},"paid":{"vouchers":[],"gift":{"microyuan":0},"income":{"microyuan":0},\
            "cash":{"microyuan":5597200000}}},"transaction":{"id":"txn_8","at":{"microseconds":1780246800000000},"kind":"bill",\
            "entries":[{"account":{"name":"customer:x:cash"},"unit":"microyuan","amount":-5597200000},\
            {"account":{"name":"operator:revenue:image-tagging"},"unit":"microyuan","amount":5597200000}]}}}
            """
        let fact = try JSONDecoder().decode(Fact.self, from: Data(old.utf8))
        guard case .billPosted(let bill, let transaction) = fact else { Issue.record("not a bill: \(fact)"); return }
        #expect(bill.total == Money(yuan: 5_597, fen: 20))
        #expect(bill.lines.first?.unitPrice == Money(microyuan: 2_800))
        #expect(bill.at == Instant(microseconds: 1_780_246_800_000_000))
        #expect(transaction.entries.map(\.account) == [LedgerAccount("customer:x:cash"), LedgerAccount("operator:revenue:image-tagging")])
        let compact = try StreamingJSONEncoder.encode(fact)
        #expect(try JSONDecoder().decode(Fact.self, from: Data(compact)) == fact)
        let text = String(decoding: compact, as: UTF8.self)
        #expect(text.contains(#""total":5597200000"#) && text.contains(#""account":"customer:x:cash""#), "\(text)")
        #expect(old.utf8.count - compact.count > 100, "746 bytes became \(compact.count)")
    }

    /// What it writes is the JSON Foundation writes, up to the order of keys.
    @Test func writesWhatFoundationWrites() async throws {
        for fact in try await Self.facts().prefix(200) {
            let mine = try JSONSerialization.jsonObject(with: Data(try StreamingJSONEncoder.encode(fact))) as? NSDictionary
            let theirs = try JSONSerialization.jsonObject(with: try JSONEncoder().encode(fact)) as? NSDictionary
            #expect(mine != nil && mine == theirs)
        }
    }

    @Test func floatingPointIsRefused() {
        #expect(throws: EncodingError.self) { try StreamingJSONEncoder.encode(["x": 1.5]) }
    }
}
