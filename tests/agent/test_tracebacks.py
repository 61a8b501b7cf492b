"""An exception that passes through a hook reaches the program with the traceback it has untraced:
no frame of the agent's in what `traceback`, pytest or a server's error log print."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from tests.conftest import OLDER_PYTHONS

# Each script runs its CASES so: the traceback of each, caught and printed.
RUN_CASES = '''
for name, call in CASES.items():
    try:
        call()
    except BaseException:
        print("==", name)
        print(traceback.format_exc())
'''

# Each case fails inside (or through) a hooked call; the script prints every traceback it catches,
# and the last one goes uncaught.
SCRIPT = r'''
import ast, asyncio, json, marshal, os, pickle, socket, subprocess, sys, threading, traceback
import concurrent.futures as cf, http.client, http.server, multiprocessing as mp, urllib.request
import wsgiref.simple_server
import httpx, pydantic, requests, yaml
from failing import user_target, user_coroutine

s = socket.socket(); s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]; s.close()  # refused
url = f"http://127.0.0.1:{port}/x"

def refuse(o):
    raise RuntimeError("not serializable here")

def nested():  # a hooked call inside another: json.dumps's default= calls json.loads
    return json.dumps({"a": object()}, default=lambda o: json.loads("{bad"))

class Model(pydantic.BaseModel):
    a: int

async def async_get():
    async with httpx.AsyncClient() as client:
        await client.get(url)

CASES = {
    "json.loads": lambda: json.loads("{bad"),
    "json.dumps": lambda: json.dumps({"a": object()}),
    "json.dumps default": lambda: json.dumps({"a": object()}, default=refuse),
    "json nested": nested,
    "json.load": lambda: json.load(open(__file__)),
    "pickle.loads": lambda: pickle.loads(b"garbage"),
    "pickle.dumps": lambda: pickle.dumps(lambda: 1),
    "marshal.loads": lambda: marshal.loads(b"\x00"),
    "ast.parse": lambda: ast.parse("def ("),
    "compile": lambda: compile("x = (", "<s>", "exec"),
    "compile flags": lambda: compile("x = (", "<s>", "exec", flags=0),
    "yaml": lambda: yaml.safe_load("a: ["),
    "pydantic": lambda: Model.model_validate_json('{"a": "x"}'),
    "subprocess missing": lambda: subprocess.run(["/nonexistent/prog"]),
    "subprocess check_call": lambda: subprocess.check_call([sys.executable, "-c", "raise SystemExit(3)"]),
    "subprocess bad cwd": lambda: subprocess.Popen(["true"], cwd="/nonexistent"),
    "os.execv": lambda: os.execv("/nonexistent/prog", ["x"]),
    "os.posix_spawn": lambda: os.posix_spawn("/nonexistent/prog", ["x"], os.environ),
    "urlopen": lambda: urllib.request.urlopen(url, timeout=5),
    "http.client": lambda: http.client.HTTPConnection("127.0.0.1", port, timeout=5).request("GET", "/"),
    "requests": lambda: requests.get(url, timeout=5),
    "httpx": lambda: httpx.get(url, timeout=5),
    "httpx client": lambda: httpx.Client().post(url, json={"a": 1}),
    "httpx async": lambda: asyncio.run(async_get()),
    "mp spawn": lambda: mp.get_context("spawn").Process(target=lambda: 1).start(),
    "pool": lambda: cf.ThreadPoolExecutor(1).submit(json.loads, "{bad").result(),
    "target": user_target,
    "target async": lambda: asyncio.run(user_coroutine()),
}
''' + RUN_CASES + r'''
for call in (lambda: subprocess.run(["/nonexistent/prog"]),  # env=None: built by fork_exec
             lambda: subprocess.run(["/nonexistent/prog"], close_fds=False),  # by os.posix_spawn
             lambda: subprocess.run(["/nonexistent/prog"], env={"ONLY": "this"})):  # the program's own
    try:
        call()
    except FileNotFoundError as error:  # pytest prints a failed call's arguments (and Sentry its locals)
        tb = error.__traceback__
        while tb is not None:
            if tb.tb_frame.f_code.co_name == "_execute_child":
                print("== _execute_child's env:", repr(tb.tb_frame.f_locals["env"]))
            tb = tb.tb_next

def app(environ, start_response):  # wsgiref prints the failed request's traceback on stderr
    json.loads("{bad")

server = wsgiref.simple_server.make_server("127.0.0.1", 0, app)
served = threading.Thread(target=server.handle_request); served.start()
try:
    urllib.request.urlopen(f"http://127.0.0.1:{server.server_port}/", timeout=5)
except Exception as e:
    print("== wsgi", type(e).__name__)
served.join()
worker = threading.Thread(target=json.loads, args=("{bad",)); worker.start(); worker.join()
json.loads("[1, 2")
'''

FAILING = '''
import json
def user_target():
    return json.loads("{bad")
async def user_coroutine():
    return user_target()
'''


def normal(text: bytes) -> bytes:
    text = re.sub(rb"0x[0-9a-f]+", b"0xADDR", text)
    text = re.sub(rb"port=\d+|:\d+/x|127\.0\.0\.1', \d+|127\.0\.0\.1:\d+", b"PORT", text)
    text = re.sub(rb"\[\d+/\w+/\d+ [\d:]+\]", b"[DATE]", text)  # wsgiref's request log
    return re.sub(rb"(Thread-\d+) \(\w+\)", rb"\1", text)


@pytest.mark.parametrize("settings", [{}, {"SELFOPT_TRACE_SMALL_NS": "0"}, {"SELFOPT_TRACE_PURE_PYTHON": "1"}],
                         ids=["sums", "spans", "pure-python"])
def test_tracebacks_through_every_hook_are_the_untraced_ones(traced, settings):
    (traced.tmp_path / "failing.py").write_text(FAILING)
    script = traced.tmp_path / "script.py"
    script.write_text(SCRIPT)
    env = traced.env()
    del env["SELFOPT_TRACE_DIR"]
    untraced = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=120,
                              cwd=traced.tmp_path)
    result = traced.run([sys.executable, str(script)], cwd=traced.tmp_path,
                        extra_env={"SELFOPT_TRACE_TARGETS": "failing:user_target;failing:user_coroutine", **settings})
    assert untraced.returncode == result.returncode == 1
    assert b"selfopt_trace" not in untraced.stdout + untraced.stderr
    assert normal(result.stdout).decode() == normal(untraced.stdout).decode()
    assert normal(result.stderr).decode() == normal(untraced.stderr).decode()
    failed = {(span.name, span.attributes.get("error.type")) for span in traced.spans().spans}
    assert {("subprocess", "FileNotFoundError"), ("GET", "ConnectionRefusedError"), ("POST", "ConnectError"),
            ("multiprocessing", "AttributeError"), ("user_target", "JSONDecodeError"),
            ("user_coroutine", "JSONDecodeError"), ("GET", "500")} <= failed  # the hooks saw each failure


# The standard library's hooked calls only: a bare pyenv build runs it. Before Python 3.11 a bare
# `raise` re-raises the traceback it caught, wrapper frame included (importtime.c's
# handle_with_traceback replaces it there).
STDLIB_SCRIPT = r'''
import asyncio, json, pickle, subprocess, sys, time, traceback
import concurrent.futures as cf

def boom():
    raise KeyError("x")

async def late():
    await asyncio.wait_for(asyncio.sleep(1), 0.01)

def timed_out():
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(5)"])
    try:
        child.wait(0.2)
    finally:
        child.kill()
        child.wait()

def parsed():  # a hooked call inside a generator: the handled exception is the generator's
    for text in ("[1]", "{bad"):
        yield json.loads(text)

CASES = {
    "json.loads": lambda: json.loads("{bad"),
    "json.dumps": lambda: json.dumps({"a": object()}),
    "compile": lambda: compile("x = (", "<s>", "exec"),
    "pickle.loads": lambda: pickle.loads(b"garbage"),
    "time.sleep": lambda: time.sleep(-1),
    "subprocess missing": lambda: subprocess.run(["/nonexistent/prog"]),
    "Popen.wait timeout": timed_out,
    "future": lambda: cf.ThreadPoolExecutor(1).submit(boom).result(),
    "asyncio": lambda: asyncio.run(late()),
    "generator": lambda: list(parsed()),
}
''' + RUN_CASES + r'''json.dumps({"a": object()}, default=lambda o: json.loads("{bad"))  # uncaught: sys.excepthook prints it
'''


@pytest.mark.parametrize("settings", [{}, {"SELFOPT_TRACE_SMALL_NS": "0"}], ids=["sums", "spans"])
@pytest.mark.parametrize("minor", ["this", "3.8", "3.10"])
def test_tracebacks_are_the_untraced_ones_under_each_python(traced, minor, settings):
    python = sys.executable if minor == "this" else OLDER_PYTHONS.get(minor)
    if python is None:
        pytest.skip(f"no Python {minor} here (pyenv)")
    script = traced.tmp_path / "script.py"
    script.write_text(STDLIB_SCRIPT)
    untraced = traced.untraced([python, str(script)])
    result = traced.run([python, str(script)], extra_env=settings)
    assert untraced.returncode == result.returncode == 1
    assert untraced.stdout.count(b"\n== ") == 9 and untraced.stdout.count(b"Traceback") >= 10
    assert normal(result.stdout).decode() == normal(untraced.stdout).decode()
    assert normal(result.stderr).decode() == normal(untraced.stderr).decode()
    assert {s.name for s in traced.spans().spans} >= {"subprocess", "Popen.wait"}  # traced, the hooks there
