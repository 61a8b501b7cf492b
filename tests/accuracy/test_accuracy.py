"""Numbers you can trust: breakdown, critical_path, subprocess and roundtrip against ground truth.

Each case runs a workload (workload/) under `selfopt-trace run`. Every process of it measures its
own steps with its own clocks (workload/truth.py: the wall clock, the thread's CPU clock and its
time queued for a CPU, read around each step, and every ms of a spin), so the truth never comes
from the tracer: not its spans, not its CPU sampler. ground_truth.py turns those measurements into
the spans a perfect tracer would have recorded and CPU samples from the threads' own clocks;
tests/queries/reference.py (the breakdown's rule in plain Python) and ground_truth.critical_path
(critical_path.sql's rule) compute what the queries must answer from them. Every figure must match
within 5 % or 2 ms, whichever is larger. A test that finds a figure off has its case measured
again alone, at most five times (Measurements): a preemption between a span's edge and the
program's own clock reading can move a few ms across that edge in one run; a systematic error is
off in every run.

What is compared, per case: every breakdown category, wall and busy, and the total; the same
breakdown with the sampler's CPU samples replaced by the threads' own clock readings (the spans and
the rule alone, without the sampler); the critical path's time by process and category (self
times: they add up to the wall time) and the on-path time of the spans that matter (serialization,
HTTP calls and the server spans under them, waits, threads, phases, each process), with no process
nobody waits on ever on the path; the `subprocess` query per command (count, total, spawn within
the spawning call, start-up, imports, run, teardown, p50, max, and CPU against the kernel's count
for reaped children); `roundtrip` where there are HTTP calls; and the CPU sampler itself against
a spinning and a sleeping thread's own clocks. The precondition test checks that each workload did
what its figures assume (the injected costs took their time, the helper stayed alive and idle, the
pool's workers were ready before anyone waited on them, the child outlived its phase).

The cases, and what each proves:

- sequential: start-up, imports, a serialization that sleeps in json's `default` hook, three POSTs
  through a proxy adding 25 ms to a traced service (a run of its own) sleeping 40 ms, three
  children run one after the other (each imports a module that spins 35 ms, spins 10 ms and
  sleeps 15 ms): every category, spawn -> wait -> exit of each child, HTTP client vs server time.
- threads: the same POSTs at once from a thread pool, each future waited for: waits on tasks,
  overlapping requests shared, never counted twice; the pool's idle workers take nothing.
- parallel: three children started before any is waited for: a wait on one child while the
  others run; children running at once share the instant.
- idle_helper (a): a helper process started first and blocked on a pipe until the end takes
  nothing from the known work (a CPU phase, a serialization, a sleep: an untraced wait).
- server_first (b): an HTTP server child started first and stopped last; a payload of a few MB
  through json.dumps and POSTed to it (the handler decodes it and sleeps), then two children: the
  serialization, the HTTP call and the children get their full time, the idle server none, and
  the critical path goes through them, not through the server.
- pool (c): a multiprocessing Pool (spawn, so with its resource tracker) mapping tasks of known CPU
  time onto two workers: the wait on the pool goes to the workers (running while they run a task,
  an untraced wait while one idles), the tracker takes nothing and is never on the path.
- spin_sleep (d): two threads, one spinning and one sleeping, joined in turn: own work while the
  spinner is waited on, an untraced wait for the rest of the sleep.
- outlive (e): a phase starts a child and returns; the parent works on the CPU, then waits: the
  child counts only from the wait on, and the critical path goes through the parent's work.
- streamed (f): the parent reads a child's output until EOF (no hook sees a pipe's read), then
  waits: the reads are a wait on the child (the spawning span of a thread that idled until the
  reap), not the parent's untraced waits.
- polled (g): the parent polls a child and sleeps 20 ms after each poll that finds it running: the
  sleeps are a wait on the child (its start-up, imports, work and sleep), not the parent's sleeps.
- collected (h), with SELFOPT_TRACE_GC=1: two full collections over 400,000 lists, one in the main
  thread, one in a thread it joins: `garbage collection` gets their time, taken from own work and
  from the thread waited on.

ACCURACY_FIGURES=FILE appends every compared pair to FILE (JSON lines): docs/queries.md's
"Accuracy" gives the worst errors measured that way over repeated runs. To weigh a change to the
loader or the queries on the same readings rather than on new, noisy runs: ACCURACY_KEEP=DIR keeps
the module's first measurement (the run directories and the truths, not the stores) in DIR, and
ACCURACY_REPLAY=DIR loads such a measurement into new stores in place of running the workloads (no
case is measured again: a figure off fails).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import statistics
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from selfopt_trace.queries import run_query
from selfopt_trace.store import Store
from tests.accuracy import ground_truth
from tests.accuracy.ground_truth import TRACE, OnPath, Truth
from tests.accuracy.proxy import DelayProxy
from tests.cli.conftest import clean_environ
from tests.conftest import traced_environ
from tests.queries import reference

WORKLOAD = Path(__file__).resolve().parent / "workload"
SERVER_MS, PROXY_MS, IMPORT_MS, SLOW_OBJECT_MS = 40, 25, 35, 6
COSTS = {"ACCURACY_IMPORT_MS": str(IMPORT_MS), "ACCURACY_CHILD_SPIN_MS": "10", "ACCURACY_CHILD_SLEEP_MS": "15",
         "ACCURACY_SLOW_OBJECT_MS": str(SLOW_OBJECT_MS), "ACCURACY_SERVER_MS": str(SERVER_MS),
         "ACCURACY_WORK_MS": "80", "ACCURACY_SLEEP_MS": "120", "ACCURACY_TASK_MS": "40",
         "ACCURACY_PAYLOAD_ITEMS": "40000", "ACCURACY_OUTLIVE_SLEEP_MS": "250", "ACCURACY_POLLED_SPIN_MS": "150",
         "ACCURACY_POLLED_SLEEP_MS": "100", "ACCURACY_HEAP_OBJECTS": "400000"}


@dataclass
class Case:
    script: str
    args: list[str] = field(default_factory=list)  # "{proxy}" is the proxy's port
    targets: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)


CASES = {
    "sequential": Case("cli.py", ["{proxy}", "1", "sequential", "3", "3"]),
    "threads": Case("cli.py", ["{proxy}", "2", "threads", "3", "2"]),
    "parallel": Case("cli.py", ["{proxy}", "3", "parallel", "1", "3"]),
    "idle_helper": Case("idle_helper.py", targets=["phases:work"]),
    "server_first": Case("server_first.py"),
    "pool": Case("pool.py"),
    "spin_sleep": Case("spin_sleep.py"),
    "outlive": Case("outlive.py", targets=["phases:start_child"]),
    "streamed": Case("streamed.py"),
    "polled": Case("polled.py"),
    "collected": Case("collected.py", env={"SELFOPT_TRACE_GC": "1"}),
}


def close_enough(actual: float, truth: float) -> bool:
    return abs(actual - truth) <= max(0.05 * abs(truth), 2.0)


def check(figures: dict[str, tuple[float, float]]) -> None:
    """Every (measured, truth) pair matches; else the message lists them all, the wrong ones marked.

    With ACCURACY_FIGURES=FILE, every pair is also appended to FILE (JSON lines), for measuring the
    agreement over repeated runs (docs/queries.md, "Accuracy")."""
    if os.environ.get("ACCURACY_FIGURES"):
        with open(os.environ["ACCURACY_FIGURES"], "a") as out:
            out.write(json.dumps({"test": os.environ.get("PYTEST_CURRENT_TEST", "").split(" ")[0],
                                  "figures": figures}) + "\n")
    wrong = [name for name, (actual, truth) in figures.items() if not close_enough(actual, truth)]
    assert not wrong, "figures off the truth by more than 5 % and 2 ms:\n" + "\n".join(
        f"{'WRONG' if name in wrong else 'ok':5} {name:50} "
        f"measured {actual:10.3f} ms   truth {truth:10.3f} ms" for name, (actual, truth) in figures.items())


class Measurements:
    """The cases' runs and truths: all measured together first; a case whose test finds a figure off
    is measured again alone (at most RERUNS times a case, ALL_RERUNS in the module) and its tests go
    on with that run: a preemption between a span's edge and the program's own clock reading moves
    a few ms across that edge in one run, a systematic error is off in every run. Beside two CPU
    hogs on this machine's two cores, one run in three to five of a case had a figure off, and a
    module-wide budget measuring every case again was spent before the module ended."""

    RERUNS, ALL_RERUNS = 5, 25

    def __init__(self, tmp_path_factory) -> None:
        self.factory = tmp_path_factory
        self.replayed = os.environ.get("ACCURACY_REPLAY")
        base = tmp_path_factory.mktemp("accuracy")
        if self.replayed:
            first = replay(Path(self.replayed), base, list(CASES))
        else:
            first = measure(base, list(CASES))
            if os.environ.get("ACCURACY_KEEP"):
                keep(base, Path(os.environ["ACCURACY_KEEP"]))
        self.runs: dict[str, dict[str, Any]] = dict.fromkeys(CASES, first)
        self.reruns: dict[str, int] = dict.fromkeys(CASES, 0)

    def of(self, case: str) -> dict[str, Any]:
        """The run of `case`: its store, the store with its threads' own CPU readings, the truth..."""
        return self.runs[case]

    def again(self, case: str) -> bool:
        if self.replayed or self.reruns[case] >= self.RERUNS or sum(self.reruns.values()) >= self.ALL_RERUNS:
            return False
        self.reruns[case] += 1
        replaced = self.runs[case]
        self.runs[case] = measure(self.factory.mktemp("accuracy"), [case])
        if not any(run is replaced for run in self.runs.values()):
            close(replaced)
        return True

    def close(self) -> None:
        for run in {id(run): run for run in self.runs.values()}.values():
            close(run)


def close(run: dict[str, Any]) -> None:
    run["store"].close()
    run["own_cpu"].close()


def retried(test):
    """Run `test(run, case)` on the case's run; when a figure is off, measure the case again and
    retry (Measurements)."""
    @functools.wraps(test)
    def wrapper(accuracy: Measurements, case: str) -> None:
        while True:
            try:
                return test(accuracy.of(case), case)
            except AssertionError:
                if not accuracy.again(case):
                    raise

    return wrapper


@pytest.fixture(scope="module")
def accuracy(tmp_path_factory) -> Measurements:
    measured = Measurements(tmp_path_factory)
    yield measured
    measured.close()


def measure(base: Path, cases: list[str]) -> dict[str, Any]:
    """Run `cases` (the cli.py ones against one traced service behind a delay proxy); load
    everything into one store; read every process's truth."""
    run_workloads(base, cases)
    return load(base, cases)


def run_workloads(base: Path, cases: list[str]) -> None:
    """Each case under `selfopt-trace run` (which loads it into base/home/traces.duckdb), its truth
    in base/CASE-truth; the service's run and truth in base/service-run and base/service-truth."""
    service_truth, service_run = base / "service-truth", base / "service-run"
    service_truth.mkdir()
    service = subprocess.Popen([sys.executable, str(WORKLOAD / "server.py"), str(service_truth), str(SERVER_MS)],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env=traced_environ(service_run, **COSTS))
    home = base / "home"
    truths: dict[str, Path] = {}
    try:
        port = int(service.stdout.readline())
        proxy = DelayProxy(port, PROXY_MS / 1000)
        for name in cases:
            case = CASES[name]
            truths[name] = base / f"{name}-truth"
            truths[name].mkdir()
            targets = [arg for target in case.targets for arg in ("--target", target)]
            done = subprocess.run(
                # every import a span, so that the truth's timed import blocks are all imports for the tracer too
                [sys.executable, "-m", "selfopt_trace", "run", "--run-id", name, "--quiet", "--import-threshold-ms",
                 "0", *targets, "--",
                 sys.executable, str(WORKLOAD / case.script), str(truths[name]),
                 *[arg.replace("{proxy}", str(proxy.port)) for arg in case.args]],
                env=clean_environ(SELFOPT_TRACE_HOME=str(home), **COSTS, **case.env), capture_output=True, timeout=120)
            assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
        proxy.close()
    finally:
        service.communicate(b"", timeout=30)
    assert service.returncode == 0, service.stderr.read() if service.stderr else ""


def load(base: Path, cases: list[str]) -> dict[str, Any]:
    """run_workloads' measurement: the stores (the cases as `run` loaded them, the service's run
    added) and the truths."""
    service_truth, service_run, home = base / "service-truth", base / "service-run", base / "home"
    (server,) = ground_truth.read_truth(service_truth).values()
    store = Store(home / "traces.duckdb")
    store.load_run(service_run)
    # The same runs, their CPU samples replaced by the threads' own CPU clock readings (the truth's).
    own_cpu = Store(base / "own-cpu.duckdb")
    own_cpu.load_run(service_run)
    built, exited = {}, {}
    for name in cases:
        _, rows = store.sql("SELECT start_ns, end_ns, pid FROM runs WHERE run_id = $run_id", {"run_id": name})
        processes = ground_truth.read_truth(base / f"{name}-truth")
        built[name] = ground_truth.build(rows[0][0], processes, server if CASES[name].args else None)
        # when `run` saw CMD, the main process, exit: its interpreter's teardown ends there
        assert rows[0][2] == built[name].main.pid
        exited[name] = built[name].ms(rows[0][1])
        own_cpu.load_run(home / "runs" / name)
        samples = ground_truth.cpu_samples(processes.values())
        own_cpu.sql("DELETE FROM cpu_samples WHERE run_id = $run_id", {"run_id": name})
        own_cpu.sql("INSERT INTO cpu_samples (run_id, pid, tid, start_ns, end_ns, cpu_ns, runqueue_ns) "
                    "SELECT $run_id, unnest($pids), unnest($tids), unnest($starts), unnest($ends), unnest($cpus), "
                    "unnest($queued)",
                    {"run_id": name, "pids": [c.pid for c in samples], "tids": [c.tid for c in samples],
                     "starts": [c.start for c in samples], "ends": [c.end for c in samples],
                     "cpus": [c.cpu for c in samples], "queued": [c.queued for c in samples]})
    return {"store": store, "own_cpu": own_cpu, "truth": built, "exited": exited, "server": server}


def keep(base: Path, kept: Path) -> None:
    """The measurement's files for a replay, without its stores."""
    shutil.copytree(base, kept, ignore=shutil.ignore_patterns("*.duckdb", "*.duckdb.wal"))


def replay(kept: Path, base: Path, cases: list[str]) -> dict[str, Any]:
    """A kept measurement loaded as `run` would load it, by this tree's loader."""
    missing = [name for name in cases if not (kept / "home" / "runs" / name).is_dir()]
    assert not missing, f"{kept} holds no measurement of {', '.join(missing)} (ACCURACY_KEEP makes one)"
    shutil.copytree(kept, base, dirs_exist_ok=True)
    with Store(base / "home" / "traces.duckdb") as store:
        for name in cases:
            store.load_run(base / "home" / "runs" / name)
    return load(base, cases)


def records(store: Store, query: str, case: str, **params: Any) -> list[dict]:
    return run_query(store, query, {"run_id": case, **params}).records()


def sampled(store: Store, case: str, truth: Truth) -> list[reference.CpuSample]:
    """The CPU samples the measured side read its children's reads by, on the truth's clock: the
    truth decides them by the same (its own readings, finer, placed the read's end elsewhere)."""
    _, rows = store.sql("SELECT pid, tid, start_ns, end_ns, cpu_ns + coalesce(runqueue_ns, 0) FROM cpu_samples "
                        "WHERE run_id = $run_id", {"run_id": case})
    return [reference.CpuSample(pid, tid, truth.ms(start), truth.ms(end), used / 1e6) for pid, tid, start, end, used in rows]


# --- the workloads did what the figures assume ------------------------------------------------------

@pytest.mark.parametrize("case", CASES)
def test_the_injected_costs_took_what_they_should(accuracy, case: str) -> None:
    """Else the comparison says nothing: the known costs took (at least) their time, and what the
    case is about happened (the helper idle and alive throughout, the child outliving its phase...)."""
    run = accuracy.of(case)
    truth: Truth = run["truth"][case]
    main = truth.main
    ms = lambda block: (block.end - block.start) / 1e6  # noqa: E731
    cpu = lambda block: (block.end_cpu - block.start_cpu) / 1e6  # noqa: E731
    for process in truth.processes.values():
        for block in process.of("spin"):
            assert cpu(block) >= 0.99 * float(COSTS["ACCURACY_TASK_MS" if block.info.get("task") else
                                                    "ACCURACY_CHILD_SPIN_MS" if process.role == "child" else
                                                    "ACCURACY_WORK_MS"])
        if process.role == "child":
            assert ms(process.one("imports")) >= IMPORT_MS
            assert ms(process.one("sleep")) >= float(COSTS["ACCURACY_CHILD_SLEEP_MS"])
    for served in run["server"].of("served") + [b for p in truth.processes.values() for b in p.of("served")]:
        assert ms(served) >= SERVER_MS
    if CASES[case].args:
        assert ms(main.one("serialization")) >= 5 * SLOW_OBJECT_MS
        for request in main.of("request"):
            assert ms(request) >= SERVER_MS + PROXY_MS
    helpers = [p for p in truth.processes.values() if p.role in ("helper", "server")]
    for helper in helpers:  # started first, stopped last: alive from before the work to the final wait
        final_wait = main.of("wait")[-1]
        assert helper.pid in final_wait.info["pids"]
        assert helper.one("blocked").end >= final_wait.start
    if case == "server_first":
        assert main.one("serialization").info["bytes"] >= 2_000_000
    if case == "pool":
        workers = [p for p in truth.processes.values() if p.role == "worker"]
        # both workers ready (their start-up over) before anyone waits on them; the tracker started
        assert len(workers) == 2 and all(w.first <= main.one("blocked").end for w in workers)
        assert [truth.role(b.info["pid"]) for b in main.of("spawn")] == ["unmeasured", "worker", "worker"]
        # the pool's three threads timed; each polling sleep waits on the one its polls found alive
        assert sorted(b.info["name"] for b in main.of("thread")) == ["results", "tasks", "workers"]
        assert all(len(s.info["threads"]) == 1 for s in main.of("sleep"))
    if case == "spin_sleep":
        spinning, sleeping = main.one("thread", name="spin"), main.one("thread", name="sleep")
        assert cpu(spinning) >= float(COSTS["ACCURACY_WORK_MS"]) and cpu(sleeping) <= 0.1 * ms(sleeping)
    if case == "outlive":
        (child,) = [p for p in truth.processes.values() if p.role == "child"]
        phase, wait = main.one("phase", name="start_child"), main.one("wait")
        assert phase.end < main.one("spin").start and child.last > wait.start
    if case == "streamed":  # the reads began as the child started and ended with it, idle
        (child,) = [p for p in truth.processes.values() if p.role == "child"]
        reading = main.one("read")
        assert reading.start < child.first and child.last < main.one("wait").end
        assert cpu(reading) <= 0.25 * ms(reading)
    if case == "collected":  # two passes over the heap, each long enough to be a span many times over
        assert len(main.of("gc")) == 2 and all(ms(block) >= 5 for block in main.of("gc"))
    if case == "polled":  # polled every 20 ms while it worked and slept; the last poll reaped it
        (child,) = [p for p in truth.processes.values() if p.role == "child"]
        sleeps = main.of("sleep")
        assert len(sleeps) >= 10 and all(s.info["polled"] == [child.pid] for s in sleeps)
        assert sleeps[0].start < child.first and child.last < main.of("wait")[-1].end


@pytest.mark.parametrize("case", CASES)
def test_the_truth_names_what_the_rules_go_by(accuracy, case: str) -> None:
    """The truth's spans are what the tracer records where the breakdown's rules go by a span's name or
    category: a process pool worker's read of its next task (`SimpleQueue.get`, `Queue.get`: a wait on
    the pool takes none of the workers in one while another is not) and a `time.sleep` (a sleep, or a
    wait on what the polls right before it found running). Named `wait`, the pool's worker reads made
    the truth's reference give an idle worker half of a wait on the pool (untraced waits 10-90 ms over
    the tool beside two CPU hogs); its polling sleeps, sleeps, 1-5 ms the tool gave the pool's threads."""
    run = accuracy.of(case)
    truth: Truth = run["truth"][case]
    _, rows = run["store"].sql(
        "SELECT pid, name, category, start_ns, end_ns FROM spans WHERE run_id = $run_id AND "
        "(name IN ('SimpleQueue.get', 'Queue.get') AND category = 'wait' OR name = 'time.sleep')", {"run_id": case})
    pid_of = {f"p{pid}": pid for pid in truth.processes}
    mine = [s for s in truth.spans if s.name in ("SimpleQueue.get", "Queue.get", "time.sleep")
            or (s.category == "wait" and truth.role_of_file.get(s.file) == "worker")]
    for pid, name, category, start, end in rows:
        start, end = truth.ms(start), truth.ms(end)
        # the truth's span of the same call: the one of that process overlapping it most
        overlaps = [(min(end, s.end) - max(start, s.start), s) for s in mine if pid_of.get(s.file) == pid]
        overlap, same = max(overlaps, key=lambda o: o[0], default=(0.0, None))
        if name == "time.sleep" and overlap <= 0:  # a sleep the truth does not time (inside a serialization)
            continue
        assert same is not None and overlap > 0, (name, category, start, end)
        assert (same.name, same.category) == (name, category), (same, start, end)


# --- breakdown ----------------------------------------------------------------------------------------

# Busy figures the truth cannot give, in the pool: the spawned workers' start-up (interpreter, imports,
# multiprocessing's bootstrap) runs before their initializer, the first point they can measure; the
# resource tracker measures nothing; the pool's three threads (workers, tasks, results) are timed as
# whole lives, their pickling and their waits inside multiprocessing's own. Nobody but the main's
# polling sleeps waits on them, and around those the main reads their clocks (the precondition test
# checks that they were timed), so their wall share is known.
UNKNOWN_BUSY = {"pool": ("interpreter start-up", "imports", "child processes' own work", "own work", "serialization",
                         "untraced waits")}


@pytest.mark.parametrize("case", CASES)
@retried
def test_breakdown_matches_the_truth(accuracy, case: str) -> None:
    truth: Truth = accuracy["truth"][case]
    expected = reference.breakdown(truth.spans, TRACE, truth.cpu, exited=accuracy["exited"][case],
                                   read_cpu=sampled(accuracy["store"], case, truth))
    measured = {r["category"]: r for r in records(accuracy["store"], "breakdown", case)}
    figures = {}
    for category in reference.CATEGORIES:
        figures[f"{category} (wall)"] = (measured[category]["wall_ms"], expected[category][0])
        if category not in UNKNOWN_BUSY.get(case, ()):
            figures[f"{category} (busy)"] = (measured[category]["busy_ms"], expected[category][1])
    figures["total"] = (measured["total"]["wall_ms"], accuracy["exited"][case])
    check(figures)


@pytest.mark.parametrize("case", CASES)
@retried
def test_breakdown_with_the_threads_own_cpu_clocks_matches_the_truth(accuracy, case: str) -> None:
    """The same figures, the sampler's CPU samples replaced by the workload's own CPU clock readings:
    what is left is the spans and the rule (the test above adds the sampler)."""
    truth: Truth = accuracy["truth"][case]
    expected = reference.breakdown(truth.spans, TRACE, truth.cpu, exited=accuracy["exited"][case])
    measured = {r["category"]: r for r in records(accuracy["own_cpu"], "breakdown", case)}
    figures = {f"{category} (wall)": (measured[category]["wall_ms"], expected[category][0])
               for category in reference.CATEGORIES}
    check(figures)


# --- critical_path --------------------------------------------------------------------------------------

def path_figures(truth: Truth, measured: list[dict], rows: list[OnPath]) -> dict[str, tuple[float, float]]:
    """The path's time by process role and span category (self times: they add up to the wall time),
    and the on-path time of the spans that matter, each against the truth."""
    figures: dict[str, tuple[float, float]] = {}

    def add(name: str, actual: float, expected: float) -> None:
        a, e = figures.get(name, (0.0, 0.0))
        figures[name] = (a + actual, e + expected)

    for row in measured:
        add(f"self: {truth.role(row['pid'])} {row['category']}", row["self_ms"], 0.0)
    for row in rows:
        add(f"self: {truth.role_of_file[row.span.file]} {row.span.category}", 0.0, row.self_ms)
    key = {"serialization": "serialization", "http": "http", "wait": "wait", "thread": "thread", "phase": "phase"}
    for row in measured:
        if row["category"] in key and not row["span"].strip() == "connect":
            add(f"on path: {truth.role(row['pid'])} {row['category']}", row["on_path_ms"], 0.0)
        if row["category"] == "process":
            add(f"on path: {truth.role(row['pid'])} process", row["on_path_ms"], 0.0)
    for row in rows:
        if row.span.category in key or row.span.category == "process":
            add(f"on path: {truth.role_of_file[row.span.file]} {row.span.category}", 0.0, row.on_path)
    return figures


@pytest.mark.parametrize("case", CASES)
@retried
def test_critical_path_matches_the_truth(accuracy, case: str) -> None:
    truth: Truth = accuracy["truth"][case]
    measured = records(accuracy["store"], "critical_path", case, min_ms=0, limit=1_000_000)
    rows = ground_truth.critical_path(truth.spans, cpu=sampled(accuracy["store"], case, truth))
    figures = path_figures(truth, measured, rows)
    figures["wall"] = (measured[0]["on_path_ms"], truth.ms(truth.main.last))
    # after the main process's last line, until `run` saw it exit: its teardown, the path's last row
    teardown, _ = figures.get("self: main teardown", (0.0, 0.0))
    figures["self: main teardown"] = (teardown, accuracy["exited"][case] - truth.ms(truth.main.last))
    check(figures)
    roles = {truth.role(row["pid"]) for row in measured}
    assert not roles & {"unknown", "unmeasured"}, "a process nobody waits on (the resource tracker?) is on the path"


# --- subprocess -----------------------------------------------------------------------------------------

# A pool worker is a `-c` child, named after its first statement (docs/agent.md, "Process names"): the
# resource tracker, another `-c` child, has a name (and a row) of its own.
SCRIPTS = {"child": "child.py", "helper": "helper.py", "server": "server.py",
           "worker": "python -c from multiprocessing.spawn import spawn_main"}


@pytest.mark.parametrize("case", [name for name in CASES if name != "spin_sleep"])
@retried
def test_subprocess_matches_the_truth(accuracy, case: str) -> None:
    """Per command: children started, their parent-side time (spawn -> reaped) and how it splits,
    and the CPU they used (the kernel's count for reaped children, read by the parent)."""
    truth: Truth = accuracy["truth"][case]
    main = truth.main
    rows = {r["command"]: r for r in records(accuracy["store"], "subprocess", case)}
    spawns = {b.info["pid"]: b for b in main.of("spawn")}
    waits = {pid: b for b in main.of("wait") if b.info.get("reaps", True)  # the last: the one that reaped
             for pid in b.info.get("pids", ())}
    figures = {}
    for role, command in SCRIPTS.items():
        children = [p for p in truth.processes.values() if p.role == role]
        if not children:
            continue
        row = rows[command]
        n = len(children)
        assert (row["count"], row["traced"], row["failed"]) == (n, n, 0), command
        totals = [(waits[c.pid].end - spawns[c.pid].start) / 1e6 for c in children]
        # spawn (the call -> the child exists) is the tracer's own mark inside the spawning call: within it
        calls = sum((spawns[c.pid].end - spawns[c.pid].start) / 1e6 for c in children)
        assert 0 <= row["spawn_ms"] <= calls + max(0.05 * calls, 2.0), (command, row["spawn_ms"], calls)
        figures.update({
            f"{command} total": (row["total_ms"], sum(totals)),
            f"{command} teardown": (row["teardown_ms"], sum((waits[c.pid].end - c.last) / 1e6 for c in children)),
            f"{command} p50": (row["p50_ms"], statistics.median(totals)),
            f"{command} max": (row["max_ms"], max(totals)),
            f"{command} cpu": (row["cpu_ms"], sum(waits[c.pid].info["children_cpu"] / 1e6 for c in children)),
        })
        if role != "worker":  # a spawned pool worker measures itself only from its initializer on
            imports = [c.one("imports") for c in children]
            figures.update({
                f"{command} spawn + start-up": (row["spawn_ms"] + row["startup_ms"],
                                                sum((c.first - spawns[c.pid].start) / 1e6 for c in children)),
                f"{command} imports": (row["imports_ms"], sum((b.end - b.start) / 1e6 for b in imports)),
                # run: the rest of the child's life (the query: duration - start-up - imports)
                f"{command} run": (row["run_ms"], sum((c.last - c.first - (b.end - b.start)) / 1e6
                                                      for c, b in zip(children, imports))),
            })
    if figures:
        total = rows["TOTAL"]
        # the resource tracker (a `-c` child with a row of its own): started by the main, never reaped by it
        trackers = [(main.last - b.start) / 1e6 for b in main.of("spawn") if truth.role(b.info["pid"]) == "unmeasured"]
        figures["TOTAL total"] = (total["total_ms"], sum(trackers) + sum(
            expected for name, (_, expected) in figures.items() if name.endswith(" total")))
        check(figures)


# --- roundtrip ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("case", ["sequential", "threads", "parallel", "server_first"])
@retried
def test_roundtrip_matches_the_truth(accuracy, case: str) -> None:
    truth: Truth = accuracy["truth"][case]
    requests = truth.main.of("request")
    served_blocks = {b.info["path"]: b for p in [accuracy["server"], *truth.processes.values()] for b in p.of("served")}
    (row,) = records(accuracy["store"], "roundtrip", case)
    durations = [(r.end - r.start) / 1e6 for r in requests]
    served = [(served_blocks[r.info["path"]].end - served_blocks[r.info["path"]].start) / 1e6 for r in requests]
    calls = len(requests)
    route = "/upload" if case == "server_first" else "/items/{id}"
    assert (row["method"], row["route"], row["calls"], row["with_server"]) == ("POST", route, calls, calls)
    assert (row["new_connections"], row["reused_connections"], row["retries"], row["errors"]) == (calls, 0, 0, 0)
    assert row["request_bytes"] == sum(r.info["request_bytes"] for r in requests)
    assert row["response_bytes"] == sum(r.info["response_bytes"] for r in requests)
    check({
        "p50": (row["p50_ms"], statistics.median(durations)),
        "p95": (row["p95_ms"],
                statistics.quantiles(durations, n=20, method="inclusive")[-1] if calls > 1 else durations[0]),
        "max": (row["max_ms"], max(durations)),
        "total": (row["total_ms"], sum(durations)),
        "server": (row["server_ms"], sum(served)),
        "overhead": (row["overhead_ms"], sum(durations) - sum(served)),
    })


# --- the CPU sampler against the threads' own CPU clocks ------------------------------------------------

@pytest.mark.parametrize("case", ["spin_sleep"])
@retried
def test_the_cpu_sampler_sees_what_the_threads_measured(accuracy, case: str) -> None:
    """The spinning thread on the CPU, the sleeping one off it, as their own CPU clocks say: the
    breakdown's on/off-CPU split stands on these samples (the breakdown's truth does not: it uses
    the threads' own clocks, so this is the sampler's own check)."""
    truth: Truth = accuracy["truth"]["spin_sleep"]
    store = accuracy["store"]
    figures, fractions = {}, {}
    for name in ("spin", "sleep"):
        block = truth.main.one("thread", name=name)
        # the thread's span: its own clocks at its start (what the sampler's first reading, from the
        # thread's start, counted before it) and at its end (the rest after the last reading)
        _, spans = store.sql(
            "SELECT attributes FROM spans WHERE run_id = 'spin_sleep' AND name = 'thread' AND pid = $pid"
            "  AND TRY_CAST(attributes->>'thread.id' AS BIGINT) = $tid", {"pid": truth.main.pid, "tid": block.tid})
        clocks = {key.rsplit(".", 1)[1]: value for key, value in json.loads(spans[0][0]).items()
                  if key.startswith("selfopt_trace.thread.")}
        _, rows = store.sql(
            "SELECT sum(cpu_ns * share), sum((cpu_ns + runqueue_ns) * share), sum(cpu_ns), sum(cpu_ns + runqueue_ns),"
            "       sum(least(end_ns, $end) - greatest(start_ns, $start)) "
            "FROM (SELECT *, CASE WHEN start_ns <= $start THEN 1.0"  # the first: from the thread's start in ticks
            "                     ELSE (least(end_ns, $end) - start_ns) / (end_ns - start_ns) END AS share "
            "      FROM cpu_samples WHERE run_id = 'spin_sleep' AND pid = $pid AND tid = $tid "
            "      AND end_ns > $start AND start_ns < $end)",
            {"pid": truth.main.pid, "tid": block.tid, "start": block.start, "end": block.end})
        sampled, running, all_cpu, all_used, covered = (value or 0.0 for value in rows[0])
        sampled -= clocks.get("start_cpu_ns", 0)
        running -= clocks.get("start_cpu_ns", 0) + clocks.get("start_runqueue_ns", 0)
        cpu_tail = max(0, clocks["cpu_ns"] - all_cpu) / 1e6
        running_tail = max(0, clocks["cpu_ns"] + clocks.get("runqueue_ns", 0) - all_used) / 1e6
        sampled, running, covered = sampled / 1e6, running / 1e6, covered / 1e6
        figures[f"{name} thread CPU (samples, then the final reading)"] = (
            sampled + cpu_tail, (block.end_cpu - block.start_cpu) / 1e6)
        figures[f"{name} thread running (CPU + queued)"] = (
            running + running_tail, (block.end_cpu - block.start_cpu + block.end_queued - block.start_queued) / 1e6)
        life = block.end - block.start
        # the sampler alone, over the part of its life its readings cover
        fractions[name] = (sampled / covered if covered else 0.0, (block.end_cpu - block.start_cpu) / life)
    check(figures)
    # On a quiet machine the spinner runs all the time (>= 0.8 of its life on the CPU); beside a CPU
    # hog it gets its share: the sampler must see what the thread's own clock saw, within 0.1.
    assert fractions["spin"][0] >= min(0.8, fractions["spin"][1] - 0.1), fractions
    assert fractions["sleep"][0] <= 0.1, fractions
