"""The upstream behind the gateways in scripts/gateway-test: python3's http.server answering 200 to
every request, and writing one JSON line per request it served (path, X-Request-Id, the
X-Tally-* headers the gateway added) to the file named by its second argument. A path holding
"flaky" fails the first attempt of each request id with 503, so that Envoy's retry policy retries
it upstream."""
import http.server
import json
import sys
import threading

port, log_path = int(sys.argv[1]), sys.argv[2]
lock = threading.Lock()
failed_once = set()


class Upstream(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def answer(self):
        request_id = self.headers.get("X-Request-Id", "")
        if "flaky" in self.path:
            with lock:
                first = request_id not in failed_once
                failed_once.add(request_id)
            if first:
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        record = {"path": self.path, "request_id": request_id, "account": self.headers.get("X-Tally-Account"),
                  "payer": ",".join(self.headers.get_all("X-Tally-Payer") or []) or None, "remaining": self.headers.get("X-Tally-Remaining")}
        with lock, open(log_path, "a") as log:
            log.write(json.dumps(record) + "\n")
        body = b"served\n"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_POST = answer

    def log_message(self, *args):
        pass


http.server.ThreadingHTTPServer(("127.0.0.1", port), Upstream).serve_forever()
