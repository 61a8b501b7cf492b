"""What `run` does after CMD, alone: load a run directory and print its summary, as run_report.report does.

For instruction counts of that part without the `run` process's watchers (their threads make a
whole `run`'s count move with valgrind's slow clock). Subtract `python -c "import selfopt_trace.runner"`
(what `run` has imported before CMD):

    .venv/bin/selfopt-trace run -- /bin/true
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/bench_run_report.py .selfopt-trace/runs/RUN_ID /tmp/bench.duckdb
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from selfopt_trace.run_report import report
from selfopt_trace.runner import RunOptions, RunRecord


def main() -> None:
    run_dir, db = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    meta = json.loads((run_dir / "run.json").read_text())
    record = RunRecord(run_id=meta["run_id"], group_id=None, run_dir=run_dir, command=meta["command"], cwd=meta["cwd"],
                       service=None, traced=True, start_ns=meta["start_ns"], end_ns=meta["end_ns"],
                       returncode=meta["exit_code"])
    options = RunOptions(command=meta["command"], out_dir=run_dir.parent, db_path=db, replace=True)
    report([record], options, None, ("tree", "show", "sql", "query", "report"), dict(os.environ))


if __name__ == "__main__":
    main()
