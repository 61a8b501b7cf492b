"""The command line's own fixed cost, beside `python -c pass` measured in the same run.

Each command runs as a whole process (the installed `selfopt-trace` console script), the commands
interleaved round by round; medians. For `run -- /bin/true`, run.json's `start_ns` and `end_ns`
(CMD's spawn and its end, as the runner records them) split the wall time into what comes before
CMD starts (start-up, option parsing, the checks) and after it ends (loading into DuckDB and the
summary; with --no-load, the summary alone); `CMD` is CMD's own wall time between the two (what
`run`'s work while CMD runs, such as importing the report's modules, must not slow). Budgets (issue 12): `--version`/`--help` <= 150 ms,
`run -- /bin/true` <= 250 ms in all and <= 60 ms before CMD, load + summary of a small run <= 200 ms.
`runs` and `sql` show what a command typer parses costs (no budget).

selfopt_trace's modules are compiled first, as a wheel's install leaves them (an editable install
under PYTHONDONTWRITEBYTECODE would compile ~60 modules in every command). `cpu` is the command's
user + system CPU time (all its threads and children), steadier than the wall time on a busy
machine. `--baseline DIR...` also runs every command from other trees' selfopt_trace (a checkout
of an older commit: `git archive COMMIT | tar -x -C DIR`), interleaved with this one, for before/after
figures of the same run; each tree is compiled as the installed one is (the same code from a tree
and installed measured within 1-2 ms of each other, 2026-12-04). For a before/after, give a
checkout of this tree too and compare the two baselines.

    python benchmarks/bench_cli.py [--rounds 10] [--baseline DIR...]
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SCRIPT = Path(sys.executable).with_name("selfopt-trace")


def clean_environ(home: Path) -> dict:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SELFOPT_TRACE_", "OTEL_")) and k not in ("PYTHONPATH", "TRACEPARENT")}
    env["SELFOPT_TRACE_HOME"] = str(home)
    return env


def cpu_of_children() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def timed(argv: list, env: dict) -> tuple[float, float, int, int]:
    """(seconds, CPU seconds, launch clock ns, exit clock ns) of one whole command."""
    start = time.time_ns()
    cpu = cpu_of_children()
    t0 = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, cpu_of_children() - cpu, start, time.time_ns()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--baseline", type=Path, nargs="+", default=[],
                        help="other trees' selfopt_trace, measured beside this one (each named by its directory)")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="bench-cli-"))
    env = clean_environ(home)
    trees = {"": env}
    for tree in args.baseline:
        trees[f"{tree.name} "] = {**env, "PYTHONPATH": str(tree.resolve())}
    for tree_env in trees.values():  # as a wheel's install leaves it: every module compiled
        # In `home`: `python -c` puts the working directory first on sys.path, and a checkout's
        # own selfopt_trace there would be found before the tree on PYTHONPATH.
        source = subprocess.run([sys.executable, "-c", "import selfopt_trace; print(selfopt_trace.__file__)"],
                                env=tree_env, cwd=home, check=True, capture_output=True, text=True).stdout.strip()
        compileall.compile_dir(str(Path(source).parent), quiet=1)
    programs = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "selfopt-trace --version": [str(SCRIPT), "--version"],
        "selfopt-trace --help": [str(SCRIPT), "--help"],
        "run --no-load -- /bin/true": [str(SCRIPT), "run", "--no-load", "--", "/bin/true"],
        "run -- /bin/true": [str(SCRIPT), "run", "--", "/bin/true"],  # no --run-id: it opens DuckDB before CMD
        "run -- python -c pass": [str(SCRIPT), "run", "--", sys.executable, "-c", "pass"],
        # Commands typer parses (after the runs above: the store is there)
        "runs": [str(SCRIPT), "runs"],
        "sql 'SELECT 1'": [str(SCRIPT), "sql", "SELECT 1"],
    }
    commands = {prefix + name: (argv, tree_env) for prefix, tree_env in trees.items() for name, argv in programs.items()
                if not (prefix and name == "python -c pass")}
    walls: dict = {name: [] for name in commands}
    cpus: dict = {name: [] for name in commands}
    before: dict = {name: [] for name in commands if "run" in commands[name][0]}
    after: dict = {name: [] for name in before}
    during: dict = {name: [] for name in before}
    try:
        for argv, command_env in commands.values():  # warm the page cache
            subprocess.run(argv, env=command_env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(args.rounds):
            for name, (argv, command_env) in commands.items():
                runs = set((home / "runs").iterdir())
                wall, cpu, launched, exited = timed(argv, command_env)
                walls[name].append(wall)
                cpus[name].append(cpu)
                if name in before:
                    run_dir, = set((home / "runs").iterdir()) - runs
                    record = json.loads((run_dir / "run.json").read_text())
                    before[name].append((record["start_ns"] - launched) / 1e9)
                    after[name].append((exited - record["end_ns"]) / 1e9)
                    during[name].append((record["end_ns"] - record["start_ns"]) / 1e9)
    finally:
        shutil.rmtree(home, ignore_errors=True)
    baseline = statistics.median(walls["python -c pass"])
    print(f"{args.rounds} rounds, load average {os.getloadavg()[0]:.1f}; medians, ms")
    print(f"{'command':<40}{'wall':>8}{'x pass':>8}{'cpu':>8}{'before CMD':>12}{'after CMD':>11}{'CMD':>8}")
    for name in commands:
        wall = statistics.median(walls[name])
        line = f"{name:<40}{wall * 1e3:>8.1f}{wall / baseline:>8.1f}{statistics.median(cpus[name]) * 1e3:>8.1f}"
        if name in before:
            line += (f"{statistics.median(before[name]) * 1e3:>12.1f}{statistics.median(after[name]) * 1e3:>11.1f}"
                     f"{statistics.median(during[name]) * 1e3:>8.1f}")
        print(line)
    budgets = [("--version", walls["selfopt-trace --version"], 0.150), ("--help", walls["selfopt-trace --help"], 0.150),
               ("run -- /bin/true", walls["run -- /bin/true"], 0.250),
               ("run: before CMD", before["run -- /bin/true"], 0.060),
               ("run: load + summary", after["run -- /bin/true"], 0.200),
               ("run: load + summary of a run with spans", after["run -- python -c pass"], 0.200)]
    for what, values, budget in budgets:
        median = statistics.median(values)
        print(f"budget {what}: {median * 1e3:.1f} ms of {budget * 1e3:.0f}: {'ok' if median <= budget else 'OVER'}")


if __name__ == "__main__":
    main()
