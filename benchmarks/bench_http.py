"""Time added per HTTP request by the agent: loopback server, traced vs untraced, same run.

A keep-alive http.server answers on 127.0.0.1 in its own (untraced) process. The client runs in a
traced process and makes requests in pairs: one with the agent's HTTP hooks in place, one with
every hooked function swapped back to its original (`__wrapped__`), in turn first and second.
Adjacent requests see the same machine load, so the median of the pair differences is the cost of
the hooks even on a busy machine, where whole-process comparisons of ~1 ms requests drown 50 us
in noise; their mean is printed too (it keeps the request in ~100 that flushes the records). Times
are the client thread's CPU time (what the tracer adds is work in that thread) and wall time. The reference: opentelemetry-instrumentation-httpx (SDK, batch processor,
exporter that drops), instrumented and uninstrumented the same way, pair by pair.

    python benchmarks/bench_http.py [--requests 2000]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

BOOTSTRAP = Path(__file__).resolve().parent.parent / "selfopt_trace" / "bootstrap"

SERVER = """
import http.server, sys
class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # one send per response: no Nagle / delayed-ACK stall between headers and body
    def log_message(self, *args):
        pass
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "13")
        self.end_headers()
        self.wfile.write(b'{"ok": true}\\n')
server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
server.serve_forever()
"""

CLIENT = """
import json, socket, sys, time
client, url, n, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
if client == "requests.Session":
    import requests
    get = requests.Session().get
elif client == "requests.get":  # a new connection per call, as codeflash does
    import requests
    get = requests.get
else:
    import httpx
    get = httpx.Client().get

if mode == "otel":
    from opentelemetry import trace
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
    class Drop(SpanExporter):
        def export(self, spans):
            return SpanExportResult.SUCCESS
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(Drop()))
    trace.set_tracer_provider(provider)
    instrumentor = HTTPXClientInstrumentor()
    def hooks(on):
        if on != instrumentor.is_instrumented_by_opentelemetry:
            instrumentor.instrument() if on else instrumentor.uninstrument()
else:
    # every function the agent wrapped in the HTTP libraries, with its original: after a first request,
    # which puts the real wrappers where the hooks' stand-ins wait for a first call (no __wrapped__)
    get(url)
    own_wrapper = sys.modules["selfopt_trace_agent.tracer"].is_own_wrapper
    swaps = [(socket, "getaddrinfo", socket.getaddrinfo, socket.getaddrinfo.__wrapped__)]
    for name, module in list(sys.modules.items()):
        if name.split(".")[0] in ("http", "urllib3", "requests", "httpx", "httpcore") and module is not None:
            for owner in vars(module).values():
                if isinstance(owner, type) and owner.__module__ == name:
                    for attr, value in list(vars(owner).items()):
                        if own_wrapper(value) and hasattr(value, "__wrapped__"):  # (named as at home)
                            swaps.append((owner, attr, value, value.__wrapped__))
    def hooks(on):
        for owner, attr, wrapper, original in swaps:
            setattr(owner, attr, wrapper if on else original)

for on in (True, False) * 25:
    hooks(on)
    get(url)
times = {True: ([], []), False: ([], [])}
for i in range(2 * n):
    on = (i % 2 == 0) == (i % 4 < 2)  # on/off, then off/on: neither is always first
    hooks(on)
    c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
    get(url)
    wall, cpu = times[on]
    wall.append(time.perf_counter_ns() - t0)
    cpu.append(time.thread_time_ns() - c0)
print(json.dumps({"on": times[True], "off": times[False], "hooks": len(swaps) if mode != "otel" else 0}))
"""

CLIENTS = ("requests.Session", "requests.get", "httpx.Client")


def measure(client: str, url: str, n: int, mode: str, env: dict) -> dict:
    done = subprocess.run([sys.executable, "-c", CLIENT, client, url, str(n), mode], env=env, capture_output=True,
                          text=True)
    if done.returncode:
        raise SystemExit("%s (%s) failed:\n%s" % (client, mode, done.stderr))
    return json.loads(done.stdout)


def summary(result: dict, kind: int) -> tuple:
    """(median off, median on, median of pair differences, their mean, its standard error), in us.

    The median leaves out the request in ~100 that flushes the records of the others; the mean,
    what a program pays over many requests, keeps it (with the machine's hiccups: its error)."""
    on, off = result["on"][kind], result["off"][kind]
    differences = [a - b for a, b in zip(on, off)]
    added = statistics.median(differences)
    mean, error = statistics.fmean(differences), statistics.stdev(differences) / len(differences) ** 0.5
    return statistics.median(off) / 1000, statistics.median(on) / 1000, added / 1000, mean / 1000, error / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    args = parser.parse_args()
    base = {k: v for k, v in os.environ.items() if not k.startswith(("SELFOPT_TRACE_", "OTEL_")) and k != "PYTHONPATH"}
    server = subprocess.Popen([sys.executable, "-c", SERVER], env=base, stdout=subprocess.PIPE, text=True)
    try:
        url = "http://127.0.0.1:%s/" % server.stdout.readline().strip()
        with tempfile.TemporaryDirectory() as tmp:
            traced = dict(base, SELFOPT_TRACE_DIR=str(Path(tmp) / "run"), PYTHONPATH=str(BOOTSTRAP))
            results = {(client, "agent"): measure(client, url, args.requests, "agent", traced) for client in CLIENTS}
        results["httpx.Client", "otel"] = measure("httpx.Client", url, args.requests, "otel", base)
    finally:
        server.terminate()
        server.wait()
    print(f"{args.requests} request pairs per client (hooks on / off, alternating); medians in us")
    print(f"{'client':18} {'tracer':14} {'time':5} {'off':>8} {'on':>8} {'added':>7} {'ratio':>6} {'mean added':>15}")
    for (client, mode), result in results.items():
        label = "selfopt-trace" if mode == "agent" else "OTel httpx"
        for kind, name in ((1, "cpu"), (0, "wall")):
            off, on, added, mean, error = summary(result, kind)
            print(f"{client:18} {label:14} {name:5} {off:8.1f} {on:8.1f} {added:+7.1f} {(off + added) / off:6.3f} "
                  f"{mean:+7.1f} +- {error:4.1f}")
    print("hooked functions swapped:", results["requests.Session", "agent"]["hooks"])


if __name__ == "__main__":
    main()
