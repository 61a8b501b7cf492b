"""Case (b): an HTTP server child started first and stopped last, with work and calls in between.

    python server_first.py TRUTH_DIR

Starts server.py (it prints its port: reading it blocks), serializes a payload of a few MB with
json, POSTs it (the handler decodes it and sleeps), runs two children one after the other, then
closes the server's stdin and waits for it to stop.
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
import email.feedparser  # noqa: E402,F401
import email.parser  # noqa: E402,F401
import encodings.idna  # noqa: E402,F401
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import truth  # noqa: E402

imported = truth.clocks()
try:  # the tracer wraps os.waitpid on first use (its own import, no span): here, not in a child's wait
    os.waitpid(-1, os.WNOHANG)
except ChildProcessError:
    pass
TRUTH_DIR = sys.argv[1]
HERE = os.path.dirname(os.path.abspath(__file__))
record = truth.Recorder(TRUTH_DIR, first, role="main")
atexit.register(record.write)
record.add("imports", imports, imported)

server = truth.spawn(record, [sys.executable, os.path.join(HERE, "server.py"), TRUTH_DIR,
                              os.environ["ACCURACY_SERVER_MS"], "parse"], stdin=subprocess.PIPE, stdout=subprocess.PIPE)
blocked = record.begin()
port = int(server.stdout.readline())
record.end(blocked, "blocked")

data = {"items": [{"id": i, "name": "item %d" % i, "tags": ["a", "b", "c"], "score": i * 0.5}
                  for i in range(int(os.environ["ACCURACY_PAYLOAD_ITEMS"]))]}
serialization = record.begin_call()
text = json.dumps(data)
record.end(serialization, "serialization", bytes=len(text))
body = text.encode()

connection = http.client.HTTPConnection("127.0.0.1", port)
connection.putrequest("POST", "/upload")
connection.putheader("Content-Type", "application/json")
connection.putheader("Content-Length", str(len(body)))
request = record.begin_call()
connection.endheaders(body)
size = len(connection.getresponse().read())
record.end(request, "request", path="/upload", request_bytes=len(body), response_bytes=size)
connection.close()

command = [sys.executable, os.path.join(HERE, "child.py"), TRUTH_DIR]
for _ in range(2):
    child = truth.spawn(record, command)
    record.wait(child.wait, pids=[child.pid])
record.wait(server.communicate, pids=[server.pid])
