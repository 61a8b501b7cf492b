"""Time the agent adds to a thread's start and end, and to a thread-per-request server's request.

Two workloads, each in a fresh process per round, untraced and traced (this tree's agent, and any
`--compare` bootstrap directory: another tree's `selfopt_trace/bootstrap`), the sides alternating
round by round so that each round sees the same machine:

- threads: `Thread(target=f).start()` then `join()`, 300 times in a row (f returns at once): the
  median per thread, from start() to the end of join(); and start() alone, what the starting
  thread waits for.
- server: an http.server.ThreadingHTTPServer (a thread per connection) in the measured process,
  answering 400 requests of an untraced client, a new connection each (HTTP/1.0): the client's
  median per request.

It prints each side's median over the rounds and its ratio to the untraced one of the same run.

    python benchmarks/bench_threads.py [--rounds 7] [--compare DIR]...
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BOOTSTRAP = Path(__file__).resolve().parent.parent / "selfopt_trace" / "bootstrap"

THREADS = """
import statistics, threading, time
def f():
    pass
threads, starts = [], []
for _ in range(300):
    thread = threading.Thread(target=f)
    t0 = time.perf_counter_ns()
    thread.start()
    starts.append(time.perf_counter_ns() - t0)
    thread.join()
    threads.append(time.perf_counter_ns() - t0)
print(statistics.median(threads[50:]) / 1000, statistics.median(starts[50:]) / 1000)
"""

SERVER = """
import http.server, threading
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
input()  # the client is done
server.shutdown()
"""

CLIENT = """
import socket, statistics, sys, time
port, n = int(sys.argv[1]), int(sys.argv[2])
laps = []
for _ in range(n):
    t0 = time.perf_counter_ns()
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(b"GET / HTTP/1.0\\r\\nHost: bench\\r\\n\\r\\n")
        while connection.recv(65536):
            pass
    laps.append(time.perf_counter_ns() - t0)
print(statistics.median(laps[50:]) / 1000)
"""


def threads_round(env: dict) -> tuple[float, float]:
    done = subprocess.run([sys.executable, "-c", THREADS], env=env, capture_output=True, text=True, check=True)
    per_thread, start = done.stdout.split()
    return float(per_thread), float(start)


def server_round(env: dict, base: dict, requests: int) -> float:
    server = subprocess.Popen([sys.executable, "-c", SERVER], env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
    try:
        port = server.stdout.readline().strip()
        done = subprocess.run([sys.executable, "-c", CLIENT, port, str(requests)], env=base, capture_output=True,
                              text=True, check=True)
        server.communicate("\n", timeout=30)
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
    return float(done.stdout)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--compare", type=Path, action="append", default=[], help="another bootstrap directory")
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SELFOPT_TRACE_", "OTEL_")) and k != "PYTHONPATH"}
    with tempfile.TemporaryDirectory() as tmp:
        sides = {"untraced": base, "this tree": dict(base, SELFOPT_TRACE_DIR=f"{tmp}/a", PYTHONPATH=str(BOOTSTRAP))}
        for n, directory in enumerate(args.compare):
            sides[str(directory)] = dict(base, SELFOPT_TRACE_DIR=f"{tmp}/c{n}", PYTHONPATH=str(directory))
        results: dict[str, dict[str, list[float]]] = {side: {"thread": [], "start": [], "request": []} for side in sides}
        for round_index in range(args.rounds):
            order = list(sides) if round_index % 2 == 0 else list(reversed(sides))
            for side in order:
                per_thread, start = threads_round(sides[side])
                results[side]["thread"].append(per_thread)
                results[side]["start"].append(start)
                results[side]["request"].append(server_round(sides[side], base, args.requests))
    load = os.getloadavg()[0]
    print(f"{args.rounds} rounds, sides alternating; medians of the rounds' medians, us; load average {load:.1f}")
    print(f"{'side':40} {'thread':>8} {'ratio':>6} {'start()':>8} {'ratio':>6} {'request':>8} {'ratio':>6}")
    untraced = {what: statistics.median(values) for what, values in results["untraced"].items()}
    for side, values in results.items():
        cells = []
        for what in ("thread", "start", "request"):
            median = statistics.median(values[what])
            cells.append(f"{median:8.1f} {median / untraced[what]:6.2f}")
        print(f"{side:40} {' '.join(cells)}")


if __name__ == "__main__":
    main()
