"""The service the workload calls: every POST sleeps a known time. Traced as a run of its own.

    python server.py SLEEP_MS TRUTH_FILE

Prints its port, serves until its stdin closes. Each request appends its truth (what the server
measured itself, from starting to read the request's headers to having answered it: the extent a
SERVER span claims) to TRUTH_FILE as a JSON line.
"""

import http.server
import json
import sys
import threading
import time

SLEEP_S = float(sys.argv[1]) / 1000
TRUTH = sys.argv[2]
lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def handle_one_request(self):
        self.truth_start = None
        super().handle_one_request()
        end = time.time_ns()
        if self.truth_start is not None:
            with lock, open(TRUTH, "a") as truth:
                truth.write(json.dumps({"path": self.path, "start": self.truth_start, "end": end}) + "\n")

    def parse_request(self):
        self.truth_start = time.time_ns()
        return super().parse_request()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        time.sleep(SLEEP_S)
        answer = json.dumps({"path": self.path, "got": len(body), "pad": "y" * 300}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        self.wfile.flush()

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
print(server.server_address[1], flush=True)
sys.stdin.read()
server.shutdown()
