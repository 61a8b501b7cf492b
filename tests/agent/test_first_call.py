"""A hook loaded by the first call of what it wraps (lazy.py's stand-ins) counts in that call's span:
the program lived the load inside the call (tracer.first_call)."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys

from tests.conftest import Traced

# The gap from the program's clock before a spawn to the subprocess span's start, for its first spawn
# (the subprocess hook loads then, 0.4-0.5 ms) and its second.
PROGRAM = """
import subprocess, sys, time
gaps = []
for _ in range(2):
    before = time.time_ns()
    subprocess.run([sys.executable, "-c", "pass"])
    gaps.append(before)
print(*gaps)
"""


def test_the_first_spawn_starts_its_span_before_the_hook_loads(tmp_path) -> None:
    first, second = [], []
    for attempt in range(5):
        traced = Traced(tmp_path / str(attempt))
        done = traced.python(PROGRAM)
        assert done.returncode == 0, done.stderr
        befores = [int(t) for t in done.stdout.split()]
        (main,) = [p for p in traced.spans().processes() if p.parent_span_id == ""]
        starts = sorted(s.start_ns for s in traced.spans().named("subprocess") if s.parent_span_id == main.span_id)
        first.append(starts[0] - befores[0])
        second.append(starts[1] - befores[1])
    # Without the first call's start, the first gap is the second's plus the hook's load (>= 0.3 ms here).
    assert statistics.median(first) - statistics.median(second) < 150_000, (first, second)


# One request to a server in a thread of the same program, through http.client: `body` is its answer.
ONE_REQUEST = """
class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
served = threading.Thread(target=server.handle_request, name="served")
served.start()
connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
connection.request("GET", "/")
body = connection.getresponse().read()
served.join()
"""

# A program that wraps what the agent's stand-ins stand in for before their first call, keeping the
# stand-in as the original to call, as sentry-sdk and most monkeypatching libraries do. It recursed
# without end in the stand-in (RecursionError in the program's first HTTP request under sentry-sdk).
WRAPPED_FIRST = """
import collections, concurrent.futures, http.client, http.server, json, signal, subprocess, sys, threading
calls = collections.Counter()
def wrap(owner, name):
    original = getattr(owner, name)
    def wrapper(*args, **kwargs):
        calls[name] += 1
        return original(*args, **kwargs)
    setattr(owner, name, wrapper)
    return owner, name, wrapper
wrapped = [wrap(threading.Thread, "start"), wrap(http.client.HTTPConnection, "getresponse"),
           wrap(subprocess.Popen, "_execute_child"), wrap(signal, "signal"),
           wrap(concurrent.futures.Future, "result")]

""" + ONE_REQUEST + """subprocess.run([sys.executable, "-c", "pass"], check=True)
signal.signal(signal.SIGUSR1, lambda *_: None)
with concurrent.futures.ThreadPoolExecutor(1) as pool:
    answer = pool.submit(json.dumps, [1]).result()
print(body.decode(), answer, json.dumps(dict(sorted(calls.items()))),
      all(getattr(owner, name) is wrapper for owner, name, wrapper in wrapped))
"""


def test_a_program_that_wraps_a_stand_in_before_its_first_call_runs_as_untraced(traced) -> None:
    env = traced.env()
    del env["SELFOPT_TRACE_DIR"]
    untraced = subprocess.run([sys.executable, "-c", WRAPPED_FIRST], env=env, capture_output=True, timeout=60)
    done = traced.python(WRAPPED_FIRST)
    assert untraced.returncode == done.returncode == 0, done.stderr
    assert done.stdout == untraced.stdout and done.stderr == untraced.stderr
    assert done.stdout.split(b" ", 2)[:2] == [b"ok", b"[1]"] and done.stdout.endswith(b"True\n")  # theirs kept
    spans = traced.spans()
    assert len([s for s in spans.spans if s.kind == "CLIENT" and s.category == "http"]) == 1  # each call once
    assert len(spans.named("subprocess")) == 1
    assert {s.attributes["thread.name"] for s in spans.named("thread")} >= {"served"}


SENTRY = """
import http.client, http.server, threading
import sentry_sdk
sentry_sdk.init(dsn="http://key@127.0.0.1:9/1")  # its default integrations wrap http.client, threading, subprocess
""" + ONE_REQUEST + """
print(body.decode())
"""


def test_a_program_using_sentry_sdk_runs_traced(traced) -> None:
    done = traced.python(SENTRY)
    assert (done.returncode, done.stdout, done.stderr) == (0, b"ok\n", b"")
    clients = [s for s in traced.spans().spans if s.kind == "CLIENT" and s.category == "http"]
    servers = [s for s in traced.spans().spans if s.kind == "SERVER"]
    assert len(clients) == len(servers) == 1 and servers[0].parent_span_id == clients[0].span_id


# pytest's plugins import pydantic, time_machine, codeflash and its config parser in every pytest
# process (codeflash's, time-machine's own): none loads a hook module until something is validated,
# serialized, travels or is optimized. A stand-in for a classmethod is a classmethod: a subclass's
# override reaches it through super().
UNCALLED_UNTIL_NOW = """
import inspect, json, sys, pydantic, time_machine, codeflash.code_utils.config_parser
def hooks():
    return sorted(m.rpartition(".")[2] for m in sys.modules if m.startswith("selfopt_trace_agent.hooks."))
imported = hooks()
class Item(pydantic.BaseModel):
    name: str
class Shouted(Item):
    @classmethod
    def model_validate(cls, obj, **kwargs):
        return super().model_validate(dict(obj, name=obj["name"].upper()), **kwargs)
print(inspect.signature(Item.model_validate), Item.model_validate.__qualname__, Shouted.model_validate.__qualname__)
print(Shouted.model_validate({"name": "x"}), Item.model_validate_json('{"name": "y"}'), Item(name="z").model_dump())
print(pydantic.TypeAdapter(int).validate_python("3"))
with open(sys.argv[1], "w") as out:
    json.dump([imported, hooks()], out)
"""


def test_pydantic_time_machine_and_codeflash_load_no_hook_until_called(traced, tmp_path) -> None:
    traced.require("codeflash")
    loaded = tmp_path / "hooks.json"
    untraced = traced.untraced([traced.executable, "-c", UNCALLED_UNTIL_NOW, str(tmp_path / "untraced.json")])
    done = traced.python(UNCALLED_UNTIL_NOW, str(loaded), extra_env={"SELFOPT_TRACE_SMALL_NS": "0"})
    assert untraced.returncode == done.returncode == 0, done.stderr
    assert (done.stdout, done.stderr) == (untraced.stdout, untraced.stderr)
    imported, called = json.loads(loaded.read_text())
    assert not {"serialization", "time_machine_", "targets"} & set(imported)  # parsing's: inspect imports ast
    assert "serialization" in called and not {"time_machine_", "targets"} & set(called)
    spans = traced.spans()
    validated = spans.named("pydantic.model_validate")
    assert len(validated) == 1 and validated[0].attributes["selfopt_trace.python.type"] == "__main__.Shouted"
    assert len(spans.named("pydantic.model_validate_json")) == len(spans.named("pydantic.model_dump")) == 1
    assert len(spans.named("pydantic.TypeAdapter.validate_python")) == 1
