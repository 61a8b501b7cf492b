"""`selfopt-trace run -- CMD` behaves as CMD untraced: exit status, stdout/stderr bytes, stdin, tracebacks."""

from __future__ import annotations

import json
import os
import shlex
import signal
import stat
import sys

import pytest

from tests.cli.conftest import clean_environ, python

# Writes every byte value, a partial line, and interleaves both streams.
NOISY = r"""
import sys
out, err = sys.stdout.buffer, sys.stderr.buffer
out.write(bytes(range(256)))
err.write(b"warning: \xff\xfe not utf-8\n")
out.write(b"\r\npartial line without newline")
out.flush()
print("text after bytes", flush=True)
print("\u00e9t\u00e9 \u2603", file=sys.stderr)
"""


def direct(cmd: list[str], **kwargs):
    import subprocess

    kwargs.setdefault("capture_output", True)
    return subprocess.run(cmd, env=clean_environ(), timeout=60, **kwargs)


@pytest.mark.parametrize("code", [0, 1, 3])
def test_exit_code_is_the_commands(cli, code):
    result = cli("run", "-q", "--no-load", "--", *python(f"import sys; sys.exit({code})"))
    assert result.returncode == code, result.stderr
    assert result.stderr == b""


@pytest.mark.parametrize("signum", [signal.SIGKILL, signal.SIGTERM, signal.SIGABRT])
def test_killed_by_a_signal_dies_of_the_same_signal(cli, signum):
    cmd = python(f"import os; os.kill(os.getpid(), {int(signum)})")
    assert direct(cmd).returncode == -signum
    result = cli("run", "-q", "--no-load", "--", *cmd)
    assert result.returncode == -signum, result.stderr
    assert result.stderr == b""


def test_a_shell_sees_128_plus_the_signal(cli):
    import subprocess

    cmd = shlex.join(cli.argv("run", "-q", "--no-load", "--", *python("import os; os.kill(os.getpid(), 9)")))
    shell = subprocess.run(["sh", "-c", f"{cmd}; echo status=$?"], capture_output=True, env=cli.env(), cwd=cli.cwd, timeout=60)
    assert shell.stdout == b"status=137\n", shell.stderr


def test_stdout_and_stderr_bytes_are_identical_to_untraced(cli):
    untraced = direct(python(NOISY))
    traced = cli("run", "-q", "--", *python(NOISY))
    assert traced.returncode == untraced.returncode == 0
    assert traced.stdout == untraced.stdout
    assert traced.stderr == untraced.stderr
    assert len(cli.run_dirs()) == 1  # and it was traced


def test_summary_goes_to_stderr_after_the_commands_own_bytes(cli):
    untraced = direct(python(NOISY))
    traced = cli("run", "--", *python(NOISY))
    assert traced.stdout == untraced.stdout
    assert traced.stderr.startswith(untraced.stderr)
    assert b"wall time" in traced.stderr[len(untraced.stderr):]


@pytest.mark.parametrize("options, redirect, closed", [
    ("-q", ">&-", (True, False)), ("", ">&-", (True, False)), ("-q", "2>&-", (False, True)),
    ("", "2>&-", (False, True)), ("--json", ">&- 2>&-", (True, True)), ("--cpu-rate 50", ">&- 2>&-", (True, True)),
    ("--json", ">/dev/full", (False, False)), ("", "2>/dev/full", (False, False)), ("--json", "| true", (False, False)),
    ("--json /dev/full", "", (False, False))])  # the summary's file cannot be written: said in one line
def test_the_exit_status_is_cmds_whatever_became_of_our_stdout_and_stderr(cli, tmp_path, options, redirect, closed):
    """Our stdout or stderr closed, full, or a pipe nobody reads: CMD's status all the same (typer's
    path too: --cpu-rate), and CMD finds closed what was closed, as untraced."""
    import subprocess

    seen = tmp_path / "seen"
    cmd = python(f"import sys; open({str(seen)!r}, 'w').write(repr((sys.stdout is None, sys.stderr is None))); sys.exit(3)")
    run = shlex.join(cli.argv("run", *options.split(), "--", *cmd))
    # the status on the shell's stdout (fd 3), whatever `run`'s own stdout is
    shell = subprocess.run(["sh", "-c", f"exec 3>&1; {{ {run}; echo status=$? >&3; }} {redirect}"],
                           capture_output=True, env=cli.env(), cwd=cli.cwd, timeout=120)
    assert shell.stdout == b"status=3\n", shell.stderr
    assert b"Traceback" not in shell.stderr
    assert seen.read_text() == repr(closed)


def test_stdin_passes_through(cli):
    data = b"first line\nsecond\x00\xff line\n" * 1000
    echo = python("import sys; sys.stdout.buffer.write(sys.stdin.buffer.read()[::-1])")
    result = cli("run", "-q", "--no-load", "--", *echo, input=data)
    assert result.returncode == 0, result.stderr
    assert result.stdout == data[::-1]


def test_stdin_is_the_terminal_or_file_it_was(cli, tmp_path):
    """CMD gets our descriptors themselves, not pipes: a file stays a seekable file."""
    source = tmp_path / "input.txt"
    source.write_bytes(b"0123456789")
    probe = python("import os, sys; print(os.path.sameopenfile(0, os.open(sys.argv[1], os.O_RDONLY)), sys.stdin.seekable())")
    with open(source, "rb") as stdin:
        result = cli("run", "-q", "--no-load", "--", *probe, str(source), stdin=stdin)
    assert result.stdout == b"True True\n", result.stderr


def test_uncaught_exception_traceback_is_unchanged(cli, tmp_path):
    script = tmp_path / "boom.py"
    script.write_text("def inner():\n    raise ValueError('boom')\n\ndef outer():\n    inner()\n\nouter()\n")
    untraced = direct([sys.executable, str(script)])
    traced = cli("run", "-q", "--no-load", "--", sys.executable, str(script))
    assert untraced.returncode == traced.returncode == 1
    assert traced.stderr == untraced.stderr
    assert b"ValueError: boom" in traced.stderr


def test_command_not_found_is_127_like_a_shell(cli):
    result = cli("run", "--", "no-such-command-3f9a")
    assert result.returncode == 127
    assert result.stderr == b"selfopt-trace: no-such-command-3f9a: command not found\n"
    assert result.stdout == b""
    assert cli.run_dirs() == []


def test_not_executable_is_126(cli, tmp_path):
    script = tmp_path / "script.sh"
    script.write_text("#!/bin/sh\necho ran\n")
    script.chmod(0o644)
    result = cli("run", "--", "./script.sh")
    assert result.returncode == 126
    assert result.stderr == b"selfopt-trace: ./script.sh: Permission denied\n"
    directory = cli("run", "--", str(tmp_path))
    assert directory.returncode == 126
    assert b"Is a directory" in directory.stderr
    missing = cli("run", "--", "./missing.sh")
    assert missing.returncode == 127
    assert missing.stderr == b"selfopt-trace: ./missing.sh: No such file or directory\n"


def test_path_lookup_and_a_script_without_shebang_run_like_a_shell(cli, tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    tool = bin_dir / "mytool"
    tool.write_text('echo "no shebang, run by sh: $1"\n')  # POSIX execvp hands it to /bin/sh
    tool.chmod(tool.stat().st_mode | stat.S_IXUSR)
    env = cli.env(PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    result = cli("run", "-q", "--no-load", "--", "mytool", "arg1", env=env)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"no shebang, run by sh: arg1\n"


def test_missing_double_dash_works_and_later_options_belong_to_the_command(cli):
    result = cli("run", "-q", "--no-load", *python("import sys; print(sys.argv[1:])"), "--quiet", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"['--quiet', '--json']\n"


def test_unknown_option_before_the_command_is_a_usage_error(cli):
    result = cli("run", "--bogus", *python("open('ran', 'w')"))
    assert result.returncode == 2
    assert b"--bogus" in result.stderr
    assert not (cli.cwd / "ran").exists()


def test_no_command_is_a_usage_error(cli):
    result = cli("run", "--quiet")
    assert result.returncode == 2
    assert b"no command given" in result.stderr


def run_in_process(cli, setup: str, *run_args: str):
    """`selfopt-trace run RUN_ARGS` by cli.main in a process that first runs `setup`."""
    import subprocess

    code = f"{setup}\nimport sys\nsys.argv = ['selfopt-trace', 'run', *{list(run_args)!r}]\nfrom selfopt_trace.cli import main\nmain()"
    return subprocess.run([sys.executable, "-c", code], capture_output=True, env=cli.env(), cwd=cli.cwd, timeout=120)


def test_the_exit_runs_atexit_callbacks_and_flushes_the_json(cli):
    """`run` ends without the interpreter's teardown (quick_run.exit_without_teardown), not without what it does."""
    setup = "import atexit, sys\natexit.register(lambda: print('atexit ran', file=sys.stderr))"
    result = run_in_process(cli, setup, "--json", "--", *python("print('out'); raise SystemExit(4)"))
    assert result.returncode == 4, result.stderr
    assert result.stderr.endswith(b"atexit ran\n")
    out, _, json_text = result.stdout.partition(b"\n")
    assert out == b"out" and json.loads(json_text)["exit_code"] == 4


def test_the_exit_waits_for_a_thread_that_is_not_a_daemon(cli, tmp_path):
    marker = tmp_path / "thread-done"
    setup = (f"import threading, time\n"
             f"threading.Thread(target=lambda: (time.sleep(0.5), open({str(marker)!r}, 'w').close())).start()")
    result = run_in_process(cli, setup, "-q", "--no-load", "--", *python("raise SystemExit(5)"))
    assert result.returncode == 5, result.stderr
    assert marker.exists()


def test_the_store_is_closed_before_the_exit(cli):
    """The store closes in a thread while the summary prints (background.Background): the exit waits
    for its checkpoint, so the database holds the run with no write-ahead log left to replay."""
    result = run_in_process(cli, "", "--json", "--", *python("print('out')"))
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout.partition(b"\n")[2])
    assert b"Time by category" in result.stderr and printed["spans"] >= 2  # the process and its start-up
    assert not cli.db.with_name(cli.db.name + ".wal").exists()
    assert cli.query("SELECT count(*) FROM spans WHERE run_id = ?", [printed["run_id"]]) == [(printed["spans"],)]


def test_the_exec_shim_gives_cmd_the_signal_dispositions_a_direct_start_gives(tmp_path):
    """`run -- docker run ...` starts CMD through a traced Python that execs it (runner._EXEC_SHIM;
    the container's part: tests/docker). An exec keeps what is ignored: Python's ignored SIGPIPE and
    SIGXFSZ would have reached docker. Read here from /proc of a shell the shim execs, traced, against
    the same shell started by subprocess as `run` starts CMD."""
    import subprocess

    from selfopt_trace import runner
    from tests.conftest import Traced

    show = ["/bin/sh", "-c", "grep -E '^Sig(Ign|Blk|Cgt)' /proc/self/status"]
    direct = subprocess.run(show, capture_output=True, text=True)
    traced = Traced(tmp_path)
    through = traced.run([sys.executable, "-c", runner._EXEC_SHIM, show[0], *show], text=True)
    assert (through.returncode, through.stderr) == (0, "")
    assert through.stdout == direct.stdout
    assert [s.name for s in traced.spans().spans if s.name in ("process", "exec")] == ["process", "exec"]
    assert runner.container_command(["docker", "run", "--rm", "img"]) and runner.container_command(["podman", "exec", "c", "sh"])
    assert runner.container_command(["docker", "ps"]) is None and runner.container_command(["python", "run"]) is None
