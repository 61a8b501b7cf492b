"""Builds the C twin of the agent's import wrapper (selfopt_trace_agent/importtime.c).

The twin is compiled with the C compiler and headers of the interpreter that runs this (selfopt-trace's
own, and each other one of CMD's tree: agent_build.py) into the agent's __pycache__, named after the
source's mtime and size and the interpreter's extension suffix (importtime._twin looks for exactly
that name, so a stale build is never loaded), once per source. Only for CPython 3.8 to 3.13 with the
GIL, the versions it is written and tested against; any other interpreter, or a machine without a
compiler, runs the Python wrapper, which does the same.
"""

from __future__ import annotations

import os
import sys
from importlib.machinery import EXTENSION_SUFFIXES
from pathlib import Path

from .paths import AGENT_PACKAGE

SUPPORTED_TAGS = ("cpython-38", "cpython-39", "cpython-310", "cpython-311", "cpython-312", "cpython-313")


def twin_suffix() -> str | None:
    """The file name ending of this interpreter's twin (its extension suffix); None where none is built
    (another version, a free-threaded build: the twin relies on the GIL, another system)."""
    if sys.implementation.cache_tag not in SUPPORTED_TAGS or "t" in sys.abiflags or sys.platform != "linux":
        return None
    return EXTENSION_SUFFIXES[0]


def twin_path(directory: Path, suffix: str | None = None) -> Path | None:
    """Where the twin of the agent under `directory` is (or goes) for the interpreter whose twin_suffix()
    is `suffix` (this one by default); None where none is built."""
    suffix = suffix or twin_suffix()
    source = directory / AGENT_PACKAGE / "importtime.c"
    if not suffix or not source.exists():
        return None
    status = source.stat()
    return source.parent / "__pycache__" / f"_importtime.{status.st_mtime_ns}.{status.st_size}{suffix}"


def failure_path(target: Path) -> Path:
    """Where a failed build of `target` leaves the compiler's message (so `run` does not try again
    before every command: a compiler without Python's headers fails in ~50 ms)."""
    return target.with_name(target.name + ".failed")


def build(directory: Path) -> Path | None:
    """The twin, compiled unless it is already there; None where none is built, or where building
    this source failed before (its failure_path holds the compiler's message). Raises
    subprocess.CalledProcessError (the compiler's message in its stderr) or OSError on failure.
    The compiler: $CC, else the one the interpreter was built with."""
    target = twin_path(directory)
    if target is None or target.exists():
        return target
    if failure_path(target).exists():
        return None
    import shlex  # only to build: `run` checks for the twin before every command (budget: 60 ms)
    import subprocess
    import sysconfig
    import tempfile

    compiler = shlex.split(os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc")
    target.parent.mkdir(exist_ok=True)
    handle, partial = tempfile.mkstemp(dir=target.parent, prefix="_importtime.", suffix=".partial")
    os.close(handle)
    try:
        subprocess.run([*compiler, "-shared", "-fPIC", "-O2", "-Wall", "-Werror",
                        "-I" + sysconfig.get_paths()["include"], "-o", partial,
                        str(directory / AGENT_PACKAGE / "importtime.c")],
                       check=True, capture_output=True, text=True)
        os.replace(partial, target)  # whole or not at all: traced processes may be loading it now
    except (OSError, subprocess.CalledProcessError) as exc:
        message = exc.stderr if isinstance(exc, subprocess.CalledProcessError) else str(exc)
        failure_path(target).write_text(f"{shlex.join(compiler)} failed:\n{message}")
        raise
    finally:
        if os.path.exists(partial):
            os.unlink(partial)
    for stale in target.parent.glob("_importtime.*"):  # earlier sources' builds and failures for this interpreter
        if stale != target and stale.name.endswith((twin_suffix(), twin_suffix() + ".failed")):
            stale.unlink(missing_ok=True)
    return target
