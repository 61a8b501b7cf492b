"""`run` prepares the agent for the other Python interpreters CMD names (interpreters.py): their .pyc
files, bundles and import wrapper's twin, made by each interpreter once and checked without starting
it afterwards."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from selfopt_trace import import_twin, interpreters, runner, summary
from selfopt_trace.store import Store
from tests.conftest import BOOTSTRAP, Traced, other_python

# What a traced program says of its agent: whether __future__ was imported (the bundle's modules
# have the flag compiled in; importlib's import of the agent's sources imports it) and which import
# wrapper is in importlib's place (the C twin is a builtin function).
PROBE = ("import sys, _frozen_importlib\n"
         "print('__future__' in sys.modules, type(_frozen_importlib._find_and_load).__name__)\n")


def unprepared_copy(tmp_path: Path) -> Path:
    bootstrap = tmp_path / "bootstrap"
    shutil.copytree(BOOTSTRAP, bootstrap, ignore=shutil.ignore_patterns("__pycache__"))
    return bootstrap


def interpreters_started(monkeypatch) -> list:
    """The interpreters interpreters.py starts from now on (each still runs agent_build)."""
    started: list = []
    prepare_in = interpreters._prepare_in
    monkeypatch.setattr(interpreters, "_prepare_in", lambda *args: started.append(args) or prepare_in(*args))
    return started


def python_or_skip(minor: str) -> str:
    python = other_python(minor)
    if python is None:
        pytest.skip(f"no Python {minor} here (pyenv)")
    return python


@pytest.mark.parametrize("minor", ["3.8", "3.10", "3.12", "3.13"])
def test_the_agent_is_prepared_for_the_python_cmd_runs(tmp_path: Path, minor: str) -> None:
    """With PYTHONDONTWRITEBYTECODE (Docker images often set it), a process of an interpreter nothing
    was prepared for compiled the agent from source: +21 ms a process on 3.12 and 3.13."""
    python = python_or_skip(minor)
    bootstrap = unprepared_copy(tmp_path)
    runner.precompile_bootstrap(bootstrap, [python, "-c", "pass"], {"PATH": ""})
    facts = interpreters._known(bootstrap)[os.path.realpath(python)]
    assert facts["tag"] == "cpython-" + minor.replace(".", "")
    assert interpreters._prepared(bootstrap, facts)
    twin = import_twin.twin_path(bootstrap, facts["twin_suffix"]) if facts["twin_suffix"] else None
    assert twin is not None and twin.exists()  # the twin: 3.8 to 3.13
    traced = Traced(tmp_path, executable=python)
    done = traced.python(PROBE, extra_env={"PYTHONPATH": str(bootstrap), "SELFOPT_TRACE_BOOTSTRAP": str(bootstrap),
                                           "PYTHONDONTWRITEBYTECODE": "1"})
    assert (done.returncode, done.stderr) == (0, b""), done.stderr.decode()
    assert done.stdout.decode().split() == ["False", "builtin_function_or_method"]
    assert traced.spans().named("process")


def test_a_prepared_interpreter_is_checked_without_starting_it(tmp_path: Path, monkeypatch) -> None:
    """Later runs read what the interpreter said of itself (interpreters.json) and check its files: it
    starts again only when one is missing or stale, or when the interpreter itself changed."""
    python = python_or_skip("3.12")
    bootstrap = unprepared_copy(tmp_path)
    started = interpreters_started(monkeypatch)
    runner.precompile_bootstrap(bootstrap, [python], {"PATH": ""})
    runner.precompile_bootstrap(bootstrap, [python], {"PATH": ""})
    assert len(started) == 1
    compiled = bootstrap / "selfopt_trace_agent" / "__pycache__" / "tracer.cpython-312.pyc"
    compiled.unlink()
    runner.precompile_bootstrap(bootstrap, [python], {"PATH": ""})
    assert len(started) == 2 and compiled.exists()


def test_facts_an_older_selfopt_trace_learnt_are_learnt_again(tmp_path: Path, monkeypatch) -> None:
    """interpreters.json outlives an upgrade (it is not among the installed files): what an older
    agent_build said of an interpreter (no twin for 3.10, say) is not taken for this one's."""
    python = python_or_skip("3.12")
    bootstrap = unprepared_copy(tmp_path)
    started = interpreters_started(monkeypatch)
    runner.precompile_bootstrap(bootstrap, [python], {"PATH": ""})
    cache = bootstrap / "selfopt_trace_agent" / "__pycache__" / "interpreters.json"
    older = json.loads(cache.read_text())
    older["builder"] = [[1, 1], [1, 1]]
    older["interpreters"][os.path.realpath(python)]["twin_suffix"] = ""
    cache.write_text(json.dumps(older))
    runner.precompile_bootstrap(bootstrap, [python], {"PATH": ""})
    assert len(started) == 2
    assert interpreters._known(bootstrap)[os.path.realpath(python)]["twin_suffix"]


def test_a_program_that_is_no_usable_python_is_asked_once(tmp_path: Path, monkeypatch) -> None:
    """An executable named like Python that cannot run agent_build (here /bin/true's copy) is kept as
    no Python: no tracing changes for it, and later runs do not start it again."""
    fake = tmp_path / "python3.99"
    shutil.copy("/bin/true", fake)
    bootstrap = unprepared_copy(tmp_path)
    started = interpreters_started(monkeypatch)
    for _ in range(2):
        runner.precompile_bootstrap(bootstrap, [str(fake)], {"PATH": ""})
    assert interpreters._known(bootstrap)[str(fake)]["tag"] is None
    assert len(started) == 1


def test_the_interpreters_cmd_names(tmp_path: Path) -> None:
    """CMD itself, a script's #! line (a path, or env with a name looked up on PATH), python3 and python
    on PATH; a wrapper script named python (a pyenv shim) is not one: it chooses when it runs."""
    real = os.path.realpath(sys.executable)
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3.42").symlink_to(real)

    def script(name: str, first_line: str) -> str:
        path = bin_dir / name
        path.write_text(first_line + "\nprint('hi')\n")
        path.chmod(0o755)
        return str(path)

    on_path = {"PATH": str(bin_dir)}
    assert interpreters.named_by([script("by_path", f"#!{bin_dir}/python3.42")], on_path) == [real]
    assert interpreters.named_by([script("by_env", "#!/usr/bin/env python3.42")], on_path) == [real]
    assert interpreters.named_by([script("by_env_s", "#!/usr/bin/env -S PYTHONDEVMODE=1 python3.42 -X dev")], on_path) == [real]
    assert interpreters.named_by(["python3.42", "-c", "pass"], on_path) == [real]
    assert interpreters.named_by([script("sh_tool", "#!/bin/sh")], on_path) == []
    assert interpreters.named_by(["/bin/true"], on_path) == [] and interpreters.named_by(["missing"], on_path) == []
    script("python3", f'#!/bin/sh\nexec {real} "$@"')  # a shim
    assert interpreters.named_by(["/bin/true"], on_path) == []
    (bin_dir / "python").symlink_to(real)
    assert interpreters.named_by(["/bin/true"], on_path) == [real]
    assert interpreters.named_by(["python3.42"], on_path) == [real]  # once


def agent_unprepared(traced: Traced) -> list[str]:
    return [d["message"] for d in traced.spans().diagnostics if d["code"] == "agent_unprepared"]


def test_a_process_of_a_python_nothing_was_prepared_for_says_how_to_prepare_it(tmp_path: Path) -> None:
    """A Python `run` could not find (a `sh -c` of CMD's, a container's) compiled the agent at each
    start: ~20 ms a process, which only the start-up's length showed. Its process now says so, the
    summary gathers it into a note with the command, and `prepare --python` (prepare_python) makes
    the bundles, after which its processes run them."""
    bootstrap = unprepared_copy(tmp_path)
    env = {"PYTHONPATH": str(bootstrap), "SELFOPT_TRACE_BOOTSTRAP": str(bootstrap), "PYTHONDONTWRITEBYTECODE": "1"}
    first = Traced(tmp_path / "first")
    done = first.python(PROBE, extra_env=env)
    assert (done.returncode, done.stderr) == (0, b""), done.stderr.decode()
    assert done.stdout.decode().split()[0] == "True"  # the agent came through importlib
    assert agent_unprepared(first) == [f"Python {sys.version_info[0]}.{sys.version_info[1]} ({sys.executable}) has no "
                                       f"bundle of the agent made for it: `selfopt-trace prepare --python {sys.executable}`"]
    with Store(tmp_path / "traces.duckdb") as store:
        run_id = store.load_run(first.run_dir).run_id
        notes = summary.summarize(store, run_id).notes
    assert [note for note in notes if "prepare" in note] == [
        f"1 process found no agent prepared for its Python and compiled it at start-up (~20 ms each, in their "
        f"start-up): `selfopt-trace prepare --python {sys.executable}` prepares it once"]

    assert interpreters.prepare_python(sys.executable, bootstrap) == ""
    assert interpreters._known(bootstrap)[os.path.realpath(sys.executable)]["tag"] == sys.implementation.cache_tag
    second = Traced(tmp_path / "second")
    done = second.python(PROBE, extra_env=env)
    assert (done.returncode, done.stderr, done.stdout.split()[0]) == (0, b"", b"False")  # the bundle's modules
    assert agent_unprepared(second) == []


def test_prepare_says_what_it_could_not_prepare(tmp_path: Path) -> None:
    bootstrap = unprepared_copy(tmp_path)
    assert interpreters.prepare_python("no-such-python", bootstrap) == "no-such-python: not a Python interpreter"
    assert interpreters.prepare_python("/bin/sh", bootstrap) == "/bin/sh: not a Python interpreter"
    old = other_python("3.7")
    if old is not None:
        assert interpreters.prepare_python(old, bootstrap).endswith("older than 3.8, which the agent does not trace")
    assert not interpreters._cache_path(bootstrap).exists()
    done = subprocess.run([sys.executable, "-m", "selfopt_trace", "prepare"], capture_output=True, text=True)
    assert (done.returncode, done.stderr) == (2, "selfopt-trace: error: nothing to prepare: give --python PATH or "
                                                 "--image IMAGE (each may repeat)\n")
    done = subprocess.run([sys.executable, "-m", "selfopt_trace", "prepare", "--python", sys.executable,
                           "--python", "no-such-python"], capture_output=True, text=True)
    assert (done.returncode, done.stdout, done.stderr) == (2, "the agent prepared for 1 of 2\n",
                                                           "selfopt-trace: error: no-such-python: not a Python interpreter\n")
