"""The README's quick-start through a client generated from /openapi.yaml by openapi-python-client
(see scripts/client-test). Every call goes through the generated functions and models; nothing here
knows the API beyond the document. Exits non-zero on the first thing that is not as the price list
says."""
import sys
from datetime import datetime, timedelta, timezone

from tally_client import AuthenticatedClient
from tally_client.api.default import (activate, buy, check_usage, get_bill, get_usage, list_bills, list_packs, open_account,
                                      report_usage, run_bills, top_up)
from tally_client.models import (ActivateBody, ActivateBodyProduct, OpenAccountBody, PurchasePack, PurchasePackItem,
                                 OpenAccountBodySubject, Problem, ReportUsageBody, RunBillsBody, TopUpBody, UsageEvent, UsageEventApi)

base, operator_key = sys.argv[1], sys.argv[2]
client = AuthenticatedClient(base_url=base, token=operator_key, raise_on_unexpected_status=True)
API = UsageEventApi("image-tagging.general")
CHECK_CALLS = 500
steps = 0


def ok(answer, what):
    """The answer, once it is known not to be a refusal."""
    global steps
    if answer is None or isinstance(answer, Problem):
        detail = f"{answer.code}: {answer.detail}" if isinstance(answer, Problem) else "no answer"
        sys.exit(f"client-test: {what} was refused ({detail})")
    steps += 1
    print(f"ok   {what}")
    return answer


def expect(condition, what):
    if not condition:
        sys.exit(f"client-test: FAIL {what}")
    print(f"ok   {what}")


account = ok(open_account.sync(client=client, body=OpenAccountBody(id="acme", subject=OpenAccountBodySubject.ENTERPRISE, verified=True)),
             "open the account")
expect(account.status.value == "active", "the account is active")
credited = ok(top_up.sync("acme", client=client, body=TopUpBody(cash="100.00")), "top up 100.00")
expect(credited.balance == "100.00", "the balance is 100.00")
activated = ok(activate.sync("acme", client=client, body=ActivateBody(product=ActivateBodyProduct("image-tagging"))), "activate Image Tagging")
order = ok(buy.sync("acme", client=client, body=PurchasePack(item=PurchasePackItem("image-tagging.general/10k"), count=1)),
           "buy a pack of 10,000 calls")
expect(order.amount == "30.00", f"the pack costs 30.00 ({order.amount})")

# Checks of 500 calls each: the month's free 1,000 first, then the pack's 10,000, then post-paid.
sources = []
while "postpaid" not in sources and len(sources) < 100:
    outcome = ok(check_usage.sync(client=client, body=UsageEvent(account="acme", id=f"call-{len(sources)}", api=API, calls=CHECK_CALLS)),
                 f"check {len(sources) + 1}")
    expect(outcome.accepted, "the check is accepted")
    sources.append(outcome.source.value)
expect(sources == ["free"] * 2 + ["pack"] * 20 + ["postpaid"], f"free quota, then the pack, then post-paid ({sources})")
packs = ok(list_packs.sync("acme", client=client), "list the packs").data
bought = [pack for pack in packs if pack.item == "image-tagging.general/10k"]
expect(len(bought) == 1 and bought[0].left == 0, "the pack is used up")

now = datetime.now(timezone(timedelta(hours=8)))
usage = ok(get_usage.sync("acme", client=client, month=now.strftime("%Y-%m")), "this month's usage")
line = usage.apis.additional_properties["image-tagging.general"]
expect((line.calls, line.free, line.pack, line.postpaid) == (11_500, 1_000, 10_000, 500),
       f"11,500 calls: 1,000 free, 10,000 from the pack, 500 post-paid ({line.calls}, {line.free}, {line.pack}, {line.postpaid})")

# A past month: usage reported with last month's time, then that month's bill run.
last_month = (now.replace(day=1) - timedelta(days=1)).replace(day=15, hour=12, minute=0, second=0, microsecond=0)
month = last_month.strftime("%Y-%m")
reported = ok(report_usage.sync(client=client, body=ReportUsageBody(events=[
    UsageEvent(account="acme", id="last-month", api=API, calls=20_000, time=last_month.isoformat())])), "report last month's usage")
expect(reported.accepted == 1, "the event is accepted")
estimate = ok(get_usage.sync("acme", client=client, month=month), "last month's usage").apis.additional_properties["image-tagging.general"]
run = ok(run_bills.sync(client=client, body=RunBillsBody(month=month)), f"run the bills of {month}")
expect(run.bills_created >= 1, "a bill is made")
bills = ok(list_bills.sync("acme", client=client), "list the bills").data
expect(len(bills) == 1 and bills[0].month == month, f"one bill, for {month}")
bill = ok(get_bill.sync(bills[0].id, client=client), "read the bill")
expect(sum(l.calls for l in bill.lines) == 20_000, "the bill counts the 20,000 calls")
fen = lambda text: int(text.replace(".", "").replace("-", "")) * (-1 if text.startswith("-") else 1)  # two decimals: exact in fen
expect(fen(bill.total) == sum(fen(l.amount) for l in bill.lines), f"the bill's total is the sum of its lines ({bill.total})")
expect(bill.total == estimate.estimated_amount, f"the bill is the month's estimate ({estimate.estimated_amount})")
print(f"client-test: the quick-start passed through the generated client ({steps} calls)")
