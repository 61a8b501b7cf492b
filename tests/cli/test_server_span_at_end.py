"""A SERVER span still open when its process ends is written (incomplete), never lost.

A client starts a traced HTTP server, gets a response, and stops the server at once: the response
reaches the client before the handler returns (http.server's span ends when handle_one_request
returns), so the server may die with the span open. It is written at the process's end, as its S
record: the loader ends it at the file's last time known (the process's end) and marks it incomplete.
Each way a process ends: SIGTERM (the agent's handler), a threaded server's main thread exiting
while a daemon handler thread answers (atexit), and os._exit.
"""

from __future__ import annotations

import json
import sys

from tests.cli.conftest import Cli

SERVER = r"""
import http.server, os, sys, threading, time
mode, after = sys.argv[1], float(sys.argv[2])
answered = threading.Event()

def spin(seconds):
    t = time.perf_counter()
    while time.perf_counter() - t < seconds:
        pass

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        spin(0.1)
        body = b"ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        self.wfile.flush()
        answered.set()
        spin(after)  # work after the response (a log line, a metric): the span is still open

    def log_message(self, *args):
        pass

cls = http.server.HTTPServer if mode == "plain" else http.server.ThreadingHTTPServer
server = cls(("127.0.0.1", 0), Handler)
print(server.server_address[1], flush=True)
if mode in ("exit", "os_exit"):
    threading.Thread(target=server.serve_forever, daemon=True).start()
    answered.wait()
    if mode == "os_exit":
        os._exit(0)
    sys.exit(0)  # the daemon handler thread is still in its request
server.serve_forever()
"""

CLIENT = r"""
import json, subprocess, sys, urllib.request
cases = json.loads(sys.argv[2])
for mode, after in cases:
    p = subprocess.Popen([sys.executable, sys.argv[1], mode, str(after)], stdout=subprocess.PIPE)
    port = int(p.stdout.readline())
    assert urllib.request.urlopen("http://127.0.0.1:%d/x" % port).read() == b"ok"
    if mode in ("plain", "threading"):
        p.terminate()
    p.wait()
    p.stdout.close()
print("done", flush=True)
"""

# (mode, seconds of work after the response): 0.3 s keeps the span open when the process ends in
# every run; 0 is the tester's case (the server stopped as soon as the response arrived: 4 runs in
# 6 lost the span before).
CASES = [("plain", 0.3), ("threading", 0.3), ("exit", 0.3), ("os_exit", 0.3)] + [("plain", 0), ("threading", 0)] * 3


def test_a_server_span_open_when_its_process_ends_is_written_incomplete(cli: Cli):
    server = cli.cwd / "server.py"
    server.write_text(SERVER)
    client = cli.cwd / "client.py"
    client.write_text(CLIENT)
    done = cli("run", "-q", "--", sys.executable, str(client), str(server), json.dumps(CASES))
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout == b"done\n"
    # one server process per case, in order, each with its one SERVER span
    servers = cli.query("""
        SELECT p.pid, p.end_ns, p.attributes->>'process.exit.code',
               list(s.incomplete), list(s.start_ns), list(s.end_ns), list(s.attributes->>'http.response.status_code')
        FROM spans p LEFT JOIN spans s ON s.pid = p.pid AND s.kind = 'SERVER'
        WHERE p.name = 'process' AND p.attributes->>'process.command' = 'server.py'
        GROUP BY p.pid, p.start_ns, p.end_ns, p.attributes ORDER BY p.start_ns""")
    assert len(servers) == len(CASES)
    lost = [case for case, row in zip(CASES, servers) if row[3] == [None]]
    assert not lost, f"{len(lost)} of {len(CASES)} SERVER spans lost: {lost}"
    for (mode, after), (pid, process_end, code, incomplete, starts, ends, status) in zip(CASES, servers):
        assert len(incomplete) == 1, (mode, pid)
        assert status == ["200"], (mode, status)
        span_ns = ends[0] - starts[0]
        assert span_ns >= 100_000_000, (mode, span_ns)  # the handler's spin, at least
        if after:  # still in the handler at the process's end: ended there, incomplete
            assert incomplete == [True], (mode, pid)
            assert span_ns < 300_000_000 + 200_000_000, (mode, span_ns)
            assert 0 <= ends[0] - process_end < 50_000_000, (mode, ends[0] - process_end)
    assert cli.query("SELECT code, message FROM diagnostics") == []
    # the breakdown counts every request as the server's time (the handlers' 100 ms spins at least),
    # none as an untraced server's
    query = cli("query", "breakdown", "-f", "json")
    assert query.returncode == 0, query.stderr.decode()
    wall = {row["category"]: row["wall_ms"] for row in json.loads(query.stdout)}
    assert wall["http server time"] >= 100 * len(CASES) * 0.95, wall
    assert wall.get("untraced http servers", 0) < 20, wall
