"""Start-up overhead per traced Python process, in a tree of short children.

A parent Python process runs N `python -c pass` children one after another and times each
(wall clock around subprocess.run). The parent runs untraced, traced by selfopt-trace, and
under opentelemetry-instrument (which also reaches the children through PYTHONPATH), with
the modes interleaved round by round so machine noise hits them alike. Prints medians and the
added milliseconds per process against the untraced baseline measured in the same run.

    python benchmarks/bench_startup.py [--children 100] [--otel-children 20] [--compare DIR]
    python benchmarks/bench_startup.py --instructions [--compare DIR]

--compare DIR also runs the children traced by the bootstrap in DIR (another version of
selfopt_trace/bootstrap, e.g. `git archive HEAD~1 selfopt_trace/bootstrap | tar -x -C /tmp/old`),
interleaved with the others. --instructions counts the CPU instructions of one `python -c pass`
under valgrind --tool=callgrind instead (untraced, traced, and traced by DIR), three times each:
no neighbour on this shared machine can move a count.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from selfopt_trace import import_twin, interpreters
from selfopt_trace.bootstrap.selfopt_trace_agent import container
from selfopt_trace.bootstrap.selfopt_trace_agent.config import ENV_CONTAINER_ID
from selfopt_trace.agent_build import write_bundles

BOOTSTRAP = Path(__file__).resolve().parent.parent / "selfopt_trace" / "bootstrap"

PARENT = """
import json, subprocess, sys, time
times = []
for _ in range(int(sys.argv[1])):
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    times.append(time.perf_counter() - t0)
print(json.dumps(times))
"""


def clean_environ() -> dict:
    return {k: v for k, v in os.environ.items()
            if not k.startswith(("SELFOPT_TRACE_", "OTEL_", "PYTEST_")) and k not in ("PYTHONPATH", "TRACEPARENT")}


def run_parent(prefix: list, env: dict, children: int) -> list:
    out = subprocess.run([*prefix, sys.executable, "-c", PARENT, str(children)], env=env, check=True,
                         capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def traced_environ(base: dict, bootstrap: Path, run_dir: Path) -> dict:
    """What `selfopt-trace run` gives CMD (runner.traced_environ): the container's id included."""
    env = dict(base, SELFOPT_TRACE_DIR=str(run_dir), SELFOPT_TRACE_RUN_ID="bench",
               SELFOPT_TRACE_BOOTSTRAP=str(bootstrap), PYTHONPATH=str(bootstrap))
    container_id = container.passed_on()
    if container_id:
        env[ENV_CONTAINER_ID] = container_id
    return env


def compiled_bootstraps(compare: list | None, python: str = sys.executable) -> dict:
    """This tree's bootstrap, and each of `compare` beside it, each compiled as `selfopt-trace run`
    does first (.pyc files, the bundles, and the import wrapper's C twin: what a tree whose agent
    does not use them ignores); this tree's also for `python` when that is another interpreter
    (interpreters.py: `run` prepares the agent for the interpreters CMD names)."""
    bootstraps = {"selfopt-trace": BOOTSTRAP}
    for other in compare or ():
        bootstraps[f"selfopt-trace ({other})"] = other.resolve()
    for bootstrap in bootstraps.values():
        compileall.compile_dir(str(bootstrap), quiet=1)
        write_bundles(bootstrap)
        import_twin.build(bootstrap)
    interpreters.prepare_for([python], os.environ, BOOTSTRAP)
    return bootstraps


def instructions(env: dict, tmp: Path) -> int:
    result = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={tmp}/callgrind.out",
                             sys.executable, "-c", "pass"], env=env, check=True, capture_output=True, text=True)
    return int(re.search(r"Collected : (\d+)", result.stderr).group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=100)
    parser.add_argument("--otel-children", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--compare", type=Path, action="append",
                        help="another bootstrap directory, measured beside this one (repeatable)")
    parser.add_argument("--instructions", action="store_true", help="count CPU instructions under callgrind instead")
    args = parser.parse_args()
    bootstraps = compiled_bootstraps(args.compare)
    workdir = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    base = clean_environ()
    if args.instructions:
        print("CPU instructions of `python -c pass` (callgrind), three runs each")
        width = max(len(mode) for mode in bootstraps) + 2
        for mode, env in [("untraced", base)] + [(mode, traced_environ(base, bootstrap, workdir / "run"))
                                                 for mode, bootstrap in bootstraps.items()]:
            counts = [instructions(env, workdir) for _ in range(3)]
            print(f"{mode:<{width}}" + "".join(f"{count / 1e6:>10.2f} M" for count in counts))
        shutil.rmtree(workdir, ignore_errors=True)
        return
    traced = {mode: traced_environ(base, bootstrap, workdir / ("run" if mode == "selfopt-trace" else "compare"))
              for mode, bootstrap in bootstraps.items()}
    otel = dict(base, OTEL_TRACES_EXPORTER="none", OTEL_METRICS_EXPORTER="none", OTEL_LOGS_EXPORTER="none")
    instrument = shutil.which("opentelemetry-instrument", path=str(Path(sys.executable).parent)) or shutil.which("opentelemetry-instrument")
    per_round = max(1, args.children // args.rounds)
    samples: dict = {"untraced": [], **{mode: [] for mode in traced}, "opentelemetry-instrument": []}
    for _ in range(args.rounds):
        samples["untraced"] += run_parent([], base, per_round)
        for mode, env in traced.items():
            samples[mode] += run_parent([], env, per_round)
        if instrument and args.otel_children:
            samples["opentelemetry-instrument"] += run_parent([instrument], otel, max(1, args.otel_children // args.rounds))
    spans = list((workdir / "run" / "spans").glob("*.spans"))
    shutil.rmtree(workdir, ignore_errors=True)
    baseline = statistics.median(samples["untraced"]) * 1000
    print(f"children per mode: {len(samples['untraced'])} (opentelemetry-instrument: {len(samples['opentelemetry-instrument'])})")
    width = max(26, *(len(mode) + 2 for mode in samples))
    print(f"{'mode':<{width}}{'median ms':>10}{'added ms':>10}{'ratio':>8}")
    for mode, times in samples.items():
        if not times:
            print(f"{mode:<{width}}{'not installed' if args.otel_children else 'skipped':>10}")
            continue
        median = statistics.median(times) * 1000
        print(f"{mode:<{width}}{median:>10.2f}{median - baseline:>10.2f}{median / baseline:>8.2f}")
    print(f"span files written by the traced tree: {len(spans)}")


if __name__ == "__main__":
    main()
