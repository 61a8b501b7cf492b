"""Declarative targets: `module:qualname` functions become phase spans; codeflash's built-in list."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.agent.serialization.programs import Program

WORK = """
import asyncio, time


def outer(n):
    return [inner(i) for i in range(n)]


def inner(i):
    time.sleep(0.001)
    return i * 2


def fails():
    raise KeyError("missing")


class Job:
    def run(self, x, *, scale=1):
        return x * scale

    @classmethod
    def make(cls):
        return cls()

    @staticmethod
    def helper():
        return "h"


async def fetch(delay):
    await asyncio.sleep(delay)
    return "fetched"


def numbers():
    yield 1
"""

MAIN = """
import asyncio, inspect, sys
sys.path.insert(0, ".")
import work
print(work.outer(3), work.Job.make().run(2, scale=5), work.Job.helper(), asyncio.run(work.fetch(0.01)))
try:
    work.fails()
except KeyError as e:
    print("caught", repr(e))
print(inspect.signature(work.Job.run), work.outer.__name__, work.Job.run.__qualname__, list(work.numbers()))
"""

TARGETS = "work:outer, work:inner;work:fails,work:Job.run ; work:Job.make, work:Job.helper,work:fetch,work:numbers"


@pytest.fixture
def program(traced, tmp_path) -> Program:
    p = Program(traced, tmp_path)
    p.write("work.py", WORK)
    return p


def test_targets_become_nested_phase_spans_and_change_nothing(program):
    out, spans = program.run(MAIN, SELFOPT_TRACE_TARGETS=TARGETS)
    assert out == program.untraced(MAIN)
    outer, = spans.named("outer")
    inners = spans.named("inner")
    assert len(inners) == 3 and all(s.parent_span_id == outer.span_id for s in inners)
    assert outer.category == "phase" and outer.attributes["code.namespace"] == "work"
    assert outer.attributes["code.function"] == "outer" and spans.parent(outer).name == "process"
    assert all(s.end_ns - s.start_ns >= 1_000_000 for s in inners)
    for name in ("Job.run", "Job.make", "Job.helper"):
        assert len(spans.named(name)) == 1, name
    fetch, = spans.named("fetch")
    assert fetch.end_ns - fetch.start_ns >= 10_000_000  # an async target spans the awaited work
    failed, = spans.named("fails")
    assert failed.status == "ERROR" and failed.attributes["error.type"] == "KeyError"
    # a generator function cannot be timed by a call: left alone, with a diagnostic
    assert not spans.named("numbers")
    assert {d["code"] for d in spans.diagnostics} == {"target_unsupported"}


def test_a_target_can_wrap_a_function_a_hook_already_measures(program):
    out, spans = program.run("import json\nprint(len(json.dumps(list(range(100000)))))\n",
                             SELFOPT_TRACE_TARGETS="json:dumps")
    assert out == "688890\n"
    phase, = spans.named("dumps")
    serialization, = spans.named("json.dumps")
    assert phase.category == "phase" and serialization.parent_span_id == phase.span_id


def test_a_target_in_a_module_whose_hook_waits_for_a_first_call_is_wrapped_at_the_import(program):
    """subprocess's own hook loads at the first Popen; a target there is wrapped when it is imported."""
    source = "import subprocess\nprint(subprocess.list2cmdline(['a b', 'c']))\n"
    out, spans = program.run(source, SELFOPT_TRACE_TARGETS="subprocess:list2cmdline")
    assert out == program.untraced(source) == '"a b" c\n'
    phase, = spans.named("list2cmdline")
    assert phase.category == "phase" and phase.attributes["code.namespace"] == "subprocess"


def test_missing_and_malformed_targets_are_diagnostics(program):
    out, spans = program.run(MAIN, SELFOPT_TRACE_TARGETS="work:nope, work:Job.nope, work:Nope.run, justamodule, :x")
    assert out == program.untraced(MAIN)
    codes = [d["code"] for d in spans.diagnostics]
    assert codes.count("target_missing") == 3 and codes.count("target_invalid") == 2
    assert not [s for s in spans.spans if s.category == "phase"]


def test_attributes_are_read_from_the_arguments(program):
    source = """
        import enum, sys
        sys.path.insert(0, ".")
        from selfopt_trace_agent.hooks import targets

        class Mode(enum.Enum):
            FAST = "fast"

        class Candidate:
            optimization_id = "cand-7"

        class Optimizer:
            def evaluate(self, candidate, index, *, mode, secret=None):
                return index

        targets.wrap(sys.modules[__name__], __name__, "Optimizer.evaluate", "evaluate", {
            "candidate.id": "candidate.optimization_id", "index": "index", "mode": "mode",
            "missing": "candidate.nothing.here", "token": "secret"})
        print(Optimizer().evaluate(Candidate(), 3, mode=Mode.FAST, secret="sk-abcdefghijklmnop"))
    """
    out, spans = program.run(source)
    assert out == "3\n"
    span, = spans.named("evaluate")
    attributes = span.attributes
    assert attributes["candidate.id"] == "cand-7" and attributes["index"] == 3 and attributes["mode"] == "FAST"
    assert "missing" not in attributes and attributes["token"] == "[REDACTED]"


def test_the_codeflash_list_matches_the_installed_codeflash(traced):
    """Every built-in target exists in the codeflash this project tests against (the e2e extra): each
    has a stand-in once its module is imported, and is wrapped once its module's first call comes
    (here: what that call runs, for every module)."""
    code = """
import importlib, sys
from selfopt_trace_agent.hooks.codeflash_ import TARGETS
import codeflash.main
def functions():
    for module_name, qualname, _, _ in TARGETS:
        owner = importlib.import_module(module_name)
        for part in qualname.split("."):
            owner = getattr(owner, part)
        yield getattr(owner, "__func__", owner)
standing_in = sum(hasattr(f, "__selfopt_trace_stands_in_for__") for f in functions())
print("targets" in sys.modules.get("selfopt_trace_agent.hooks").__dict__)
from selfopt_trace_agent.hooks import targets
for module_name in {entry[0] for entry in TARGETS}:
    targets.install_codeflash(module_name, sys.modules[module_name])
print(standing_in, sum(getattr(f, "__selfopt_trace_target__", False) for f in functions()), len(TARGETS))
"""
    result = traced.run([sys.executable, "-c", code], extra_env={"SELFOPT_TRACE_SMALL_NS": "1e12"})
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
    loaded, counts = result.stdout.decode().splitlines()
    standing_in, wrapped, total = map(int, counts.split())
    assert loaded == "False" and standing_in == wrapped == total > 30
    assert not [d for d in traced.spans().diagnostics if d["code"].startswith("target")]


def test_a_codeflash_module_missing_in_another_version_is_a_diagnostic(traced, tmp_path):
    """A fake `codeflash` package without most of the list's modules: diagnostics, and it still runs."""
    package = tmp_path / "codeflash"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "main.py").write_text("def main():\n    return 'ran'\n")
    # bound before its first call: the stand-in, which goes on into the wrapper that call installs
    code = "import sys; sys.path.insert(0, %r); from codeflash.main import main; print(main())" % str(tmp_path)
    result = traced.run([sys.executable, "-c", code])
    assert result.returncode == 0 and result.stderr == b"" and result.stdout == b"ran\n"
    spans = traced.spans()
    assert spans.named("codeflash.main")
    missing = [d for d in spans.diagnostics if d["code"] == "target_missing"]
    assert any("codeflash.languages.function_optimizer" in d["message"] for d in missing)
    assert not any("codeflash.main:" in d["message"] for d in missing)


def test_untraced_processes_are_untouched(tmp_path):
    (tmp_path / "work.py").write_text(WORK)
    result = subprocess.run([sys.executable, "-c", "import sys; sys.path.insert(0, '.'); import work, json; "
                             "print(hasattr(work.outer, '__wrapped__'), hasattr(json.dumps, '__wrapped__'))"],
                            cwd=tmp_path, capture_output=True, env={"PATH": "/usr/bin:/bin", "SELFOPT_TRACE_TARGETS": "work:outer"})
    assert result.stdout == b"False False\n" and result.stderr == b""

