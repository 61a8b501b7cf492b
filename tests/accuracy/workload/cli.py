"""The workload with known costs: serialize a payload, call the service through a delay proxy,
start Python children that import a slow module. It records what it measured itself (its truth).

    python cli.py TRUTH_FILE PROXY_PORT CASE MODE REQUESTS CHILDREN

CASE (a number) makes the request paths unique: /items/<CASE * 100 + i>.

MODE: sequential (everything one after the other), threads (the requests from a thread pool, at
once), parallel (the children all started before any is waited for).
"""

import time

first = time.time_ns()
# Everything the program uses later is imported here, timed, so that nothing imports lazily inside
# the measured steps below (http.client imports email.* and encodings.idna on first use).
import_start = time.time_ns()
import concurrent.futures  # noqa: E402
import email.feedparser  # noqa: E402,F401
import email.parser  # noqa: E402,F401
import encodings.idna  # noqa: E402,F401  (host names are encoded with it on the first request)
import http.client  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402,F401

try:  # the tracer wraps os.waitpid on first use: let that happen here, not inside a child's wait
    os.waitpid(-1, os.WNOHANG)
except ChildProcessError:
    pass
import_end = time.time_ns()

TRUTH, PROXY_PORT, CASE, MODE = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
REQUESTS, CHILDREN = int(sys.argv[5]), int(sys.argv[6])
SLOW_OBJECT_MS = float(os.environ["ACCURACY_SLOW_OBJECT_MS"])
HERE = os.path.dirname(os.path.abspath(__file__))
REQUEST_BODY = json.dumps({"query": "x" * 500}).encode()


class Slow:
    """An object json cannot encode by itself: its `default` hook takes a known time."""


def encode_slowly(value):
    time.sleep(SLOW_OBJECT_MS / 1000)
    return "slow"


def call(index):
    """One POST on a new connection, with http.client: the layer the tracer's client span covers."""
    path = f"/items/{CASE * 100 + index}"
    connection = http.client.HTTPConnection("127.0.0.1", PROXY_PORT)
    start = time.time_ns()
    connection.request("POST", path, body=REQUEST_BODY, headers={"Content-Type": "application/json"})
    size = len(connection.getresponse().read())
    end = time.time_ns()
    connection.close()
    return {"path": path, "start": start, "end": end, "response_bytes": size, "request_bytes": len(REQUEST_BODY)}


serialize_start = time.time_ns()
payload = json.dumps({"items": [Slow() for _ in range(5)], "numbers": list(range(1000))}, default=encode_slowly)
serialize_end = time.time_ns()

if MODE == "threads":
    with concurrent.futures.ThreadPoolExecutor(max_workers=REQUESTS) as pool:
        requests = list(pool.map(call, range(REQUESTS)))
else:
    requests = [call(index) for index in range(REQUESTS)]

child_truth = TRUTH + ".children"
children = []
command = [sys.executable, os.path.join(HERE, "child.py"), child_truth]
if MODE == "parallel":
    started = []
    for _ in range(CHILDREN):
        spawn = time.time_ns()
        started.append((spawn, subprocess.Popen(command)))
    for spawn, process in started:
        process.wait()
        children.append({"pid": process.pid, "spawn": spawn, "reaped": time.time_ns()})
else:
    for _ in range(CHILDREN):
        spawn = time.time_ns()
        process = subprocess.Popen(command)
        process.wait()
        children.append({"pid": process.pid, "spawn": spawn, "reaped": time.time_ns()})

truth = os.open(TRUTH, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # opened before `last`: after it, one write
last = time.time_ns()
os.write(truth, json.dumps({"first": first, "import_start": import_start, "import_end": import_end,
                            "serialize_start": serialize_start, "serialize_end": serialize_end,
                            "payload_bytes": len(payload), "requests": requests, "children": children,
                            "last": last}).encode())
