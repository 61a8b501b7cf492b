"""The program's garbage collector: its passes timed (the C twin's callback, docs/agent.md), and, traced
as untraced, what a collection finds and which of the program's objects are finalized at exit.

Keeping the agent's own objects for good and out of the collector's reach was tried (2026-12-07,
docs/benchmarks.md "The agent's objects out of the collector's reach, tried"): a hook's wrapper kept
for good kept the wrapped function's module namespace too, and the program's objects in it were
never finalized (a pytest run's finalization 8.5 M instructions shorter for that reason alone)."""

from __future__ import annotations

import pytest

from selfopt_trace.bootstrap.selfopt_trace_agent.process import GC_SPAN_NS
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


COLLECTS = """
import gc
keep = [{"i": i} for i in range(200_000)]
gc.collect()  # a full pass over them, inside this module's import
"""


def test_the_collector_s_passes_are_counted_and_a_long_one_is_a_span_under_what_it_interrupted(traced: Traced) -> None:
    """With SELFOPT_TRACE_GC, the C twin's callback counts every pass by generation (the process span's
    end), and a pass of 0.1 ms or more is a `gc` span under the span it interrupted: here the import that
    called gc.collect(), written for it though shorter than the import threshold (10 s here). `gc` stays
    out of sys.modules, as untraced."""
    from selfopt_trace.bootstrap.selfopt_trace_agent import config

    if traced.settings.get(config.ENV_PURE_PYTHON) == "1":
        pytest.skip("the passes are timed by the C twin only (a Python callback would cost ~1.5 us a pass)")
    (traced.tmp_path / "collects.py").write_text(COLLECTS)
    program = "import sys\nprint('gc' in sys.modules)\nimport collects\n"
    untraced = traced.untraced([traced.executable, "-c", program], cwd=traced.tmp_path)
    done = traced.python(program, cwd=traced.tmp_path,
                         extra_env={"SELFOPT_TRACE_IMPORT_THRESHOLD_MS": "10000", "SELFOPT_TRACE_GC": "1"})
    assert (done.returncode, done.stdout, done.stderr) == (untraced.returncode, untraced.stdout, untraced.stderr)
    assert done.stdout == b"False\n"
    spans = traced.spans()
    (process,) = spans.named("process")
    counts, durations = process.attributes["python.gc.collections"], process.attributes["python.gc.duration_ns"]
    assert len(counts) == len(durations) == 3 and counts[2] >= 1 and durations[2] >= 1_000_000, process.attributes
    (imported,) = spans.named("import collects")
    passes = [span for span in spans.named("gc") if span.parent_span_id == imported.span_id]
    assert passes and {span.category for span in passes} == {"gc"}, spans.named("gc")  # gc.collect()'s, and any
    assert 2 in {span.attributes["python.gc.generation"] for span in passes}           # automatic one meanwhile
    assert all(imported.start_ns <= span.start_ns <= span.end_ns <= imported.end_ns
               and span.end_ns - span.start_ns >= GC_SPAN_NS for span in passes)


KILLED_AFTER_A_FLUSH = """
import gc, os, signal, subprocess, sys
keep = [[i] for i in range(200_000)]
gc.collect()
subprocess.run([sys.executable, "-c", "pass"])  # a spawn flushes what is buffered
os.kill(os.getpid(), signal.SIGKILL)
"""


def test_a_long_pass_is_written_by_the_next_flush_not_only_at_the_end(traced: Traced) -> None:
    """A process killed before its end (no counts on its span) keeps the passes flushed before."""
    from selfopt_trace.bootstrap.selfopt_trace_agent import config

    if traced.settings.get(config.ENV_PURE_PYTHON) == "1":
        pytest.skip("the passes are timed by the C twin only")
    done = traced.python(KILLED_AFTER_A_FLUSH, extra_env={"SELFOPT_TRACE_GC": "1"})
    assert done.returncode == -9, done.stderr
    spans = traced.spans()
    (killed,) = [span for span in spans.named("process") if "python.gc.collections" not in span.attributes]
    passes = [span for span in spans.named("gc") if span.attributes["python.gc.generation"] == 2]
    assert passes and all(span.end_ns - span.start_ns >= GC_SPAN_NS and span.pid == killed.pid
                          for span in passes), spans.named("gc")


PASSES_WHILE_FLUSHING = """
import gc, subprocess, sys, time

def slow(phase, info):  # after the agent's callback: every pass lasts 0.2 ms more, so each is a span
    if phase == "start":
        began = time.perf_counter()
        while time.perf_counter() - began < 0.0002:
            pass

gc.callbacks.append(slow)
gc.set_threshold(1)  # a pass at every allocation: the flush's own, taking the passes out, too
for _ in range(2):
    subprocess.run([sys.executable, "-c", "pass"])  # a spawn flushes
gc.set_threshold(700)
gc.callbacks.remove(slow)
print("done")
"""


def test_passes_set_off_while_a_flush_takes_the_passes_out_are_kept_for_the_next(traced: Traced) -> None:
    """Taking the long passes out allocates, and with every allocation setting a pass off, each of
    those is kept for the next flush (it was once written past the end of the list being built)."""
    from selfopt_trace.bootstrap.selfopt_trace_agent import config

    if traced.settings.get(config.ENV_PURE_PYTHON) == "1":
        pytest.skip("the passes are timed by the C twin only")
    done = traced.python(PASSES_WHILE_FLUSHING, extra_env={"SELFOPT_TRACE_GC": "1"}, timeout=120)
    assert (done.returncode, done.stdout) == (0, b"done\n"), done.stderr
    spans = traced.spans()
    (main,) = [span for span in spans.named("process") if not span.parent_span_id]
    written = [span for span in spans.named("gc") if span.pid == main.pid]
    assert len(written) >= 100 and all(span.end_ns - span.start_ns >= GC_SPAN_NS for span in written), len(written)


LARGE_HEAP_AT_EXIT = """
import os, sys
keep = [{"i": i} for i in range(200_000)]  # the finalization's collections walk them
if sys.argv[1:] == ["exit"]:
    os._exit(0)  # no finalization
"""


@pytest.mark.parametrize("how", ["returns", "exit"])
def test_the_interpreter_s_finalization_is_a_span_from_the_process_s_end(traced: Traced, how: str) -> None:
    """The C twin ends `interpreter.finalize` (category `finalize`) under the process span, from that
    span's end, at the end of Py_FinalizeEx; a process that skips it (os._exit) has none. The output
    and the status are untraced's."""
    from selfopt_trace.bootstrap.selfopt_trace_agent import config

    untraced = traced.untraced([traced.executable, "-c", LARGE_HEAP_AT_EXIT, how])
    done = traced.python(LARGE_HEAP_AT_EXIT, how)
    assert (done.returncode, done.stdout, done.stderr) == (untraced.returncode, untraced.stdout, untraced.stderr)
    spans = traced.spans()
    (process,) = spans.named("process")
    finalized = spans.named("interpreter.finalize")
    if how == "exit" or traced.settings.get(config.ENV_PURE_PYTHON) == "1":
        assert not finalized  # (without the twin, nothing runs after the interpreter's last Python)
        return
    (span,) = finalized
    assert (span.category, span.parent_span_id, span.start_ns) == ("finalize", process.span_id, process.end_ns)
    assert span.end_ns - span.start_ns >= 1_000_000, span  # 200,000 dicts freed, walked first


def test_without_the_setting_the_collector_is_left_alone(traced: Traced) -> None:
    """Timing the passes is opt-in (8,640 instructions a pass, docs/benchmarks.md): by default
    gc.callbacks is the program's alone and nothing is counted."""
    untraced, done = traced.both_ways("callbacks.py", "import gc\nprint(len(gc.callbacks))\ngc.collect()\n")
    assert (done.returncode, done.stdout, done.stderr) == (untraced.returncode, untraced.stdout, untraced.stderr)
    (process,) = traced.spans().named("process")
    assert "python.gc.collections" not in process.attributes and not traced.spans().named("gc")
