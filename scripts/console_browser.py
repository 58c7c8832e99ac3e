"""Drives the console in headless chromium; see scripts/console-test. Exits non-zero on any failure.

Arguments: the server's base URL, the operator key, the screenshots' folder, and a command that
restarts the server on the same port (the session must survive it)."""
import re
import json
import subprocess
import sys
import urllib.request
from datetime import datetime, timedelta, timezone

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support import expected_conditions
from selenium.webdriver.support.ui import WebDriverWait

base, operator_key, shots, restart = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]


def api(method, path, body=None):
    request = urllib.request.Request(base + path, method=method, data=json.dumps(body).encode() if body is not None else None,
                                     headers={"Authorization": "Bearer " + operator_key, "Content-Type": "application/json"})
    with urllib.request.urlopen(request) as response:
        return json.loads(response.read())


# A customer with last month's bill, this month's usage and a pack it may refund; another account
# left in arrears by last month's bill run.
beijing = timezone(timedelta(hours=8))
now = datetime.now(beijing)
last_month = (now.replace(day=1) - timedelta(days=1)).replace(day=15, hour=12, minute=0, second=0, microsecond=0)
api("POST", "/v1/accounts", {"id": "acme", "subject": "enterprise", "verified": True})
api("POST", "/v1/accounts/acme/top-ups", {"cash": "500.00", "gift": "20.00"})
api("POST", "/v1/accounts/acme/activations", {"product": "image-tagging"})
api("POST", "/v1/usage/report", {"events": [{"account": "acme", "id": "today", "api": "image-tagging.general", "calls": 2400}]})
api("POST", "/v1/accounts/acme/orders", {"item": "image-tagging.general/10k", "count": 1, "ref": "pack-1"})
api("POST", "/v1/usage/report", {"events": [{"account": "acme", "id": "last-month", "api": "image-tagging.general", "calls": 12000,
                                             "time": last_month.isoformat()}]})
api("POST", "/v1/accounts", {"id": "late-payer", "subject": "personal", "verified": True})
api("POST", "/v1/accounts/late-payer/activations", {"product": "image-tagging"})
api("POST", "/v1/usage/report", {"events": [{"account": "late-payer", "id": "old", "api": "image-tagging.general", "calls": 40000,
                                             "time": last_month.isoformat()}]})
api("POST", "/v1/bill-runs", {"month": last_month.strftime("%Y-%m")})
customer_key = api("POST", "/v1/keys", {"role": "customer", "account": "acme"})["secret"]

options = webdriver.ChromeOptions()
for argument in ["--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1100,1600"]:
    options.add_argument(argument)
options.binary_location = "/usr/bin/chromium"
driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
failures = []


def wait_for(element_id):
    """The element once the page that has it has loaded (a click's navigation may still be running)."""
    return WebDriverWait(driver, 15).until(expected_conditions.presence_of_element_located((By.ID, element_id)))


def check(condition, message):
    print(("ok   " if condition else "FAIL ") + message)
    if not condition:
        failures.append(message)


try:
    driver.get(base + "/console")
    wait_for("key").send_keys(customer_key)
    driver.find_element(By.ID, "sign-in").click()
    wait_for("balance")
    check(driver.current_url.endswith("/console/accounts/acme"), "a customer key lands on its own account")
    bars = driver.find_elements(By.CSS_SELECTOR, "svg.chart rect.bar")
    check(len(bars) >= 28, f"the usage chart has a bar a day ({len(bars)})")
    check(any(float(bar.get_attribute("height")) > 0 for bar in bars), "today's bar is drawn")
    check("2,400" in driver.find_element(By.ID, "usage").text, "this month's calls are shown, with separators")
    bills = driver.find_element(By.ID, "bills").text
    bill_total = api("GET", "/v1/accounts/acme/bills")["data"][0]["total"]
    check(last_month.strftime("%Y-%m") in bills and f"¥{bill_total}" in bills, f"last month's bill is listed (¥{bill_total})")
    check("Image Tagging (image-tagging)" in bills, "the bill names its product by the catalog's name, the id second")
    # Display only: every amount here has two decimals, so cents as integers compare exactly.
    cents = lambda text: int(text.replace(".", ""))
    left = 52000 - 3000 - cents(bill_total)
    check(driver.find_element(By.ID, "total").text == f"¥{left // 100:,}.{left % 100:02d}",
          f"the balance is 520.00 less the 30.00 pack and the {bill_total} bill, with the currency")
    balance = driver.find_element(By.ID, "balance").text
    check("北京时间 Beijing time" in balance, "the zone of the page's times is named")
    packs = driver.find_element(By.ID, "packs").text
    check("1万次" in packs and "可用 Active" in packs, "packs show the catalog's names and their state as a sentence")
    check(re.search(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}", packs) is not None and re.search(r"\d{2}T\d{2}:", packs) is None,
          "times read as 2026-12-07 15:14")
    history = driver.find_element(By.ID, "history").text
    check("充值 Top-up" in history and "购买 Purchase" in history and "-¥30.00" in history, "the money history lists the top-up and the purchase")
    check("账单扣款 Bill paid" in history and f"-¥{bill_total}" in history, "and the bill's payment")
    # The whole page: the pack, the bill, the running bill and the history in one picture.
    driver.set_window_size(1100, driver.execute_script("return document.documentElement.scrollHeight") + 120)
    driver.save_screenshot(f"{shots}/1-customer-account.png")
    driver.set_window_size(1100, 1600)
    check("an estimate" in driver.find_element(By.ID, "usage").text and driver.find_element(By.ID, "running-bill").text.startswith("¥"),
          "the running bill is shown, marked as an estimate")
    check(driver.find_element(By.CSS_SELECTOR, "svg.chart").size["width"] > 800, "the chart uses the width")
    sign_out = driver.find_element(By.ID, "sign-out")
    check(sign_out.value_of_css_property("color") != sign_out.value_of_css_property("background-color"), "the sign-out button is readable")
    driver.find_element(By.ID, "refund-pack-1").click()
    check("¥30.00" in wait_for("refund-amount").text, "a refund asks first, saying what comes back")
    driver.save_screenshot(f"{shots}/2-confirm-refund.png")
    driver.find_element(By.ID, "confirm-refund").click()
    check("已退款 Refunded ¥30.00" in wait_for("flash").text, "the refund is confirmed")
    left += 3000
    check(driver.find_element(By.ID, "total").text == f"¥{left // 100:,}.{left % 100:02d}", "the money is back")
    check(not driver.find_elements(By.ID, "refund-pack-1"), "the refund button is gone")
    driver.save_screenshot(f"{shots}/3-after-refund.png")
    # Banners come from the server, never from the URL: a made-up link shows none.
    driver.get(base + "/console/accounts/acme?refunded=99999.00&error=Call%20us%20at%20555")
    wait_for("balance")
    check(not driver.find_elements(By.ID, "flash") and "99999" not in driver.page_source and "Call us" not in driver.page_source,
          "a made-up URL shows no banner")
    # A restart of the server signs nobody out.
    subprocess.run(restart, shell=True, check=True, timeout=60)
    driver.get(base + "/console/accounts/acme")
    check(bool(driver.find_elements(By.ID, "balance")), "the session survives a restart of the server")
    driver.find_element(By.ID, "sign-out").click()
    wait_for("key").send_keys(operator_key)
    driver.find_element(By.ID, "sign-in").click()
    arrears = wait_for("arrears").text
    check("late-payer" in arrears, "the operator sees the account in arrears")
    check("acme" not in arrears, "and not the account in good standing")
    driver.save_screenshot(f"{shots}/4-operator-arrears.png")
finally:
    driver.quit()
print(f"console-test: {len(failures)} failures; screenshots in {shots}")
sys.exit(1 if failures else 0)
