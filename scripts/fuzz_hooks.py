"""schemathesis hooks for scripts/api-fuzz (loaded through SCHEMATHESIS_HOOKS).

A client sends a fresh Idempotency-Key for each request it means, and the same key only when it
retries that request. Generated keys are short and repeat ("0", "00"), so two different requests
would meet on one key and be refused as idempotency_key_reused (409) instead of reaching the
operation. Each request therefore gets a key of its own; replays and reuse are tested in Swift
(RouteTests)."""
import itertools
import json
from datetime import datetime, timezone
import os
import urllib.request
import uuid

import schemathesis


# Generated account ids name no account, so nearly every call would stop at account_not_found and
# never reach the operation (in a path, a gateway's header or a usage event). As schemathesis advises for ids, calls go to accounts the fuzz seeded:
# "acme" (money, an activated product, a pack, a membership, usage, a bill), except the operations
# that change an account's standing (suspension, refund holds, verification), which go to "spare"
# so that they do not lock acme out of the rest of the run, and renewals, which go to "member"
# (a personal membership sold by the month and by the year; acme's is sold by the year only).
STANDING = ("/suspension", "/refund-review", "/verification")


# An operation that can succeed once for an account (activating a product, upgrading a membership,
# refunding a pack), or once at all (removing a webhook endpoint), would succeed on the first call and be refused on every later one, its data
# fine. Each call of those gets an account of its own, made as the seed made acme's state.
ONCE = {
    "/v1/accounts/{account}/activations": [],
    "/v1/accounts/{account}/upgrades": [("/orders", {"item": "taishan/enterprise-basic", "years": 1})],
    "/v1/accounts/{account}/orders/{order}/refund": [("/orders", {"item": "image-tagging.general/10k", "count": 1, "ref": "fuzz-pack"})],
}
made = itertools.count()


def api(method, path, body):
    request = urllib.request.Request(os.environ["TALLY_FUZZ_URL"] + path, method=method,
                                     data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer " + os.environ["TALLY_FUZZ_KEY"], "Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=20) as response:
        return json.loads(response.read())


def fresh_account(steps):
    account = f"once-{os.getpid()}-{next(made)}"
    api("POST", "/v1/accounts", {"id": account, "subject": "enterprise", "verified": True})
    api("POST", f"/v1/accounts/{account}/top-ups", {"cash": "100000.00"})
    for path, body in steps:
        api("POST", f"/v1/accounts/{account}{path}", body)
    return account


def account_for(path):
    if path in ONCE:
        return fresh_account(ONCE[path])
    if "/renewals" in path:
        return "member"
    return "spare" if path.endswith(STANDING) else "acme"


@schemathesis.hook
def before_call(context, case, kwargs):
    """Every phase (examples and coverage too, which the map_* hooks do not see)."""
    if case.path_parameters and "account" in case.path_parameters:
        case.path_parameters["account"] = account_for(case.operation.path)
        if case.operation.path in ONCE and "order" in case.path_parameters:
            case.path_parameters["order"] = "fuzz-pack"
    if case.path_parameters and "endpoint" in case.path_parameters:
        # Removing a webhook endpoint succeeds once: each call removes one that exists (the run
        # adds plenty), or one made for it when there is none.
        existing = api("GET", "/v1/webhook-endpoints?limit=1", None)["data"]
        made_one = existing or [api("POST", "/v1/webhook-endpoints", {"url": "https://example.com/hook"})]
        case.path_parameters["endpoint"] = made_one[0]["id"]
    if case.headers and "Idempotency-Key" in case.headers:
        case.headers["Idempotency-Key"] = uuid.uuid4().hex
    positive = case.meta is not None and case.meta.generation.mode.value == "positive"
    if case.operation.path.startswith("/v1/usage/") and isinstance(case.body, dict):
        events = case.body.get("events") if case.operation.path != "/v1/usage/check" else [case.body]
        for event in events if isinstance(events, list) else []:
            if isinstance(event, dict) and "account" in event:
                event["account"] = "acme"
            # An event's time must lie within the month's open window and at most 5 minutes ahead:
            # a rule of the clock, not of the document. Valid events happen now.
            if positive and isinstance(event, dict) and "time" in event:
                event["time"] = datetime.now(timezone.utc).isoformat()


@schemathesis.hook
def map_headers(context, headers):
    if headers and "X-Tally-Account" in headers:
        headers["X-Tally-Account"] = "acme"
    return headers
