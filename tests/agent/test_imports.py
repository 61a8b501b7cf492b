"""Import spans: nested like `python -X importtime`, with self and cumulative time, above a threshold."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from selfopt_trace import import_twin, runner
from selfopt_trace.bootstrap.selfopt_trace_agent import config
from tests.agent.conftest import NO_TWIN
from tests.conftest import BOOTSTRAP, OLDER_PYTHONS, OTHER_PYTHONS, Traced

TWIN_PYTHONS = {**OLDER_PYTHONS, **OTHER_PYTHONS}


@pytest.fixture(params=["C twin", "Python", *(f"C twin, Python {minor}" for minor in ("3.8", "3.10", "3.12", "3.13"))])
def traced(request, tmp_path) -> Traced:
    """Every test here runs against both import wrappers: the C twin (importtime.c, built at the
    session's start) and the Python one it mirrors (importtime.py); and the twin under the other
    interpreters it is built for, as `run` prepares it for them (interpreters.py)."""
    if request.param == "Python":
        return Traced(tmp_path, **{config.ENV_PURE_PYTHON: "1"})
    if request.param.startswith("C twin, Python"):
        minor = request.param.rpartition(" ")[2]
        if minor not in TWIN_PYTHONS:
            pytest.skip(f"no Python {minor} here (pyenv)")
        return Traced(tmp_path, executable=TWIN_PYTHONS[minor])
    if import_twin.twin_path(BOOTSTRAP) is None or not import_twin.twin_path(BOOTSTRAP).exists():
        pytest.skip(NO_TWIN)
    return Traced(tmp_path)


def write_modules(tmp_path):
    (tmp_path / "slow_outer.py").write_text("import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.080: pass\nimport slow_inner\nimport fast_one\n")
    (tmp_path / "slow_inner.py").write_text("import time\nt = time.perf_counter()\nwhile time.perf_counter() - t < 0.020: pass\n")
    (tmp_path / "fast_one.py").write_text("X = 1\n")
    (tmp_path / "broken_mod.py").write_text("import time\ntime.sleep(0.005)\nraise ImportError('nope')\n")


def test_import_spans_nest_with_self_and_cumulative_time(traced, tmp_path):
    write_modules(tmp_path)
    code = "import sys; sys.path.insert(0, '.'); import slow_outer"
    # 10 ms, not the default 1 ms: on a loaded machine the one-line module took 1.4 ms to import
    result = traced.python(code, cwd=tmp_path, extra_env={"SELFOPT_TRACE_IMPORT_THRESHOLD_MS": "10"})
    assert result.returncode == 0 and result.stderr == b""
    spans = traced.spans()
    outer, = spans.named("import slow_outer")
    inner, = spans.named("import slow_inner")
    assert not spans.named("import fast_one")  # below the threshold
    assert inner.parent_span_id == outer.span_id
    assert outer.category == inner.category == "import"
    assert 20e6 <= inner.attributes["python.import.cumulative_ns"] < 60e6
    assert outer.attributes["python.import.cumulative_ns"] >= 100e6
    assert 80e6 <= outer.attributes["python.import.self_ns"] < 120e6
    assert outer.attributes["python.import.self_ns"] + inner.attributes["python.import.cumulative_ns"] <= outer.attributes["python.import.cumulative_ns"]
    assert outer.start_ns <= inner.start_ns and inner.end_ns <= outer.end_ns


def test_an_interrupt_while_hooks_arm_at_an_import_leaves_the_import_over(traced, tmp_path):
    """A KeyboardInterrupt while a target's hook arms at its module's import (each hook's own errors
    are caught) reaches the program's import, as it would untraced, and the import's span is over:
    the next import is the process's child, not the interrupted one's."""
    write_modules(tmp_path)
    (tmp_path / "interrupted.py").write_text("def __getattr__(name):\n    raise KeyboardInterrupt\n")
    code = ("import sys; sys.path.insert(0, '.')\ntry:\n    import interrupted\nexcept KeyboardInterrupt:\n"
            "    print('interrupted', 'interrupted' in sys.modules)\nimport slow_inner\n")
    result = traced.python(code, cwd=tmp_path, extra_env={"SELFOPT_TRACE_TARGETS": "interrupted:work",
                                                          "SELFOPT_TRACE_IMPORT_THRESHOLD_MS": "10"})
    assert (result.returncode, result.stdout, result.stderr) == (0, b"interrupted True\n", b"")
    spans = traced.spans()
    inner, = spans.named("import slow_inner")
    assert inner.parent_span_id == spans.processes()[0].span_id


def test_threshold_is_configurable(traced, tmp_path):
    write_modules(tmp_path)
    result = traced.python("import sys; sys.path.insert(0, '.'); import slow_outer", cwd=tmp_path,
                           extra_env={"SELFOPT_TRACE_IMPORT_THRESHOLD_MS": "60"})
    assert result.returncode == 0
    names = {s.name for s in traced.spans().spans if s.category == "import"}
    assert names == {"import slow_outer"}


def test_failed_import_is_an_error_span_and_the_error_unchanged(traced, tmp_path):
    write_modules(tmp_path)
    code = "import sys; sys.path.insert(0, '.')\ntry:\n    import broken_mod\nexcept ImportError as e:\n    print('caught', e)"
    result = traced.python(code, cwd=tmp_path)
    assert result.stdout == b"caught nope\n" and result.stderr == b""
    span, = traced.spans().named("import broken_mod")
    assert span.status == "ERROR"


def test_a_failed_imports_traceback_is_the_untraced_one(traced, tmp_path):
    """No frame of the import wrapper in it: CPython drops importlib's frames, ours it cannot know."""
    write_modules(tmp_path)
    (tmp_path / "imports_broken.py").write_text("import broken_mod\n")
    code = "import sys; sys.path.insert(0, '.'); import imports_broken"
    result = traced.python(code, cwd=tmp_path)
    untraced = subprocess.run([traced.executable, "-c", code], cwd=tmp_path, capture_output=True,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == untraced.returncode == 1
    assert result.stderr == untraced.stderr and b"imports_broken.py" in result.stderr
    assert b"selfopt_trace_agent" not in result.stderr


def test_recorded_imports_reach_the_file_at_the_flush_an_imports_end_makes(traced, tmp_path):
    """A recorded import leaves its record in the buffer; the end of a nested one past the flush's
    deadline flushes (the C twin does it itself), writing it and those before it while the process runs."""
    write_modules(tmp_path)
    (tmp_path / "late.py").write_text("import slow_outer\n")
    code = ("import glob, os, sys, time; sys.path.insert(0, '.')\n"
            "import slow_inner\n"
            "t = time.perf_counter()\n"
            "while time.perf_counter() - t < 0.25: pass\n"  # past the flush's deadline, where no hook sees
            "import late\n"
            "text = ''.join(open(path).read() for path in glob.glob(os.environ['SELFOPT_TRACE_DIR'] + '/spans/*'))\n"
            "print('\\timport slow_inner\\t' in text, '\\timport slow_outer\\t' in text, '\\timport late\\t' in text)\n")
    # 10 ms: fast_one's end, recorded at 1 ms on a loaded machine, flushed before slow_outer's (CI, 3.8)
    result = traced.python(code, cwd=tmp_path, extra_env={"SELFOPT_TRACE_IMPORT_THRESHOLD_MS": "10"})
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == b"True True False\n"  # late's own record ends after that flush
    spans = traced.spans()
    (outer,) = spans.named("import slow_outer")
    assert spans.parent(outer).name == "import late"


def test_the_twins_import_record_is_the_python_ones(traced):
    """The flush writes a recorded import with the twin's import_line where it is installed: the same
    line as tracer.python_import_line's, for a frame under a span and one under another frame (ids
    taken on the way), for names written as they are (4-byte characters, the longest the twin's buffer
    takes), names written escaped and names too long for it."""
    code = textwrap.dedent('''
        import json, sys, time
        from selfopt_trace_agent import importtime, tracer

        def frame(parent, status="UNSET"):
            made = importtime._Frame()
            made.parent, made.keep, made.child_ns, made._span_id, made._trace_id = parent, False, 1234, "", ""
            made.outer = made.below = None
            made.start_ns, made.cpu0, made.status, made.began_ns = time.time_ns(), 0, status, 0
            return made

        lines = []
        for name in ("plain.name", "caf\u00e9", 'we"ird', "back\\\\slash", "\\udcff", "tab\\there", "\\U0001F600." * 80,
                     "a" * 300):
            outer = frame(tracer.root())
            inner = frame(outer, "ERROR")
            for one in (inner, outer):
                for write in (tracer.import_line, tracer.python_import_line):
                    lines.append(write(one, name, one.start_ns + 2_000_000, ',"x":1' if one is outer else ""))
        print(tracer.import_line is not tracer.python_import_line)
        print(json.dumps(lines))
    ''')
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    twin, lines = result.stdout.decode().splitlines()
    assert twin == str(traced.settings.get(config.ENV_PURE_PYTHON) != "1")
    lines = json.loads(lines)
    assert len(lines) == 32 and all(line.startswith("X\t") and line.endswith("\t.\n") for line in lines)
    assert lines[0::2] == lines[1::2]
    assert '"python.import.module":"caf\u00e9"' in lines[4] and '"python.import.self_ns":1998766' in lines[0]


def test_import_spans_sit_under_the_current_span(traced, tmp_path):
    """A module imported while a subprocess span... is current: here, a thread's imports go to its thread span."""
    write_modules(tmp_path)
    code = ("import sys, threading; sys.path.insert(0, '.')\n"
            "t = threading.Thread(target=lambda: __import__('slow_inner')); t.start(); t.join()\n")
    result = traced.python(code, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == b""
    spans = traced.spans()
    inner, = spans.named("import slow_inner")
    assert spans.parent(inner).name == "thread"
    assert spans.parent(spans.parent(inner)).name == "process"


def test_python_dash_m_and_console_scripts_are_traced(traced, tmp_path):
    write_modules(tmp_path)
    script = tmp_path / "tool"
    script.write_text(f"#!{traced.executable}\nimport sys\nsys.path.insert(0, {str(tmp_path)!r})\nimport slow_inner\nprint('tool ran')\n")
    script.chmod(0o755)
    result = traced.run([str(script)])
    assert result.stdout == b"tool ran\n" and result.stderr == b""
    result = traced.run([traced.executable, "-m", "slow_inner"], cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == b""
    commands = sorted(p.attributes["process.command"] for p in traced.spans().processes())
    assert commands == ["slow_inner", "tool"]


def test_the_agents_own_nested_imports_are_counted_once(traced, tmp_path):
    """A hook module that imports another of the agent's while loading (threads -> timed) is the
    tracer's time once: the outer load's count leaves out what the inner one counted."""
    hooks = tmp_path / "extra_hooks"
    hooks.mkdir()
    (hooks / "outer_probe.py").write_text("from . import inner_probe\n")
    (hooks / "inner_probe.py").write_text("import time\ntime.sleep(0.2)\n")
    code = ("import selfopt_trace_agent.hooks as hooks, sys\n"
            f"hooks.__path__.append({str(hooks)!r})\n"
            "from selfopt_trace_agent import tracer\n"
            "before = tracer.overhead_ns()\n"
            "import selfopt_trace_agent.hooks.outer_probe\n"
            "print(tracer.overhead_ns() - before)\n")
    result = traced.python(code)
    assert result.returncode == 0, result.stderr
    counted = int(result.stdout)
    assert 0.2e9 <= counted < 0.35e9, counted  # counted twice: >= 0.4 s


# Names whose every hash takes 2 ms: the twin's own look into sys.modules before the load is slow.
SLOW_LOOKUPS = """
import sys, time, _frozen_importlib
sys.path.insert(0, '.')

class SlowName(str):
    def __hash__(self):
        began = time.perf_counter()
        while time.perf_counter() - began < 0.002:
            pass
        return str.__hash__(self)

for i in range(70):
    _frozen_importlib._find_and_load(SlowName('calibrated%d' % i), __import__)
print(sys.modules['selfopt_trace_agent.importtime']._bookkeeping[1])
"""


def test_the_calibration_times_the_wrappers_whole_work_around_a_load(traced, tmp_path):
    """An import's bookkeeping is counted at a cost calibrated on the first imports: with the twin,
    each of those is timed from the wrapper's call to its return, less the load, so what the twin
    does before its span begins (its own look into sys.modules, which importlib repeats) and after
    it ends (the frame's release) is counted too. The Python wrapper is importlib's function itself:
    its look into sys.modules is importlib's, not the agent's, and is not counted."""
    for i in range(70):
        (tmp_path / f"calibrated{i}.py").write_text("X = 1\n")
    # (importlib's own looks make each import slow: none is recorded, all are calibration samples)
    result = traced.python(SLOW_LOOKUPS, cwd=tmp_path, extra_env={"SELFOPT_TRACE_IMPORT_THRESHOLD_MS": "100000"})
    assert result.returncode == 0, result.stderr
    calibrated = int(result.stdout)  # the calibrated cost of one import's bookkeeping, ns
    if traced.settings.get(config.ENV_PURE_PYTHON) == "1":
        assert calibrated < 1_000_000
    else:
        assert calibrated >= 1_500_000


# The wrapper runs importlib's _find_and_load in its own frame (importtime.py): what importlib does
# there must still happen, each case printed as untraced.
IMPORT_SEMANTICS = """
import importlib, sys, threading
sys.path.insert(0, '.')
sys.modules['halted'] = None
try:
    import halted
except ModuleNotFoundError as exc:
    print('halted:', exc, exc.name)
print('import_module of a loaded module:', importlib.import_module('json') is sys.modules['json'])
import cycle_a
print('cycle:', cycle_a.B, cycle_a.cycle_b.A)
modules = []
threads = [threading.Thread(target=lambda: modules.append(__import__('slow_shared'))) for _ in range(4)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
print('threads:', len(modules), len(set(map(id, modules))), sys.modules['slow_shared'].RUNS)
"""


def test_imports_behave_as_untraced(traced, tmp_path):
    """A halted import's error, a module loaded already, a cycle, four threads importing one slow
    module at once (its lock: the body runs once, all get the same module)."""
    (tmp_path / "cycle_a.py").write_text("A = 1\nimport cycle_b\nB = cycle_b.B\n")
    (tmp_path / "cycle_b.py").write_text("import cycle_a\nB = 2\nA = cycle_a.A\n")
    (tmp_path / "slow_shared.py").write_text("import builtins, time\ntime.sleep(0.05)\n"
                                             "RUNS = getattr(builtins, 'slow_runs', 0) + 1\nbuiltins.slow_runs = RUNS\n")
    result = traced.python(IMPORT_SEMANTICS, cwd=tmp_path)
    untraced = subprocess.run([traced.executable, "-c", IMPORT_SEMANTICS], cwd=tmp_path, capture_output=True,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == untraced.returncode == 0, result.stderr
    assert result.stdout == untraced.stdout and result.stderr == untraced.stderr == b""
    assert b"threads: 4 1 1" in result.stdout
    # the loading thread's import, and one for each thread that waited on the module's lock meanwhile
    spans = traced.spans().named("import slow_shared")
    assert 1 <= len(spans) <= 4 and {span.status for span in spans} == {"UNSET"}


WRAPPER = ("import _frozen_importlib as b\n"
           "from selfopt_trace_agent import importtime\n"
           "print(type(b._find_and_load).__name__, b._find_and_load is importtime._find_and_load)\n")


def test_the_wrapper_in_importlibs_place_is_the_one_asked_for(traced):
    result = traced.python(WRAPPER)
    assert result.returncode == 0 and result.stderr == b""
    python = traced.settings.get(config.ENV_PURE_PYTHON) == "1"
    assert result.stdout == (b"function True\n" if python else b"builtin_function_or_method False\n")


def bootstrap_with_twin(tmp_path) -> tuple:
    """A copy of the bootstrap prepared as `run` prepares it: (its directory, its twin's file)."""
    bootstrap = tmp_path / "bootstrap"
    shutil.copytree(BOOTSTRAP, bootstrap, ignore=shutil.ignore_patterns("_importtime.*"))
    runner.precompile_bootstrap(bootstrap)
    twin = import_twin.twin_path(bootstrap)
    if twin is None or not twin.exists():
        pytest.skip(NO_TWIN)
    return bootstrap, twin


def test_a_stale_twin_is_not_loaded(tmp_path):
    """The twin's file is named after its source's mtime and size: an edited importtime.c (not yet
    rebuilt by `run`) leaves the Python wrapper in place."""
    bootstrap, twin = bootstrap_with_twin(tmp_path)
    source = bootstrap / "selfopt_trace_agent" / "importtime.c"
    source.write_text(source.read_text() + "\n")
    env = Traced(tmp_path).env(PYTHONPATH=str(bootstrap), SELFOPT_TRACE_BOOTSTRAP=str(bootstrap))
    result = subprocess.run([sys.executable, "-c", WRAPPER], env=env, capture_output=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"function True\n", b"")
    runner.precompile_bootstrap(bootstrap)  # `run` rebuilds it, and removes the stale build
    assert import_twin.twin_path(bootstrap).exists() and not twin.exists()
    result = subprocess.run([sys.executable, "-c", WRAPPER], env=env, capture_output=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"builtin_function_or_method False\n", b"")


def test_a_twin_that_does_not_load_leaves_the_python_wrapper_and_says_why(tmp_path):
    """Fail open: a damaged build (or one for another C library) is a diagnostic, and the Python
    wrapper times the imports; the program runs as untraced."""
    bootstrap, twin = bootstrap_with_twin(tmp_path)
    twin.write_bytes(b"not a shared library")
    traced = Traced(tmp_path)
    env = traced.env(PYTHONPATH=str(bootstrap), SELFOPT_TRACE_BOOTSTRAP=str(bootstrap), SELFOPT_TRACE_IMPORT_THRESHOLD_MS="0")
    result = subprocess.run([sys.executable, "-c", WRAPPER + "import json\n"], env=env, capture_output=True)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"function True\n", b"")
    (diagnostic,) = [d for d in traced.spans().diagnostics if d["code"] == "import_twin"]
    assert "ImportError" in str(diagnostic)
    assert traced.spans().named("import json")  # timed by the Python wrapper


def test_the_import_wrappers_frame_is_as_large_as_importlibs(traced):
    """CPython >= 3.11 keeps frames in chunks of 16 KiB and maps and unmaps one each time a frame
    crosses a chunk's end: a wrapper frame of another size shifts every frame of a nested import, and
    a pytest run crossed chunk ends three times as often (docs/benchmarks.md). The Python wrapper
    takes the place of importlib's frame, as large as it; the C twin adds no frame."""
    code = ("import _frozen_importlib as b, sys\n"
            "from selfopt_trace_agent import importtime\n"
            "print(sys.version_info >= (3, 11))\n"
            "size = lambda c: (c.co_nlocals + len(c.co_cellvars) + len(c.co_freevars), c.co_stacksize)\n"
            "print(size(importtime._find_and_load.__code__))\n"
            "print(size(importtime._original.__code__))\n")
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b""
    chunked, ours, importlibs = result.stdout.splitlines()
    if chunked != b"True":
        pytest.skip("frames are kept in chunks from Python 3.11")
    assert ours == importlibs


STACK = "import sys\nf = sys._getframe()\nwhile f:\n    print(f.f_code.co_filename, f.f_code.co_name)\n    f = f.f_back\n"


def test_the_frames_under_an_import_are_untraceds(traced, tmp_path):
    """A nested import's frames, from the module's body out: importlib's own with the C twin; with
    the Python wrapper, importlib's but for _find_and_load's, which is the wrapper's (same name)."""
    (tmp_path / "outer_stack.py").write_text("import inner_stack\n")
    (tmp_path / "inner_stack.py").write_text(STACK)
    code = "import sys; sys.path.insert(0, '.'); import outer_stack"
    result = traced.python(code, cwd=tmp_path)
    untraced = subprocess.run([traced.executable, "-c", code], cwd=tmp_path, capture_output=True,
                              env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert result.returncode == untraced.returncode == 0 and result.stderr == untraced.stderr == b""
    if traced.settings.get(config.ENV_PURE_PYTHON) == "1":
        ours = [line.rsplit(None, 1)[1] for line in result.stdout.splitlines()]
        assert ours == [line.rsplit(None, 1)[1] for line in untraced.stdout.splitlines()]
        assert result.stdout.count(b"importtime.py _find_and_load") == 2
    else:
        assert result.stdout == untraced.stdout


def test_the_reads_of_an_outermost_imports_cpu_clock_are_accounted(traced, tmp_path):
    """The thread's CPU clock is a system call (~1.5 us inside an import), read at every outermost
    import's start and at a recorded one's end: each read is timed into the agent's accounting. A
    nested import reads nothing; an unrecorded one no end."""
    write_modules(tmp_path)
    code = ("import sys; sys.path.insert(0, '.')\n"
            "from selfopt_trace_agent import importtime\n"
            "def reads(module):\n"
            "    before = importtime._edge_reads[0]\n"
            "    __import__(module)\n"
            "    return importtime._edge_reads[0] - before\n"
            "fast, slow = reads('fast_one'), reads('slow_outer')\n"  # slow_outer nests slow_inner, its own fast_one is loaded
            "print(fast > 0, slow > 0, importtime._edge_reads[1])\n")
    result = traced.python(code, cwd=tmp_path, extra_env={"SELFOPT_TRACE_IMPORT_THRESHOLD_MS": "10"})
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout.split() == [b"True", b"True", b"1"]
    spans = traced.spans()
    slow, = spans.named("import slow_outer")
    assert slow.attributes["selfopt_trace.cpu.end_ns"] > slow.attributes["selfopt_trace.cpu.start_ns"]
    assert not spans.named("import fast_one")  # under the threshold: not recorded, and no end read


def test_what_a_modules_body_starts_sits_under_its_import(traced, tmp_path):
    """An import's frame is the current span while its module's body runs (tracer.current: no ContextVar
    set around the import) for everything the body starts: a process, an asyncio task's process, a
    nested import; a span the body makes current (OpenTelemetry's, where the interpreter has it: the
    other Pythons have no packages) takes over until it ends; once the import is over its frame is
    nobody's parent (no current span at the program's top level)."""
    otel = traced.has("opentelemetry.sdk")

    def spawn(marker: str) -> str:
        return f"subprocess.run([sys.executable, '-c', 'pass', '{marker}'], check=True)\n"

    made_current = ("from opentelemetry import trace\n"
                    "from opentelemetry.sdk.trace import TracerProvider\n"
                    "trace.set_tracer_provider(TracerProvider())\n"
                    "with trace.get_tracer('app').start_as_current_span('made current in the body'):\n"
                    "    " + spawn("under-the-bodys-span") +
                    "    import inner_body\n")
    (tmp_path / "outer_body.py").write_text(
        "import asyncio, subprocess, sys\n"
        + spawn("in-the-body") +
        "async def task():\n"
        "    " + spawn("in-a-task") +
        "asyncio.run(task())\n"
        + (made_current if otel else "import inner_body\n")
        + spawn("after-the-bodys-span"))
    (tmp_path / "inner_body.py").write_text("import subprocess, sys\n" + spawn("in-the-nested-body"))
    code = ("import subprocess, sys; sys.path.insert(0, '.')\n"
            "import outer_body\n"
            + spawn("after-the-import") +
            "print(sys.modules['selfopt_trace_agent.tracer'].current())\n")
    result = traced.python(code, cwd=tmp_path)
    assert result.returncode == 0 and result.stderr == b"" and result.stdout == b"None\n", result
    spans = traced.spans()
    outer, = spans.named("import outer_body")
    inner, = spans.named("import inner_body")

    def spawned_under(marker: str):
        return spans.parent(spans.parent(spans.process_of(marker)))  # the process <- its spawn <- ...

    assert spawned_under("in-the-body") == outer
    assert spawned_under("in-a-task") == outer  # the task's context is a copy of the body's
    if otel:
        body_span, = spans.named("made current in the body")
        assert spans.parent(body_span) == outer
        assert spawned_under("under-the-bodys-span") == body_span
        assert spans.parent(inner) == body_span
    else:
        assert spans.parent(inner) == outer
    assert spawned_under("in-the-nested-body") == inner
    assert spawned_under("after-the-bodys-span") == outer
    assert spawned_under("after-the-import").name == "process"
    by_id = spans.by_id()
    assert all(s.parent_span_id in by_id for s in spans.spans if s.parent_span_id and s.name != "process")


def test_imports_that_end_out_of_order_leave_none_under_way(traced, tmp_path):
    """Greenlets (gevent's) share their thread, and a module's body that switches lets another greenlet
    import meanwhile: its import nests on the thread's chain above the first, which may end first
    (importtime._pop takes a frame out wherever it is). Afterwards no import is current and every
    span's parent is in the trace. (The second greenlet's import, begun with no span of its own
    current, sits under the first one's, which was under way in its thread.)"""
    traced.require("greenlet")
    (tmp_path / "switches_a.py").write_text("import greenlet\ngreenlet.getcurrent().parent.switch()\n")
    (tmp_path / "switches_b.py").write_text("import greenlet\ngreenlet.getcurrent().parent.switch()\n")
    code = ("import subprocess, sys, greenlet; sys.path.insert(0, '.')\n"
            "a = greenlet.greenlet(lambda: __import__('switches_a'))\n"
            "b = greenlet.greenlet(lambda: __import__('switches_b'))\n"
            "a.switch(); b.switch()  # each stops inside its module's body\n"
            "a.switch(); b.switch()  # the first import ends first\n"
            "assert a.dead and b.dead\n"
            "subprocess.run([sys.executable, '-c', 'pass', 'after'], check=True)\n"
            "print(sys.modules['selfopt_trace_agent.tracer'].current())\n")
    result = traced.python(code, cwd=tmp_path, extra_env={"SELFOPT_TRACE_IMPORT_THRESHOLD_MS": "0"})
    assert result.returncode == 0 and result.stderr == b"" and result.stdout == b"None\n", result
    spans = traced.spans()
    first, = spans.named("import switches_a")
    second, = spans.named("import switches_b")
    assert spans.parent(first).name == "process" and spans.parent(second) == first
    assert first.end_ns < second.end_ns
    assert spans.parent(spans.parent(spans.process_of("after"))).name == "process"
    by_id = spans.by_id()
    assert all(s.parent_span_id in by_id for s in spans.spans if s.parent_span_id and s.name != "process")


def test_another_mapping_in_sys_modules_imports_as_untraced(traced, tmp_path):
    """A dict subclass put in sys.modules (importlib's Python code reads that attribute): imports work
    as untraced; the C twin leaves them untimed (its store of imports under way is its own), the
    Python wrapper times them."""
    write_modules(tmp_path)
    code = ("import sys; sys.path.insert(0, '.')\n"
            "class Modules(dict): pass\n"
            "sys.modules = Modules(sys.modules)\n"
            "import slow_inner, fast_one\n"
            "print(type(sys.modules).__name__, 'slow_inner' in sys.modules, fast_one.X)\n")
    untraced = traced.untraced([traced.executable, "-c", code], cwd=tmp_path)
    result = traced.python(code, cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (untraced.returncode, untraced.stdout, untraced.stderr)
    assert result.stdout == b"Modules True 1\n"
    timed = traced.settings.get(config.ENV_PURE_PYTHON) == "1"
    assert len(traced.spans().named("import slow_inner")) == timed


MODULES = """
print("\\n".join(sorted(name for name in sys.modules if not name.startswith("selfopt_trace_agent")
                        and name != "sitecustomize")))
"""
# the query tests' program (HTTP client and server, json, ast, subprocess), then the other hook families
EVERY_HOOK = f"""
import pickle, runpy, sys, time
runpy.run_path({str(Path(__file__).resolve().parent.parent / "queries" / "workload" / "main.py")!r}, run_name="__main__")
time.sleep(0.002)
pickle.loads(pickle.dumps([1]))
compile("x = 1", "<string>", "exec")
""" + MODULES


def test_the_agent_s_hooks_import_no_module_the_program_does_not(traced: Traced) -> None:
    """A hook module loaded at a program's first request, spawn or parse imports nothing the program
    itself did not: an import of the agent's in the middle of the program's work would be a span of
    the program's imports (http_common's `import contextvars`: ~1 ms of a server's run read as its
    imports in tests/accuracy's server_first). What the agent's start-up loads (atexit; without the
    C twin, _contextvars and itertools too: docs/agent.md) is start-up's."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("SELFOPT_TRACE_") and k != "PYTHONPATH"}

    def added(program: str) -> set:
        untraced = subprocess.run([traced.executable, "-c", program], env=clean, capture_output=True, timeout=60)
        done = traced.python(program)
        assert untraced.returncode == 0 and done.returncode == 0 and done.stderr == b"", done.stderr.decode()
        assert set(untraced.stdout.split()) <= set(done.stdout.split())
        return set(done.stdout.split()) - set(untraced.stdout.split())

    at_start_up = added("import sys" + MODULES)
    assert added(EVERY_HOOK) <= at_start_up
    recorded = {(span.category, span.kind) for span in traced.spans().spans}  # the hooks fired
    assert {("http", "CLIENT"), ("http", "SERVER"), ("subprocess", "CLIENT")} <= recorded, recorded
