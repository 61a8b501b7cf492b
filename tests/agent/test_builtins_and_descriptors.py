"""What the agent puts in the place of built-ins behaves as those built-ins, and its span file's
descriptor stays out of the program's way. Real processes, traced against untraced.

- A built-in function stored on a class does not bind (`class Poller: sleep = time.sleep`, then
  `self.sleep(0.01)`); the agent's replacements of built-ins (time.sleep, os.fork/_exit/exec*/
  posix_spawn*/system/wait*, pickle.dumps/loads and their first-call stand-ins, builtins.compile,
  _posixsubprocess's fork_exec) did, as Python functions: TypeError, traced only (tracer.Builtin).
- The span file's descriptor is high (tracer.OPEN_FD_HIGH): a program that lowers RLIMIT_NOFILE
  still opens what it opens untraced, and one that closes every descriptor gets the same numbers
  for its own files after the agent has opened its file again.
"""

from __future__ import annotations

import pytest

from tests.conftest import OLDER_PYTHONS, PYTHONS, Traced

ALL_PYTHONS = PYTHONS + [pytest.param(OLDER_PYTHONS.get(minor), id=minor, marks=pytest.mark.skipif(
    minor not in OLDER_PYTHONS, reason=f"no Python {minor} here (pyenv)")) for minor in ("3.8", "3.10")]

ON_A_CLASS = r"""
import ast, inspect, os, pickle, subprocess, sys, time, types

fork_exec_owner = subprocess if hasattr(subprocess, "_fork_exec") else __import__("_posixsubprocess")
fork_exec_name = "_fork_exec" if hasattr(subprocess, "_fork_exec") else "fork_exec"

class Holder:                        # each one taken before its first call: the stand-ins
    sleep = time.sleep
    fork, _exit, system = os.fork, os._exit, os.system
    execv, execve = os.execv, os.execve
    posix_spawn, posix_spawnp = os.posix_spawn, os.posix_spawnp
    waitpid, wait, wait3, wait4 = os.waitpid, os.wait, os.wait3, os.wait4
    dumps, loads = pickle.dumps, pickle.loads
    compile = compile

h = Holder()
out = []
h.sleep(0.001)
h.sleep(0.03)
out.append(h.loads(h.dumps([1, 2])))
out.append(h.loads(h.dumps({"a": 3})))
out.append(type(h.compile("1 + 1", "<s>", "eval")).__name__)
out.append(h.system("exit 3") >> 8)
pid = h.fork()
if pid == 0:
    h._exit(4)
out.append(h.waitpid(pid, 0)[1] >> 8)
h.posix_spawn("/bin/sh", ["sh", "-c", "sleep 0.05; exit 5"], dict(os.environ))
out.append(h.wait()[1] >> 8)
h.posix_spawnp("sh", ["sh", "-c", "exit 6"], dict(os.environ))
out.append(h.wait3(0)[1] >> 8)
pid = h.fork()
if pid == 0:
    h.execv("/bin/sh", ["sh", "-c", "exit 7"])
out.append(h.wait4(pid, 0)[1] >> 8)
pid = h.fork()
if pid == 0:
    h.execve("/bin/sh", ["sh", "-c", "exit 8"], dict(os.environ))
out.append(h.waitpid(pid, 0)[1] >> 8)
# what the wrappers now in place look like, put on a class after their first call
class Later:
    sleep, waitpid, dumps, fork_exec = time.sleep, os.waitpid, pickle.dumps, getattr(fork_exec_owner, fork_exec_name)
    def poll(self):
        self.sleep(0.001)
        return self.dumps(None)[-1:]
out.append(Later().poll())
out.append(subprocess.run([sys.executable, "-c", "print(6 * 7)"], capture_output=True).stdout)
out.append(callable(Later.__dict__["fork_exec"]) and not hasattr(type(Later.fork_exec), "__get__"))
for f in (time.sleep, os.fork, os._exit, os.waitpid, os.wait, os.system, os.execv, os.posix_spawn,
          pickle.dumps, pickle.loads, compile):
    out.append((repr(f), inspect.isbuiltin(f), inspect.isfunction(f), inspect.isroutine(f),
                isinstance(f, types.BuiltinFunctionType), hasattr(type(f), "__get__"), f.__name__,
                f.__qualname__, getattr(f, "__self__", None) is not None, pickle.loads(pickle.dumps(f)) is f))
print(out)
"""


@pytest.mark.parametrize("python", ALL_PYTHONS)
def test_built_ins_stored_on_a_class_do_not_bind_traced(tmp_path, python):
    """Untraced, every one of them is called as the function it is; traced, each went through a Python
    function that became a method of the class (TypeError: sleep() takes 1 positional argument but 2
    were given). Their names, pickling and inspect's answers stay the built-ins'."""
    traced = Traced(tmp_path, python)
    untraced, done = traced.both_ways("holder.py", ON_A_CLASS)
    assert untraced.returncode == 0, untraced.stderr.decode()
    assert (done.returncode, done.stderr.decode(), done.stdout) == (0, "", untraced.stdout)
    names = {span.name for span in traced.spans().spans}
    assert {"time.sleep", "fork", "exec", "subprocess", "os.wait"} <= names, sorted(names)


DESCRIPTORS = r"""
import os, resource, subprocess, sys, time
out = []
os.closerange(3, 1024)                  # a daemon's start: the agent's descriptor closed too
time.sleep(0.3)                         # a flush meanwhile: the agent opens its file again
r, w = os.pipe()
out.append((r, w))
with open(sys.argv[1], "w") as own:
    out.append(own.fileno())
os.close(r), os.close(w)
time.sleep(0.15)
resource.setrlimit(resource.RLIMIT_NOFILE, (5, 5))  # what this program needs: 0-2, a pipe of two
import json, decimal                    # an import opens its file: fd 3
out.append(json.dumps(decimal.Decimal(1).as_tuple()))
out.append(subprocess.run(["true"]).returncode)  # its error pipe: 3 and 4
resource.setrlimit(resource.RLIMIT_NOFILE, (4, 4))
import fractions
out.append(fractions.Fraction(1, 3).denominator)
time.sleep(0.15)                        # and the agent still writes its spans
print(out)
"""


@pytest.mark.parametrize("pure", [False, True], ids=["C twin", "pure Python"])
def test_the_span_file_s_descriptor_is_out_of_the_program_s_way(traced, tmp_path, pure):
    """A program that closes every descriptor and opens its own gets the numbers it gets untraced
    (the agent opened its file again at 3 before: os.pipe() was (4, 5)), and one that lowers
    RLIMIT_NOFILE to what it needs imports and spawns as untraced (EMFILE before: the span file held
    3 or 4). The trace goes on meanwhile."""
    traced.settings["SELFOPT_TRACE_IMPORT_THRESHOLD_MS"] = "0"  # every import a span
    if pure:
        traced.settings["SELFOPT_TRACE_PURE_PYTHON"] = "1"
    script = tmp_path / "descriptors.py"
    script.write_text(DESCRIPTORS)
    args = [traced.executable, str(script), str(tmp_path / "own.txt")]
    untraced, done = traced.untraced(args), traced.run(args)
    assert untraced.returncode == 0, untraced.stderr.decode()
    assert untraced.stdout == b"[(3, 4), 5, '[0, [1], 0]', 0, 3]\n"
    assert (done.returncode, done.stderr.decode(), done.stdout) == (0, "", untraced.stdout)
    spans = traced.spans()
    (process,) = spans.processes()
    assert process.end_ns and process.status != "ERROR", process
    names = [span.name for span in spans.spans]
    assert names.count("time.sleep") == 3 and "import fractions" in names and "subprocess" in names, names
