"""`run` compiles the bootstrap's .pyc files before CMD, and imports compileall only when one is missing or stale."""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from selfopt_trace import agent_build, import_twin, runner


def test_a_missing_or_stale_pyc_is_seen_and_a_fresh_one_is_not(tmp_path: Path) -> None:
    package = tmp_path / "agent"
    package.mkdir()
    (package / "a.py").write_text("A = 1\n")
    assert not agent_build.bootstrap_compiled(package)  # never compiled
    assert compileall.compile_dir(str(package), quiet=2)
    assert agent_build.bootstrap_compiled(package)
    (package / "a.py").write_text("A = 22\n")  # another size
    assert not agent_build.bootstrap_compiled(package)
    compileall.compile_dir(str(package), quiet=2)
    stat = (package / "a.py").stat()
    os.utime(package / "a.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # same size, touched
    assert not agent_build.bootstrap_compiled(package)


def test_the_installed_bootstrap_is_compiled_after_precompile() -> None:
    runner.precompile_bootstrap()
    assert agent_build.bootstrap_compiled(runner.BOOTSTRAP_DIR)
    assert agent_build.bundles_fresh(runner.BOOTSTRAP_DIR)



def test_a_failed_build_of_the_import_twin_is_kept_and_not_tried_again(tmp_path: Path, monkeypatch) -> None:
    """A compiler that fails (no Python headers, say) leaves its message beside where the twin
    would be, and `run` does not try again before every command; traced processes run the Python
    wrapper."""
    bootstrap = tmp_path / "bootstrap"
    shutil.copytree(runner.BOOTSTRAP_DIR, bootstrap, ignore=shutil.ignore_patterns("_importtime.*"))
    target = import_twin.twin_path(bootstrap)
    if target is None:
        pytest.skip("the C twin is built only for CPython 3.8-3.13 on Linux")
    calls = tmp_path / "calls"
    compiler = tmp_path / "cc"
    compiler.write_text(f"#!/bin/sh\necho run >> {calls}\necho 'Python.h: No such file' >&2\nexit 1\n")
    compiler.chmod(0o755)
    monkeypatch.setenv("CC", str(compiler))
    with pytest.raises(subprocess.CalledProcessError):
        import_twin.build(bootstrap)
    assert import_twin.build(bootstrap) is None
    runner.precompile_bootstrap(bootstrap)  # silent, and no third try
    assert calls.read_text() == "run\n"
    assert "Python.h: No such file" in import_twin.failure_path(target).read_text()
    assert not target.exists() and not list(target.parent.glob("*.partial"))
