"""Running the real codeflash CLI offline on the toy project, against the stand-in (tests/e2e/standin.py).

Shared by tests/e2e/test_codeflash.py and benchmarks/bench_codeflash_e2e.py.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

from tests.e2e import standin

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
TOY = HERE / "toy"
BOOTSTRAP = REPO / "selfopt_trace" / "bootstrap"
CODEFLASH_ARGS = ["--file", "bubble/sorter.py", "--function", "sorter", "--no-pr"]
SLOW_SORTER = (TOY / "bubble" / "sorter.py").read_text()


def codeflash_executable() -> str:
    """The `codeflash` script next to this interpreter (the `e2e` extra installs it)."""
    found = shutil.which("codeflash", path=os.path.dirname(sys.executable))
    if found is None:
        raise RuntimeError("codeflash is not installed next to %s: pip install -e '.[e2e]'" % sys.executable)
    return found


def copy_toy(destination: Path) -> Path:
    """A fresh copy of the toy project (codeflash rewrites the optimized file in place)."""
    shutil.copytree(TOY, destination, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    return destination


# CI and GITHUB_ACTIONS change what codeflash does (no call graph, other messages): a run here is
# the same on a laptop and in CI.
_DROPPED = ("TRACEPARENT", "TRACESTATE", "PYTHONPATH", "CI", "GITHUB_ACTIONS")


def clean_environ() -> dict:
    """This process's environment without any tracing context it may itself run in."""
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SELFOPT_TRACE_", "OTEL_", "CODEFLASH_")) and k not in _DROPPED}


def codeflash_environ(scratch: Path) -> dict:
    """What codeflash needs to run offline, with HOME and TMPDIR (it writes to both) in `scratch`.

    codeflash checks PyPI for a newer version on every run; a proxy that refuses connections
    makes that fail at once, as it does offline, while the stand-in on localhost is reached directly.
    """
    home, tmp = scratch / "home", scratch / "tmp"
    home.mkdir(parents=True, exist_ok=True)
    tmp.mkdir(parents=True, exist_ok=True)
    env = clean_environ()
    env.update(
        HOME=str(home), TMPDIR=str(tmp),
        CODEFLASH_API_KEY="cf-test-0123456789abcdef", CODEFLASH_AIS_SERVER="local", CODEFLASH_CFAPI_SERVER="local",
        CODEFLASH_LOOPING_TIME="1",
        HTTPS_PROXY="http://127.0.0.1:9", HTTP_PROXY="http://127.0.0.1:9", NO_PROXY="localhost,127.0.0.1",
        PATH=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""),
    )
    for name in ("https_proxy", "http_proxy", "no_proxy"):
        env.pop(name, None)
    return env


def traced_environ(env: dict, run_dir: Path, run_id: str) -> dict:
    """`env` as `selfopt-trace run` would give it to a process of run `run_id` (docs/architecture.md)."""
    return dict(env, SELFOPT_TRACE_DIR=str(run_dir), SELFOPT_TRACE_RUN_ID=run_id,
                SELFOPT_TRACE_BOOTSTRAP=str(BOOTSTRAP), PYTHONPATH=str(BOOTSTRAP))


def selfopt_trace_argv(*args: str) -> list:
    """`selfopt-trace ARGS` from this checkout, without putting the repository on the traced PYTHONPATH."""
    launcher = "import sys; sys.path.insert(0, %r); from selfopt_trace.cli import main; main()" % str(REPO)
    return [sys.executable, "-c", launcher, *args]


@contextmanager
def running_standin(env: dict, log_path: Path):
    """The stand-in on 127.0.0.1:8000 and :3001 for the duration of the block (one user at a time)."""
    with standin.port_lock():
        process = subprocess.Popen([sys.executable, str(HERE / "standin.py"), "--log", str(log_path)], env=env,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            line = process.stdout.readline()
            if line.strip() != "ready":
                process.kill()
                raise RuntimeError("the stand-in did not start: %s%s" % (line, process.stderr.read()))
            yield process
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
