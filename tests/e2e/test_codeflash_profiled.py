"""`selfopt-trace run --profile -- codeflash ...` on the real CLI: profiled, it runs as it does untraced.

py-spy's pauses once hung codeflash (its jedi subprocess waited for the rest of a reply that was
lost: docs/profiling.md, "Blocking"); a profiled run must finish, and sample the short pytest children
codeflash spawns (~1-3 s each) as well as the main process and jedi's helper.
"""

from __future__ import annotations

import subprocess

import pytest

from selfopt_trace.store import Store
from tests.e2e import harness
from tests.profile.conftest import needs_pyspy

pytestmark = [pytest.mark.e2e, needs_pyspy]

RUN_ID = "codeflash-profiled"


def test_a_profiled_codeflash_run_finishes_with_samples_of_every_kind_of_process(tmp_path) -> None:
    project = harness.copy_toy(tmp_path / "project")
    env = harness.codeflash_environ(tmp_path)
    with harness.running_standin(harness.clean_environ(), tmp_path / "requests.jsonl"):
        done = subprocess.run(
            harness.selfopt_trace_argv("run", "--run-id", RUN_ID, "--out", str(tmp_path / "runs"), "--no-load",
                                       "--quiet", "--profile", "--", harness.codeflash_executable(),
                                       *harness.CODEFLASH_ARGS),
            cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    assert "arr.sort()" in (project / "bubble" / "sorter.py").read_text()
    with Store(tmp_path / "traces.duckdb") as store:
        store.load_run(tmp_path / "runs" / RUN_ID)
        _, rows = store.sql("""
            SELECT p.attributes->>'process.command' AS command, count(DISTINCT p.pid), count(DISTINCT s.pid)
            FROM spans AS p LEFT JOIN samples AS s ON s.run_id = p.run_id AND s.pid = p.pid
            WHERE p.run_id = ? AND p.name = 'process' GROUP BY 1""", [RUN_ID])
    processes = {command: (count, sampled) for command, count, sampled in rows}
    assert processes["codeflash"] == (1, 1), processes
    assert processes["subprocess/__main__.py"] == (1, 1), processes  # jedi's inference helper
    count, sampled = processes["pytest"]
    assert count >= 5 and sampled == count, processes
