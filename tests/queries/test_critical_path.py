"""critical_path on a real traced run: a wait on a reused process pool (tests/queries/workload/pool_reuse.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from selfopt_trace.queries import run_query
from selfopt_trace.store import Store
from tests.cli.conftest import clean_environ
from tests.queries.builder import RunBuilder
from tests.queries.conftest import WORKLOAD


@pytest.fixture(scope="module")
def pool_run(tmp_path_factory) -> tuple[Path, list[list[int]]]:
    """The database holding run `pool`, and each map's line (long task's pid, pids that ran the tasks)."""
    home = tmp_path_factory.mktemp("pool-home")
    done = subprocess.run([sys.executable, "-m", "selfopt_trace", "run", "--run-id", "pool", "--quiet", "--",
                           sys.executable, str(WORKLOAD / "pool_reuse.py")],
                          env=clean_environ(SELFOPT_TRACE_HOME=str(home)), cwd=home, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr.decode()
    maps = [[int(word) for word in line.split()[1:]] for line in done.stdout.decode().splitlines()
            if line.startswith("map ")]
    return home / "traces.duckdb", maps


def under_waits(rows: list[dict], name: str) -> list[list[dict]]:
    """For each row of the path named `name`, in path order, the rows right under it."""
    depth = [(len(r["span"]) - len(r["span"].lstrip(" "))) // 2 for r in rows]
    found = []
    for i, row in enumerate(rows):
        if row["span"].strip() == name:
            under = []
            for j in range(i + 1, len(rows)):
                if depth[j] <= depth[i]:
                    break
                if depth[j] == depth[i] + 1:
                    under.append(rows[j])
            found.append(under)
    return found


def test_a_wait_on_a_reused_pool_goes_through_the_worker_that_ran_the_last_task(pool_run) -> None:
    """Both workers live on after each map, so both end at the wait's end; the path must go through
    the one whose task ended last, not the one idle in its read of the next task since its short
    task. The long task goes to each worker in turn, so whatever the span ids, breaking the tie by
    id picks the idle worker in one of the two maps."""
    db, maps = pool_run
    assert len(maps) == 3
    workers = {maps[0][0], maps[1][0]}
    for long_pid, *ran in maps[:2]:
        assert sorted(ran) == sorted(workers)  # one task each (the workload's barrier)
    with Store(db, read_only=True) as store:
        rows = run_query(store, "critical_path", {"run_id": "pool", "min_ms": 0, "limit": 100_000}).records()
    waits = under_waits(rows, "AsyncResult.get")
    assert len(waits) == 3
    for (long_pid, *_), under in zip(maps[:2], waits):
        assert [(r["span"].strip(), r["pid"]) for r in under] == [("process", long_pid)]


def test_by_default_the_path_shows_the_whole_run_and_says_what_the_limit_cut(store, tmp_path: Path) -> None:
    """A 10 s run whose start-up is 300 imports of 2 ms: with a fixed 1 ms threshold the 200 rows
    were those imports and stopped 0.4 s in, with nothing to say so. By default the spans under 1 %
    of the path are hidden and the rows reach the end; rows cut by the limit are said in a last row."""
    run = RunBuilder("long")
    root = run.process(100, 0, 10_000)
    startup = run.span(100, "startup", "phase", 0, 600, parent=root)
    for i in range(300):
        run.span(100, f"import m{i}", "import", 2 * i, 2 * i + 2, parent=startup)
    for i, name in enumerate(("discover", "generate", "test", "report")):
        run.span(100, name, "phase", 600 + 2350 * i, 600 + 2350 * (i + 1), parent=root)
    run.load(store, tmp_path)
    rows = run_query(store, "critical_path", {"run_id": "long"}).records()
    assert [r["span"].strip() for r in rows] == ["process", "startup", "discover", "generate", "test", "report"]
    assert rows[-1]["start_ms"] == 7650
    detailed = run_query(store, "critical_path", {"run_id": "long", "min_ms": 1}).records()
    assert len(detailed) == 201 and detailed[-1]["category"] == "cut"
    assert detailed[-1]["span"] == ("... 106 more spans on the path from here on, not shown "
                                    "(limit 200: -p limit=N shows more)")
    assert detailed[-1]["start_ms"] == 396 and detailed[-1]["on_path_ms"] is None
    assert [r["category"] for r in run_query(store, "critical_path", {"run_id": "long", "limit": 2}).records()] == [
        "process", "phase", "cut"]
