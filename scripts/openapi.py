# Writes Sources/TallyServer/Resources/openapi.yaml, the API contract: python3 scripts/openapi.py > Sources/TallyServer/Resources/openapi.yaml
# The document is committed; AccessTests holds it to the router (every route, method and role) and scripts/api-fuzz to the live server.
import yaml, collections
ID = {"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,64}$"}
def ex(schema, *examples): return {**schema, "examples": list(examples)}
ACCOUNT_ID = ex(ID, "acme")
# Catalog ids: letters, digits, '-', '_', '.'; an item is <product or API>/<edition or pack>.
PRODUCT_ID = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
API_ID = ex({"type": "string", "pattern": "^[A-Za-z0-9._-]{1,128}$"}, "image-tagging.general")
EDITION = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}$"}
ITEM = {"type": "string", "pattern": "^[A-Za-z0-9._-]{1,64}/[A-Za-z0-9._-]{1,63}$"}
# The server fills each x-tally-enum mark with the ids of the catalog on sale when it serves the
# document (TallyServer.openAPIDocument(for:)); the committed file keeps the marks.
def on_sale(schema, kind, *examples): return {**schema, "x-tally-enum": kind, **({"examples": list(examples)} if examples else {})}
PACK_ITEM = on_sale(ITEM, "pack-items", "image-tagging.general/10k")
MEMBERSHIP_ITEM = on_sale(ITEM, "membership-items", "taishan/enterprise-advanced")
MEMBERSHIP_PRODUCT = on_sale(PRODUCT_ID, "membership-products", "taishan")
ACTIVATED_PRODUCT = on_sale(PRODUCT_ID, "activated-products", "image-tagging")
ANY_PRODUCT = on_sale(PRODUCT_ID, "products", "image-tagging")
API_ON_SALE = on_sale(API_ID, "apis", "image-tagging.general")
EDITION_ON_SALE = on_sale(EDITION, "editions")
EVENT_ID = ex({"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,128}$"}, "req-0001")
FEATURE = ex({"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,64}$"}, "templates")
USER = ex({"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,128}$"}, "alice")
KEY_ID = {"type": "string", "pattern": "^key_[0-9a-f]{16}$"}
ENDPOINT_ID = {"type": "string", "pattern": "^whe_[0-9a-f]{16}$"}
BILL_ID = {"type": "string", "pattern": "^[A-Za-z0-9._:@/-]{1,200}$"}
ORDER_REF = {"type": "string", "pattern": "^[A-Za-z0-9._:@-]{1,64}$"}
MONTH = ex({"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$"}, "2026-11")
MONEY = {"type": "string", "pattern": r"^(?!0(\.0{1,2})?$)((0|[1-9][0-9]{0,8})(\.[0-9]{1,2})?|1000000000(\.0{1,2})?)$",
         "description": "yuan, more than 0 and at most 1000000000, at most two decimals", "examples": ["100.00"]}
MONEY_OUT = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}([0-9]{4})?$"}
TS = {"type": "string", "description": "RFC 3339", "pattern": r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,9})?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$",
      "examples": ["2026-11-01T09:00:00+08:00"]}
def ref(n): return {"$ref": f"#/components/schemas/{n}"}
def obj(props, required=(), additional=True):
    o = {"type": "object", "properties": props}
    if required: o["required"] = list(required)
    if not additional: o["additionalProperties"] = False
    return o
def page(item): return obj({"data": {"type": "array", "items": item}, "has_more": {"type": "boolean"}}, ["data", "has_more"])
schemas = {
 "Problem": obj({"type": {"type": "string"}, "title": {"type": "string"}, "status": {"type": "integer"},
                 "code": {"type": "string", "pattern": "^[a-z][a-z0-9_]*$"}, "detail": {"type": "string"}},
                ["type", "title", "status", "code", "detail"]),
 "Balance": obj({"cash": MONEY_OUT, "income": MONEY_OUT, "gift": MONEY_OUT, "total": MONEY_OUT}, ["cash", "income", "gift", "total"]),
 "Account": obj({"id": {"type": "string"}, "status": {"type": "string", "enum": ["active", "arrears", "suspended"]},
                 "subject": {"type": "string", "enum": ["personal", "enterprise"]}, "verified": {"type": "boolean"},
                 "balance": ref("Balance"), "vouchers": {"type": "array", "items": {"type": "object"}},
                 "packs": {"type": "array", "items": {"type": "object"}}, "free": {"type": "object"},
                 "membership": {"type": "object"}}, ["id", "status", "subject", "verified", "balance", "packs"]),
 "Pack": obj({"id": {"type": "string"}, "api": {"type": "string"}, "item": {"type": "string"},
              "source": {"type": "string", "enum": ["free", "bought"]}, "size": {"type": "integer"}, "left": {"type": "integer"},
              "state": {"type": "string"}, "delivered": {"type": "string"}, "expires": {"type": "string"}, "qps": {"type": "integer"}},
             ["id", "api", "item", "source", "size", "left", "state", "delivered", "expires"]),
 "Payment": obj({"voucher": MONEY_OUT, "gift": MONEY_OUT, "income": MONEY_OUT, "cash": MONEY_OUT}, ["voucher", "gift", "income", "cash"]),
 "Order": obj({"id": {"type": "string"}, "at": {"type": "string"}, "ref": {"type": "string"}, "item": {"type": "string"},
               "count": {"type": "integer"}, "months": {"type": "integer"}, "years": {"type": "integer"}, "from": {"type": "string"},
               "amount": MONEY_OUT, "paid": ref("Payment"), "refunded": {"type": "boolean"}, "product": {"type": "string"},
               "packs": {"type": "array", "items": {"type": "string"}},
               "refund": obj({"allowed": {"type": "boolean"}, "reason": {"type": "string"}, "detail": {"type": "string"}}, ["allowed"])},
              ["id", "at", "item", "amount", "paid", "product", "refund"]),
 "OrderPreview": obj({"preview": {"const": True}, "item": {"type": "string"}, "amount": MONEY_OUT, "paid": ref("Payment")},
                     ["preview", "item", "amount", "paid"]),
 "Outcome": obj({"id": {"type": "string"}, "accepted": {"type": "boolean"}, "source": {"type": "string", "enum": ["free", "pack", "postpaid"]},
                 "reason": {"type": "string"}, "error": {"type": "string"}, "detail": {"type": "string"},
                 "free": {"type": "integer"}, "pack": {"type": "integer"}, "postpaid": {"type": "integer"},
                 "refused": {"type": "integer"}, "duplicate": {"type": "boolean"}}, ["id", "accepted"]),
 "BatchResult": obj({"accepted": {"type": "integer"}, "refused": {"type": "integer"}, "duplicates": {"type": "integer"},
                     "results": {"type": "array", "items": ref("Outcome")}}, ["accepted", "refused", "duplicates", "results"]),
 "UsageEvent": obj({"account": ACCOUNT_ID, "id": EVENT_ID, "api": API_ON_SALE, "edition": EDITION_ON_SALE,
                    "calls": {"type": "integer", "minimum": 1, "maximum": 1000000000}, "time": TS}, ["account", "id", "api"], additional=False),
 "Bill": obj({"id": {"type": "string"}, "account": {"type": "string"}, "month": {"type": "string"}, "product": {"type": "string"},
              "total": MONEY_OUT, "lines": {"type": "array", "items": obj({"api": {"type": "string"}, "calls": {"type": "integer"},
                  "free": {"type": "integer"}, "pack": {"type": "integer"}, "postpaid": {"type": "integer"}, "tier": {"type": "integer"},
                  "unit_price": {"type": "string"}, "amount": MONEY_OUT}, ["api", "calls", "free", "pack", "postpaid", "tier", "unit_price", "amount"])},
              "paid": obj({"gift": MONEY_OUT, "income": MONEY_OUT, "cash": MONEY_OUT})}, ["id", "account", "month", "product", "total", "lines", "paid"]),
 "Notice": obj({"id": {"type": "string"}, "kind": {"type": "string"}, "account": {"type": "string"}, "at": {"type": "string"}}, ["id", "kind", "at"]),
 "Key": obj({"id": {"type": "string"}, "role": {"type": "string", "enum": ["operator", "customer", "gateway"]}, "account": {"type": "string"},
             "created": {"type": "string"}, "revoked": {"type": "string"}, "secret": {"type": "string"}}, ["id", "role", "created"]),
 "WebhookEndpoint": obj({"id": {"type": "string"}, "url": {"type": "string"}, "account": {"type": "string"}, "created": {"type": "string"},
                         "secret": {"type": "string"}}, ["id", "url", "created"]),
 "Usage": obj({"account": {"type": "string"}, "month": {"type": "string"}, "apis": {"type": "object", "additionalProperties": obj({
     "calls": {"type": "integer"}, "free": {"type": "integer"}, "pack": {"type": "integer"}, "postpaid": {"type": "integer"},
     "refused": {"type": "integer"}, "estimated_amount": MONEY_OUT,
     "daily": {"type": "array", "items": obj({"day": {"type": "integer"}, "calls": {"type": "integer"}}, ["day", "calls"])}},
     ["calls", "free", "pack", "postpaid", "refused", "estimated_amount"])}}, ["account", "month", "apis"]),
 "Catalog": obj({"effective": {"type": "string"}, "products": {"type": "array", "items": {"type": "object"}}}, ["effective", "products"]),
 "Quote": obj({"api": {"type": "string"}, "calls": {"type": "integer"}, "months": {"type": "integer"}, "qps": {"type": "integer"},
               "best": {"type": "object"}, "options": {"type": "array", "items": {"type": "object"}}}, ["api", "calls", "months", "best", "options"]),
}
problem = {"description": "A refusal or an error, with its stable code",
           "content": {"application/problem+json": {"schema": ref("Problem")}}}
def body(props, required=(), one_of=None):
    schema = obj(props, required, additional=False)
    if one_of: schema["oneOf"] = one_of
    return {"required": True, "content": {"application/json": {"schema": schema}}}
def resp(status, schema, description="OK", content="application/json"):
    return {str(status): {"description": description, "content": {content: {"schema": schema}}}, "default": problem}
ACCOUNT_P = {"name": "account", "in": "path", "required": True, "schema": ACCOUNT_ID}
IDEM = {"$ref": "#/components/parameters/IdempotencyKey"}
PAGE = [{"$ref": "#/components/parameters/Limit"}, {"$ref": "#/components/parameters/StartingAfter"}]
paths = collections.OrderedDict()
def op(method, path, summary, roles, responses, request=None, params=(), op_id=None, links=None):
    p = paths.setdefault(path, {})
    if links:
        success = next(code for code in responses if code != "default")
        responses[success]["links"] = links
    o = {"operationId": op_id, "summary": summary, "description": f"Roles: {', '.join(roles)}.", "responses": responses}
    ps = list(params)
    if "{account}" in path: ps.insert(0, ACCOUNT_P)
    if method == "post": ps.append(IDEM)
    if ps: o["parameters"] = ps
    if request: o["requestBody"] = request
    p[method] = o
TERM = {"months": {"type": "integer", "minimum": 1, "maximum": 120}, "years": {"type": "integer", "minimum": 1, "maximum": 10}}
REF = ORDER_REF
# A pack is bought by count, a membership by months or years: one schema each, whole (a generated
# client makes one model of each), told apart by which of count, months and years they require.
COUNT = {"type": "integer", "minimum": 1, "maximum": 1000}
PURCHASES = [("Pack", {"item": PACK_ITEM, "count": COUNT}), ("MembershipMonths", {"item": MEMBERSHIP_ITEM, "months": TERM["months"]}),
             ("MembershipYears", {"item": MEMBERSHIP_ITEM, "years": TERM["years"]})]
RENEWALS = [("Months", {"product": MEMBERSHIP_PRODUCT, "months": TERM["months"]}), ("Years", {"product": MEMBERSHIP_PRODUCT, "years": TERM["years"]})]
def variants(name, cases, with_ref):
    """A body that is one of whole schemas, each a component (name + variant) whose fields are all required but ref."""
    refs = []
    for variant, props in cases:
        schemas[name + variant] = obj({**props, **({"ref": REF} if with_ref else {})}, list(props), additional=False)
        refs.append(ref(name + variant))
    return {"required": True, "content": {"application/json": {"schema": {"oneOf": refs}}}}
def link(operation, **parameters): return {"operationId": operation, "parameters": parameters}
ACCOUNT_OPS = ["getAccount", "verifyAccount", "topUp", "grantVoucher", "activate", "listPacks", "getUsage", "listOrders", "buy",
               "previewPurchase", "renew", "previewRenewal", "upgrade", "previewUpgrade", "assignSeat", "checkEntitlement", "listBills"]
def account_links(expression): return {op_id: link(op_id, account=expression) for op_id in ACCOUNT_OPS}
op("post", "/v1/accounts", "Open an account", ["operator"], resp(201, ref("Account"), "Opened"),
   body({"id": ID, "subject": {"type": "string", "enum": ["personal", "enterprise"]}, "verified": {"type": "boolean"}}, ["id", "subject"]), op_id="openAccount",
   links=account_links("$response.body#/id"))
op("get", "/v1/accounts", "List accounts (status=arrears for those in arrears)", ["operator"], resp(200, page(ref("Account"))),
   params=[{"name": "status", "in": "query", "schema": {"type": "string", "enum": ["active", "arrears", "suspended"]}}] + PAGE, op_id="listAccounts")
op("get", "/v1/accounts/{account}", "An account: status, balance, vouchers, packs, free quota, membership", ["operator", "customer"],
   resp(200, ref("Account")), op_id="getAccount")
op("post", "/v1/accounts/{account}/verification", "Record real-name verification", ["operator"], resp(200, ref("Account")),
   body({"subject": {"type": "string", "enum": ["personal", "enterprise"]}}), op_id="verifyAccount")
op("post", "/v1/accounts/{account}/top-ups", "Top up cash, income or gift", ["operator"],
   resp(201, obj({"account": {"type": "string"}, "balance": MONEY_OUT, "status": {"type": "string"}}, ["account", "balance", "status"]), "Credited"),
   {"required": True, "content": {"application/json": {"schema": {**obj({"cash": MONEY, "income": MONEY, "gift": MONEY}, additional=False),
                                                                  "minProperties": 1}}}}, op_id="topUp")
op("post", "/v1/accounts/{account}/vouchers", "Grant a voucher", ["operator"],
   resp(201, obj({"id": {"type": "string"}, "amount": MONEY_OUT, "remaining": MONEY_OUT, "expires": {"type": "string"}, "product": {"type": "string"}},
                 ["id", "amount", "remaining", "expires"]), "Granted"),
   body({"amount": MONEY, "expires": ex(TS, "2030-01-01T00:00:00+08:00"), "product": ANY_PRODUCT}, ["amount", "expires"]), op_id="grantVoucher")
op("post", "/v1/accounts/{account}/suspension", "Suspend for content violations, or lift the suspension", ["operator"], resp(200, ref("Account")),
   body({"suspended": {"type": "boolean"}}), op_id="suspendAccount")
op("post", "/v1/accounts/{account}/refund-review", "Hold or release refunds for review", ["operator"],
   resp(200, obj({"account": {"type": "string"}, "refund_review": {"type": "boolean"}}, ["account", "refund_review"])),
   body({"hold": {"type": "boolean"}}), op_id="reviewRefunds")
op("post", "/v1/accounts/{account}/activations", "Activate a product (grants this month's free quota)", ["operator", "customer"],
   resp(201, ref("Account"), "Activated"), body({"product": ACTIVATED_PRODUCT}, ["product"]), op_id="activate")
op("get", "/v1/accounts/{account}/packs", "Every pack with what is left and when it expires", ["operator", "customer"], resp(200, page(ref("Pack"))),
   params=PAGE, op_id="listPacks")
op("get", "/v1/accounts/{account}/usage", "A month's calls and estimated charges per API, by day", ["operator", "customer"], resp(200, ref("Usage")),
   params=[{"name": "month", "in": "query", "schema": MONTH}], op_id="getUsage")
op("get", "/v1/accounts/{account}/notifications", "Notices sent about the account", ["operator", "customer"], resp(200, page(ref("Notice"))),
   params=PAGE, op_id="listNotifications")
op("get", "/v1/accounts/{account}/orders", "Orders, each with whether it may be refunded now", ["operator", "customer"], resp(200, page(ref("Order"))),
   params=PAGE, op_id="listOrders")
op("post", "/v1/accounts/{account}/orders", "Buy packs (count) or a membership term (months or years)", ["operator", "customer"],
   resp(201, ref("Order"), "Placed"), variants("Purchase", PURCHASES, with_ref=True), op_id="buy",
   links={"refund": link("refund", account="$request.path.account", order="$response.body#/id")})
op("post", "/v1/accounts/{account}/orders/preview", "What a purchase would cost and how it would be paid", ["operator", "customer"],
   resp(200, ref("OrderPreview")), variants("PurchasePreview", PURCHASES, with_ref=False), op_id="previewPurchase")
op("post", "/v1/accounts/{account}/renewals", "Renew the membership held", ["operator", "customer"], resp(201, ref("Order"), "Placed"),
   variants("Renewal", RENEWALS, with_ref=True), op_id="renew")
op("post", "/v1/accounts/{account}/renewals/preview", "What a renewal would cost and how it would be paid", ["operator", "customer"],
   resp(200, ref("OrderPreview")), variants("RenewalPreview", RENEWALS, with_ref=False),
   op_id="previewRenewal")
op("post", "/v1/accounts/{account}/upgrades", "Upgrade the membership to a higher edition", ["operator", "customer"], resp(201, ref("Order"), "Placed"),
   body({"to": MEMBERSHIP_ITEM, "ref": REF}, ["to"]), op_id="upgrade")
op("post", "/v1/accounts/{account}/upgrades/preview", "What an upgrade would cost now", ["operator", "customer"], resp(200, ref("OrderPreview")),
   body({"to": on_sale(ITEM, "membership-items", "taishan/enterprise-premium")}, ["to"]), op_id="previewUpgrade")
op("post", "/v1/accounts/{account}/orders/{order}/refund", "Refund an order of packs (SPEC 5)", ["operator", "customer"],
   resp(200, obj({"refunded": MONEY_OUT, "order": ref("Order")}, ["refunded", "order"])),
   {"required": False, "content": {"application/json": {"schema": obj({}, additional=False)}}},
   params=[{"name": "order", "in": "path", "required": True, "schema": ex(REF, "fuzz-pack")}], op_id="refund")
op("post", "/v1/accounts/{account}/seats", "Assign a membership seat to a user", ["operator", "customer"],
   resp(201, obj({"user": {"type": "string"}, "seats_left": {"type": "integer"}}, ["user", "seats_left"]), "Assigned"),
   body({"product": MEMBERSHIP_PRODUCT, "user": USER}, ["user"]), op_id="assignSeat")
op("post", "/v1/accounts/{account}/entitlements/check", "May this user use this feature? (use=true spends a use)", ["operator", "customer", "gateway"],
   resp(200, obj({"allowed": {"type": "boolean"}, "edition": {"type": "string"}, "remaining": {"type": "integer"},
                  "reason": {"type": "string"}, "detail": {"type": "string"}}, ["allowed"])),
   body({"feature": FEATURE, "user": USER, "use": {"type": "boolean"}}, ["feature"]),
   op_id="checkEntitlement")
op("post", "/v1/usage/check", "Check and record one event before serving it", ["operator", "gateway"], resp(200, ref("Outcome")),
   {"required": True, "content": {"application/json": {"schema": ref("UsageEvent")}}}, op_id="checkUsage",
   links={"getAccount": link("getAccount", account="$request.body#/account"), "getUsage": link("getUsage", account="$request.body#/account"),
          "checkEntitlement": link("checkEntitlement", account="$request.body#/account")})
op("post", "/v1/usage/check-batch", "Check and record up to 1,000 events, one decision each", ["operator", "gateway"], resp(200, ref("BatchResult")),
   body({"events": {"type": "array", "minItems": 1, "maxItems": 1000, "items": ref("UsageEvent")}}, ["events"]), op_id="checkUsageBatch")
op("post", "/v1/usage/report", "Report up to 10,000 events already served", ["operator", "gateway"], resp(200, ref("BatchResult")),
   body({"events": {"type": "array", "minItems": 1, "maxItems": 10000, "items": ref("UsageEvent")}}, ["events"]), op_id="reportUsage")
GATEWAY_OK = {"description": "The call may go through; X-Tally-Payer names who pays.",
              "headers": {"X-Tally-Payer": {"required": True, "schema": {"type": "string", "enum": ["free", "pack", "postpaid"]}},
                          "X-Tally-Remaining": {"schema": {"type": "string", "pattern": "^[0-9]+$"}}},
              "content": {"application/json": {"schema": ref("Outcome")}}}
GATEWAY_REFUSED = {"description": "A refused call (403, or the deny_status asked for, with X-Tally-Refusal and X-Tally-Status: 429), "
                                  "a malformed request (400) or a bad key (401).",
                   "content": {"application/problem+json": {"schema": ref("Problem")}}}
GATEWAY_PARAMS = [{"$ref": f"#/components/parameters/{name}"} for name in
                  ["GatewayAccount", "GatewayApi", "GatewayEdition", "GatewayCalls", "RequestId", "DenyStatus"]]
paths["/v1/gateway/authorize"] = {
    "get": {"operationId": "authorizeCall",
            "summary": "Check and record one call for a gateway: Envoy ext_authz (HTTP service) and nginx auth_request. Any method is accepted, "
                       "and any path below /v1/gateway/authorize/ (the ext_authz path_prefix); no body is read.",
            "description": "Roles: operator, gateway.", "responses": {"200": GATEWAY_OK, "default": GATEWAY_REFUSED}, "parameters": GATEWAY_PARAMS},
    "post": {"operationId": "authorizeCallPost", "summary": "The same decision for a subrequest that keeps the client's POST; its body is not read.",
             "description": "Roles: operator, gateway.", "responses": {"200": GATEWAY_OK, "default": GATEWAY_REFUSED}, "parameters": GATEWAY_PARAMS},
}
op("get", "/v1/accounts/{account}/bills", "The account's bills", ["operator", "customer"], resp(200, page(ref("Bill"))), params=PAGE, op_id="listBills",
   links={"getBill": link("getBill", bill="$response.body#/data/0/id")})
r = resp(200, ref("Bill"))
r["200"]["content"]["text/csv"] = {"schema": {"type": "string"}}
r["200"]["content"]["text/html"] = {"schema": {"type": "string"}}
op("get", "/v1/bills/{bill}", "A bill as JSON, CSV (format=csv) or a printable page (format=html)", ["operator", "customer"], r,
   params=[{"name": "bill", "in": "path", "required": True, "schema": BILL_ID},
           {"name": "format", "in": "query", "schema": {"type": "string", "enum": ["json", "csv", "html"]}}], op_id="getBill")
op("post", "/v1/bill-runs", "Run the bill run for a month (safe to repeat)", ["operator"],
   resp(201, obj({"month": {"type": "string"}, "accounts": {"type": "integer"}, "bills_created": {"type": "integer"},
                  "bills_existing": {"type": "integer"}, "total": MONEY_OUT}, ["month", "accounts", "bills_created", "bills_existing", "total"]), "Run"),
   body({"month": MONTH}, ["month"]), op_id="runBills")
op("get", "/v1/catalog", "The catalog version in force", ["operator", "customer", "gateway"], resp(200, ref("Catalog")), op_id="getCatalog")
op("get", "/v1/catalog/versions", "Catalog versions by effective date", ["operator", "customer", "gateway"],
   resp(200, obj({"data": {"type": "array", "items": obj({"effective": {"type": "string"}, "note": {"type": "string"}, "published": {"type": "string"}}, ["effective"])}}, ["data"])),
   op_id="listCatalogVersions")
op("post", "/v1/catalog/versions", "Publish a catalog change (30 days' notice for a cut or a rise unless forced)", ["operator"],
   resp(201, obj({"effective": {"type": "string"}, "notified": {"type": "array", "items": {"type": "string"}}}, ["effective", "notified"]), "Published"),
   body({"effective": ex(TS, "2030-01-01T00:00:00+08:00"),
         "changes": {"oneOf": [
             {"type": "string", "minLength": 1, "maxLength": 1000000,
              "description": "A YAML document: changes: [{api: ..., free_monthly: ..., postpaid: ...}, {item: ..., price: ... | prices: {month: ..., year: ...}}], "
                             "or products: [...] for a whole new catalog",
              "examples": ["changes: [{api: image-tagging.general, free_monthly: 1000}]"]},
             {"type": "array", "minItems": 1, "maxItems": 1000, "description": "The list of changes as JSON (the YAML document's changes)",
              "items": {"oneOf": [
                  obj({"api": API_ON_SALE, "free_monthly": {"type": "integer", "minimum": 0, "maximum": 1000000000000}}, ["api", "free_monthly"], additional=False),
                  obj({"item": PACK_ITEM, "price": MONEY}, ["item", "price"], additional=False),
                  obj({"item": MEMBERSHIP_ITEM, "prices": {**obj({"month": MONEY, "year": MONEY}, additional=False), "minProperties": 1}}, ["item", "prices"], additional=False)]},
              "examples": [[{"api": "image-tagging.general", "free_monthly": 1000}]]}]},
         "force": {"type": "boolean"}}, ["effective", "changes"]), op_id="publishCatalog")
op("get", "/v1/quote", "The cheapest mix of packs and post-paid calls for a usage", ["operator", "customer"], resp(200, ref("Quote")),
   params=[{"name": "api", "in": "query", "required": True, "schema": API_ON_SALE},
           {"name": "calls", "in": "query", "required": True, "schema": {"type": "integer", "minimum": 1}},
           {"name": "months", "in": "query", "schema": {"type": "integer", "minimum": 1}},
           {"name": "qps", "in": "query", "schema": {"type": "integer", "minimum": 1}}], op_id="quote")
op("post", "/v1/keys", "Issue an API key (its secret is shown once)", ["operator"], resp(201, ref("Key"), "Issued"),
   {"required": True, "content": {"application/json": {"schema": {"oneOf": [
       obj({"role": {"const": "customer"}, "account": ACCOUNT_ID}, ["role", "account"], additional=False),
       {**obj({"role": {"const": "gateway"}, "account": ACCOUNT_ID}, ["role"], additional=False),
        "description": "A gateway key, for every account or (with account) for one account's usage only."},
       obj({"role": {"const": "operator"}}, ["role"], additional=False)]}}}}, op_id="issueKey",
   links={"revokeKey": link("revokeKey", key="$response.body#/id")})
op("get", "/v1/keys", "API keys (never their secrets)", ["operator"], resp(200, page(ref("Key"))), params=PAGE, op_id="listKeys")
op("delete", "/v1/keys/{key}", "Revoke an API key", ["operator"], resp(200, ref("Key")),
   params=[{"name": "key", "in": "path", "required": True, "schema": KEY_ID}], op_id="revokeKey")
op("post", "/v1/webhook-endpoints", "Add a webhook endpoint (its signing secret is shown once)", ["operator", "customer"],
   resp(201, ref("WebhookEndpoint"), "Added"), body({"url": {"type": "string", "format": "uri", "maxLength": 2048}, "account": ACCOUNT_ID}, ["url"]),
   op_id="addWebhookEndpoint", links={"removeWebhookEndpoint": link("removeWebhookEndpoint", endpoint="$response.body#/id")})
op("get", "/v1/webhook-endpoints", "Webhook endpoints", ["operator", "customer"], resp(200, page(ref("WebhookEndpoint"))), params=PAGE,
   op_id="listWebhookEndpoints")
op("delete", "/v1/webhook-endpoints/{endpoint}", "Remove a webhook endpoint", ["operator", "customer"],
   resp(200, obj({"id": {"type": "string"}, "deleted": {"type": "boolean"}}, ["id", "deleted"])),
   params=[{"name": "endpoint", "in": "path", "required": True, "schema": ENDPOINT_ID}], op_id="removeWebhookEndpoint")
doc = {
 "openapi": "3.1.0",
 "info": {"title": "Tally", "version": "1.0.0",
          "description": "Metering, quota and billing for cloud API products and memberships. Amounts are decimal strings in yuan; "
                         "errors are application/problem+json with a stable snake_case code. Every POST takes an Idempotency-Key."},
 "servers": [{"url": "http://127.0.0.1:8080"}],
 "security": [{"bearer": []}],
 "paths": paths,
 "components": {
   "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "description": "An API key: operator, customer (one account) or gateway (usage only)."}},
   "parameters": {
     "IdempotencyKey": {"name": "Idempotency-Key", "in": "header", "required": False, "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
                        "description": "Replays the first answer for the same key and body for 24 hours."},
     "Limit": {"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 1000, "default": 100}},
     "StartingAfter": {"name": "starting_after", "in": "query", "schema": {"type": "string", "maxLength": 200}},
     "GatewayAccount": {"name": "X-Tally-Account", "in": "header", "required": True, "schema": ACCOUNT_ID,
                        "description": "The account the call is for. A gateway key scoped to one account may leave it out; every other key must send it."},
     "GatewayApi": {"name": "X-Tally-Api", "in": "header", "required": True, "schema": API_ON_SALE},
     "GatewayEdition": {"name": "X-Tally-Edition", "in": "header", "required": False, "schema": EDITION_ON_SALE},
     "GatewayCalls": {"name": "X-Tally-Calls", "in": "header", "required": False,
                      "schema": {"type": "integer", "minimum": 1, "maximum": 1000000000, "default": 1}},
     "RequestId": {"name": "X-Request-Id", "in": "header", "required": True, "schema": EVENT_ID,
                   "description": "The event id; a retry with the same request id is counted once."},
     "DenyStatus": {"name": "deny_status", "in": "query", "required": False, "schema": {"type": "integer", "enum": [402, 403, 429], "default": 403},
                    "description": "The status of a refusal (403 by default, which nginx auth_request passes through)."}},
   "schemas": schemas}}
class D(yaml.SafeDumper): pass
D.add_representer(collections.OrderedDict, lambda d, v: d.represent_dict(v.items()))
D.ignore_aliases = lambda *a: True
print(yaml.dump(doc, Dumper=D, sort_keys=False, allow_unicode=True, width=140), end="")
