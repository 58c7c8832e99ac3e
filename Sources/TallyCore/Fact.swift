/// A fact the engine decided: the only way state changes. The store keeps facts in order; folding
/// them with `TallyState.apply` rebuilds the state exactly, which is how a process recovers after a
/// crash and how `tally audit` recomputes what the state claims.
public enum Fact: Hashable, Sendable, Codable {
    case accountOpened(account: String, subject: Subject, verified: Bool, at: Instant)
    case accountVerified(account: String, subject: Subject, at: Instant)
    /// Top-ups and gift grants: money moved into sub-accounts.
    case moneyCredited(account: String, transaction: LedgerTransaction)
    case voucherGranted(voucher: Voucher, transaction: LedgerTransaction)
    case productActivated(account: String, product: String, at: Instant)
    /// A free monthly pack (bought packs arrive with their order).
    case packGranted(pack: Pack, transaction: LedgerTransaction)
    case orderPlaced(order: Order, packs: [Pack], membership: Membership?, transaction: LedgerTransaction)
    case usageRecorded(record: UsageRecord, transaction: LedgerTransaction?)
    case monthClosed(month: Month, at: Instant)
    case billPosted(bill: Bill, transaction: LedgerTransaction)
    case orderRefunded(order: String, at: Instant, transaction: LedgerTransaction)
    case statusChanged(account: String, change: StatusChange, at: Instant)
    case seatAssigned(account: String, product: String, user: String, at: Instant)
    case entitlementUsed(account: String, key: String, at: Instant)
    /// A catalog change: `changes` is the YAML of the change (see `CatalogChange`), applied on top of
    /// the version in force at `effective`.
    case catalogPublished(effective: Instant, changes: String, at: Instant)
    case notified(notice: Notice)
    case keyIssued(key: APIKey)
    case keyRevoked(id: String, at: Instant)
    case webhookEndpointAdded(endpoint: WebhookEndpoint)
    case webhookEndpointRemoved(id: String, at: Instant)
    case webhookDelivered(delivery: DeliveryKey, at: Instant)

    /// The fact's case, as stores label their rows.
    public var kind: String {
        switch self {
        case .accountOpened: "account_opened"
        case .accountVerified: "account_verified"
        case .moneyCredited: "money_credited"
        case .voucherGranted: "voucher_granted"
        case .productActivated: "product_activated"
        case .packGranted: "pack_granted"
        case .orderPlaced: "order_placed"
        case .usageRecorded: "usage_recorded"
        case .monthClosed: "month_closed"
        case .billPosted: "bill_posted"
        case .orderRefunded: "order_refunded"
        case .statusChanged: "status_changed"
        case .seatAssigned: "seat_assigned"
        case .entitlementUsed: "entitlement_used"
        case .catalogPublished: "catalog_published"
        case .notified: "notified"
        case .keyIssued: "key_issued"
        case .keyRevoked: "key_revoked"
        case .webhookEndpointAdded: "webhook_endpoint_added"
        case .webhookEndpointRemoved: "webhook_endpoint_removed"
        case .webhookDelivered: "webhook_delivered"
        }
    }

    /// Whether this is a usage event: stores keep those as rows of their own, not as JSON.
    public var isUsage: Bool {
        if case .usageRecorded = self { return true }
        return false
    }

    /// The ledger transaction a fact posts, if any.
    public var transaction: LedgerTransaction? {
        switch self {
        case .moneyCredited(_, let t), .voucherGranted(_, let t), .packGranted(_, let t), .orderPlaced(_, _, _, let t),
             .billPosted(_, let t), .orderRefunded(_, _, let t):
            return t
        case .usageRecorded(_, let t):
            return t
        default:
            return nil
        }
    }
}

/// Changes to an account's status flags; each is a transition of `AccountStatus`.
public enum StatusChange: String, Hashable, Sendable, Codable {
    case enteredArrears = "entered_arrears"
    case restored
    case suspended
    case unsuspended
    case refundReviewOn = "refund_review_on"
    case refundReviewOff = "refund_review_off"
}
