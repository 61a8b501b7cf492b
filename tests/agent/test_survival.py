"""What a process recorded survives how it ends: SIGKILL, os._exit, SIGTERM, uncaught exceptions."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from pathlib import Path

import pytest


def wait_for(predicate, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.02)


def test_sigkill_mid_span_keeps_finished_spans_and_marks_open_ones_incomplete(traced, tmp_path):
    code = ("import json, subprocess, sys, time\n"
            "subprocess.run([sys.executable, '-c', 'pass'])\n"  # a finished child span
            "print('ready', flush=True)\n"
            "subprocess.run(['sleep', '30'])\n")  # open when we are killed
    proc = subprocess.Popen([sys.executable, "-c", code], env=traced.env(), stdout=subprocess.PIPE)
    assert proc.stdout.readline() == b"ready\n"
    wait_for(lambda: any(s.name == "subprocess" and s.incomplete for s in traced.spans().spans))
    time.sleep(0.25)  # at least one flusher tick after the sleep started
    children = [int(pid) for task in Path(f"/proc/{proc.pid}/task").iterdir()
                for pid in (task / "children").read_text().split()]  # its `sleep 30`, not anyone else's
    proc.kill()
    proc.wait()
    for child in children:
        os.kill(child, signal.SIGKILL)
    spans = traced.spans()
    root = [p for p in spans.processes() if p.parent_span_id == ""][0]
    assert root.incomplete
    finished, killed = sorted(spans.named("subprocess"), key=lambda s: s.start_ns)
    assert not finished.incomplete and finished.attributes["process.exit.code"] == 0
    assert killed.incomplete
    # Open spans are closed at the last time the process was known alive: after the sleep began.
    assert killed.end_ns >= killed.start_ns + 120_000_000


def test_os_exit_flushes_and_records_the_code(traced):
    result = traced.python("import os, subprocess, sys; subprocess.run([sys.executable, '-c', 'pass']); os._exit(3)")
    assert result.returncode == 3 and result.stderr == b""
    spans = traced.spans()
    root = [p for p in spans.processes() if p.parent_span_id == ""][0]
    assert not root.incomplete
    assert root.attributes["process.exit.code"] == 3
    assert len(spans.named("subprocess")) == 1


def exit_status(proc: subprocess.Popen, timeout: float = 10) -> int:
    """`proc`'s exit status; one still alive after `timeout` fails the test with where its threads are
    (py-spy's dump, native frames included): a rare hang after SIGTERM was seen, never reproduced."""
    try:
        return proc.wait(timeout)
    except subprocess.TimeoutExpired:
        signals = []  # each thread's state and signal masks: a SIGTERM pending and blocked, or not there
        for task in Path(f"/proc/{proc.pid}/task").iterdir():
            status = dict(line.split(":\t", 1) for line in (task / "status").read_text().splitlines() if ":\t" in line)
            signals.append(task.name + " " + " ".join(f"{key}={status.get(key, '?')}" for key in (
                "Name", "State", "SigPnd", "ShdPnd", "SigBlk", "SigCgt")))
        dump = subprocess.run([str(Path(sys.executable).parent / "py-spy"), "dump", "--native", "--pid", str(proc.pid)],
                              capture_output=True, text=True, timeout=60)
        proc.kill()
        proc.wait()
        pytest.fail(f"still running {timeout} s after the signal:\n" + "\n".join(signals) + f"\n{dump.stdout}{dump.stderr}")


def test_sigterm_flushes_then_dies_of_sigterm(traced):
    proc = subprocess.Popen([sys.executable, "-c", "import time; print('up', flush=True); time.sleep(30)"],
                            env=traced.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"up\n"
    proc.send_signal(signal.SIGTERM)
    assert exit_status(proc) == -signal.SIGTERM
    assert proc.stderr.read() == b""
    root = traced.spans().processes()[0]
    assert not root.incomplete
    assert root.attributes["process.signal"] == "SIGTERM" and root.status == "ERROR"


def _traced_as_pid_1(traced, code: str, stdout: bytes) -> None:
    """`python -c code` as pid 1 of a new pid namespace (`unshare`), untraced then traced: both exit 0
    and print `stdout`, the traced one nothing else. Skipped where no namespace can be made (no
    privilege for one: the untraced run fails, saying why)."""
    namespace = ["unshare", "--pid", "--fork", "--mount-proc"]
    untraced = traced.untraced([*namespace, sys.executable, "-c", code])
    if untraced.returncode != 0 or untraced.stdout != stdout:
        pytest.skip(f"no pid namespace here: {untraced.stderr.decode(errors='replace').strip()}")
    result = traced.run([*namespace, sys.executable, "-c", code])
    assert (result.returncode, result.stdout, result.stderr) == (0, stdout, b"")


def test_a_container_s_first_process_lives_through_sigterm_as_untraced(traced):
    """Pid 1 of a pid namespace (a container's first process, without `--init`): the kernel drops a
    signal whose action is the default, so untraced it lives through a SIGTERM (`docker stop` then
    waits its timeout and kills it). Traced alike, and its span says nothing of a SIGTERM: the agent's
    handler made it end its span `killed by SIGTERM` and live on."""
    code = ("import os, signal, time\nprint(os.getpid(), flush=True)\nos.kill(os.getpid(), signal.SIGTERM)\n"
            "time.sleep(0.1)\nprint('alive', flush=True)\n")
    _traced_as_pid_1(traced, code, b"1\nalive\n")
    (root,) = traced.spans().processes()
    assert root.status == "UNSET" and not root.incomplete
    assert "process.signal" not in root.attributes and "process.exit.code" not in root.attributes


def test_a_fork_of_a_container_s_first_process_flushes_and_dies_of_sigterm(traced):
    """A child that pid 1 forked (a pool's worker) is no pid 1: SIGTERM's default action kills it, and
    the agent's handler, which its parent has not, is installed in it at the fork, so it flushes and
    ends its span first (it died unflushed, its span incomplete)."""
    code = ("import os, signal, time\npid = os.fork()\nif pid == 0:\n    time.sleep(30)\nelse:\n"
            "    time.sleep(0.3)\n    os.kill(pid, signal.SIGTERM)\n"
            "    print(os.getpid(), os.waitpid(pid, 0)[1] == signal.SIGTERM, flush=True)\n")
    _traced_as_pid_1(traced, code, b"1 True\n")
    (child,) = [p for p in traced.spans().processes() if p.attributes["process.pid"] != 1]
    assert not child.incomplete and child.attributes["process.signal"] == "SIGTERM", child


# Python 3.8's signal.signal is a Python function whose __wrapped__ is _signal's: the hook must still
# install there (it took that for its own mark and left SIGTERM to the program's handler).
PYTHON_38 = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions" / "3.8.18" / "bin" / "python"
INTERPRETERS = [pytest.param(sys.executable, id="this-python"),
                pytest.param(str(PYTHON_38), id="python3.8", marks=pytest.mark.skipif(
                    not PYTHON_38.exists(), reason=f"no Python 3.8 at {PYTHON_38} (pyenv)"))]


@pytest.mark.parametrize("python", INTERPRETERS)
def test_a_default_sigterm_set_by_the_program_still_flushes(traced, python):
    code = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
            "assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL\nprint('up', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([python, "-c", code], env=traced.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"up\n", proc.stderr.read()
    proc.send_signal(signal.SIGTERM)
    assert exit_status(proc) == -signal.SIGTERM
    assert proc.stderr.read() == b""
    root = traced.spans().processes()[0]
    assert not root.incomplete and root.attributes["process.signal"] == "SIGTERM"


# A SIGTERM while a flush is writing what it took from the buffer: the process dies only once those
# records are in the file. The flush is slowed down (its write) to hold the moment open: another
# thread's flush (the flusher's, as a rule), or the main thread's own, where the handler runs.
FLUSH_CAUGHT_BY_SIGTERM = """
import os, signal, subprocess, threading, time
from selfopt_trace_agent import tracer
write, armed = tracer._write, []
def slow_write(payload):
    if armed:
        armed.pop()
        {during}
    write(payload)
tracer._write = slow_write
subprocess.run(['true'])  # its span's end, in the buffer
armed.append(True)
{flush}
"""
ANOTHER_THREADS_FLUSH = dict(during="os.write(1, b'writing\\n'); time.sleep(0.3)",
                             flush="threading.Thread(target=tracer.flush).start(); time.sleep(30)")
OWN_FLUSH = dict(during="os.kill(os.getpid(), signal.SIGTERM); time.sleep(0.05)", flush="tracer.flush(); time.sleep(30)")


@pytest.mark.parametrize("flush", [ANOTHER_THREADS_FLUSH, OWN_FLUSH], ids=["another-thread", "own-thread"])
def test_sigterm_during_a_flush_dies_after_it_with_its_records_written(traced, flush):
    proc = subprocess.Popen([sys.executable, "-c", FLUSH_CAUGHT_BY_SIGTERM.format(**flush)], env=traced.env(),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if flush is ANOTHER_THREADS_FLUSH:
        assert proc.stdout.readline() == b"writing\n", proc.stderr.read()
        proc.send_signal(signal.SIGTERM)
    assert exit_status(proc) == -signal.SIGTERM
    assert proc.stderr.read() == b""
    spans = traced.spans()
    root = spans.processes()[0]
    assert not root.incomplete and root.attributes["process.signal"] == "SIGTERM"
    [spawn] = spans.named("subprocess")
    assert not spawn.incomplete and spawn.attributes["process.exit.code"] == 0


def test_a_sigterm_another_thread_took_ends_the_main_threads_sleep(traced):
    """The kernel gives a process's signal to any thread that does not block it: one taken by a program
    thread (as the main thread held them blocked in its sleep's step into the poll) ended no poll,
    and the main thread slept its 30 s through (untraced, SIGTERM's default action kills at once).
    Sent to the other thread itself here: the sleep checks the signals every 100 ms."""
    code = ("import signal, threading, time\n"
            "def other():\n"
            "    time.sleep(0.2)\n"
            "    signal.pthread_kill(threading.get_ident(), signal.SIGTERM)\n"
            "    time.sleep(5)\n"
            "threading.Thread(target=other, daemon=True).start()\n"
            "time.sleep(30)\n")
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", code], env=traced.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    assert exit_status(proc) == -signal.SIGTERM
    assert time.monotonic() - started < 5
    assert proc.stderr.read() == b""
    root = traced.spans().processes()[0]
    assert not root.incomplete and root.attributes["process.signal"] == "SIGTERM"


def test_an_exception_of_the_programs_signal_handler_during_a_flush_is_the_programs(traced):
    """An alarm's handler raising where the signal found the program, inside the agent's flush: the
    program gets its exception, as untraced; the flush's own failures are the only ones it keeps
    (that one was swallowed, and tracing stopped for the rest of the process)."""
    code = FLUSH_CAUGHT_BY_SIGTERM.format(
        during="os.kill(os.getpid(), signal.SIGALRM); time.sleep(0.05)",
        flush="def on_alarm(signum, frame):\n    raise TimeoutError('late')\n"
              "signal.signal(signal.SIGALRM, on_alarm)\n"
              "try:\n    tracer.flush()\nexcept TimeoutError as exc:\n    print('raised', exc)\n"
              "subprocess.run(['true', 'after'])\n")
    result = traced.python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"raised late\n", b"")
    spans = traced.spans()
    assert not spans.processes()[0].incomplete
    assert [s.attributes["process.command_args"] for s in spans.named("subprocess") if not s.incomplete] \
        == [["true"], ["true", "after"]]  # the first kept by the flush it interrupted


# The program's SIGALRM handler raises inside the flush's write, before it or after it, or in the
# flush at exit (the program's alarm, late): what the flush had taken from the buffers is written
# once, by the next flush (the exit's own second try).
INTERRUPTED_WRITE = """
import os, signal, subprocess
from selfopt_trace_agent import tracer
def on_alarm(signum, frame):
    raise TimeoutError('late')
signal.signal(signal.SIGALRM, on_alarm)
write, armed = tracer._write, []
def alarmed_write(payload):
    if not armed:
        return write(payload)
    armed.pop()
    {before}
    write(payload)
    {after}
tracer._write = alarmed_write
subprocess.run(['true', 'first'])
{flush}
subprocess.run(['true', 'after'])
"""
ALARM = "os.kill(os.getpid(), signal.SIGALRM)"
FLUSH = "armed.append(True)\ntry:\n    tracer.flush()\nexcept TimeoutError as exc:\n    print('raised', exc)"


@pytest.mark.parametrize("where", ["before the write", "after the write", "at exit"])
def test_a_flush_the_programs_exception_interrupts_loses_nothing_and_writes_nothing_twice(traced, where):
    code = INTERRUPTED_WRITE.format(before=ALARM if where != "after the write" else "",
                                    after=ALARM if where == "after the write" else "",
                                    flush="" if where == "at exit" else FLUSH)
    if where == "at exit":  # armed again once the program is done: the exit's flush is the one hit
        code += "armed.append(True)\n"
    result = traced.python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"" if where == "at exit" else b"raised late\n", b"")
    spans = traced.spans()
    assert [s.attributes["process.command_args"] for s in spans.named("subprocess") if not s.incomplete] \
        == [["true", "first"], ["true", "after"]]
    assert len(spans.named("subprocess")) == 2
    assert not spans.processes()[0].incomplete and spans.diagnostics == []


# The program's SIGALRM handler raises in the flush a spawning call makes before it spawns (its span
# must be on disk before the child runs): the call ends with the exception, its span too (it stayed
# open to the process's end, a spawn for the breakdown), and what it made current is undone.
SPAWNS = {
    "subprocess.run": "subprocess.run(['true', 'interrupted'])",
    "os.system": "os.system('true interrupted')",
    "os.posix_spawn": "os.waitpid(os.posix_spawn('/bin/true', ['true', 'interrupted'], os.environ), 0)",
    "os.fork": "pid = os.fork()\nif pid == 0:\n    os._exit(0)\nos.waitpid(pid, 0)",
    "multiprocessing": "process = multiprocessing.get_context('fork').Process(target=int)\nprocess.start()\nprocess.join()",
}


@pytest.mark.parametrize("call", SPAWNS)
def test_a_spawn_the_programs_exception_interrupts_ends_its_span(traced, call):
    code = INTERRUPTED_WRITE.format(before=ALARM, after="", flush=(
        "import multiprocessing\narmed.append(True)\ntry:\n" + textwrap.indent(SPAWNS[call], "    ")
        + "\nexcept TimeoutError as exc:\n    print('raised', exc)"))
    result = traced.python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"raised late\n", b"")
    spans = traced.spans()
    assert [s for s in spans.spans if s.incomplete] == []
    interrupted = [s for s in spans.spans if s.attributes.get("error.type") == "TimeoutError"]
    assert [s.category for s in interrupted] == ["subprocess"]
    [after] = [s for s in spans.named("subprocess") if s.attributes["process.command_args"] == ["true", "after"]]
    assert spans.parent(after) is spans.processes()[0]


# Elsewhere than a spawn: the program's SIGALRM handler raises at a chosen call of the agent's between
# its beginning a span (and making it current) and handing over to the program's call, or in its end
# (`alarm_before`: the signal sent as that call begins, a deterministic stand-in for any moment). The
# call ends with the exception; its span too, with the exception's type (left open, it ran to the
# process's end), and what it made current is undone: the next call's span is the process span's
# child (it hung under the interrupted one, or was no span at all: an HTTP request inside another's).
# The exception is no OSError (an alarm's TimeoutError is): http.server's handler swallows a
# TimeoutError, urllib and urllib3 wrap an OSError in their own, untraced too.
INTERRUPTED = """
import os, signal, socket, sys, threading
from selfopt_trace_agent import tracer
from selfopt_trace_agent.hooks import http_common
class Late(Exception):
    pass
def on_alarm(signum, frame):
    raise Late('late')
signal.signal(signal.SIGALRM, on_alarm)
armed = []
def alarm_before(owner, name, when=lambda *args, **kwargs: True):
    original = getattr(owner, name)
    def alarmed(*args, **kwargs):
        if armed and when(*args, **kwargs):
            armed.pop()
            os.kill(os.getpid(), signal.SIGALRM)
        return original(*args, **kwargs)
    setattr(owner, name, alarmed)
def interrupted(call):
    armed.append(True)
    try:
        call()
    except Late as exc:
        print('raised', exc)
    assert not armed, 'not reached'
"""
# A loopback HTTP server of plain sockets (no hook sees it): a thread a connection.
LOOPBACK = """
listener = socket.socket()
listener.bind(('127.0.0.1', 0))
listener.listen(16)
def answer(conn):
    data = b''
    while b'\\r\\n\\r\\n' not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    conn.sendall(b'HTTP/1.1 200 OK\\r\\nContent-Length: 2\\r\\nConnection: close\\r\\n\\r\\nok')
    conn.close()
def serve():
    while True:
        threading.Thread(target=answer, args=(listener.accept()[0],), daemon=True).start()
threading.Thread(target=serve, daemon=True).start()
URL = 'http://127.0.0.1:%d/' % listener.getsockname()[1]
"""
HTTP_CLIENTS = {
    "urllib.request": "import urllib.request\ndef get(path):\n    urllib.request.urlopen(URL + path).read()\n",
    "requests": "import requests\ndef get(path):\n    requests.get(URL + path)\n",
    "urllib3": "import urllib3\npool = urllib3.PoolManager()\ndef get(path):\n    pool.request('GET', URL + path)\n",
    "httpx": "import httpx\ndef get(path):\n    httpx.get(URL + path)\n",
}
CLIENT_MOMENTS = {
    # begin_client's last bookkeeping: the span begun and current
    "begun": "alarm_before(tracer, 'add_overhead')",
    # the connection's `connect` span about to begin (http.client's own request: in the context for it)
    "connect": "alarm_before(http_common.ClientRequest, 'connect_started')",
    # the response's attributes, before the span ends
    "response": "alarm_before(http_common.ClientRequest, 'got_response')",
    # the span's end, its context undone already
    "end": "alarm_before(tracer, 'end_span', lambda span, *args, **kwargs: span.name == 'GET')",
}


def assert_interrupted_and_after(spans, interrupted, after) -> None:
    """No span left open; `interrupted`, the interrupted call's, ended with the program's exception;
    `after`, the next call's, under the process span (the main thread's)."""
    assert [s for s in spans.spans if s.incomplete] == []
    assert interrupted.attributes["error.type"] == "Late" and interrupted.status == "ERROR"
    assert [s for s in spans.spans if s.attributes.get("error.type") == "Late"] == [interrupted]
    assert spans.parent(after) is spans.processes()[0]


@pytest.mark.parametrize("moment", CLIENT_MOMENTS)
@pytest.mark.parametrize("library", HTTP_CLIENTS)
def test_an_http_request_the_programs_exception_interrupts_ends_its_span(traced, library, moment):
    if library != "urllib.request":
        traced.require(library)
    code = (INTERRUPTED + LOOPBACK + HTTP_CLIENTS[library] + CLIENT_MOMENTS[moment]
            + "\nget('first')\ninterrupted(lambda: get('interrupted'))\nget('after')\n")
    result = traced.python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"raised late\n", b"")
    spans = traced.spans()
    requests = {s.attributes["url.full"].rpartition("/")[2]: s for s in spans.spans
                if s.category == "http" and s.kind == "CLIENT"}
    assert sorted(requests) == ["after", "first", "interrupted"]
    assert_interrupted_and_after(spans, requests["interrupted"], requests["after"])
    assert [s.status for s in spans.named("connect")] == ["UNSET"] * len(spans.named("connect"))


# A server answering in the main thread (where the alarm's handler runs): http.server's handler, and a
# WSGI app as wsgiref's handler calls it (the one here answers a request read from memory).
HTTP_SERVER = """
import http.server
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.send_header('Content-Length', '2')
        self.end_headers()
        self.wfile.write(b'ok')
    def log_message(self, *args):
        pass
class Server(http.server.HTTPServer):
    def handle_error(self, request, client_address):
        raise
server = Server(('127.0.0.1', 0), Handler)
def get(path):
    client = socket.create_connection(server.server_address)
    client.sendall(b'GET /%s HTTP/1.0\\r\\n\\r\\n' % path.encode())
    try:
        server.handle_request()
    finally:
        client.close()
"""
WSGI = """
import io
from wsgiref.handlers import SimpleHandler
def app(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'ok']
class Handler(SimpleHandler):
    def handle_error(self):
        raise
def get(path):
    environ = {'REQUEST_METHOD': 'GET', 'PATH_INFO': '/' + path, 'SERVER_NAME': 'localhost', 'SERVER_PORT': '80',
               'SERVER_PROTOCOL': 'HTTP/1.0', 'wsgi.url_scheme': 'http'}
    Handler(io.BytesIO(), io.BytesIO(), io.StringIO(), environ).run(app)
"""
SERVERS = {"http.server": HTTP_SERVER, "wsgiref": WSGI}
SERVER_MOMENTS = {
    # begin_server's last bookkeeping: the span begun and current
    "begun": "alarm_before(tracer, 'add_overhead')",
    # the app returned; the WSGI span no longer current, still open (its body to send)
    "returned": "alarm_before(http_common.ServerRequest, 'deactivate')",
    # the span's end, its context undone already
    "end": "alarm_before(http_common, '_server_outcome')",
}


@pytest.mark.parametrize("moment", SERVER_MOMENTS)
@pytest.mark.parametrize("server", SERVERS)
def test_a_server_request_the_programs_exception_interrupts_ends_its_span(traced, server, moment):
    code = (INTERRUPTED + SERVERS[server] + SERVER_MOMENTS[moment]
            + "\nget('first')\ninterrupted(lambda: get('interrupted'))\nget('after')\n")
    result = traced.python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"raised late\n", b"")
    spans = traced.spans()
    requests = {s.attributes["url.path"][1:]: s for s in spans.spans if s.kind == "SERVER"}
    assert sorted(requests) == ["after", "first", "interrupted"]
    assert_interrupted_and_after(spans, requests["interrupted"], requests["after"])


# A --target function's span: begun (the flush of start_span, when one is due), and at its end.
TARGET_MOMENTS = {
    "begun": "alarm_before(tracer, 'flush')\nbefore = lambda: setattr(tracer, '_flush_due_ns', 0)",
    "end": "alarm_before(tracer, 'end_span', lambda span, *args, **kwargs: span.name == 'dedent')\nbefore = int",
}


@pytest.mark.parametrize("moment", TARGET_MOMENTS)
def test_a_target_the_programs_exception_interrupts_ends_its_span(traced, moment):
    code = (INTERRUPTED + "import textwrap\n" + TARGET_MOMENTS[moment]
            + "\ntextwrap.dedent('first')\ninterrupted(lambda: (before(), textwrap.dedent('interrupted')))\n"
              "print(tracer.current() is None)\ntextwrap.dedent('after')\n")
    result = traced.python(code, extra_env={"SELFOPT_TRACE_TARGETS": "textwrap:dedent"})
    assert (result.returncode, result.stdout, result.stderr) == (0, b"raised late\nTrue\n", b"")
    spans = traced.spans()
    first, interrupted, after = sorted(spans.named("dedent"), key=lambda s: s.start_ns)
    assert_interrupted_and_after(spans, interrupted, after)


# A Docker SDK call's `container` span: begun (the flush that puts it on disk before the container
# runs), and at its end (the SDK's call fails here: no client; it is the same either way).
DOCKER_CALLS = {
    "containers.run": "ContainerCollection(client=None).run('alpine')",
    "exec_run": "Container(attrs={'Id': 'c0ffee'}, client=None).exec_run('true')",
}
DOCKER_MOMENTS = {
    "begun": "alarm_before(tracer, 'flush')",
    "end": "alarm_before(tracer, 'end_span', lambda span, *args, **kwargs: span.category == 'container')",
}


@pytest.mark.parametrize("moment", DOCKER_MOMENTS)
@pytest.mark.parametrize("call", DOCKER_CALLS)
def test_a_docker_sdk_call_the_programs_exception_interrupts_ends_its_span(traced, call, moment):
    traced.require("docker.models.containers")
    code = (INTERRUPTED + "from docker.models.containers import Container, ContainerCollection\n"
            + DOCKER_MOMENTS[moment] + "\ndef run():\n    try:\n        " + DOCKER_CALLS[call]
            + "\n    except AttributeError:\n        pass\nrun()\ninterrupted(run)\nrun()\n")
    result = traced.python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"raised late\n", b"")
    spans = traced.spans()
    first, interrupted, after = sorted([s for s in spans.spans if s.category == "container"], key=lambda s: s.start_ns)
    assert_interrupted_and_after(spans, interrupted, after)


# An OTel span of the bridge's own (the API without an SDK provider) started as current: begun, not
# yet current (its `with` never runs: nothing else would end it), and begun, not yet handed over.
OTEL_MOMENTS = {
    "entered": "alarm_before(otel_, '_activate')",
    "started": "alarm_before(otel_, '_clean_start')",
}


@pytest.mark.parametrize("moment", OTEL_MOMENTS)
def test_an_otel_span_the_programs_exception_interrupts_ends(traced, moment):
    traced.require("opentelemetry")
    code = (INTERRUPTED + "from opentelemetry import trace\nfrom selfopt_trace_agent.hooks import otel_\n"
            + OTEL_MOMENTS[moment] + "\nspans = trace.get_tracer('t')\n"
            "def work(name):\n    with spans.start_as_current_span(name, attributes={'n': 1}):\n        pass\n"
            "work('first')\ninterrupted(lambda: work('interrupted'))\nwork('after')\n")
    result = traced.python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"raised late\n", b"")
    spans = traced.spans()
    [interrupted], [after] = spans.named("interrupted"), spans.named("after")
    assert_interrupted_and_after(spans, interrupted, after)


# Records made and flushed by the main thread over and over while an interval timer's handler raises
# every 0.5 ms (once an arming, inside the program's `try`): some land in a flush's `finally` as it
# lets its lock go (held after, no flush wrote again: the records and the process span's end lost,
# 5 runs of 5), others between a flush's taking records and its write (30-45 of ~11,000 lost a run).
# An interval timer's handler that raises once an arming (a timeout, as an alarm's is: an OSError),
# counting what it raised: the programs below arm it around the calls they measure.
ALARM_ONCE_ARMED = """
import signal

class Late(TimeoutError):
    pass

armed = False
raised = 0

def on_alarm(signum, frame):
    global armed, raised
    if armed:
        armed = False
        raised += 1
        raise Late()
"""
ALARMS_AROUND_FLUSHES = ALARM_ONCE_ARMED + """
import sys, time
from selfopt_trace_agent import tracer

kept = []
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.0005, 0.0005)
i = 0
while raised < 400:
    i += 1
    now = time.time_ns()
    tracer.record_complete("work", "other", now, now + 1, {"i": i})
    kept.append(i)
    try:
        armed = True
        for _ in range(5):
            tracer.flush()
        armed = False
    except Late:
        pass
signal.setitimer(signal.ITIMER_REAL, 0)
print(len(kept))
"""


def test_records_flushed_under_an_interval_timers_exceptions_are_written_once_each(traced):
    result = traced.python(ALARMS_AROUND_FLUSHES)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    spans = traced.spans()
    assert sorted(s.attributes["i"] for s in spans.named("work")) == list(range(1, int(result.stdout) + 1))
    assert not spans.processes()[0].incomplete and spans.diagnostics == []


def test_an_exception_of_the_programs_signal_handler_inside_a_hooks_bookkeeping_is_the_programs(traced):
    """The same where the alarm finds a hook's own bookkeeping, inside its `except Exception` (1-5 of
    150 alarms around subprocess.run and json calls were lost so: the tester's count)."""
    code = ("import json, os, signal\n"
            "from selfopt_trace_agent import tracer\n"
            "def on_alarm(signum, frame):\n    raise TimeoutError('late')\n"
            "signal.signal(signal.SIGALRM, on_alarm)\n"
            "json.dumps([1])\n"  # the hook in place
            "add = tracer.add_overhead\n"
            "def add_then_alarm(ns):\n"
            "    tracer.add_overhead = add\n"
            "    os.kill(os.getpid(), signal.SIGALRM)\n"
            "    add(ns)\n"
            "tracer.add_overhead = add_then_alarm\n"
            "try:\n    json.dumps([1, 2])\nexcept TimeoutError as exc:\n    print('raised', exc)\n")
    result = traced.python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"raised late\n", b"")
    assert traced.spans().diagnostics == []  # the program's exception, not the tracer's failure


# A call the agent wraps, made over and over while an interval timer's SIGALRM comes every 1 ms: its
# handler raises (once an arming: every exception it raises is inside the program's `try`) a timeout,
# a TimeoutError as an alarm's is (an OSError), and the program counts what was raised and what it
# caught. The wrapper's own `try` (looking at the futures before the wait: a good part of each call's
# time; the docker CLI's `image inspect` the agent runs for a new image, in an `except OSError`: most
# of it) is where many alarms land.
ALARMS_IN_A_LOOP = ALARM_ONCE_ARMED + """
import os, sys
from concurrent.futures import ThreadPoolExecutor, as_completed, wait

caught = image = 0

def docker_run():  # a new image each time: the agent asks the CLI (no engine socket) about each
    global image
    image += 1
    os.waitpid(os.posix_spawnp("docker", ["docker", "run", "image%d" % image], os.environ), 0)

if "{call}" == "docker run":  # a docker CLI whose `image inspect` takes 20 ms, and no engine
    cli = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bin")
    os.makedirs(cli, exist_ok=True)
    with open(cli + "/docker", "w") as script:
        script.write('#!/bin/sh\\n[ "$1" = image ] && sleep 0.02 && echo {{}}\\nexit 0\\n')
    os.chmod(cli + "/docker", 0o755)
    os.environ["PATH"] = cli + os.pathsep + os.environ["PATH"]
    os.environ["DOCKER_HOST"] = "tcp://127.0.0.1:9"

with ThreadPoolExecutor(1) as pool:
    futures = [pool.submit(int) for _ in range(200)]
call = {{"wait": lambda: wait(futures), "as_completed": lambda: sum(1 for _ in as_completed(futures)),
        "docker run": docker_run}}["{call}"]
call()  # the hook in place
signal.signal(signal.SIGALRM, on_alarm)
signal.setitimer(signal.ITIMER_REAL, 0.001, 0.001)
while raised < 200:
    try:
        armed = True
        call()
        armed = False
    except Late:
        caught += 1
signal.setitimer(signal.ITIMER_REAL, 0)
print(raised, caught)
"""


@pytest.mark.parametrize("call", ["wait", "as_completed", "docker run"])
def test_every_alarm_a_programs_signal_handler_raises_in_a_wrappers_own_try_reaches_the_program(traced, call):
    """Each exception of the program's SIGALRM handler reaches the program, traced as untraced, where
    the signal found a wrapper's `except Exception` fallback (concurrent.futures.wait's "not futures:
    the original says what is wrong", as_completed's): 15-35 of 200 were swallowed there, the
    program running on as though its alarm had never come. Or a narrower `except` of the agent's
    that a timeout's class falls in: the `except OSError` around the agent's `docker image inspect`
    (a lookup that failed: the image's PYTHONPATH unknown) took 160-175 of 200 for its own."""
    untraced, result = traced.both_ways("alarms.py", ALARMS_IN_A_LOOP.format(call=call))
    assert (untraced.returncode, untraced.stdout, untraced.stderr) == (0, b"200 200\n", b"")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"200 200\n", b"")
    assert traced.spans().diagnostics == []


def test_sigterm_chains_to_the_programs_own_handler(traced):
    # The handler writes with os.write: print() in it, for a signal taken while the program's own
    # print('up') was still in its flush (CPython runs handlers between a flush's writes), raised
    # "reentrant call" (exit 1) in 263 runs of 300 untraced, whenever the signal came at once.
    code = ("import os, signal, sys, time\n"
            "def bye(signum, frame):\n    os.write(1, b'handled %s\\n' % str(signum == signal.SIGTERM).encode()); sys.exit(7)\n"
            "signal.signal(signal.SIGTERM, bye)\n"
            "assert signal.getsignal(signal.SIGTERM) is bye\n"
            "print('up', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=traced.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"up\n"
    proc.send_signal(signal.SIGTERM)
    assert exit_status(proc) == 7
    assert proc.stdout.read() == b"handled True\n"
    assert proc.stderr.read() == b""
    assert not traced.spans().processes()[0].incomplete


# A program thread that asks for the GIL every 0.2 ms, at a switch interval of 1 us: the main thread's
# sleep then hands the GIL over as it begins, between CPython's last check for signals and its
# system call.
GIL_ASKER = ("import threading\nsys.setswitchinterval(1e-6)\n"
             "def ask():\n    lock = threading.Lock(); lock.acquire()\n    while True: lock.acquire(True, 0.0002)\n"
             "threading.Thread(target=ask, daemon=True).start()\n")


@pytest.mark.parametrize("beside", ["", GIL_ASKER], ids=["alone", "beside a thread asking for the GIL"])
def test_a_sigterm_as_the_program_starts_to_sleep_is_not_lost(traced, beside: str):
    """The sleep starts the flusher thread (tracer.before_block). Were that thread to ask for the GIL
    only once the sleep is under way, the sleeper hands the GIL over at its last check for signals, and
    a SIGTERM taken then waited for the sleep's end. One CPU shared with two busy processes makes
    that likely: 5 of 120 such processes hung before _start_flusher waited for its thread. A program
    thread asking for the GIL opens the same gap in CPython's own sleep: 8 of 360 processes hung
    when the twin's sleep was CPython's behind a check for signals (untraced, 0 of 300: the sleep
    begins before the signal comes); the twin's sleep blocks the signals from its last check into
    the poll that sleeps (importtime.sleep_after_signals)."""
    if not hasattr(os, "sched_setaffinity"):
        pytest.skip("no sched_setaffinity here")
    code = ("import os, signal, sys, time\n" + beside +
            "signal.signal(signal.SIGTERM, lambda *_: sys.exit(7))\n"
            "print('up', flush=True); time.sleep(30)\n")
    one_cpu = {min(os.sched_getaffinity(0))}
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        for process in busy:
            os.sched_setaffinity(process.pid, one_cpu)
        for _ in range(60):
            proc = subprocess.Popen([sys.executable, "-c", code], env=traced.env(), stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, preexec_fn=lambda: os.sched_setaffinity(0, one_cpu))
            assert proc.stdout.readline() == b"up\n"
            proc.send_signal(signal.SIGTERM)
            assert exit_status(proc, 5) == 7
    finally:
        for process in busy:
            process.kill()
            process.wait()


def test_the_signal_hook_loads_at_the_programs_first_call_and_answers_as_untraced(traced):
    """Importing signal (asyncio, subprocess, pytest do) loads no hook module; the first getsignal,
    through a reference taken before it, installs it and answers what it would untraced (our SIGTERM
    handler is installed meanwhile), and a handler set then chains as above."""
    code = ("import os, signal, sys\n"
            "print('selfopt_trace_agent.hooks.signal_' in sys.modules, flush=True)\n"
            "getsignal = signal.getsignal\n"
            "print(repr(getsignal(signal.SIGTERM)), 'selfopt_trace_agent.hooks.signal_' in sys.modules, flush=True)\n"
            "signal.signal(signal.SIGTERM, lambda signum, frame: (os.write(1, b'handled'), sys.exit(7)))\n"
            "os.kill(os.getpid(), signal.SIGTERM)\n")
    untraced = subprocess.run([sys.executable, "-c", code], capture_output=True)
    done = traced.python(code)
    answer = repr(signal.Handlers.SIG_DFL).encode()
    assert (done.returncode, done.stdout, done.stderr) == (7, b"False\n" + answer + b" True\nhandled", b"")
    assert untraced.stdout == b"False\n" + answer + b" False\nhandled"


def test_the_tracers_own_thread_takes_no_signal_of_the_programs(traced):
    """A process-directed signal goes to any thread that does not block it: one taken by the tracer's
    flusher thread would leave a main thread blocked in time.sleep asleep, its handler unrun (seen:
    the SIGTERM test above timing out in 1 run of 15 beside a CPU hog). Every thread the tracer
    starts blocks them all, without importing `signal`; the program's own threads keep their masks."""
    code = ("import json, os, sys, threading, time\n"
            "time.sleep(0.3)\n"  # the flusher thread runs by now (the start-up span started it)
            "def blocked(tid):\n"
            "    status = open(f'/proc/self/task/{tid}/status').read()\n"
            "    return int(status.split('SigBlk:')[1].split()[0], 16)\n"
            # (waiting on an event: the traced time.sleep blocks signals for a moment before it sleeps)
            "done = threading.Event()\n"
            "mine = threading.Thread(target=done.wait, args=(5,)); mine.start()\n"
            "others = [int(t) for t in os.listdir('/proc/self/task') if int(t) not in (os.getpid(), mine.native_id)]\n"
            "print(json.dumps([blocked(os.getpid()), blocked(mine.native_id), [blocked(t) for t in others],\n"
            "                  'signal' in sys.modules]))\n"
            "done.set(); mine.join()\n")
    result = subprocess.run([sys.executable, "-c", code], env=traced.env(), capture_output=True, timeout=30)
    assert (result.returncode, result.stderr) == (0, b"")
    main, program_thread, masks, signal_imported = json.loads(result.stdout)
    assert not signal_imported  # the C module does it: `signal` imports enum, ms of the program's imports
    assert (main, program_thread) == (0, 0)
    assert masks, "the flusher thread was not running"
    sigterm = 1 << (signal.SIGTERM - 1)
    assert all(mask & sigterm for mask in masks), masks


# A C call that holds no Python frame running for seconds and checks no signal (the GIL let go):
# untraced, SIGTERM's default action kills at once; the agent's Python handler cannot run before it returns.
LONG_C_CALL = "hashlib.pbkdf2_hmac('sha256', b'x', b'y', 30_000_000)"  # ~7 s here


@pytest.mark.parametrize("python", INTERPRETERS)
def test_a_sigterm_in_a_long_c_call_kills_within_the_grace(traced, python):
    """The agent's handler would flush first, but only once the call returned: the process lived on
    for the rest of the call (2.2 s of a 2.4 s one). The C twin's grace (importtime.c): dead of
    SIGTERM 0.3 s after it, without the last flush (its process span: incomplete)."""
    code = f"import hashlib\nprint('up', flush=True)\n{LONG_C_CALL}\nprint('returned')\n"
    proc = subprocess.Popen([python, "-c", code], env=traced.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"up\n", proc.stderr.read()
    time.sleep(0.2)  # into the call
    sent = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert exit_status(proc) == -signal.SIGTERM
    assert time.monotonic() - sent < 1.5
    assert proc.stdout.read() == b"" and proc.stderr.read() == b""
    assert traced.spans().processes()[0].incomplete


def test_a_forked_child_in_a_long_c_call_dies_of_sigterm_within_the_grace(traced):
    """A forked child (a multiprocessing worker: Pool.terminate() sends SIGTERM) makes a timer of
    its own: its parent's is not inherited, and the child waited for the whole call."""
    code = ("import hashlib, os, signal, sys, time\n"
            "pid = os.fork()\n"
            "if pid == 0:\n"
            "    os.write(1, b'up\\n')\n"
            f"    {LONG_C_CALL}\n"
            "    os._exit(3)\n"
            "sys.stdin.readline()\n"  # the test sends SIGTERM to the child, then a line
            "print(os.waitpid(pid, 0)[1], flush=True)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=traced.env(), stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"up\n", proc.stderr.read()
    time.sleep(0.2)
    child = int(subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()[0])
    sent = time.monotonic()
    os.kill(child, signal.SIGTERM)
    proc.stdin.write(b"\n")
    proc.stdin.flush()
    assert int(proc.stdout.readline()) == signal.SIGTERM  # the child's wait status: killed by SIGTERM
    assert time.monotonic() - sent < 1.5
    assert exit_status(proc) == 0


def test_a_program_s_own_sigterm_handler_runs_after_a_long_c_call_as_untraced(traced):
    """The grace is the default action's: a handler the program set runs when the call returns, and
    the program goes on, traced as untraced."""
    code = ("import hashlib, os, signal\n"
            "signal.signal(signal.SIGTERM, lambda signum, frame: os.write(1, b'handled\\n'))\n"
            "print('up', flush=True)\nhashlib.pbkdf2_hmac('sha256', b'x', b'y', 6_000_000)\nprint('returned')\n")

    def run(env):
        proc = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        assert proc.stdout.readline() == b"up\n", proc.stderr.read()
        time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        return exit_status(proc), proc.stdout.read(), proc.stderr.read()

    assert run(traced.env()) == run(None) == (0, b"handled\nreturned\n", b"")


def test_ignored_sigterm_stays_ignored(traced):
    code = ("import signal, time\nsignal.signal(signal.SIGTERM, signal.SIG_IGN)\n"
            "print('up', flush=True); time.sleep(1); print('still here')\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=traced.env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline() == b"up\n"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0
    assert proc.stdout.read() == b"still here\n"


def test_uncaught_exception_is_recorded_and_the_traceback_unchanged(traced, tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("def f():\n    raise ValueError('bad value')\nf()\n")
    untraced = subprocess.run([sys.executable, str(script)], capture_output=True)
    result = traced.run([sys.executable, str(script)])
    assert result.returncode == untraced.returncode == 1
    assert result.stderr == untraced.stderr and result.stdout == untraced.stdout
    root = traced.spans().processes()[0]
    assert root.status == "ERROR"
    assert root.attributes["exception.type"] == "ValueError"
    assert root.attributes["process.exit.code"] == 1


def test_a_forked_child_writes_its_own_file_and_nothing_twice(traced):
    code = ("import os, subprocess, sys\n"
            "subprocess.run([sys.executable, '-c', 'pass'])\n"
            "pid = os.fork()\n"
            "if pid == 0:\n    os._exit(0)\n"
            "os.waitpid(pid, 0)\n")
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b""
    spans = traced.spans()
    files = {p.file for p in spans.processes()}
    assert len(files) == 3  # parent, its subprocess child, the forked child
    ids = [s.span_id for s in spans.spans]
    assert len(ids) == len(set(ids))
    forked = [p for p in spans.processes() if spans.parent(p) is not None and spans.parent(p).name == "fork"]
    assert len(forked) == 1 and forked[0].attributes["process.exit.code"] == 0


def test_files_of_a_killed_process_group_are_loadable(traced):
    """Every line on disk is whole even when everything dies at once."""
    code = ("import subprocess, sys, time\n"
            "procs = [subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(30)']) for _ in range(3)]\n"
            "print('up', flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=traced.env(), stdout=subprocess.PIPE, start_new_session=True)
    assert proc.stdout.readline() == b"up\n"
    wait_for(lambda: len(traced.spans().processes()) == 4 or time.sleep(0.1))
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    spans = traced.spans()
    assert len(spans.processes()) == 4
    assert all(p.incomplete for p in spans.processes())


def test_preexec_fn_child_leaves_no_trace_of_its_own(traced):
    code = ("import os, subprocess, sys\n"
            "subprocess.run([sys.executable, '-c', 'pass'], preexec_fn=os.getpid, check=True)\n")
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b""
    spans = traced.spans()
    assert len(spans.processes()) == 2
    assert not [s for s in spans.spans if s.incomplete]


def test_records_made_before_blocking_reach_the_disk_after_a_busy_stretch(traced, tmp_path):
    """While the program's own records flush at the deadline, the flusher thread doubles its sleeps up
    to tracer.FLUSH_NAP_MAX_NS (each wake took the GIL from the busy main thread: 2 s of recording
    woke it ~20 times, now 6). Once the program blocks, what it recorded last still reaches the
    disk, and the thread goes on flushing (an open span ends at the last flush's tick)."""
    for i in range(100):
        (tmp_path / f"m{i}.py").write_text(f"x = {i}\n")
    (tmp_path / "last_one.py").write_text("x = 0\n")
    code = ("import sys, time\n"
            "sys.path.insert(0, '.')\n"
            "t = time.monotonic(); i = 0\n"
            "while time.monotonic() - t < 2:\n"  # every import a span (threshold 0): flushes at each deadline
            "    name = 'm%d' % (i % 100); __import__(name); del sys.modules[name]; i += 1\n"
            "import last_one\n"
            "print('blocked', flush=True)\n"
            "time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=traced.env(SELFOPT_TRACE_IMPORT_THRESHOLD_MS="0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout.readline() == b"blocked\n"
        wait_for(lambda: traced.spans().named("import last_one"))
        last, = traced.spans().named("import last_one")
        wait_for(lambda: traced.spans().processes()[0].end_ns > last.end_ns + 100_000_000)
    finally:
        proc.kill()
        proc.wait()


def test_the_flusher_thread_waits_for_an_old_process_or_a_long_wait(traced, tmp_path):
    """A second thread costs a busy process ~3 ms (tracer.FLUSHER_AGE_NS): a process younger than
    1 s records with no thread of ours, its records flushed at the deadlines they cross; its first
    record once older starts the thread. A long sleep (or a wait on a child) starts it at any age,
    so that ticks say the process lived on while it waited; a short sleep does not."""
    for i in range(100):
        (tmp_path / f"m{i}.py").write_text(f"x = {i}\n")
    code = ("import os, sys, time\n"
            "sys.path.insert(0, '.')\n"
            "def threads(): return len(os.listdir('/proc/self/task'))\n"
            "def imports(until):\n"  # every import a span (threshold 0)
            "    i = 0\n"
            "    while time.monotonic() < until:\n"
            "        name = 'm%d' % (i % 100); __import__(name); del sys.modules[name]; i += 1\n"
            "start = time.monotonic()\n"
            "imports(start + 0.4)\n"
            "young = threads()\n"
            "spans = os.path.join(os.environ['SELFOPT_TRACE_DIR'], 'spans')\n"
            "on_disk = sum(open(os.path.join(spans, f)).read().count('import m') for f in os.listdir(spans))\n"
            "time.sleep(0.05)\n"
            "after_short_sleep = threads()\n"
            "imports(start + 1.1)\n"
            "print(young, after_short_sleep, threads(), on_disk > 0, flush=True)\n")
    env = traced.env(SELFOPT_TRACE_IMPORT_THRESHOLD_MS="0")
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, timeout=60)
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout.split() == [b"1", b"1", b"2", b"True"]  # on_disk: flushed at the deadlines

    for wait in ("time.sleep(0.15)", "subprocess.run(['true'])"):
        code = f"import os, subprocess, time\n{wait}\nprint(len(os.listdir('/proc/self/task')))\n"
        result = subprocess.run([sys.executable, "-c", code], env=traced.env(), capture_output=True, timeout=60)
        assert (result.returncode, result.stdout, result.stderr) == (0, b"2\n", b""), wait


def test_a_young_servers_request_reaches_the_disk_while_it_waits_for_the_next(traced):
    """A server answers a request, then waits in accept() where no hook sees: its SERVER span must
    reach the span file while it serves on, however young the process (the flusher thread starts at
    its first answered request), as a live export needs."""
    code = ("import http.server, sys\n"
            "class Handler(http.server.BaseHTTPRequestHandler):\n"
            "    def do_GET(self):\n"
            "        self.send_response(200); self.end_headers(); self.wfile.write(b'ok')\n"
            "    def log_message(self, *args):\n"
            "        pass\n"
            "server = http.server.HTTPServer(('127.0.0.1', 0), Handler)\n"
            "print(server.server_address[1], flush=True)\n"
            "server.serve_forever()\n")
    proc = subprocess.Popen([sys.executable, "-c", code], env=traced.env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    try:
        port = int(proc.stdout.readline())
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/items", timeout=10) as response:
            assert response.read() == b"ok"
        answered = time.monotonic()
        wait_for(lambda: [s for s in traced.spans().spans if s.kind == "SERVER"], timeout=5)
        assert time.monotonic() - answered < 1.0  # the thread's first turn, not the process's first second
        assert proc.poll() is None  # still serving
    finally:
        proc.kill()
        proc.wait()
