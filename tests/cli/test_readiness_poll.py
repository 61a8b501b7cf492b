"""A program that starts a server and polls it until it answers: the run waited on the server.

`while True: try: urlopen(url); break  except URLError: time.sleep(0.05)` (and urllib3's `Retry`,
which does the same inside one request) against a server that takes 300 ms of CPU to start
listening. Each sleep right after a refused connection is a wait on the server's process: the
breakdown gives the server's start-up and work, not 300 ms of the client's `sleeps`. gunicorn binds
in its master before its worker imports the application: the first request is accepted, and waits
in the socket's queue for the worker, which was the client's http client overhead.
"""

from __future__ import annotations

import json
import socket
import sys

import pytest

from tests.cli.conftest import Cli

SERVER = r"""
import sys, time
started = time.process_time()
while time.process_time() - started < 0.3:  # a slow start: a model, a config, a cache warmed
    pass
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"ok")

    def log_message(self, *args):
        pass

HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

LOOP = r"""
import subprocess, sys, time, urllib.error, urllib.request
url = "http://127.0.0.1:%s/health" % sys.argv[1]
server = subprocess.Popen([sys.executable, "server.py", sys.argv[1]])
while True:
    try:
        print(urllib.request.urlopen(url).read().decode(), flush=True)
        break
    except urllib.error.URLError:
        time.sleep(0.05)
server.terminate()
server.wait()
"""

RETRY = r"""
import subprocess, sys
import requests
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry
url = "http://127.0.0.1:%s/health" % sys.argv[1]
server = subprocess.Popen([sys.executable, "server.py", sys.argv[1]])
session = requests.Session()
session.mount("http://", HTTPAdapter(max_retries=Retry(connect=50, backoff_factor=0.025, backoff_max=0.05)))
print(session.get(url).text, flush=True)
server.terminate()
server.wait()
"""


def run_client(cli: Cli, files: dict[str, str]) -> dict[str, float]:
    """`run -- python client.py PORT` with `files` beside it: the breakdown's wall time by category."""
    for name, text in files.items():
        (cli.cwd / name).write_text(text)
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    done = cli("run", "-q", "--", sys.executable, "client.py", str(port))
    assert (done.returncode, done.stdout) == (0, b"ok\n"), done.stderr.decode()
    query = cli("query", "breakdown", "-f", "json")
    assert query.returncode == 0, query.stderr.decode()
    return {row["category"]: row["wall_ms"] for row in json.loads(query.stdout)}


@pytest.mark.parametrize("client", [LOOP, RETRY], ids=["loop", "retry"])
def test_the_sleeps_of_a_readiness_poll_are_the_server_s_start_up_and_work(cli: Cli, client: str):
    wall = run_client(cli, {"server.py": SERVER, "client.py": client})
    (spawn,) = cli.query("SELECT span_id FROM spans WHERE name = 'subprocess'")
    polls = cli.query("SELECT category, attributes->'selfopt_trace.wait.on' FROM spans WHERE name = 'time.sleep'")
    assert len(polls) >= 3, polls  # 50 ms apart (the retries' back-off: 25, then 50 ms) over 300 ms
    assert {(category, tuple(json.loads(on))) for category, on in polls} == {("wait", spawn)}
    assert wall["sleeps"] == 0, wall
    # the server's 300 ms of CPU before it listens (off the CPU a while on a loaded machine)
    assert wall["child processes' own work"] + wall["untraced waits"] >= 280, wall
    assert wall["interpreter start-up"] >= 10, wall  # the client's and the server's


APP = r"""
import time
started = time.process_time()
while time.process_time() - started < 0.2:  # the application's import: a model, a config
    pass


def app(environ, start_response):
    start_response("200 OK", [("Content-Length", "2")])
    return [b"ok"]
"""

GUNICORN = LOOP.replace('[sys.executable, "server.py", sys.argv[1]]',
                        '[sys.executable, "-m", "gunicorn", "-w", "1", "-b", "127.0.0.1:" + sys.argv[1], "app:app"],'
                        ' stderr=subprocess.DEVNULL')


def test_gunicorn_s_first_request_waits_for_its_worker_s_imports(cli: Cli):
    wall = run_client(cli, {"app.py": APP, "client.py": GUNICORN})
    (worker_start,) = cli.query("SELECT span_id FROM spans WHERE name = 'fork'")
    queued = cli.query("SELECT attributes->'selfopt_trace.wait.on', duration_ns FROM spans WHERE name = 'queued'")
    polls = cli.query("SELECT category FROM spans WHERE name = 'time.sleep' AND attributes->>'code.function' = '<module>'")
    # the master binds as it starts: the client's first attempt may find it listening already
    assert set(polls) <= {("wait",)}, polls
    if queued:  # the worker still importing the application: the request waited in the socket's queue
        [(on, duration_ns)] = queued
        assert tuple(json.loads(on)) == worker_start and duration_ns >= 5_000_000
    assert wall["imports"] >= 200, wall  # the application's import in the worker, 200 ms of CPU
    assert wall["http client overhead"] < 30, wall
