"""`run` compiles the bootstrap's .pyc files before CMD, and imports compileall only when one is missing or stale."""

from __future__ import annotations

import compileall
import os
from pathlib import Path

from selfopt_trace import runner


def test_a_missing_or_stale_pyc_is_seen_and_a_fresh_one_is_not(tmp_path: Path) -> None:
    package = tmp_path / "agent"
    package.mkdir()
    (package / "a.py").write_text("A = 1\n")
    assert not runner.bootstrap_compiled(package)  # never compiled
    assert compileall.compile_dir(str(package), quiet=2)
    assert runner.bootstrap_compiled(package)
    (package / "a.py").write_text("A = 22\n")  # another size
    assert not runner.bootstrap_compiled(package)
    compileall.compile_dir(str(package), quiet=2)
    stat = (package / "a.py").stat()
    os.utime(package / "a.py", ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))  # same size, touched
    assert not runner.bootstrap_compiled(package)


def test_the_installed_bootstrap_is_compiled_after_precompile() -> None:
    runner.precompile_bootstrap()
    assert runner.bootstrap_compiled(runner.BOOTSTRAP_DIR)
    assert runner.bundles_fresh(runner.BOOTSTRAP_DIR)

