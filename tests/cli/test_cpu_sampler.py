"""The CPU sampler (selfopt_trace/watchers/cpu_sampler.py) on real processes: `selfopt-trace run` of
real workloads, real /proc, real files and a real DuckDB; nothing mocked.

"Running" below is on a CPU or runnable and waiting for one (cpu_ns + runqueue_ns): on a loaded
2-core machine a spinning thread spends much of its time in the run queue, and that is not what
tells it from a thread blocked on a sleep or a pipe.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import pytest

from selfopt_trace import runner
from selfopt_trace.bootstrap.selfopt_trace_agent import container
from selfopt_trace import summary as summaries
from selfopt_trace.store import Store
from selfopt_trace.watchers import WatchedRun, cpu_sampler
from selfopt_trace.watchers.cpu_sampler import CpuSampler
from tests.cli.conftest import Cli, clean_environ, python
from tests.conftest import traced_environ

MS = 1_000_000

# Each role prints {"role", "pid", "tid", "from", "to"}: the window (time.time_ns()) it spun or slept.
WORKLOAD = r'''
import json, os, subprocess, sys, threading, time

def emit(record):
    # One write per line: processes share this pipe, and print() under PYTHONUNBUFFERED writes the
    # record and its newline in two, which another process's line can fall between.
    os.write(1, (json.dumps(record) + "\n").encode())

def report(role, start, end):
    emit({"role": role, "pid": os.getpid(), "tid": threading.get_native_id(), "from": start, "to": end})

def spin(role, seconds):
    start = time.time_ns()
    while time.time_ns() - start < seconds * 1e9:
        pass
    report(role, start, time.time_ns())

def sleep(role, seconds):
    time.sleep(0.1)  # not measured: the first reading comes after start-up, whose CPU it may share
    start = time.time_ns()
    time.sleep(seconds)
    report(role, start, time.time_ns())

mode = sys.argv[1]
if mode == "main":
    children = [subprocess.Popen([sys.executable, __file__, m]) for m in ("spin", "sleep", "threads")]
    for child in children:
        child.wait()
    victim = subprocess.Popen([sys.executable, __file__, "spin-forever"], stdout=subprocess.PIPE)
    victim.stdout.readline()  # it spins from now on
    time.sleep(0.4)
    killed = time.time_ns()
    victim.kill()
    victim.wait()
    emit({"role": "victim", "pid": victim.pid, "killed": killed})
elif mode == "spin":
    spin("spinner", 0.3)
elif mode == "sleep":
    sleep("sleeper", 0.3)
elif mode == "threads":
    threads = [threading.Thread(target=spin, args=("spinning thread", 0.3)),
               threading.Thread(target=sleep, args=("sleeping thread", 0.3))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
elif mode == "spin-forever":
    print("spinning", flush=True)
    while True:
        pass
'''


def running_fraction(cli: Cli, run_id: str, pid: int, tid: int, start: int, end: int) -> tuple[float, float]:
    """(share of [start, end] the thread was running, share of the window its samples cover)."""
    [(running, covered)] = cli.query("""
        SELECT sum((cpu_ns + runqueue_ns) * overlap / (end_ns - start_ns)) / sum(overlap), sum(overlap) / ($4 - $3)
        FROM (SELECT *, least(end_ns, $4) - greatest(start_ns, $3) AS overlap FROM cpu_samples
              WHERE run_id = $5 AND pid = $1 AND tid = $2 AND end_ns > $3 AND start_ns < $4)""",
                                     [pid, tid, start, end, run_id])
    return running or 0.0, covered or 0.0


@pytest.fixture(scope="module")
def workload_run(tmp_path_factory) -> tuple[Cli, dict[str, dict]]:
    """tests' WORKLOAD under `selfopt-trace run` (sampler on, default rate), with what each role printed."""
    cli = Cli(tmp_path_factory.mktemp("cpu"))
    script = cli.cwd / "workload.py"
    script.write_text(WORKLOAD)
    done = cli("run", "--run-id", "w1", "--quiet", "--", sys.executable, str(script), "main")
    assert done.returncode == 0, done.stderr.decode()
    roles = {record["role"]: record for record in map(json.loads, done.stdout.decode().splitlines())}
    assert set(roles) == {"spinner", "sleeper", "spinning thread", "sleeping thread", "victim"}, roles
    return cli, roles


@pytest.mark.parametrize("role", ["spinner", "spinning thread"])
def test_a_spinning_process_or_thread_is_seen_running(workload_run, role: str) -> None:
    cli, roles = workload_run
    r = roles[role]
    running, covered = running_fraction(cli, "w1", r["pid"], r["tid"], r["from"], r["to"])
    assert covered >= 0.5, covered  # the readings span most of the 300 ms
    assert running >= 0.5, running


@pytest.mark.parametrize("role", ["sleeper", "sleeping thread"])
def test_a_sleeping_process_or_thread_is_seen_idle(workload_run, role: str) -> None:
    cli, roles = workload_run
    r = roles[role]
    running, covered = running_fraction(cli, "w1", r["pid"], r["tid"], r["from"], r["to"])
    assert covered >= 0.5, covered
    # seen once in CI at 0.996 on a loaded machine, not reproduced since: the readings say why
    assert running <= 0.1, (running, r, cli.query(
        "SELECT start_ns - $3, end_ns - $3, cpu_ns, runqueue_ns, process_start_ns FROM cpu_samples"
        " WHERE run_id = 'w1' AND pid = $1 AND tid = $2 ORDER BY start_ns", [r["pid"], r["tid"], r["from"]]))


def test_the_two_threads_of_one_process_are_told_apart(workload_run) -> None:
    cli, roles = workload_run
    spinning, sleeping = roles["spinning thread"], roles["sleeping thread"]
    assert spinning["pid"] == sleeping["pid"] and spinning["tid"] != sleeping["tid"]
    tids = {tid for (tid,) in cli.query("SELECT DISTINCT tid FROM cpu_samples WHERE run_id = 'w1' AND pid = ?",
                                        [spinning["pid"]])}
    assert {spinning["pid"], spinning["tid"], sleeping["tid"]} <= tids


def test_a_process_killed_with_sigkill_has_its_cpu_time(workload_run) -> None:
    cli, roles = workload_run
    pid = roles["victim"]["pid"]
    [(cpu_ns, runqueue_ns, last_sample_ns)] = cli.query(
        "SELECT cpu_ns, runqueue_ns, last_sample_ns FROM process_cpu WHERE run_id = 'w1' AND pid = ?", [pid])
    [(incomplete,)] = cli.query("SELECT incomplete FROM spans WHERE run_id = 'w1' AND pid = ? AND name = 'process'",
                                [pid])
    assert incomplete  # it had no chance to end its process span
    assert last_sample_ns >= roles["victim"]["killed"] - 250 * MS  # sampled until (a tick or two before) the kill
    assert cpu_ns + runqueue_ns >= 200 * MS and cpu_ns >= 40 * MS  # it was spinning for 400 ms
    done = cli("query", "process_tree", "--run", "w1", "--format", "json")
    [row] = [r for r in json.loads(done.stdout) if r["pid"] == pid]
    assert row["exit_code"] == -9 and row["cpu_ms"] == pytest.approx(cpu_ns / 1e6, abs=0.001)


def test_every_process_of_the_tree_is_sampled_with_its_start_time(workload_run) -> None:
    cli, _ = workload_run
    spans = cli.query("SELECT pid, start_ns FROM spans WHERE run_id = 'w1' AND name = 'process'")
    sampled = dict(cli.query("SELECT pid, process_start_ns FROM process_cpu WHERE run_id = 'w1'"))
    assert len(spans) == 5 and {pid for pid, _ in spans} == set(sampled)
    for pid, span_start in spans:  # /proc counts 10 ms ticks; the span starts when the parent spawned
        assert abs(sampled[pid] - span_start) < 50 * MS, pid


def test_cmd_output_and_exit_status_are_the_same_with_the_sampler_on(cli: Cli) -> None:
    code = "import sys, time; print('out'); print('err', file=sys.stderr); time.sleep(0.2); sys.exit(3)"
    on = cli("run", "--quiet", "--", *python(code))
    off = cli("run", "--quiet", "--no-cpu-sampling", "--", *python(code))

    assert (on.returncode, on.stdout, on.stderr) == (3, b"out\n", b"err\n")
    assert (off.returncode, off.stdout, off.stderr) == (on.returncode, on.stdout, on.stderr)
    sampled, unsampled = cli.run_dirs()[0], cli.run_dirs()[1]  # run ids sort by time
    assert (sampled / "cpu" / "samples.tsv").is_file() and not (unsampled / "cpu").exists()
    counts = dict(cli.query("SELECT run_id, count(*) FROM cpu_samples GROUP BY run_id"))
    assert counts.get(sampled.name, 0) > 0 and unsampled.name not in counts


@pytest.mark.parametrize("rate", ["0", "1001", "fast"])
def test_a_bad_rate_is_a_usage_error_before_cmd_starts(cli: Cli, rate: str) -> None:
    marker = cli.cwd / "ran"
    done = cli("run", "--cpu-rate", rate, "--", *python(f"open({str(marker)!r}, 'w')"))
    assert done.returncode == 2 and "--cpu-rate" in done.stderr.decode()
    assert not marker.exists() and not cli.run_dirs()


# CMD spins 3 s; at 1.5 s it starts a traced child that spins 150 ms (a spinning thread's every
# reading differs, so none is held back and each tick is one interval).
YOUNG_WORKLOAD = r"""
import json, os, subprocess, sys, time

def spin(seconds):
    t = time.time()
    while time.time() - t < seconds:
        pass

if sys.argv[1] == "child":
    spin(0.15)
else:
    spin(1.5)
    child = subprocess.Popen([sys.executable, __file__, "child"])
    child.wait()
    with open(sys.argv[1], "w") as out:  # a file: stdout is CMD's and the run's to share
        json.dump({"cmd": os.getpid(), "child": child.pid}, out)
    spin(1.5)
"""


def intervals_ms(cli: Cli, run_id: str, pid: int, after_s: float, before_s: float) -> list[float]:
    """Lengths (ms) of the main thread's intervals that start between `after_s` and `before_s` after
    the process started, the first one (from the thread's start, in clock ticks) left out."""
    rows = cli.query("""
        SELECT (end_ns - start_ns) / 1e6 FROM cpu_samples
        WHERE run_id = $1 AND pid = $2 AND tid = $2
          AND start_ns > (SELECT min(start_ns) FROM cpu_samples WHERE run_id = $1 AND pid = $2 AND tid = $2)
          AND start_ns >= process_start_ns + $3 AND start_ns < process_start_ns + $4
        ORDER BY start_ns""", [run_id, pid, int(after_s * 1e9), int(before_s * 1e9)])
    return [length for (length,) in rows]


@pytest.fixture(scope="module")
def young_run(tmp_path_factory) -> tuple[Cli, int, int]:
    """YOUNG_WORKLOAD under `selfopt-trace run` at the default rate: (cli, CMD's pid, the child's pid)."""
    cli = Cli(tmp_path_factory.mktemp("young"))
    script = cli.cwd / "young.py"
    script.write_text(YOUNG_WORKLOAD)
    pids_file = cli.cwd / "pids.json"
    done = cli("run", "--run-id", "y", "--quiet", "--", sys.executable, str(script), str(pids_file))
    assert done.returncode == 0, done.stderr.decode()
    pids = json.loads(pids_file.read_text())
    return cli, pids["cmd"], pids["child"]


def test_a_short_lived_child_is_read_every_10_ms(young_run) -> None:
    # CMD is past its first second when the child starts: only the child is read between full ticks.
    cli, _, child = young_run
    lengths = intervals_ms(cli, "y", child, 0, 10)
    assert len(lengths) >= 5, lengths  # 150 ms of spinning, found at the first full tick (<= 50 ms)
    assert 7 <= statistics.median(lengths) <= 15, lengths


def test_a_process_is_read_every_10_ms_at_first_and_every_50_ms_later(young_run) -> None:
    cli, cmd, _ = young_run
    young, old = intervals_ms(cli, "y", cmd, 0, 0.9), intervals_ms(cli, "y", cmd, 1.1, 10)
    assert len(young) >= 20 and 7 <= statistics.median(young) <= 15, young
    assert len(old) >= 20 and 40 <= statistics.median(old) <= 60, old  # the child's young ticks read the child only


@pytest.mark.parametrize(("rate", "young_ms", "old_ms"), [("5", 10, 200), ("200", 5, 5)])
def test_the_rate_sets_the_time_between_readings(cli: Cli, rate: str, young_ms: float, old_ms: float) -> None:
    # --cpu-rate sets the rate of a thread past its first second; young threads are read at
    # YOUNG_RATE_HZ (100), or at the chosen rate when it is faster.
    code = "import time\nt = time.time()\nwhile time.time() - t < 2.0: pass"
    done = cli("run", "--quiet", "--run-id", "r", "--cpu-rate", rate, "--", *python(code))
    assert done.returncode == 0, done.stderr
    [(pid,)] = cli.query("SELECT pid FROM spans WHERE run_id = 'r' AND name = 'process'")
    young, old = intervals_ms(cli, "r", pid, 0, 0.9), intervals_ms(cli, "r", pid, 1.1, 10)
    # A busy machine delays ticks (a late one is skipped, never made up: longer intervals) and a
    # tick a little late shortens the next interval: the rate shows in the intervals no delay
    # touched, the lower quartile, while the median only must not drift far.
    for lengths, period_ms in ((young, young_ms), (old, old_ms)):
        assert 0.7 * period_ms <= statistics.quantiles(lengths, n=4)[0] <= 1.3 * period_ms, lengths
        assert statistics.median(lengths) <= 2.5 * period_ms, lengths


def test_a_new_process_is_read_as_its_span_file_appears(cli: Cli) -> None:
    # At 1 Hz a full tick (which lists spans/) rarely falls in a 0.1 s child's life: each child is
    # found by inotify as its agent creates its span file (the end of the agent's start-up), and
    # read then, its first interval its start-up.
    code = ("import subprocess, sys\n"
            "for _ in range(6): subprocess.run([sys.executable, '-c', 'import time; time.sleep(0.1)'])")
    done = cli("run", "--quiet", "--run-id", "found", "--cpu-rate", "1", "--", *python(code))
    assert done.returncode == 0, done.stderr
    rows = cli.query("""
        SELECT p.pid, (min(c.end_ns) - any_value(s.end_ns)) / 1e6
        FROM spans AS p
        JOIN spans AS s ON s.run_id = p.run_id AND s.parent_span_id = p.span_id AND s.name = 'interpreter.startup'
        LEFT JOIN cpu_samples AS c ON c.run_id = p.run_id AND c.pid = p.pid AND c.tid = p.pid
        WHERE p.run_id = 'found' AND p.name = 'process' AND p.parent_span_id IS NOT NULL
          AND p.pid IN (SELECT pid FROM spans WHERE run_id = 'found' AND name = 'process' AND attributes LIKE '%sleep%')
        GROUP BY p.pid""")
    assert len(rows) == 6, rows
    delays = [delay for _, delay in rows]
    assert None not in delays, rows  # every child read
    assert statistics.median(delays) <= 100, delays  # a full tick would have taken up to 1,000 ms


def test_a_thread_waiting_for_a_cpu_is_seen_running_all_along(cli: Cli) -> None:
    # Three untraced hogs beside CMD on this machine's cores: CMD spins, so it is on a CPU or queued
    # for one all its life. The kernel counts a queued stretch when the thread next gets a CPU (a
    # reading shows nothing, the next one tens of ms at once): no interval may lose that lump.
    hogs = [subprocess.Popen(python("while True: pass")) for _ in range(3)]
    try:
        code = "import time\nt = time.time()\nwhile time.time() - t < 1.5: pass"
        done = cli("run", "--quiet", "--run-id", "busy", "--", *python(code))
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    assert done.returncode == 0, done.stderr
    [(pid,)] = cli.query("SELECT pid FROM spans WHERE run_id = 'busy' AND name = 'process'")
    [(running, sampled, queued)] = cli.query(
        "SELECT sum(cpu_ns + runqueue_ns), max(end_ns) - min(start_ns), sum(runqueue_ns) FROM cpu_samples"
        " WHERE run_id = 'busy' AND pid = $1 AND tid = $1", [pid])
    assert queued > 0.1 * sampled  # the hogs did make it wait
    assert running >= 0.95 * sampled, (running / sampled, queued / sampled)


def test_without_proc_the_run_gets_a_diagnostic_and_a_normal_summary(tmp_path: Path, capfd) -> None:
    fake_proc = tmp_path / "proc"  # exists, holds no process
    fake_proc.mkdir()
    options = runner.RunOptions(command=[sys.executable, "-c", "print('hello')"], out_dir=tmp_path / "runs",
                                db_path=tmp_path / "traces.duckdb")
    options.out_dir.mkdir()
    record = runner.new_record(options, "nop", None, traced=True)

    runner.run_once(record, options, clean_environ(), [CpuSampler(proc_root=fake_proc)])

    assert (record.returncode, record.notes) == (0, [])
    assert capfd.readouterr().out == "hello\n"
    with Store(options.db_path) as store:
        loaded = store.load_run(record.run_dir)
        result = summaries.summarize(store, "nop")
        _, rows = store.sql("SELECT source_file, code, message FROM diagnostics WHERE run_id = 'nop'")
    assert (loaded.cpu_samples, loaded.warnings) == (0, [])
    assert rows == [("cpu/samples.tsv", "cpu.unavailable",
                     f"cannot read {fake_proc}/{record.pid}/task: No such file or directory")]
    assert (result.exit_code, result.processes, result.diagnostics) == (0, 1, 1)


# ---------------------------------------------------------------------------------------------
# The sampler driven directly, as `run` drives it.


def sleeper() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE)


def finish(*children: subprocess.Popen) -> None:
    for child in children:
        child.stdin.close()
        child.wait(timeout=30)


def sampled_pids(run_dir: Path) -> set[int]:
    lines = (run_dir / "cpu" / "samples.tsv").read_text().splitlines()[1:]
    return {int(line.split("\t")[2]) for line in lines if line.startswith("C\t")}


def span_file(run_dir: Path, pid: int, header_ns: int, name: str, resource: dict | None = None) -> None:
    header = {"format": "selfopt-trace/spans", "version": 1, "run_id": run_dir.name, "pid": pid,
              "resource": resource or {}}
    (run_dir / "spans" / f"{pid}-{name}.spans").write_text(f"H\t\t\t\t\t\t\t{header_ns}\t\t\t{json.dumps(header)}\t.\n")


@contextmanager
def sampling_beside_a_sleeper(tmp_path: Path) -> Iterator[tuple[Path, int, int, int]]:
    """The sampler as `run` starts it (CMD a sleeper), and another sleeper for the test's span files:
    (run directory, CMD's pid, the other's pid, when the run started)."""
    run_dir = tmp_path / "run"
    (run_dir / "spans").mkdir(parents=True)
    before = time.time_ns()
    cmd, other = sleeper(), sleeper()
    time.sleep(0.1)
    sampler = CpuSampler()
    sampler.start(WatchedRun("run", run_dir, cmd.pid, before))
    try:
        yield run_dir, cmd.pid, other.pid, before
    finally:
        assert sampler.stop() == []
        finish(cmd, other)


def test_a_span_file_older_than_its_pids_process_is_not_followed(tmp_path: Path) -> None:
    # The pid-reuse guard on real /proc data: a span file whose header was written before the live
    # process with its pid started belongs to an earlier process with that pid.
    with sampling_beside_a_sleeper(tmp_path) as (run_dir, cmd, other, before):
        span_file(run_dir, other, before - 1_000_000_000, "earlier")
        time.sleep(0.7)  # past a flush
        assert other not in sampled_pids(run_dir) and cmd in sampled_pids(run_dir)
        span_file(run_dir, other, time.time_ns(), "its-own")
        time.sleep(0.3)
    assert other in sampled_pids(run_dir)


def test_a_span_file_of_another_container_s_process_is_not_followed(tmp_path: Path) -> None:
    # A container's processes write their own namespace's pids (its server is pid 1): here those are
    # other processes (pid 1, init, read as the container's server made it idle). Its header's
    # resource names its container: not ours, so not followed; a file of this container's is.
    with sampling_beside_a_sleeper(tmp_path) as (run_dir, cmd, other, _):
        span_file(run_dir, other, time.time_ns(), "in-a-container", {"container.id": "c" * 64})
        span_file(run_dir, 1, time.time_ns(), "its-pid-1", {"container.id": "c" * 64})
        time.sleep(0.7)  # past a flush
        assert not {other, 1} & sampled_pids(run_dir) and cmd in sampled_pids(run_dir)
        own = container.passed_on().partition("\t")[2]  # (where `run` itself runs in a container)
        span_file(run_dir, other, time.time_ns(), "ours", {"container.id": own} if own else {})
        time.sleep(0.3)
    assert other in sampled_pids(run_dir)


def test_a_reused_pid_is_another_process(tmp_path: Path) -> None:
    # Force the reuse: the kernel gives the next process ns_last_pid + 1 (root only).
    run_dir = tmp_path / "run"
    (run_dir / "spans").mkdir(parents=True)
    env = traced_environ(run_dir)
    spin = "import time\nt = time.time()\nwhile time.time() - t < 0.15: pass"
    cmd = sleeper()
    sampler = CpuSampler()
    sampler.start(WatchedRun("run", run_dir, cmd.pid, time.time_ns()))
    try:
        first = subprocess.Popen([sys.executable, "-c", spin], env=env)
        first.wait()
        for _ in range(20):
            try:
                with open("/proc/sys/kernel/ns_last_pid", "w") as stream:
                    stream.write(str(first.pid - 1))
            except OSError as exc:
                pytest.skip(f"cannot choose the next pid: {exc}")
            second = subprocess.Popen([sys.executable, "-c", spin], env=env)
            second.wait()
            if second.pid == first.pid:
                break
            time.sleep(0.05)  # another process took the pid first: again
        else:
            pytest.skip("other processes took the pid 20 times")
        time.sleep(0.1)
    finally:
        assert sampler.stop() == []
        finish(cmd)
    with Store(tmp_path / "traces.duckdb") as store:
        store.load_run(run_dir)
        _, processes = store.sql("SELECT process_start_ns, cpu_ns FROM process_cpu WHERE pid = ? ORDER BY 1",
                                 [first.pid])
        _, spans = store.sql("SELECT s.start_ns, c.process_start_ns FROM spans s"
                             " JOIN process_span_cpu('run') c USING (span_id) WHERE s.pid = ? ORDER BY 1", [first.pid])
    assert len(processes) == 2 and processes[0][0] < processes[1][0] and all(cpu > 0 for _, cpu in processes)
    assert [start for _, start in spans] == [start for start, _ in processes]  # each span with its own process


def test_stop_takes_a_last_reading_and_returns_at_once(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "spans").mkdir(parents=True)
    cmd = sleeper()
    sampler = CpuSampler()
    sampler.start(WatchedRun("run", run_dir, cmd.pid, time.time_ns()))
    time.sleep(1.2)
    written = (run_dir / "cpu" / "samples.tsv").read_text()  # flushed while sampling: a killed run keeps it
    assert written.startswith(f"#selfopt-trace/cpu {cpu_sampler.FORMAT_VERSION}\t") and "\nC\t" in written
    before = time.time_ns()
    started = time.perf_counter()
    notes = sampler.stop()
    elapsed = time.perf_counter() - started
    finish(cmd)
    assert notes == [] and elapsed < 0.1
    last = max(int(line.split("\t")[1]) for line in (run_dir / "cpu" / "samples.tsv").read_text().splitlines()
               if line.startswith("C\t"))
    assert last >= before  # the held-back reading of the idle process, taken at stop
    assert not [fd for fd in os.listdir("/proc/self/fd") if "/proc/" in _target(fd)]


def _target(fd: str) -> str:
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def test_past_its_descriptor_budget_the_sampler_says_what_it_left_out(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    (run_dir / "spans").mkdir(parents=True)
    cmd, other = sleeper(), sleeper()
    sampler = CpuSampler(fd_budget=3)  # two task directories and one thread: one of the two is left out
    sampler.start(WatchedRun("run", run_dir, cmd.pid, time.time_ns()))
    try:
        span_file(run_dir, other.pid, time.time_ns(), "other")
        time.sleep(0.3)
    finally:
        notes = sampler.stop()
        finish(cmd, other)
    assert notes == ["cpu sampler: 1 threads or processes not sampled: its budget of 3 file descriptors was "
                     "used up (ulimit -n)"]
    lines = (run_dir / "cpu" / "samples.tsv").read_text().splitlines()
    assert [line.split("\t")[cpu_sampler.FIELDS.index("name")] for line in lines if line.startswith("D\t")] == ["cpu.partial"]
    assert len(sampled_pids(run_dir)) == 1 and sampled_pids(run_dir) <= {cmd.pid, other.pid}
