/// A refusal or a bad input: a stable snake_case code that programs act on, and a sentence for
/// people. Every refusal of a call, a purchase or a refund is one of these; nothing changes when
/// one is thrown.
public struct TallyError: Error, Hashable, Sendable, CustomStringConvertible {
    public let code: Code
    public let message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    public var description: String { "\(code.rawValue): \(message)" }

    /// The stable codes. New codes may be added; existing ones never change meaning.
    public struct Code: RawRepresentable, Hashable, Sendable, Codable, CustomStringConvertible {
        public let rawValue: String
        public init(rawValue: String) { self.rawValue = rawValue }
        public var description: String { rawValue }

        // Input
        public static let invalidCatalog = Code(rawValue: "invalid_catalog")
        public static let invalidScenario = Code(rawValue: "invalid_scenario")
        public static let invalidAmount = Code(rawValue: "invalid_amount")
        public static let amountOutOfRange = Code(rawValue: "amount_out_of_range")
        public static let countOutOfRange = Code(rawValue: "count_out_of_range")
        public static let invalidTimestamp = Code(rawValue: "invalid_timestamp")
        public static let invalidRequest = Code(rawValue: "invalid_request")
        /// A store's data is split into another number of partitions than the engine was told.
        public static let partitionCountMismatch = Code(rawValue: "partition_count_mismatch")
        /// A partition's snapshot that cannot be used (another format, a bad checksum, damaged
        /// contents): it is ignored and the partition is replayed from its facts.
        public static let snapshotUnusable = Code(rawValue: "snapshot_unusable")
        // Accounts
        public static let accountNotFound = Code(rawValue: "account_not_found")
        public static let accountExists = Code(rawValue: "account_exists")
        public static let notVerified = Code(rawValue: "not_verified")
        public static let wrongSubject = Code(rawValue: "wrong_subject")
        public static let accountSuspended = Code(rawValue: "account_suspended")
        public static let accountInArrears = Code(rawValue: "account_in_arrears")
        // Catalog lookups
        public static let unknownItem = Code(rawValue: "unknown_item")
        public static let unknownProduct = Code(rawValue: "unknown_product")
        public static let unknownApi = Code(rawValue: "unknown_api")
        public static let unknownEdition = Code(rawValue: "unknown_edition")
        public static let periodNotOffered = Code(rawValue: "period_not_offered")
        // Purchases
        public static let insufficientFunds = Code(rawValue: "insufficient_funds")
        public static let alreadyActivated = Code(rawValue: "already_activated")
        public static let activationNotNeeded = Code(rawValue: "activation_not_needed")
        public static let downgradeNotAllowed = Code(rawValue: "downgrade_not_allowed")
        public static let editionConflict = Code(rawValue: "edition_conflict")
        public static let noMembership = Code(rawValue: "no_membership")
        public static let notAnUpgrade = Code(rawValue: "not_an_upgrade")
        public static let duplicateRef = Code(rawValue: "duplicate_ref")
        // Usage
        public static let rateLimited = Code(rawValue: "rate_limited")
        public static let quotaExhausted = Code(rawValue: "quota_exhausted")
        public static let notActivated = Code(rawValue: "not_activated")
        public static let periodClosed = Code(rawValue: "period_closed")
        public static let timestampInFuture = Code(rawValue: "timestamp_in_future")
        public static let idReused = Code(rawValue: "id_reused")
        public static let monthNotOver = Code(rawValue: "month_not_over")
        // Refunds
        public static let orderNotFound = Code(rawValue: "order_not_found")
        public static let notRefundable = Code(rawValue: "not_refundable")
        public static let packUsed = Code(rawValue: "pack_used")
        public static let refundWindowPassed = Code(rawValue: "refund_window_passed")
        public static let promotionForbidsRefund = Code(rawValue: "promotion_forbids_refund")
        public static let refundUnderReview = Code(rawValue: "refund_under_review")
        public static let alreadyRefunded = Code(rawValue: "already_refunded")
        // Memberships and entitlements
        public static let membershipExpired = Code(rawValue: "membership_expired")
        public static let featureNotIncluded = Code(rawValue: "feature_not_included")
        public static let seatsFull = Code(rawValue: "seats_full")
        public static let seatNotAssigned = Code(rawValue: "seat_not_assigned")
        public static let monthlyLimitReached = Code(rawValue: "monthly_limit_reached")
        // Catalog changes and the clock
        public static let noticePeriodTooShort = Code(rawValue: "notice_period_too_short")
        public static let clockMovedBack = Code(rawValue: "clock_moved_back")
        public static let quoteTooLarge = Code(rawValue: "quote_too_large")
        public static let quoteImpossible = Code(rawValue: "quote_impossible")
        public static let storeUnavailable = Code(rawValue: "store_unavailable")
        /// A `--db` URL whose scheme is no store Tally runs on (`mysql://…`).
        public static let unsupportedStore = Code(rawValue: "unsupported_store")
        /// A command that only reads was pointed at an SQLite file that does not exist.
        public static let storeNotFound = Code(rawValue: "store_not_found")
        // The service's boundary
        public static let keyNotFound = Code(rawValue: "key_not_found")
        public static let webhookEndpointNotFound = Code(rawValue: "webhook_endpoint_not_found")
        public static let limitExceeded = Code(rawValue: "limit_exceeded")
        public static let unauthenticated = Code(rawValue: "unauthenticated")
        public static let forbidden = Code(rawValue: "forbidden")
        public static let notFound = Code(rawValue: "not_found")
        public static let methodNotAllowed = Code(rawValue: "method_not_allowed")
        public static let bodyTooLarge = Code(rawValue: "body_too_large")
        public static let batchTooLarge = Code(rawValue: "batch_too_large")
        public static let pageSizeOutOfRange = Code(rawValue: "page_size_out_of_range")
        public static let idempotencyKeyReused = Code(rawValue: "idempotency_key_reused")
        public static let idempotencyKeyInUse = Code(rawValue: "idempotency_key_in_use")
        public static let unsupportedMediaType = Code(rawValue: "unsupported_media_type")
        public static let billNotFound = Code(rawValue: "bill_not_found")
        public static let internalError = Code(rawValue: "internal_error")
        /// A batch lost a race with another process; retried after a reload, never shown to callers
        /// unless the retries run out.
        public static let storeConflict = Code(rawValue: "store_conflict")
    }
}
