"""The summary's breakdown with and without DuckDB's optimizer, by the size of the store around the run.

Why `summary.SMALL_STORE_SPANS` bounds the store the summary plans without the optimizer: a store
of one synthetic run of about N spans (bench_queries.generate_run) and a real run directory (RUN_DIR:
`run -- python -c pass`, two spans) loaded beside it; for each of the two runs, the breakdown query's
median time with the optimizer and without it (`PRAGMA disable_optimizer`), interleaved, after
checking both give the same rows.

    .venv/bin/selfopt-trace run -- python -c pass
    python benchmarks/bench_summary_store.py RUN_DIR [--spans 1000 10000 100000] [--repeat 7]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.bench_queries import generate_run  # noqa: E402
from selfopt_trace.queries import run_query  # noqa: E402
from selfopt_trace.store import Store  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--spans", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    print(f"{'store spans':>12} {'run':>12} {'optimized ms':>13} {'unoptimized ms':>15}")
    for spans in args.spans:
        with tempfile.TemporaryDirectory() as scratch, Store(Path(scratch) / "t.duckdb") as store:
            generate_run(Path(scratch) / "synthetic", "synthetic", spans)
            store.load_run(Path(scratch) / "synthetic")
            small = store.load_run(args.run_dir).run_id
            total = store.sql("SELECT count(*) FROM spans")[1][0][0]
            for run_id in ("synthetic", small):
                def breakdown(optimized: bool, run_id: str = run_id) -> list[tuple]:
                    store.sql("PRAGMA enable_optimizer" if optimized else "PRAGMA disable_optimizer")
                    return run_query(store, "breakdown", {"run_id": run_id}).rows

                assert breakdown(True) == breakdown(False)
                times: dict[bool, list[float]] = {True: [], False: []}
                for _ in range(args.repeat):
                    for optimized in (True, False):
                        t0 = time.perf_counter()
                        breakdown(optimized)
                        times[optimized].append(time.perf_counter() - t0)
                count = store.sql("SELECT count(*) FROM spans WHERE run_id = ?", [run_id])[1][0][0]
                print(f"{total:>12} {count:>12} {statistics.median(times[True]) * 1e3:>13.1f} "
                      f"{statistics.median(times[False]) * 1e3:>15.1f}")


if __name__ == "__main__":
    main()
