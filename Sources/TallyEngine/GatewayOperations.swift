import TallyCore

/// A gateway's answer for one call: the check-and-record outcome, and how many calls the account
/// may still make of the API before a refusal, where its prepaid calls bound that.
public struct GatewayDecision: Sendable, Hashable {
    public let outcome: UsageOutcome
    /// The calls left in the month's free quota and the usable bought packs of the API after this
    /// event, when nothing takes over beyond them (the API has no post-paid price, or the account
    /// is in arrears); nil when post-paid would pay for more, or when the account or the API is
    /// unknown. What Envoy's `limit_remaining` and `X-Tally-Remaining` carry.
    public let remaining: Int64?

    public var allowed: Bool { outcome.refused == 0 }

    /// Why the call is refused (nil when it is allowed): what both protocols send as
    /// `x-tally-refusal`. A check is refused whole, so a refused one always carries its reason;
    /// a duplicate of a report refused in part without one reads as quota exhausted.
    public var refusal: TallyError.Code? { allowed ? nil : outcome.refusal ?? .quotaExhausted }
}

/// Check-and-record for a gateway (Envoy's rate limit service and ext_authz, nginx's
/// auth_request): the event exactly as `/v1/usage/check` decides it (`RecordUsage` in check mode:
/// the QPS limit applies, the event is accepted or refused whole, a repeated id is answered with
/// its first outcome), with the remaining prepaid calls read under the same lock.
///
/// One event a gateway request: a request refused by one of two events would have to take back
/// the other's draws, or bill a call that is never served (docs/decisions.md).
public struct GatewayCheck: Operation {
    public var placement: Placement { .account(event.account) }
    public let event: RecordUsage

    public init(event: RecordUsage) {
        precondition(event.mode == .check, "a gateway decides before serving: check mode only")
        self.event = event
    }

    public func suspects(in retired: RetiredUsageKeys) -> [TallyState.UsageKey] { event.suspects(in: retired) }

    public func execute(_ state: inout EngineState, _ env: Environment) throws(TallyError) -> GatewayDecision {
        let outcome = try event.execute(&state, env)
        return GatewayDecision(outcome: outcome, remaining: GatewayCheck.remaining(event, state.tally, env))
    }

    /// The prepaid calls of the event's API the account has left, when they are all it may use.
    static func remaining(_ event: RecordUsage, _ tally: TallyState, _ env: Environment) -> Int64? {
        let instant = event.at ?? env.now
        guard let holder = tally.accounts[event.account], let offer = tally.catalog.version(at: instant).apisByID[event.api],
              offer.postpaid == nil || holder.inArrears else { return nil }
        var left: Int64 = 0
        if let free = tally.freePack(account: holder, api: offer.id, month: tally.zone.month(of: instant)), free.isUsable(at: instant) {
            left += free.left
        }
        for pack in tally.usablePacks(account: holder, api: offer.id, at: instant) { left += pack.left }
        return left
    }
}
