"""run --profile for real: py-spy samples attributed to the spans they ran in, queried and drawn."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from selfopt_trace.watchers.profile_samples import SAMPLES_PATH
from selfopt_trace.watchers.profiler import ENV_PYSPY
from tests.cli.conftest import Cli
from tests.profile.conftest import PYSPY, TARGETS, WORKLOAD, needs_pyspy, profiled_run
from tests.report.browser import BROWSER, open_page, screenshot

pytestmark = needs_pyspy
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"
HOT_SHARE = 100 * 0.6 / (0.6 + 0.1 + 0.3)  # each phase: 0.6 s of its hot function, 0.1 s asleep, 0.3 s in select


def hot_frames(cli: Cli, *params: str) -> list[dict]:
    done = cli("query", "hot_frames", "--run", "p1", "--format", "json", *[f"--param={p}" for p in params])
    assert done.returncode == 0, done.stderr.decode()
    return json.loads(done.stdout)


@pytest.mark.parametrize("span, function", [("phase_parent", "hot_parent"), ("phase_child", "hot_child")])
def test_each_span_s_top_frame_is_its_own_hot_function(profiled: Cli, span: str, function: str) -> None:
    rows = hot_frames(profiled, f"span={span}")
    top = rows[0]
    assert (top["span"], top["function"], top["spans"]) == (span, function, 1), rows[:3]
    assert top["file"].endswith("hotmod.py")
    assert abs(top["self_pct"] - HOT_SHARE) <= HOT_SHARE * 0.10, rows[:3]
    assert top["self_samples"] >= 45  # 0.6 s at 100 Hz


def test_a_py_spy_slow_to_start_still_puts_the_hot_functions_in_their_spans(tmp_path: Path) -> None:
    # py-spy's clock starts as it begins, not when starting it returned: one that took 1 s to begin
    # (its start-up on a loaded CI machine: 0.6-1 s once) had every sample 1 s early, each hot
    # function's before its span. Its "Sampling process" line places its clock instead.
    slow = tmp_path / "slow-py-spy"
    slow.write_text(f'#!/bin/sh\nsleep 1\nexec "{PYSPY}" "$@"\n', encoding="utf-8")
    slow.chmod(0o755)
    cli = Cli(tmp_path)
    done = profiled_run(cli, "p1", env={**cli.env(), ENV_PYSPY: str(slow)})
    assert done.returncode == 3, done.stderr.decode()
    for span, function in (("phase_parent", "hot_parent"), ("phase_child", "hot_child")):
        top = hot_frames(cli, f"span={span}")[0]
        assert (top["span"], top["function"]) == (span, function), top
        assert abs(top["self_pct"] - HOT_SHARE) <= HOT_SHARE * 0.10, top
    (message,) = cli.query("SELECT message FROM diagnostics WHERE run_id = 'p1' AND code = 'profile.alignment'")[0]
    moved = re.search(r"(\d+) py-spy start\(s\) placed by when py-spy said it sampled, moved by up to ([\d.]+) ms", message)
    assert moved and int(moved[1]) >= 2 and 900 <= float(moved[2]) <= 1500, message


def test_samples_of_the_child_process_attach_to_the_child_s_spans(profiled: Cli) -> None:
    (child_pid,) = profiled.query("SELECT pid FROM spans WHERE run_id = 'p1' AND name = 'phase_child'")[0]
    rows = profiled.query("""
        SELECT count(*), count(*) FILTER (WHERE s.pid = p.pid), count(*) FILTER (WHERE s.name = 'phase_child')
        FROM samples AS p JOIN spans AS s ON s.run_id = p.run_id AND s.span_id = p.span_id
        WHERE p.run_id = 'p1' AND p.pid = ? AND NOT p.idle""", [child_pid])
    total, same_process, in_phase = rows[0]
    assert total > 0 and same_process == total and in_phase > 0
    unattributed = profiled.query("SELECT count(*) FROM samples WHERE run_id = 'p1' AND span_id IS NULL")[0][0]
    assert unattributed == 0


def test_a_child_that_lives_200_ms_has_samples(profiled: Cli) -> None:
    rows = profiled.query("""
        SELECT s.pid, round(s.duration_ns / 1e6), sum(p.weight)
        FROM spans AS s LEFT JOIN samples AS p ON p.run_id = s.run_id AND p.pid = s.pid AND NOT p.idle
        WHERE s.run_id = 'p1' AND s.name = 'process' AND s.attributes->'process.command_args'->>2 = 'short'
        GROUP BY ALL""")
    assert len(rows) == 1, rows
    pid, lived_ms, samples = rows[0]
    # spin(0.2) at 100 Hz, less py-spy's attach: 5-15 samples on a quiet machine, under one beside
    # other test suites (py-spy's start and attach then take most of the child's life)
    assert lived_ms < 400 and samples and samples > 0, rows


def test_the_alignment_with_the_spans_is_checked_and_reported(profiled: Cli) -> None:
    (message,) = profiled.query("SELECT message FROM diagnostics WHERE run_id = 'p1' AND code = 'profile.alignment'")[0]
    # a sample outside its function's span or its process's life is one the clock alignment cannot
    # place: by no more than the anchor's uncertainty and one sampling interval
    known_within = float(re.search(r"known within ([\d.]+) ms", message)[1])
    interval = float(re.search(r"sampling interval ([\d.]+) ms", message)[1])
    assert re.search(r"\d+ samples ran in 2 function\(s\) with spans of their own", message), message
    for worst in re.findall(r"outside, by at most ([\d.]+) ms", message):
        assert float(worst) <= known_within + interval, message


def test_idle_samples_are_kept_and_flagged_with_idle(profiled: Cli) -> None:
    # the phase's samples: its own and those of the spans under it (its time.sleep)
    idle, busy = profiled.query("""
        SELECT sum(p.duration_ns) FILTER (WHERE p.idle), sum(p.duration_ns) FILTER (WHERE NOT p.idle)
        FROM samples AS p JOIN spans AS s ON s.run_id = p.run_id AND s.span_id = p.span_id
        LEFT JOIN spans AS parent ON parent.run_id = s.run_id AND parent.span_id = s.parent_span_id
        WHERE p.run_id = 'p1' AND 'phase_parent' IN (s.name, parent.name)""")[0]
    assert abs(idle / 1e9 - 0.4) < 0.08 and abs(busy / 1e9 - 0.6) < 0.08, (idle, busy)  # a sample or two on a loaded machine


def test_no_frame_is_the_agent_s_and_a_hooked_sleep_shows_under_the_line_that_called_it(profiled: Cli) -> None:
    assert profiled.query("SELECT count(*) FROM frames WHERE file LIKE '%selfopt_trace_agent%'")[0][0] == 0
    # the phases' sleeps (time.sleep, through the agent's wrapper), idle, on the phase functions' lines
    rows = profiled.query("""
        SELECT k.frames[-1].function, sum(p.duration_ns)
        FROM samples AS p JOIN spans AS s ON s.run_id = p.run_id AND s.span_id = p.span_id
        JOIN stacks AS k ON k.run_id = p.run_id AND k.stack_id = p.stack_id
        WHERE p.run_id = 'p1' AND p.idle AND s.name = 'time.sleep' GROUP BY ALL""")
    # (and the workload's own wait for its py-spy before each phase, where py-spy saw it)
    assert {function for function, _ in rows} <= {"phase_parent", "phase_child", "wait_for_profiler"}, rows
    assert {"phase_parent", "phase_child"} <= {function for function, _ in rows}, rows
    # Both phases' 0.1 s, less what a loaded py-spy loses: a sample taken late leaves the gap before
    # it to the stack sampled before (the hot loop's last slice ran 49-60 ms into the sleep beside
    # four CPU hogs, and in CI)
    phases = sum(ns for function, ns in rows if function != "wait_for_profiler")
    assert phases / 1e9 > 0.08, rows


def test_the_summary_points_a_profiled_run_s_untraced_waits_at_its_idle_frames(profiled: Cli) -> None:
    from selfopt_trace import summary, summary_notes
    from selfopt_trace.store import Store

    with Store(profiled.db, read_only=True) as store:
        result = summary.summarize(store, "p1")
    share = result.by_category[summary.UNTRACED_WAITS] / result.wall_ns  # the phases' selects: 0.6 s of ~2.2 s
    assert share >= summary_notes.NOTE_SHARE, result.by_category
    assert [note for note in result.notes if note.startswith("untraced waits are")
            and note.endswith("`selfopt-trace query waits --run p1`")], result.notes



def test_the_summary_names_a_profiled_run_s_hottest_line(profiled: Cli) -> None:
    """The phases' hot loops are most of the CPU time outside any recorded call: the note names the
    line, from the samples (hot_frames' first row of the span with the most)."""
    from selfopt_trace import summary
    from selfopt_trace.store import Store

    with Store(profiled.db, read_only=True) as store:
        result = summary.summarize(store, "p1")
    (note,) = [note for note in result.notes if note.startswith("code on the CPU outside any recorded call is")]
    # the two hot loops run as long: either may have more samples
    assert re.search(r"; the hottest line: hot_(parent|child) at \S*hotmod\.py:\d+, .* \(in `phase_\1` spans\)", note), note
    assert note.endswith("`selfopt-trace query hot_frames --run p1`"), note

def test_waits_finds_the_lines_where_the_critical_path_waited_on_nothing_traced(profiled: Cli) -> None:
    # each phase waits 0.3 s in select after its hot loop and its sleep: in the parent, and in the
    # child while the parent waits on it (a wait the path follows into the child, so not a wait on
    # nothing); the sleeps are the breakdown's `sleeps`, not here
    done = profiled("query", "waits", "--run", "p1", "--format", "json")
    assert done.returncode == 0, done.stderr.decode()
    rows = json.loads(done.stdout)
    # A row a line: a phase's select, and now and then one sample at the end of its sleep the clock
    # alignment puts just past the sleep's span (its line above). Besides, outside the phases, the
    # workload's own wait for its py-spy before each (its reads of /proc), where py-spy saw it. A
    # loaded py-spy puts the odd sample elsewhere in a phase (CI: one at main.py's call of it, as the
    # phase's span began), for no longer than the gaps its lag leaves (as for the hooked sleeps above).
    expected = {("phase_parent", "phase_parent"), ("phase_child", "phase_child")}
    phases: dict = {}
    for row in rows:
        if row["span"] in ("phase_parent", "phase_child"):
            phases.setdefault((row["span"], row["function"]), []).append(row)
    assert set(phases) >= expected, rows
    assert sum(row["waited_ms"] for key in set(phases) - expected for row in phases.pop(key)) < 60, rows
    for lines in phases.values():
        for row in lines:
            assert row["file"].endswith("hotmod.py") and row["called_from"] == "<module>"  # main.py calls it
        # as test_idle_samples_are_kept_and_flagged_with_idle
        assert abs(sum(row["waited_ms"] for row in lines) - 300) < 80, lines
    from selfopt_trace.report.data import collect
    from selfopt_trace.store import Store

    with Store(profiled.db, read_only=True) as store:  # the report has them too
        (table,) = [table for table in collect(store, "p1")["tables"] if table["query"] == "waits"]
    assert {(row[0], row[2]) for row in table["rows"]} >= set(phases)


@pytest.mark.parametrize("name", ["waits", "hot_frames"])
def test_the_sample_queries_give_their_rows_planned_without_the_optimizer(profiled: Cli, name: str) -> None:
    """run_query plans a shipped query without DuckDB's optimizer on a small store, as
    tests/queries/test_named_queries.py checks on a run without samples."""
    from selfopt_trace.queries import get_query
    from selfopt_trace.store import Store

    query = get_query(name)
    bound = query.bind({"run_id": "p1"})
    with Store(profiled.db, read_only=True) as store:
        assert store.is_small()
        with store.planned_unoptimized(True):
            unoptimized = store.sql(query.sql, bound)[1]
        assert unoptimized and unoptimized == store.sql(query.sql, bound)[1]


def test_flame_svg_renders_in_chromium_with_the_hot_function(profiled: Cli, tmp_path: Path) -> None:
    if BROWSER is None:
        pytest.skip("no Chromium on this machine: install it with scripts/browser-test-setup.sh")
    out = tmp_path / "flame.svg"
    done = profiled("flame", "p1", "--span", "phase_parent", "-o", str(out))
    assert done.returncode == 0, done.stderr.decode()
    page = open_page(out, tmp_path / "chromium")
    assert page.console == []
    assert 'data-rendered="' in page.dom and ">hot_parent (hotmod.py)</text>" in page.dom
    screenshot(out, ARTIFACTS / "flame.png", tmp_path / "chromium")


def test_flame_speedscope_json_holds_the_samples(profiled: Cli, tmp_path: Path) -> None:
    out = tmp_path / "flame.json"
    assert profiled("flame", "p1", "--category", "phase", "-o", str(out)).returncode == 0
    document = json.loads(out.read_text())
    (profile,) = document["profiles"]
    names = [frame["name"] for frame in document["shared"]["frames"]]
    assert profile["type"] == "sampled" and len(profile["samples"]) == len(profile["weights"])
    assert {"hot_parent", "hot_child"} <= set(names)
    hot = sum(w for stack, w in zip(profile["samples"], profile["weights"]) if names[stack[-1]] == "hot_parent")
    assert abs(hot - 600) < 60  # ms


def test_flame_of_a_pid_the_run_did_not_sample_is_an_error_as_a_span_it_lacks_is(profiled: Cli, tmp_path: Path) -> None:
    """It wrote an empty graph ("no samples inside") and exited 0."""
    pids = [pid for (pid,) in profiled.query("SELECT DISTINCT pid FROM samples WHERE run_id = 'p1' ORDER BY pid")]
    out = tmp_path / "flame.svg"
    done = profiled("flame", "p1", "--pid", "1", "-o", str(out))
    assert done.returncode == 2 and not out.exists()
    assert done.stderr.decode().splitlines() == [
        f"selfopt-trace: error: run p1 has no profile samples of pid 1 (the sampled processes: "
        f"{', '.join(map(str, pids))})"]
    assert profiled("flame", "p1", "--span", "nosuch", "-o", str(out)).returncode == 2
    done = profiled("flame", "p1", "--pid", str(pids[0]), "-o", str(out))
    assert done.returncode == 0 and "no samples inside" not in done.stderr.decode(), done.stderr.decode()


def test_flame_diff_shows_what_grew(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    for run_id, hot_s in (("short", "0.2"), ("long", "0.6")):
        done = profiled_run(cli, run_id, env=cli.env(HOT_S=hot_s))
        assert done.returncode == 3, done.stderr.decode()
    out = tmp_path / "diff.svg"
    done = cli("flame", "--diff", "short", "long", "--span", "phase_parent", "-o", str(out))
    assert done.returncode == 0, done.stderr.decode()
    svg = out.read_text()
    hot = svg.split(">hot_parent (hotmod.py)</text>")[0].rsplit("<g ", 1)[1]
    before, after = map(float, re.search(r"before ([\d.]+) ms -&gt; after ([\d.]+) ms", hot).groups())
    assert 'fill="rgb(255,' in hot, hot  # red: it grew
    # 200 and 600 ms of spinning, as sampled: py-spy starved on a busy machine misses some of both
    # (115.6 ms of the first once), never so many that the second is not the larger by far
    assert 50 < before < 260 and 2 * before < after < 700, (before, after)


def test_the_report_shows_a_selected_span_s_hottest_frames(profiled: Cli, tmp_path: Path) -> None:
    if BROWSER is None:
        pytest.skip("no Chromium on this machine: install it with scripts/browser-test-setup.sh")
    from tests.report.test_report import harness

    assert profiled("report", "p1", "-o", str(tmp_path / "report.html")).returncode == 0
    (tmp_path / "page.html").write_text(harness("""
    doc.querySelectorAll("button")[1].click();  // expand all
    var tip = doc.getElementById("tooltip");
    for (var i = 0; i < 60; i++) {
      var y = rect.top + 26 + 9 + i * 18;
      canvas.dispatchEvent(new win.MouseEvent("mousemove", {clientX: rect.left + 700, clientY: y, bubbles: true}));
      if (tip.textContent.indexOf("phase_parent") === 0) {
        canvas.dispatchEvent(new win.MouseEvent("mousedown", {clientX: rect.left + 700, clientY: y, bubbles: true}));
        canvas.dispatchEvent(new win.MouseEvent("click", {clientX: rect.left + 700, clientY: y, bubbles: true}));
        break;
      }
    }
    result("hot-span", doc.body.dataset.hotSpan);
    result("hot-frames", doc.body.dataset.hotFrames);
    result("panel", doc.getElementById("hot-frames").textContent.slice(0, 200));
"""), encoding="utf-8")
    page = open_page(tmp_path / "page.html", tmp_path / "chromium")
    assert page.console == []
    data = page.body_data()
    assert data.get("hot-span") == "phase_parent" and int(data["hot-frames"]) > 0, data
    assert "hot_parent" in data["panel"], data


def _pyspy_of(pid: int) -> int | None:
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                argv = Path(f"/proc/{entry}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv[0].endswith(b"py-spy") and b"--pid" in argv and argv[argv.index(b"--pid") + 1] == str(pid).encode():
                return int(entry)
    return None


def test_a_profiler_killed_mid_run_loses_nothing_already_written(tmp_path: Path) -> None:
    cli = Cli(tmp_path)
    pidfile = tmp_path / "workload.pid"
    runner = cli.popen("run", "--profile", "--idle", "--run-id", "k1", *TARGETS, "--", sys.executable,
                       str(WORKLOAD / "main.py"), str(pidfile), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 30
    while not pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    root = int(pidfile.read_text())
    samples = cli.runs_dir / "k1" / SAMPLES_PATH
    while not (samples.exists() and "phase_child" in samples.read_text()) and time.monotonic() < deadline:
        time.sleep(0.05)  # the child has ended and its samples are written (a loaded py-spy starts late)
    spy = _pyspy_of(root)
    assert spy is not None
    os.kill(spy, signal.SIGKILL)
    (tmp_path / "go").touch()
    out, err = runner.communicate(timeout=60)
    assert runner.returncode == 3 and out == b"workload done\n", err.decode()
    phases = cli.query("""
        SELECT s.name, count(p.span_id) FROM spans AS s LEFT JOIN samples AS p ON p.run_id = s.run_id AND p.span_id = s.span_id
        WHERE s.run_id = 'k1' AND s.category = 'phase' GROUP BY s.name ORDER BY 1""")
    assert phases[0][0] == "phase_child" and phases[0][1] > 0, phases  # written before the kill: kept
    assert phases[1] == ("phase_parent", 0), phases  # the killed py-spy's: lost, and said
    lost = cli.query("SELECT pid, message FROM diagnostics WHERE run_id = 'k1' AND code = 'profile.lost'")
    assert [row[0] for row in lost] == [root], lost
    assert "gave none" in err.decode()


def test_a_program_exchanging_large_messages_through_pipes_is_not_stalled(tmp_path: Path) -> None:
    """py-spy's pauses made such programs (codeflash's jedi subprocess) wait for ever: the default
    reads without pausing (docs/profiling.md, "Blocking"), and the run behaves as untraced."""
    program = [sys.executable, str(WORKLOAD / "pipes.py"), "5000"]
    untraced = subprocess.run(program, capture_output=True, timeout=120)
    assert untraced.returncode == 0, untraced.stderr.decode()
    cli = Cli(tmp_path)
    runner = cli.popen("run", "--profile", "--rate", "1000", "--run-id", "pp", "-q", "--", *program,
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = runner.communicate(timeout=120)
    except subprocess.TimeoutExpired:
        os.killpg(runner.pid, signal.SIGKILL)
        runner.communicate()
        pytest.fail("the profiled program stalled")
    assert runner.returncode == 0 and out == untraced.stdout, err.decode()
    sampled = cli.query("SELECT count(DISTINCT pid) FROM samples WHERE run_id = 'pp'")
    assert sampled == [(2,)]  # the parent and the child
