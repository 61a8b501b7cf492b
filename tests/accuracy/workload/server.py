"""The HTTP service the workloads call: every POST sleeps a known time. Records its own truth.

    python server.py TRUTH_DIR SLEEP_MS [parse]

Prints its port, serves until its stdin closes, then stops. Each request is a `served` block, from
starting to read the request's headers to having answered it (the extent a SERVER span claims);
with `parse`, the handler decodes the JSON body (a `serialization` block inside it). Its threads
(the one serving, one per request) are `thread` blocks, the main thread's wait for stdin to
close is a `blocked` block, and its shutdown() a wait on the serving thread (the Event that thread
sets once its poll sees the request: a threading.Condition wait, hooks/threads.py). The serving
loop's selects that found nothing in their 10 ms are `sleep` blocks.
"""

import time

# truth.clocks() and clocks_before() before truth.py (its import is measured) is imported. `first` ends
# start-up: the wall clock, the queued time as of then (a read that took long waited for a CPU, after
# `first`), the CPU clock last (its read can end the time slice: that wait too comes after `first`).
# `imports` starts the imports: the wall clock last (the import spans start after it).
QUEUED = "/proc/thread-self/schedstat"
at, queued = time.time_ns(), int(open(QUEUED, "rb").read().split()[1])
waited = time.time_ns() - at
first = (at, time.thread_time_ns(), queued - (waited if waited > 100_000 else 0))
cpu, queued = time.thread_time_ns(), int(open(QUEUED, "rb").read().split()[1])
imports = (time.time_ns(), cpu, queued)
import atexit  # noqa: E402
import encodings.idna  # noqa: E402,F401  (imported when the server binds: its host name)
import http.server  # noqa: E402
import json  # noqa: E402
import socketserver  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402

import truth  # noqa: E402

imported = truth.clocks()
record = truth.Recorder(sys.argv[1], first, role="server")
atexit.register(record.write)
record.add("imports", imports, imported)
SLEEP_S = float(sys.argv[2]) / 1000
PARSE = sys.argv[3:] == ["parse"]


class Handler(http.server.BaseHTTPRequestHandler):
    def handle_one_request(self):
        self.truth_start = None
        super().handle_one_request()
        if self.truth_start is not None:
            record.end(self.truth_start, "served", path=self.path)

    def parse_request(self):
        self.truth_start = record.begin_call()
        return super().parse_request()

    def do_POST(self):
        body = self.rfile.read(int(self.headers["Content-Length"]))
        if PARSE:
            parsing = record.begin_call()
            parsed = json.loads(body)
            record.end(parsing, "serialization")  # before the result is freed (4-6 ms for 3 MB), as the span ends
            got = len(parsed["items"])
            del parsed
        else:
            got = len(body)
        time.sleep(SLEEP_S)
        answer = ('{"path": "%s", "got": %d, "pad": "%s"}' % (self.path, got, "y" * 300)).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)
        self.wfile.flush()

    def log_message(self, *args):
        pass


class Selector(socketserver._ServerSelector):
    """The serving loop's selects: one that returned nothing after its timeout (`poll_interval`: no
    request came) is a sleep of the loop's, as the tracer records it (hooks/socketserver_.py)."""

    def select(self, timeout=None):
        begun = truth.clocks()
        ready = super().select(timeout)
        if not ready and timeout is not None:
            record.add("sleep", begun, truth.clocks_before(), seconds=timeout, asleep=begun[0])
        return ready


socketserver._ServerSelector = Selector


class Server(http.server.ThreadingHTTPServer):
    def process_request_thread(self, request, client_address):
        begun = record.begin()
        try:
            super().process_request_thread(request, client_address)
        finally:
            record.end(begun, "thread", name="handler")


def serve():
    begun = record.begin()
    server.serve_forever(poll_interval=0.01)
    record.end(begun, "thread", name="serve")


server = Server(("127.0.0.1", 0), Handler)
serving = threading.Thread(target=serve)
serving.start()
print(server.server_address[1], flush=True)
blocked = record.begin()
sys.stdin.read()
record.end(blocked, "blocked")
record.wait(server.shutdown, threads=["serve"])
record.wait(serving.join, threads=["serve"])
