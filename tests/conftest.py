"""Shared fixtures: run code traced in a fresh interpreter and read back what it recorded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.spanfiles import RunSpans, read_run

BOOTSTRAP = Path(__file__).resolve().parent.parent / "selfopt_trace" / "bootstrap"
PYENV_VERSIONS = Path(os.environ.get("PYENV_ROOT", "/root/.pyenv")) / "versions"


def other_python(minor: str) -> str | None:
    """Python `minor` ("3.12") here: its venv with the test programs' packages (scripts/other-pythons-setup.sh),
    else a pyenv build of it, else None."""
    venv = BOOTSTRAP.parent.parent / f".venv-{minor}" / "bin" / "python"
    if venv.exists():
        return str(venv)
    builds = sorted(PYENV_VERSIONS.glob(f"{minor}.*/bin/python"))
    return str(builds[-1]) if builds else None


# The interpreters other than the one running the tests that import tests run traced programs under
# too: `run` prepares the agent for them (interpreters.py), the import wrapper's twin included.
OTHER_PYTHONS = {minor: python for minor in ("3.12", "3.13") if (python := other_python(minor))}
# The older Pythons the twin is built for too: the import tests run it under them (bare pyenv builds will
# do: those tests' programs import only the standard library, or skip).
OLDER_PYTHONS = {minor: python for minor in ("3.8", "3.10") if (python := other_python(minor))}
# A parametrization over this Python and those: tests of what changes from one version to the next.
PYTHONS = [pytest.param(sys.executable, id="this Python"),
           *(pytest.param(OTHER_PYTHONS.get(minor), id=minor, marks=pytest.mark.skipif(
               minor not in OTHER_PYTHONS, reason=f"no Python {minor} here (pyenv)")) for minor in ("3.12", "3.13"))]


def traced_environ(run_dir: Path, **extra: str) -> dict:
    """The environment `selfopt-trace run` gives a command (see docs/architecture.md)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFOPT_TRACE_") and k not in ("TRACEPARENT", "TRACESTATE")}
    pythonpath = env.get("PYTHONPATH")
    env.update(
        SELFOPT_TRACE_DIR=str(run_dir),
        SELFOPT_TRACE_RUN_ID=run_dir.name,
        SELFOPT_TRACE_BOOTSTRAP=str(BOOTSTRAP),
        PYTHONPATH=str(BOOTSTRAP) + (os.pathsep + pythonpath if pythonpath else ""),
    )
    env.update(extra)
    return env


class Traced:
    """Runs commands traced into one run directory under tmp_path."""

    def __init__(self, tmp_path: Path, executable: str = "", **settings: str):
        self.run_dir = tmp_path / "run"
        self.tmp_path = tmp_path
        # the Python of `python` and `both_ways`: $SELFOPT_TRACE_TEST_PYTHON runs them under another one
        self.executable = executable or os.environ.get("SELFOPT_TRACE_TEST_PYTHON") or sys.executable
        self.settings = settings  # variables of every command run here

    def env(self, **extra: str) -> dict:
        return traced_environ(self.run_dir, **self.settings, **extra)

    def run(self, args: list, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 120)
        env = self.env(**kwargs.pop("extra_env", {}))
        return subprocess.run(args, env=env, **kwargs)

    def python(self, code: str, *args: str, **kwargs) -> subprocess.CompletedProcess:
        return self.run([self.executable, "-c", code, *args], **kwargs)

    def untraced(self, args: list, **kwargs) -> subprocess.CompletedProcess:
        """`args` in the same environment without the run directory: the agent records nothing."""
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("timeout", 120)
        env = self.env()
        del env["SELFOPT_TRACE_DIR"]
        return subprocess.run(args, env=env, **kwargs)

    def both_ways(self, name: str, code: str) -> tuple[subprocess.CompletedProcess, subprocess.CompletedProcess]:
        """The program `code`, saved as `name`, run untraced and then traced."""
        script = self.tmp_path / name
        script.write_text(code)
        return self.untraced([self.executable, str(script)]), self.run([self.executable, str(script)])

    def spans(self) -> RunSpans:
        return read_run(self.run_dir)

    def has(self, module: str) -> bool:
        """Whether `executable` has `module` (another Python may lack the test extras' packages)."""
        return subprocess.run([self.executable, "-c", f"import {module}"], capture_output=True).returncode == 0

    def require(self, module: str) -> None:
        if not self.has(module):
            pytest.skip(f"no {module} under {self.executable}")


def pytest_sessionstart(session: pytest.Session) -> None:
    """The agent as `selfopt-trace run` leaves it before CMD: compiled, bundled, its C twin built, for
    this interpreter and the others the tests run."""
    from selfopt_trace import runner

    runner.precompile_bootstrap(BOOTSTRAP)
    for python in (*OTHER_PYTHONS.values(), *OLDER_PYTHONS.values(), os.environ.get("SELFOPT_TRACE_TEST_PYTHON")):
        if python:
            runner.precompile_bootstrap(BOOTSTRAP, [python])


@pytest.fixture
def traced(tmp_path: Path) -> Traced:
    return Traced(tmp_path)
