"""When py-spy cannot run: one clear line before CMD (--profile), or a run without samples that says
so (--profile=auto); py-spy's own failures never touch CMD's exit status or output."""

from __future__ import annotations

import sys
from pathlib import Path

from selfopt_trace.watchers.profiler import ptrace_problem
from tests.cli.conftest import Cli

CMD = [sys.executable, "-c", "import sys; print('out'); print('err', file=sys.stderr); sys.exit(4)"]


def test_profile_without_py_spy_is_one_line_with_the_fix_and_cmd_does_not_run(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    marker = tmp_path / "ran"
    done = cli("run", "--profile", "--", sys.executable, "-c", f"open({str(marker)!r}, 'w')",
               env=cli.env(SELFOPT_TRACE_PYSPY=str(tmp_path / "no-py-spy")))
    assert done.returncode == 2 and done.stdout == b""
    lines = done.stderr.decode().splitlines()
    assert len(lines) == 1 and "pip install 'selfopt-trace[profile]'" in lines[0] and "--profile=auto" in lines[0], lines
    assert not marker.exists()


def test_profile_auto_without_py_spy_traces_and_says_so(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    done = cli("run", "--profile=auto", "--run-id", "a1", "--", *CMD, env=cli.env(SELFOPT_TRACE_PYSPY=str(tmp_path / "none")))
    assert (done.returncode, done.stdout) == (4, b"out\n")
    assert done.stderr.decode().startswith("err\n")
    assert "profiler: no samples (--profile=auto): " in done.stderr.decode()
    assert cli.query("SELECT count(*) FROM spans WHERE run_id = 'a1'")[0][0] > 0
    (message,) = cli.query("SELECT message FROM diagnostics WHERE run_id = 'a1' AND code = 'profile.unavailable'")[0]
    assert "py-spy" in message and "pip install" in message


def test_a_failing_py_spy_changes_nothing_of_cmd(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    fake = tmp_path / "py-spy"
    fake.write_text("#!/bin/sh\necho 'Error: Operation not permitted (os error 1)' >&2\necho noise\nexit 1\n")
    fake.chmod(0o755)
    # CMD lives a second: py-spy starts once its span file appears, and a loaded machine ran a CMD
    # that exits at once to its end before that
    living = [*CMD[:-1], CMD[-1].replace("sys.exit(4)", "__import__('time').sleep(1); sys.exit(4)")]
    untraced = cli("run", "--", *living, env=cli.env(SELFOPT_TRACE_DISABLED="1"))
    done = cli("run", "--profile", "--run-id", "f1", "--", *living, env=cli.env(SELFOPT_TRACE_PYSPY=str(fake)))
    assert (done.returncode, done.stdout) == (untraced.returncode, untraced.stdout) == (4, b"out\n")
    assert done.stderr.decode().startswith("err\n")
    assert "gave none" in done.stderr.decode()
    (message,) = cli.query("SELECT message FROM diagnostics WHERE run_id = 'f1' AND code = 'profile.failed'")[0]
    assert "Operation not permitted" in message


def _proc(tmp_path: Path, scope: str | None, cap_eff: str = "0000000000000000") -> str:
    root = tmp_path / "proc"
    (root / "self").mkdir(parents=True)
    (root / "self" / "status").write_text(f"Name:\tpython\nCapEff:\t{cap_eff}\n")
    if scope is not None:
        (root / "sys/kernel/yama").mkdir(parents=True)
        (root / "sys/kernel/yama/ptrace_scope").write_text(scope + "\n")
    return str(root)


def test_ptrace_settings_that_stop_py_spy_are_named_with_their_fix(tmp_path: Path) -> None:
    assert "ptrace_scope=0" in ptrace_problem(_proc(tmp_path / "a", "1"), "linux", probe=False)
    assert "ptrace_scope = 2" in ptrace_problem(_proc(tmp_path / "b", "2"), "linux", probe=False)
    assert "ptrace_scope = 3" in ptrace_problem(_proc(tmp_path / "c", "3"), "linux", probe=False)
    with_cap = _proc(tmp_path / "d", "1", cap_eff="0000000000080000")  # CAP_SYS_PTRACE
    assert ptrace_problem(with_cap, "linux", probe=False) is None
    assert ptrace_problem(_proc(tmp_path / "e", None), "linux", probe=False) is None  # no Yama
