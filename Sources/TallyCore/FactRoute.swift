/// Whom a fact belongs to: one account, an order (a refund names its order, not its account), or
/// everyone (what the whole system shares: the catalog, keys, webhook endpoints, closed months,
/// notices to nobody in particular). Facts of different accounts commute: applying them in either
/// order gives the same state, which is what lets the journal write a small operation's facts
/// ahead of a bulk report's for other accounts, and what partitions by account will rest on.
public enum FactRoute: Sendable, Hashable {
    case account(String)
    case order(String)
    case everyone

    public init(_ fact: Fact) {
        switch fact {
        case .accountOpened(let id, _, _, _), .accountVerified(let id, _, _), .moneyCredited(let id, _),
             .productActivated(let id, _, _), .statusChanged(let id, _, _), .seatAssigned(let id, _, _, _),
             .entitlementUsed(let id, _, _):
            self = .account(id)
        case .voucherGranted(let voucher, _): self = .account(voucher.account)
        case .packGranted(let pack, _): self = .account(pack.account)
        case .orderPlaced(let order, _, _, _): self = .account(order.account)
        case .usageRecorded(let record, _): self = .account(record.account)
        case .billPosted(let bill, _): self = .account(bill.account)
        case .orderRefunded(let order, _, _): self = .order(order)
        case .notified(let notice): self = notice.account.map { .account($0) } ?? .everyone
        case .monthClosed, .catalogPublished, .keyIssued, .keyRevoked, .webhookEndpointAdded, .webhookEndpointRemoved,
             .webhookDelivered:
            self = .everyone
        }
    }

    /// Whether the fact is one every partition shares (`GlobalState`): the catalog, keys, webhook
    /// endpoints and deliveries, the months closed.
    /// The kinds (`Fact.kind`) of the shared facts: what a store reads whatever the snapshots.
    public static let sharedKinds = ["month_closed", "catalog_published", "key_issued", "key_revoked", "webhook_endpoint_added",
                                      "webhook_endpoint_removed", "webhook_delivered"]

    public static func isShared(_ fact: Fact) -> Bool {
        switch fact {
        case .monthClosed, .catalogPublished, .keyIssued, .keyRevoked, .webhookEndpointAdded, .webhookEndpointRemoved,
             .webhookDelivered:
            return true
        default:
            return false
        }
    }

    /// The accounts some facts belong to; nil when one of them is not one account's alone (it
    /// must then keep its place among every other fact).
    public static func accounts(of facts: some Sequence<Fact>) -> Set<String>? {
        var accounts = Set<String>()
        for fact in facts {
            guard let id = account(of: fact) else { return nil }
            accounts.insert(id)
        }
        return accounts
    }

    /// The account a fact belongs to alone, if it does.
    public static func account(of fact: Fact) -> String? {
        if case .account(let id) = FactRoute(fact) { return id }
        return nil
    }
}
