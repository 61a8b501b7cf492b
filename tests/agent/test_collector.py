"""The program's garbage collector and finalization, traced as untraced: what a collection finds, and
which of the program's objects are finalized at exit, whatever the agent keeps.

Keeping the agent's own objects for good and out of the collector's reach was tried (2026-12-07,
docs/benchmarks.md "The agent's objects out of the collector's reach, tried"): a hook's wrapper kept
for good kept the wrapped function's module namespace too, and the program's objects in it were
never finalized (a pytest run's finalization 8.5 M instructions shorter for that reason alone)."""

from __future__ import annotations

from tests.agent.test_imports import traced  # noqa: F401  (the fixture: both import wrappers, every Python)
from tests.conftest import Traced


CYCLES = """
import gc
class Node:
    def __del__(self):
        pass
gc.collect()
gc.disable()  # one collection finds them all, wherever the automatic ones would have run
for _ in range(1000):
    a, b = Node(), Node()
    a.other, b.other = b, a
    c = [{}]
    c[0]["self"] = c
del a, b, c
print(gc.collect())
"""

FINALIZED = """
import os

class Noisy:
    def __del__(self, write=os.write):
        write(1, b"finalized\\n")

kept = Noisy()  # a module global: finalized with the module's namespace at exit

def work():
    return 1
"""


def test_a_program_s_collections_find_the_same_garbage_as_untraced(traced: Traced) -> None:
    untraced, done = traced.both_ways("cycles.py", CYCLES)
    assert (done.returncode, done.stdout, done.stderr) == (untraced.returncode, untraced.stdout, untraced.stderr)
    assert int(done.stdout) >= 4000
    assert traced.spans().named("process")


def test_a_wrapped_function_s_module_is_finalized_at_exit_as_untraced(traced: Traced) -> None:
    """A target's wrapper holds the function it wraps, which holds its module's namespace: the module
    dropped, its globals are still finalized at exit (the wrapper kept for good kept them alive)."""
    (traced.tmp_path / "mymod.py").write_text(FINALIZED)
    program = "import sys\nimport mymod\nprint(mymod.work())\ndel sys.modules['mymod'], mymod\n"
    untraced = traced.untraced([traced.executable, "-c", program], cwd=traced.tmp_path)
    done = traced.python(program, cwd=traced.tmp_path, extra_env={"SELFOPT_TRACE_TARGETS": "mymod:work"})
    assert (done.returncode, done.stdout, done.stderr) == (untraced.returncode, untraced.stdout, untraced.stderr)
    assert done.stdout == b"1\nfinalized\n"
    assert traced.spans().named("work")  # the target fired
