"""What the agent adds to whole processes that import a lot, paired with the same process untraced.

Each case runs as a whole `python` process, untraced and traced (the agent's environment, its
.pyc and bundles written first, as `selfopt-trace run` does), alternating pair by pair so the machine's
load hits both alike. Printed per case: the medians, the median of the paired differences
(traced - untraced), the budget of issue 12 (added wall <= 1 % of the untraced process and
<= 5 ms + 2 us per imported module; a trivial process <= 3 ms), and the agent's own accounting
(`selfopt_trace.overhead_ns` of the process span, median) against the paired difference: the
two must agree within a factor of 1.5. Both verdicts are read from a 95 % bootstrap interval of the
median paired difference, not from the median alone: "unreadable" where the interval spans the
budget (on this shared machine one pair moves by 75-96 ms in a pytest process). The paired
difference of the processes' CPU time (user +
system, all threads: `wait4`'s rusage) is printed beside it: on a loaded machine it moves less
than the wall difference, and most of what the agent costs is the traced process's own CPU. Below
it, the system CPU's paired difference, the processes' voluntary context switches (medians): a
thread waiting for the GIL is woken at each release of it by a busy main thread (its flusher's
wakes, docs/span-format.md "Flushing"), and the paired difference of minor page faults: each
16 KiB chunk of the interpreter's frame stack mapped anew faults (docs/benchmarks.md, "The
import wrapper in importlib's frame").

Cases: `pass` (python -c pass), `imports` (rich.console, libcst, jedi, requests, pydantic,
pytest: ~650 modules), `stdlib` (pip's install command and a dozen stdlib packages), `pytest`
(python -m pytest -q on a one-test repository: every installed plugin loads, codeflash's too), `lazy`
(1,000 small modules imported one by one, each an outermost import).

    python benchmarks/bench_imports.py [--pairs 20] [--case imports ...] [--gc]
    python benchmarks/bench_imports.py --instructions [--deterministic] [--cache-sim] [--case imports ...] [--compare DIR]
    python benchmarks/bench_imports.py --slopes [--compare DIR]

--gc chains a probe sitecustomize into both sides (the shim runs it traced) that times every garbage
collection (gc.callbacks): the paired difference of the collections' time, which the agent's
accounting does not count (its objects make collections longer and more frequent), then per
generation the paired differences of the collections' number and time, and of the objects the
collector tracks at exit (counted by the probe after the program ends: a ~1 ms list on both sides);
and the paired difference of the time from the program's end (the probe's exit handler, which runs
before the agent's) to the process's: the agent's last flush and its share of the teardown.

--instructions counts CPU instructions under valgrind --tool=callgrind instead (three runs per
side, PYTHONHASHSEED=0), with the agent's time thresholds (import spans, small calls) scaled by
callgrind's slowdown so the same imports and calls are recorded as in a native run. (The flush
interval is not scaled: the flusher thread wakes ~50x as often as natively, a few M instructions
that move from run to run.) --compare DIR (repeatable) measures another
bootstrap directory beside this one (e.g. `git archive HEAD~1 selfopt_trace/bootstrap | tar -x -C /tmp/old`).
Compare copies at the same depth (`/tmp/a/selfopt_trace/bootstrap` beside `/tmp/b/...`): a pytest
count moved by 18 M with the paths it ran with. --deterministic puts the thresholds out of reach
instead: no import is recorded for its time and
every small call is a sum, so the count no longer moves with the machine's load (recorded imports
are left to --slopes). --slopes counts what one import and one summed compile() add. --cache-sim
prints callgrind's cycle estimate instead of instructions: its simulated caches' misses and its
branch predictor's mispredictions weighed in (Ir + 10 x L1 misses + 100 x last-level misses + 10 x
mispredicted branches), which a count of instructions leaves out (a pytest run: +51 M instructions
traced, +70 M estimated cycles without the branches; ~2-3x slower than the callgrind runs alone).
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench_startup import clean_environ, compiled_bootstraps, traced_environ

CASES = {
    "pass": ["-c", "pass"],
    "imports": ["-c", "import rich.console, libcst, jedi, requests, pydantic, pytest"],
    "stdlib": ["-c", "import pip._internal.commands.install, asyncio, unittest, email.mime.multipart, http.server, "
                     "xml.etree.ElementTree, logging.handlers, decimal, sqlite3, tarfile, zipfile, pydoc"],
    "pytest": ["-m", "pytest", "-q", "-p", "no:cacheprovider"],
    # 1,000 small modules imported one by one from a loop, as a command line's functions import what
    # they need when called: every import outermost (no import around it), so each reads its thread's
    # CPU clock, a system call callgrind does not count (tracer.CPU_START).
    "lazy": ["-c", "import sys\nsys.path.insert(0, '../lazy')\nfor i in range(1000): __import__('lazy%d' % i)"],
}
LAZY_MODULE = "X = {i}\n\n\ndef f():\n    return X\n\n\nclass C:\n    pass\n"
TEST_FILE = "def test_one():\n    assert sum([1, 2]) == 3\n"
CALLGRIND_SLOWDOWN = 50  # callgrind runs Python ~40-50x slower: time thresholds scaled by this
# Modes that are this tree's bootstrap with settings of their own (--pure-python): mode -> variables.
MODE_ENV: dict = {}
PYTHON = sys.executable  # the interpreter of the cases (--python)


def command_line(args: list) -> str:
    """A case's arguments on one line (the `lazy` case's code has several)."""
    return " ".join(args).replace("\n", "; ")


def agent_overhead_ns(run_dir: Path) -> int:
    """`selfopt_trace.overhead_ns` summed over the process spans of a run directory."""
    total = 0
    for path in (run_dir / "spans").glob("*.spans"):
        total += sum(int(n) for n in re.findall(r'"selfopt_trace\.overhead_ns":\s*(\d+)', path.read_text()))
    return total


def aside(cwd: Path, name: str) -> Path:
    """Where the benchmark's own files go (run directories, probes, callgrind's output): beside the
    case's directory, not in it. pytest collects its directory tree: with the run directory in it,
    the traced side collected one directory more and counted ~6 M instructions more (1,890.0 against
    1,884.2 M, docs/benchmarks.md), as no `selfopt-trace run` does (its runs are under its home)."""
    return cwd.parent / name


def write_caches(args: list, cwd: Path, env: dict) -> None:
    """Run the case once with bytecode written: the installed packages' .pyc, and pytest's rewritten
    plugins (pytest rewrites the asserts of every plugin module it imports, and reads its rewrite
    back from __pycache__ when one is there). Without them, a run with PYTHONDONTWRITEBYTECODE set
    compiles and rewrites in every process: the pytest case counted 3,072 M instructions untraced
    instead of 1,836 M, depending on what earlier runs of the same virtualenv had left
    (docs/benchmarks.md, "The lazy bundle")."""
    env = {key: value for key, value in env.items() if key != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([PYTHON, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def module_count(args: list, cwd: Path, env: dict) -> int:
    """How many modules the case's process has imported when it ends (untraced)."""
    code = "import atexit, sys, os; atexit.register(lambda: os.write(2, b'MODULES %d\\n' % len(sys.modules)))"
    probe = dict(env, PYTHONPATH=str(aside(cwd, "probe")))
    aside(cwd, "probe").mkdir(exist_ok=True)
    (aside(cwd, "probe") / "sitecustomize.py").write_text(code + "\n")
    result = subprocess.run([PYTHON, *args], cwd=cwd, env=probe, capture_output=True, text=True)
    found = re.findall(r"MODULES (\d+)", result.stderr)
    return int(found[-1]) if found else 0


# Times the process's garbage collections, per generation; written at exit to $BENCH_GC_DIR/<pid>:
# each generation's collections and their ns, the objects the collector tracks at exit, and when
# the program ended (the wall clock as this first exit handler runs: the traced side's agent
# registered its own before the shim chained this one, so it runs after, in the exit).
GC_PROBE = """
import atexit, gc, os, time
_gc = [0, 0, [0, 0, 0], [0, 0, 0]]  # start of the collection running, its generation, counts, ns
def _timed(phase, info, clock=time.perf_counter_ns):
    if phase == "start":
        _gc[1] = info["generation"]
        _gc[0] = clock()
    else:
        _gc[3][_gc[1]] += clock() - _gc[0]
        _gc[2][_gc[1]] += 1
gc.callbacks.append(_timed)
@atexit.register
def _write():
    ended = time.time_ns()
    with open(os.path.join(os.environ["BENCH_GC_DIR"], str(os.getpid())), "w") as f:
        f.write(" ".join(map(str, _gc[2] + _gc[3] + [len(gc.get_objects()), ended])))
"""


def gc_probe(cwd: Path) -> Path:
    """The directory of the GC probe's sitecustomize (to put on PYTHONPATH); its results go to gc/
    beside the case's directory."""
    directory = aside(cwd, "gcprobe")
    directory.mkdir(exist_ok=True)
    (directory / "sitecustomize.py").write_text(GC_PROBE)
    aside(cwd, "gc").mkdir(exist_ok=True)
    return directory


def timed(args: list, cwd: Path, env: dict) -> tuple[float, float, tuple, float, int, int]:
    """(wall seconds, CPU seconds of the process: user + system, all its threads, the GC probe's
    figures: collections of generations 0, 1, 2, seconds in each, objects tracked at exit, seconds
    from the program's end to the process's (zeros without the probe), system CPU seconds, voluntary context switches: a thread waiting for the
    GIL, a sleep, minor page faults)."""
    t0 = time.perf_counter()
    child = subprocess.Popen([PYTHON, *args], cwd=cwd, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(child.pid, 0)
    wall, reaped_ns = time.perf_counter() - t0, time.time_ns()
    child.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
    if child.returncode:
        raise subprocess.CalledProcessError(child.returncode, child.args)
    collected = (0,) * 8
    if "BENCH_GC_DIR" in env:
        probe = Path(env["BENCH_GC_DIR"]) / str(child.pid)
        counts = [int(n) for n in probe.read_text().split()]
        collected = (*counts[:3], *(ns / 1e9 for ns in counts[3:6]), counts[6], (reaped_ns - counts[7]) / 1e9)
        probe.unlink()
    return wall, usage.ru_utime + usage.ru_stime, collected, usage.ru_stime, usage.ru_nvcsw, usage.ru_minflt


def measure_case(name: str, pairs: int, cwd: Path, base: dict, bootstraps: dict, gc: bool = False) -> None:
    args = CASES[name]
    modules = module_count(args, cwd, base)
    runs = aside(cwd, "runs")
    walls: dict = {"untraced": [], **{mode: [] for mode in bootstraps}}
    added: dict = {mode: [] for mode in bootstraps}
    added_cpu: dict = {mode: [] for mode in bootstraps}
    added_gc: dict = {mode: [] for mode in bootstraps}
    untraced_gc: list = []
    added_system: dict = {mode: [] for mode in bootstraps}
    switches: dict = {"untraced": [], **{mode: [] for mode in bootstraps}}
    added_faults: dict = {mode: [] for mode in bootstraps}
    accounted: dict = {mode: [] for mode in bootstraps}
    if gc:  # untraced: the probe is the sitecustomize; traced: the shim chains it
        probe = gc_probe(cwd)
        base = dict(base, PYTHONPATH=str(probe), BENCH_GC_DIR=str(aside(cwd, "gc")))
    timed(args, cwd, base)  # warm the page cache
    for i in range(pairs):
        for mode, bootstrap in bootstraps.items():
            run_dir = runs / f"{mode}-{i}"
            env = traced_environ(base, bootstrap, run_dir) | MODE_ENV.get(mode, {})
            if gc:
                env["PYTHONPATH"] = os.pathsep.join((str(bootstrap), str(probe)))
            if i % 2:  # alternate which side goes first
                traced, untraced = timed(args, cwd, env), timed(args, cwd, base)
            else:
                untraced, traced = timed(args, cwd, base), timed(args, cwd, env)
            walls["untraced"].append(untraced[0])
            walls[mode].append(traced[0])
            added[mode].append(traced[0] - untraced[0])
            added_cpu[mode].append(traced[1] - untraced[1])
            added_gc[mode].append([t - u for t, u in zip(traced[2], untraced[2])])
            untraced_gc.append(untraced[2])
            added_system[mode].append(traced[3] - untraced[3])
            switches["untraced"].append(untraced[4])
            switches[mode].append(traced[4])
            added_faults[mode].append(traced[5] - untraced[5])
            accounted[mode].append(agent_overhead_ns(run_dir) / 1e9)
            shutil.rmtree(run_dir, ignore_errors=True)
    baseline = statistics.median(walls["untraced"])
    budget = 0.003 if name == "pass" else min(0.01 * baseline, 0.005 + 2e-6 * modules)
    print(f"\n{name}: python {command_line(args)}  ({modules} modules, {pairs} pairs)")
    print(f"  {'mode':<28}{'median ms':>10}{'added ms':>10}{'ratio':>8}{'agent ms':>10}{'agent/added':>12}"
          f"{'added CPU ms':>14}{'agent/CPU':>10}")
    print(f"  {'untraced':<28}{baseline * 1e3:>10.1f}")
    for mode in bootstraps:
        difference = statistics.median(added[mode])
        cpu = statistics.median(added_cpu[mode])
        agent = statistics.median(accounted[mode])
        agreement = agent / difference if difference > 0 else float("inf")
        print(f"  {mode:<28}{statistics.median(walls[mode]) * 1e3:>10.1f}{difference * 1e3:>+10.2f}"
              f"{statistics.median(walls[mode]) / baseline:>8.3f}{agent * 1e3:>10.2f}{agreement:>12.2f}"
              f"{cpu * 1e3:>+14.2f}{agent / cpu if cpu > 0 else float('inf'):>10.2f}")
        print(f"  {'':<28}system CPU {statistics.median(added_system[mode]) * 1e3:+.2f} ms; voluntary context "
              f"switches {statistics.median(switches[mode]):.0f} (untraced {statistics.median(switches['untraced']):.0f}); "
              f"minor page faults {statistics.median(added_faults[mode]):+.0f}")
        if gc:  # per generation: the paired differences' medians
            total = statistics.median(sum(d[3:6]) for d in added_gc[mode])
            print(f"  {'':<28}garbage collections: {total * 1e3:+.2f} ms (untraced "
                  f"{statistics.median(sum(u[3:6]) for u in untraced_gc) * 1e3:.2f} ms), not in the agent's accounting")
            print(f"  {'':<28}  by generation 0/1/2: collections "
                  + "/".join(f"{statistics.median(d[g] for d in added_gc[mode]):+.0f}" for g in range(3))
                  + " (untraced " + "/".join(f"{statistics.median(u[g] for u in untraced_gc):.0f}" for g in range(3))
                  + "), ms " + "/".join(f"{statistics.median(d[g] for d in added_gc[mode]) * 1e3:+.2f}" for g in range(3, 6))
                  + " (untraced " + "/".join(f"{statistics.median(u[g] for u in untraced_gc) * 1e3:.2f}" for g in range(3, 6))
                  + f"); objects tracked at exit {statistics.median(d[6] for d in added_gc[mode]):+.0f} "
                  f"(untraced {statistics.median(u[6] for u in untraced_gc):.0f})")
            print(f"  {'':<28}after the program's end (the exit: the agent's last flush, the interpreter's "
                  f"teardown): {statistics.median(d[7] for d in added_gc[mode]) * 1e3:+.2f} ms (untraced "
                  f"{statistics.median(u[7] for u in untraced_gc) * 1e3:.2f} ms)")
        low, high = median_interval(added[mode])
        # the verdict only where the interval is on one side of the budget (or of the accounting band)
        verdict = "ok" if high <= budget else "OVER" if low > budget else "unreadable (the interval spans the budget)"
        agrees = ("ok" if agent / 1.5 <= low and high <= agent * 1.5
                  else "OFF" if high < agent / 1.5 or low > agent * 1.5 else "unreadable")
        print(f"  {'':<28}added: 95 % interval of the median {low * 1e3:+.2f} .. {high * 1e3:+.2f} ms "
              f"(pairs' spread: standard deviation {statistics.stdev(added[mode]) * 1e3:.1f} ms)")
        print(f"  {'':<28}budget {budget * 1e3:.2f} ms: {verdict}; accounting within 1.5x: {agrees}")


def median_interval(values: list, resamples: int = 2000) -> tuple:
    """A 95 % bootstrap interval of the median of `values` (the pairs' differences): on a shared
    machine one pair moves by far more than the tracer costs, and the median alone hides how far
    it can be trusted (docs/benchmarks.md, "Can the wall budget be read on this machine?")."""
    draw = random.Random(0)
    medians = sorted(statistics.median(draw.choices(values, k=len(values))) for _ in range(resamples))
    return medians[int(0.025 * resamples)], medians[int(0.975 * resamples) - 1]


def instructions(args: list, cwd: Path, env: dict, cache_sim: bool = False) -> int:
    """Instructions of the whole process; with `cache_sim`, callgrind's cycle estimate instead
    (Ir + 10 x L1 misses + 100 x last-level misses of the simulated caches + 10 x branches its
    simulated predictor mispredicted: conditional and indirect)."""
    out = aside(cwd, "callgrind.out")
    result = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}",
                             *(["--cache-sim=yes", "--branch-sim=yes"] if cache_sim else []), PYTHON, *args],
                            cwd=cwd, env=env, capture_output=True, text=True)
    counts = [int(n) for n in re.search(r"Collected :((?: \d+)+)", result.stderr).group(1).split()]
    if not cache_sim:
        return counts[0]
    ir, _, _, i1mr, d1mr, d1mw, ilmr, dlmr, dlmw, _, bcm, _, bim = counts
    return ir + 10 * (i1mr + d1mr + d1mw) + 100 * (ilmr + dlmr + dlmw) + 10 * (bcm + bim)


def count_case(name: str, cwd: Path, base: dict, bootstraps: dict, deterministic: bool = False,
               cache_sim: bool = False) -> None:
    args = CASES[name]
    modules = module_count(args, cwd, base)
    base = dict(base, PYTHONHASHSEED="0")  # str hashes, so set and dict layouts, the same in every run
    what = "cycles estimated from the simulated caches and branch predictor (callgrind)" if cache_sim \
        else "CPU instructions (callgrind)"
    print(f"\n{name}: python {command_line(args)}  ({modules} modules): {what}, three runs each")
    untraced = [instructions(args, cwd, base, cache_sim) for _ in range(3)]
    print(f"  {'untraced':<28}" + "".join(f"{n / 1e6:>10.1f} M" for n in untraced))
    for i, (mode, bootstrap) in enumerate(bootstraps.items()):
        # A run directory's name as long for every side: named after the side, the base copy's pytest
        # count was 18 M higher than with a name as long as the other's (docs/benchmarks.md).
        run_dir = aside(cwd, "runs") / f"side{i:02d}"
        env = traced_environ(base, bootstrap, run_dir) | MODE_ENV.get(mode, {})
        env["SELFOPT_TRACE_IMPORT_THRESHOLD_MS"] = "100000" if deterministic else str(CALLGRIND_SLOWDOWN)
        env["SELFOPT_TRACE_SMALL_NS"] = str(10**11 if deterministic else 100_000 * CALLGRIND_SLOWDOWN)
        counts = [instructions(args, cwd, env, cache_sim) for _ in range(3)]
        added = statistics.median(counts) - statistics.median(untraced)
        share = 100 * added / statistics.median(untraced)
        print(f"  {mode:<28}" + "".join(f"{n / 1e6:>10.1f} M" for n in counts)
              + f"   added {added / 1e6:+.1f} M, {share:+.2f} %"
              + (f" ({added / modules:,.0f} a module; budget 1 %: {'ok' if share <= 1 else 'OVER'})" if name != "pass" else ""))
        shutil.rmtree(run_dir, ignore_errors=True)


SLOPE_MODULES = 1000


def slopes(cwd: Path, base: dict, bootstraps: dict) -> None:
    """Instructions an import and a summed compile() add, by slopes: a process importing 1,000
    one-line modules in a loop (or running 2,000 compile("int", "<string>", "eval") in an imported
    module) less the same process with none, untraced and traced (imports not recorded, or all
    recorded with threshold 0; every compile a sum). Two runs a side."""
    for n in (0, SLOPE_MODULES):
        folder = cwd / f"slope{n}"
        folder.mkdir()
        for i in range(n):
            (folder / f"mod{i}.py").write_text("x = 1\n")
        (folder / "drive.py").write_text(f"for i in range({n}):\n    __import__('mod%d' % i)\n")
        (folder / "comp.py").write_text(f"import ast\nfor i in range({2 * n}):\n    compile('int', '<string>', 'eval')\n")
        compileall.compile_dir(str(folder), quiet=1)
    base = dict(base, PYTHONHASHSEED="0")
    print(f"\nslopes: instructions per import ({SLOPE_MODULES} modules) and per summed compile ({2 * SLOPE_MODULES} calls)")
    for mode, bootstrap in [("untraced", None), *bootstraps.items()]:
        for what, threshold_ms, code, calls in (("import", "100000", "import drive", SLOPE_MODULES),
                                               ("import recorded", "0", "import drive", SLOPE_MODULES),
                                               ("compile", "100000", "import comp", 2 * SLOPE_MODULES)):
            env = base
            if bootstrap is not None:
                env = traced_environ(base, bootstrap, aside(cwd, "runs") / "slope") | MODE_ENV.get(mode, {})
                env.update(SELFOPT_TRACE_IMPORT_THRESHOLD_MS=threshold_ms, SELFOPT_TRACE_SMALL_NS=str(10**10))
            elif what == "import recorded":
                continue
            per = [(instructions(["-c", code], cwd / f"slope{SLOPE_MODULES}", env)
                    - instructions(["-c", code], cwd / "slope0", env)) / calls for _ in range(2)]
            shutil.rmtree(aside(cwd, "runs"), ignore_errors=True)
            print(f"  {mode:<28}{what:<18}" + "".join(f"{n / 1e3:>10.2f} k" for n in per))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=20)
    parser.add_argument("--case", action="append", choices=sorted(CASES), help="repeatable (default: all)")
    parser.add_argument("--compare", type=Path, action="append",
                        help="another bootstrap directory, measured beside this one (repeatable)")
    parser.add_argument("--instructions", action="store_true", help="count CPU instructions under callgrind instead")
    parser.add_argument("--gc", action="store_true", help="time the garbage collections of both sides too")
    parser.add_argument("--deterministic", action="store_true",
                        help="with --instructions: time thresholds out of reach (no import recorded for its time, "
                             "every small call a sum), so a count does not move with callgrind's speed")
    parser.add_argument("--cache-sim", action="store_true",
                        help="with --instructions: callgrind's cycle estimate from its simulated caches and branch "
                             "predictor instead (cache misses and mispredicted branches weighed in, which "
                             "instructions alone leave out)")
    parser.add_argument("--slopes", action="store_true", help="instructions per import and per summed compile")
    parser.add_argument("--python", default=sys.executable,
                        help="run the cases under this interpreter (only this tree's agent is prepared for it, as `run` "
                             "now prepares it: interpreters.py; a --compare tree as its `run` left it, for its own interpreter)")
    parser.add_argument("--pure-python", action="store_true",
                        help="also this tree's agent without the import wrapper's C twin (importtime.c)")
    args = parser.parse_args()
    global PYTHON
    PYTHON = os.path.abspath(args.python)  # the cases run in directories of their own (a venv's link kept)
    bootstraps = compiled_bootstraps(args.compare, PYTHON)
    if args.pure_python:
        mode = "selfopt-trace, Python wrapper"
        bootstraps[mode] = bootstraps["selfopt-trace"]
        MODE_ENV[mode] = {"SELFOPT_TRACE_PURE_PYTHON": "1"}
    workdir = Path(tempfile.mkdtemp(prefix="bench-imports-"))
    cwd = workdir / "project"
    cwd.mkdir()
    (cwd / "test_one.py").write_text(TEST_FILE)
    aside(cwd, "lazy").mkdir()
    for i in range(1000):
        (aside(cwd, "lazy") / f"lazy{i}.py").write_text(LAZY_MODULE.format(i=i))
    base = clean_environ()
    version = subprocess.run([PYTHON, "-c", "import sys; print(sys.version.split()[0])"], capture_output=True, text=True).stdout.strip()
    print(f"python {version}, load average {os.getloadavg()[0]:.1f}")
    try:
        if args.slopes:
            slopes(cwd, base, bootstraps)
            return
        for name in args.case or list(CASES):
            write_caches(CASES[name], cwd, base)
            if args.instructions:
                count_case(name, cwd, base, bootstraps, args.deterministic, args.cache_sim)
            else:
                measure_case(name, args.pairs, cwd, base, bootstraps, args.gc)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
