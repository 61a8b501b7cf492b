"""What `run` does after CMD, alone: load a run directory and print its summary, as run_report.report does.

For instruction counts of that part without the `run` process's watchers (their threads make a
whole `run`'s count move with valgrind's slow clock). Subtract `python -c "import selfopt_trace.runner"`
(what `run` has imported before CMD). The run directory is copied under a new run id first (or
NEW_ID, to compare two trees' summaries byte for byte), so each invocation loads a new run into DB
as `run` does (no rows of that id to replace); the process ends as `run` ends (cli/quick_run.py,
`exit_without_teardown`, where the tree measured has it):

    .venv/bin/selfopt-trace run -- /bin/true
    valgrind --tool=callgrind --callgrind-out-file=/dev/null \\
        .venv/bin/python benchmarks/bench_run_report.py .selfopt-trace/runs/RUN_ID /tmp/bench.duckdb [NEW_ID]
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from pathlib import Path

from selfopt_trace.run_report import report
from selfopt_trace.runner import RunOptions, RunRecord, new_run_id

try:
    from selfopt_trace.cli.quick_run import exit_without_teardown
except ImportError:  # a tree from before it: the interpreter's own exit
    exit_without_teardown = sys.exit


def main() -> None:
    source, db = Path(sys.argv[1]).resolve(), Path(sys.argv[2])
    meta = json.loads((source / "run.json").read_text())
    meta["run_id"] = sys.argv[3] if len(sys.argv) > 3 else new_run_id()
    run_dir = Path(tempfile.mkdtemp(prefix="bench-run-report-")) / meta["run_id"]
    shutil.copytree(source, run_dir)
    (run_dir / "run.json").write_text(json.dumps(meta))
    record = RunRecord(run_id=meta["run_id"], group_id=None, run_dir=run_dir, command=meta["command"], cwd=meta["cwd"],
                       service=None, traced=True, start_ns=meta["start_ns"], end_ns=meta["end_ns"],
                       returncode=meta["exit_code"])
    options = RunOptions(command=meta["command"], out_dir=run_dir.parent, db_path=db)
    try:
        report([record], options, None, ("tree", "show", "sql", "query", "report"), dict(os.environ))
    finally:
        shutil.rmtree(run_dir.parent)
    exit_without_teardown(0)


if __name__ == "__main__":
    main()
