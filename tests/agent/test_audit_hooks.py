"""A program's audit hooks (sys.addaudithook) see the program's own events, traced as untraced.

The agent's hook modules load from the lazy bundle without the import statement and run without
exec, its files open and the environment a child inherits changes without os.open/os.environ, and
it reads frames and code through the C twin (importtime.c): none of the import, exec, open,
sys._getframe, object.__getattr__ (`__code__`, `f_code`, `tb_frame`), os.putenv/os.unsetenv events
those raise reach the program's hooks. Left, each for its reason (docs/agent.md, "Audit hooks").
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.agent.conftest import NO_TWIN
from tests.conftest import OLDER_PYTHONS, OTHER_PYTHONS, Traced

PROGRAM = """import atexit, os, sys
DETAIL = {"import": 0, "open": 0, "object.__getattr__": 1, "object.__setattr__": 1, "os.putenv": 0, "os.unsetenv": 0}
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC)  # each event as it comes, the exit's too
def hook(event, args):
    at = DETAIL.get(event)
    os.write(log, ("%s %s\\n" % (event, args[at] if at is not None and len(args) > at else "")).encode())
sys.addaudithook(hook)

import asyncio, ast, http.client, http.server, json, os, pickle, subprocess, threading, time
from concurrent.futures import ThreadPoolExecutor

json.loads(json.dumps({"a": [1, 2]})); pickle.loads(pickle.dumps([1]))
try:
    json.loads("{bad")
except ValueError as exc:
    print("json:", type(exc).__name__)
compile(ast.parse("x = 1"), "small", "exec")
compile("\\n".join("def f%d(a, b):\\n    return a + b * %d" % (i, i) for i in range(3000)), "big", "exec")
subprocess.run([sys.executable, "-c", "pass"], check=True)
os.system("true")
pid = os.fork()
if pid == 0:
    os._exit(0)
print("fork:", os.waitpid(pid, 0)[1])
condition, ready = threading.Condition(), []
def notify_later():
    time.sleep(0.05)
    with condition:
        ready.append(1); condition.notify()
threading.Thread(target=notify_later).start()
with condition:
    condition.wait_for(lambda: ready, timeout=5)
time.sleep(0.02)
with ThreadPoolExecutor(2) as pool:
    print("pool:", pool.submit(sum, [1, 2]).result())
async def main():
    await asyncio.sleep(0.02)
    child = await asyncio.create_subprocess_exec(sys.executable, "-c", "pass")
    return await child.wait()
print("asyncio:", asyncio.run(main()))
class Quiet(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "2"); self.end_headers(); self.wfile.write(b"ok")
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(("127.0.0.1", 0), Quiet)
threading.Thread(target=server.handle_request).start()
connection = http.client.HTTPConnection("127.0.0.1", server.server_address[1])
connection.request("GET", "/")
print("http:", connection.getresponse().read())
server.server_close()
"""

# What the agent still raises: its modules' code unmarshalled (as a .pyc's is; Python 3.8 raises
# code.__new__ for each code object so made), the forked child's TRACEPARENT in os.environ (its own
# process span's, as at start-up), and the flusher thread's start (an event from Python 3.12).
LEFT = {"marshal.loads", "code.__new__", "os.putenv TRACEPARENT", "_thread.start_new_thread"}


def _events(path) -> Counter:
    lines = path.read_text(errors="replace").splitlines()
    return Counter(line for line in lines if line.split(" ")[0] not in LEFT and line.replace("b'", "").rstrip("'") not in LEFT)


@pytest.mark.parametrize("minor", ["this", "3.8", "3.10", "3.12", "3.13"])
def test_a_programs_audit_hooks_see_its_own_events_as_untraced(tmp_path, twin, minor):
    pythons = {**OLDER_PYTHONS, **OTHER_PYTHONS}
    if minor != "this" and minor not in pythons:
        pytest.skip(f"no Python {minor} here (pyenv)")
    traced = Traced(tmp_path) if minor == "this" else Traced(tmp_path, executable=pythons[minor])
    script = tmp_path / "audited.py"
    script.write_text(PROGRAM)
    untraced = traced.untraced([traced.executable, str(script), str(tmp_path / "untraced.log")])
    result = traced.run([traced.executable, str(script), str(tmp_path / "traced.log")])
    assert result.returncode == untraced.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == (untraced.stdout, untraced.stderr)
    assert b"json: JSONDecodeError" in result.stdout and b"http: b'ok'" in result.stdout
    seen, expected = _events(tmp_path / "traced.log"), _events(tmp_path / "untraced.log")
    assert seen == expected, (sorted((seen - expected).items()), sorted((expected - seen).items()))
    names = {span.name for span in traced.spans().spans}  # and the agent traced what the program did
    assert {"compile", "subprocess", "fork", "time.sleep", "GET", "asyncio.sleep"} <= names, sorted(names)
    assert any(name.startswith("Condition.wait") for name in names), sorted(names)
