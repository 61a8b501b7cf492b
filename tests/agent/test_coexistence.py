"""The bootstrap lives beside whatever the environment already has, and stays silent where it cannot serve."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import BOOTSTRAP


def test_the_users_own_sitecustomize_still_runs(traced, tmp_path):
    user = tmp_path / "user_site"
    user.mkdir()
    (user / "sitecustomize.py").write_text("import builtins\nbuiltins.USER_SITECUSTOMIZE = 'ran'\n")
    code = "import builtins; print(builtins.USER_SITECUSTOMIZE)"
    result = traced.python(code, extra_env={"PYTHONPATH": f"{BOOTSTRAP}{os.pathsep}{user}"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"ran\n" and result.stderr == b""
    assert len(traced.spans().processes()) == 1


def test_sys_path_is_the_untraced_one(traced, tmp_path):
    """The bootstrap directory leaves sys.path once the agent runs; what the user's own
    sitecustomize adds to it stays, as untraced."""
    user = tmp_path / "user_site"
    user.mkdir()
    (user / "sitecustomize.py").write_text("import sys\nsys.path.append('/user/added')\n")
    code = "import sys; print([p for p in sys.path if p.startswith('/user') or 'bootstrap' in p or 'user_site' in p])"
    untraced = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(user)), capture_output=True)
    result = traced.python(code, extra_env={"PYTHONPATH": f"{BOOTSTRAP}{os.pathsep}{user}"})
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert result.stdout == untraced.stdout == f"[{str(user)!r}, '/user/added']\n".encode()
    assert len(traced.spans().processes()) == 1


def test_a_failing_user_sitecustomize_fails_as_it_would_untraced(traced, tmp_path):
    user = tmp_path / "user_site"
    user.mkdir()
    (user / "sitecustomize.py").write_text("raise RuntimeError('user site broken')\n")
    env = dict(os.environ, PYTHONPATH=str(user))
    untraced = subprocess.run([sys.executable, "-c", "print('ok')"], env=env, capture_output=True)
    result = traced.python("print('ok')", extra_env={"PYTHONPATH": f"{BOOTSTRAP}{os.pathsep}{user}"})
    assert result.returncode == untraced.returncode
    assert result.stdout == untraced.stdout
    assert b"user site broken" in untraced.stderr and b"user site broken" in result.stderr


def test_isolated_and_ignore_environment_mean_untraced(traced):
    for flag in ("-I", "-E"):
        result = traced.run([sys.executable, flag, "-c", "import sys; print('sitecustomize' in sys.modules and 'selfopt_trace_agent' in sys.modules)"])
        assert result.returncode == 0 and result.stderr == b""
        assert result.stdout == b"False\n"
    assert not (traced.run_dir / "spans").exists()


def test_working_directory_is_never_put_on_sys_path(traced, tmp_path):
    code = "import sys, os; print([p for p in sys.path if p in ('', '.', os.getcwd())])"
    result = traced.run([sys.executable, "-c", code], cwd=tmp_path)
    untraced = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True)
    assert result.stdout == untraced.stdout


def test_another_interpreter_without_the_package_runs_clean(traced, tmp_path):
    """A venv that has nothing of ours installed: the bootstrap on PYTHONPATH is all it needs."""
    venv = tmp_path / "other-venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    other = venv / "bin" / "python"
    code = f"import subprocess; subprocess.run([{str(other)!r}, '-c', 'print(42)'], check=True)"
    result = traced.python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"42\n" and result.stderr == b""
    spans = traced.spans()
    assert len(spans.processes()) == 2 and len(spans.trace_ids()) == 1


def test_disabled_by_otel_sdk_disabled(traced):
    result = traced.python("print('x')", extra_env={"OTEL_SDK_DISABLED": "true"})
    assert result.stdout == b"x\n" and result.stderr == b""
    assert not (traced.run_dir / "spans").exists()


def test_unwritable_run_dir_is_silent(traced, tmp_path):
    if os.geteuid() == 0:
        target = "/proc/selfopt-trace-cannot-write-here"  # even root cannot create files in /proc
    else:
        target = str(tmp_path / "ro")
        Path(target).mkdir(mode=0o500)
    result = traced.python("import subprocess, sys; subprocess.run([sys.executable, '-c', 'print(1)'])",
                           extra_env={"SELFOPT_TRACE_DIR": target})
    assert result.returncode == 0
    assert result.stdout == b"1\n" and result.stderr == b""


def test_double_start_up_is_guarded(traced):
    code = "import selfopt_trace_agent; selfopt_trace_agent.start(); selfopt_trace_agent.start(); print('ok')"
    result = traced.python(code)
    assert result.stdout == b"ok\n" and result.stderr == b""
    assert len(traced.spans().processes()) == 1


def test_bootstrap_source_parses_on_old_pythons():
    """The shim must not even fail to compile on an interpreter too old to trace."""
    import ast

    ast.parse((BOOTSTRAP / "sitecustomize.py").read_text(), "sitecustomize.py", feature_version=(3, 4))
    for path in (BOOTSTRAP / "selfopt_trace_agent").rglob("*.py"):
        ast.parse(path.read_text(), str(path), feature_version=(3, 8))


def test_no_site_means_untraced(traced):
    result = traced.run([sys.executable, "-S", "-c", "print('plain')"])
    assert result.stdout == b"plain\n" and result.stderr == b""


# A program that stops its clock, with each library that does: the hooks that subprocess and sleep
# load at their first call load while it is stopped.
FROZEN = """
import datetime, json, subprocess, sys, time
{importing}
with {freezing}:
    t0 = time.time()
    json.dumps(list(range(200000)))
    subprocess.run([sys.executable, "-c", "pass"])
    time.sleep(0.05)
    print(time.time() == t0, datetime.datetime.now().year)
"""
FREEZERS = {
    "freezegun": ("from freezegun import freeze_time", 'freeze_time("2020-01-01")'),
    "time-machine": ("import time_machine", "time_machine.travel(datetime.datetime(2020, 1, 1), tick=False)"),
}


@pytest.mark.parametrize("freezer", FREEZERS)
def test_a_frozen_clock_stays_the_programs_own(traced, freezer):
    """freezegun replaces every module's clock functions but those of the modules on its ignore
    list, time-machine the time module's C functions themselves: the agent's spans under a frozen
    clock started in 2020 and lasted nothing (a subprocess, a sleep, a json.dumps of 200,000 items
    all 0 ms). The agent's modules are on freezegun's list now, and read a clock time-machine leaves
    alone; the program's clock stays frozen."""
    importing, freezing = FREEZERS[freezer]
    program = FROZEN.format(importing=importing, freezing=freezing)
    env = traced.env()
    del env["SELFOPT_TRACE_DIR"]
    untraced = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True, timeout=60)
    done = traced.python(program)
    assert (done.returncode, done.stdout, done.stderr) == (untraced.returncode, untraced.stdout, untraced.stderr)
    assert done.stdout == b"True 2020\n"
    spans = traced.spans()
    (main,) = [p for p in spans.processes() if p.parent_span_id == ""]
    (subprocess_span,) = spans.named("subprocess")
    (sleep,) = spans.named("time.sleep")
    (dumps,) = spans.named("json.dumps")
    for span in (subprocess_span, sleep, dumps):
        assert main.start_ns < span.start_ns < span.end_ns < main.end_ns, span.name
    assert sleep.end_ns - sleep.start_ns >= 50_000_000


DAEMON_LIKE = """
import json, os, sys, time
os.closerange(3, 1024)                 # a daemon's start: every descriptor but 0-2 closed
with open(sys.argv[1], "w") as data:   # the number the agent's span file had
    data.write("USERDATA\\n"); data.flush()
    for i in range(30):
        json.loads(json.dumps({"a": i}))
        time.sleep(0.01)
    import decimal, fractions
print("done")
"""


def test_a_program_that_closes_every_descriptor_keeps_its_files_and_its_trace(traced, tmp_path):
    """The span file's descriptor closed by the program and its number reused for the program's own
    file: no record of the agent's ever goes into that file (they went there, 8 KB of them), and
    the trace goes on in the span file, opened again."""
    script, data = tmp_path / "daemon.py", tmp_path / "data.txt"
    script.write_text(DAEMON_LIKE)
    # every import a span (threshold 0): the last ones come after the descriptor was taken over
    result = traced.run([traced.executable, str(script), str(data)], extra_env={"SELFOPT_TRACE_IMPORT_THRESHOLD_MS": "0"})
    assert result.returncode == 0 and result.stdout == b"done\n", result.stderr
    assert data.read_bytes() == b"USERDATA\n"
    spans = traced.spans()
    (process,) = spans.processes()
    assert process.end_ns and process.status != "ERROR", process
    names = {span.name for span in spans.spans}
    assert {"import decimal", "import fractions"} <= names and "time.sleep" in names, sorted(names)


def test_a_program_started_with_stdout_closed_keeps_it_closed(traced, tmp_path):
    """The span file opens above 0-2: a CMD started with stdout closed finds it closed, as untraced (the
    span file took fd 1), so nothing it or a child writes there lands in the span file."""
    script = tmp_path / "closed.py"
    script.write_text("import os, subprocess, sys, time\n"
                      "time.sleep(1.2)\n"  # a flush meanwhile: the span file is open before the child starts
                      "subprocess.run(['sh', '-c', 'echo $((40 + 2))-LEAKED'])\n"
                      "def is_open(fd):\n    try:\n        os.fstat(fd)\n        return True\n"
                      "    except OSError:\n        return False\n"
                      "sys.stderr.write('open: %s\\n' % [fd for fd in range(3) if is_open(fd)])\n")
    command = ["sh", "-c", f"exec {traced.executable} {script} >&-"]
    untraced, result = traced.untraced(command), traced.run(command)
    assert (result.returncode, result.stdout, result.stderr) == (untraced.returncode, untraced.stdout, untraced.stderr)
    assert b"open: [0, 2]" in result.stderr and b"I/O error" in result.stderr, result.stderr  # the child's echo failed
    for span_file in (traced.run_dir / "spans").iterdir():
        assert b"42-LEAKED" not in span_file.read_bytes(), span_file  # the child's output (its command says $((40 + 2)))
    spans = traced.spans()
    assert len(spans.processes()) == 1 and len(spans.named("subprocess")) == 1  # sh: not a Python
