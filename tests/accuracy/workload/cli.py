"""The workload with known costs: serialize a payload, call the service through a delay proxy,
start Python children that import a slow module. It records what it measured itself (truth.py).

    python cli.py TRUTH_DIR PROXY_PORT CASE MODE REQUESTS CHILDREN

CASE (a number) makes the request paths unique: /items/<CASE * 100 + i>.

MODE: sequential (everything one after the other), threads (the requests from a thread pool, at
once, each result waited for), parallel (the children all started before any is waited for).
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
# Everything the program uses later is imported here, timed, so that nothing imports lazily inside
# the measured steps below (http.client imports email.* and encodings.idna on first use).
cpu, queued = time.thread_time_ns(), int(open(QUEUED, "rb").read().split()[1])
imports = (time.time_ns(), cpu, queued)
import atexit  # noqa: E402
import concurrent.futures  # noqa: E402
import concurrent.futures.thread  # noqa: E402,F401  (ThreadPoolExecutor: imported on first use)
import email.feedparser  # noqa: E402,F401
import email.parser  # noqa: E402,F401
import encodings.idna  # noqa: E402,F401  (host names are encoded with it on the first request)
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402,F401

import truth  # noqa: E402

imported = truth.clocks()
try:  # the tracer wraps os.waitpid on first use (its own import, no span): here, not in a child's wait
    os.waitpid(-1, os.WNOHANG)
except ChildProcessError:
    pass

TRUTH_DIR, PROXY_PORT, CASE, MODE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
REQUESTS, CHILDREN = int(sys.argv[5]), int(sys.argv[6])
SLOW_OBJECT_MS = float(os.environ["ACCURACY_SLOW_OBJECT_MS"])
HERE = os.path.dirname(os.path.abspath(__file__))
REQUEST_BODY = b'{"query": "' + b"x" * 500 + b'"}'  # no json call outside the measured steps
record = truth.Recorder(TRUTH_DIR, first, role="main")
atexit.register(record.write)
record.add("imports", imports, imported)


class Slow:
    """An object json cannot encode by itself: its `default` hook takes a known time."""


def encode_slowly(value):
    time.sleep(SLOW_OBJECT_MS / 1000)
    return "slow"


def call(index):
    """One POST on a new connection, with http.client: the layer the tracer's client span covers,
    from endheaders (the request goes out) to the end of the response body."""
    begun = record.begin()
    path = f"/items/{CASE * 100 + index}"
    connection = http.client.HTTPConnection("127.0.0.1", PROXY_PORT)
    connection.putrequest("POST", path)
    connection.putheader("Content-Type", "application/json")
    connection.putheader("Content-Length", str(len(REQUEST_BODY)))
    request = record.begin_call()
    connection.endheaders(REQUEST_BODY)
    size = len(connection.getresponse().read())
    record.end(request, "request", path=path, request_bytes=len(REQUEST_BODY), response_bytes=size)
    connection.close()
    if MODE == "threads":
        record.end(begun, "task", index=index)


def started_worker():
    """A pool thread's first step: when it started (it ends when the pool is shut down)."""
    record.end(record.begin(), "worker")


serialization = record.begin_call()
payload = json.dumps({"items": [Slow() for _ in range(5)], "numbers": list(range(1000))}, default=encode_slowly)
record.end(serialization, "serialization")

if MODE == "threads":
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=REQUESTS, initializer=started_worker)
    futures = [pool.submit(call, index) for index in range(REQUESTS)]
    for index, future in enumerate(futures):
        record.wait(future.result, tasks=[index])
    record.wait(pool.shutdown, workers=True)
else:
    for index in range(REQUESTS):
        call(index)

command = [sys.executable, os.path.join(HERE, "child.py"), TRUTH_DIR]
started = []
for _ in range(CHILDREN):
    process = truth.spawn(record, command)
    if MODE == "parallel":
        started.append(process)
        continue
    record.wait(process.wait, pids=[process.pid])
for process in started:
    record.wait(process.wait, pids=[process.pid])

