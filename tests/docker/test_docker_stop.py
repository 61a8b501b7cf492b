"""`docker stop` of a container whose first process is a Python with SIGTERM's default action.

A container's first process is pid 1 of its namespace, where the kernel drops a signal whose action
is the default: Python without a SIGTERM handler lives through `docker stop`'s SIGTERM, and docker
kills it when its timeout ends. Traced as untraced (the agent sets no handler there), and the
summary says why the stop took its timeout; with `--init` (tini as pid 1) it stops at once.
"""

from __future__ import annotations

import json
import sys

import pytest

from tests.cli.conftest import Cli
from tests.docker.conftest import run_args

STOPPER = r"""
import json, subprocess, sys, time
started = subprocess.run(json.loads(sys.argv[1]), check=True, capture_output=True, text=True)
container = started.stdout.strip()
time.sleep(0.5)  # its Python started
t = time.monotonic()
subprocess.run(["docker", "stop", "-t", "1", container], check=True, capture_output=True)
print("stopped in %.1f s" % (time.monotonic() - t), file=sys.stderr)
"""


@pytest.mark.parametrize("init", [False, True], ids=["pid-1", "init"])
def test_a_stop_that_waits_its_timeout_is_told_why(image, tmp_path, init: bool):
    cli = Cli(tmp_path)
    (tmp_path / "stopper.py").write_text(STOPPER)
    flags = ("-d", "--init") if init else ("-d",)
    container = run_args(image, "python3", "-c", "import time; time.sleep(30)", flags=flags)
    done = cli("run", "--export", "never", "--json", "--", sys.executable, "stopper.py", json.dumps(container))
    assert done.returncode == 0, done.stderr
    printed = json.loads(done.stdout)
    stop_notes = [note for note in printed["notes"] if note.startswith("`docker stop` waited its whole timeout")]
    if init:  # tini passes SIGTERM on, and Python's default action ends it
        assert not stop_notes, printed["notes"]
    else:  # as untraced: pid 1 ignores the SIGTERM, docker kills it a second later
        assert len(stop_notes) == 1 and "(1 stop, 1." in stop_notes[0], printed["notes"]
