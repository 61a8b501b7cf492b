"""The breakdown query on runs with known, exact timings (ms), and against a plain-Python reference."""

from __future__ import annotations

import json
import random
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from selfopt_trace.queries import run_query
from selfopt_trace.store import Store
from tests.queries import reference
from tests.queries.builder import MS, RunBuilder, at
from tests.store.spanfiles import TRACE, header

OTHER_TRACE = "1" * 32


def breakdown(store: Store, run_id: str) -> dict[str, tuple[float, float]]:
    result = run_query(store, "breakdown", {"run_id": run_id})
    return {r["category"]: (r["wall_ms"], r["busy_ms"]) for r in result.records()}


def assert_figures(actual: dict, expected: dict[str, tuple[float, float]]) -> None:
    """Every category not named is 0; wall and busy to the microsecond; none is ever negative."""
    assert_none_negative(actual)
    for category in reference.CATEGORIES:
        wall, busy = expected.get(category, (0.0, 0.0))
        assert actual[category][0] == pytest.approx(wall, abs=1e-3), f"{category} wall"
        assert actual[category][1] == pytest.approx(busy, abs=1e-3), f"{category} busy"
    # each figure is rounded to the microsecond
    assert sum(actual[c][0] for c in reference.CATEGORIES) == pytest.approx(actual["total"][0], abs=0.006)


def assert_none_negative(actual: dict) -> None:
    """No category's wall or busy time is below zero (beyond the microsecond each figure is rounded to):
    a negative one made up for time counted twice elsewhere."""
    negative = {c: actual[c] for c in reference.CATEGORIES if min(actual[c]) < -0.001}
    assert not negative, f"negative categories: {negative}"


def in_container(run: RunBuilder, pid: int, container_id: str, name: str = "") -> None:
    """Make the span file of `pid` a container's, as the agent's is there: its resource names the
    container (before any span of that pid is written)."""
    resource: dict[str, Any] = {"service.name": "svc", "process.pid": pid, "container.id": container_id}
    if name:
        resource["container.name"] = name
    run.files[f"{pid}-{run.run_id}.spans"] = [header(pid, resource=resource)]


def resources_of(run: RunBuilder) -> dict[str, dict[str, Any]]:
    """Each span file's resource attributes, read back from its header (for the reference)."""
    return {name: json.loads(lines[0].split("\t")[10])["resource"] for name, lines in run.files.items()}


def test_sequential_run_splits_into_its_categories(store: Store, tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 100)
    run.span(100, "interpreter.startup", "startup", 0, 10, main)
    outer = run.span(100, "import a", "import", 12, 30, main)
    run.span(100, "import b", "import", 15, 20, outer)
    run.span(100, "json.dumps", "serialization", 30, 40, main)
    client = run.span(100, "POST", "http", 40, 70, main, kind="CLIENT")
    # the server: its own process (another trace, started before the run), its span in the run's trace
    server = run.process(300, -50, 150, command="server.py", trace=OTHER_TRACE)
    run.span(300, "POST /items", "http", 45, 65, client, kind="SERVER")
    call = run.span(100, "subprocess", "subprocess", 70, 95, main, kind="CLIENT")
    child = run.process(200, 71, 90, call, command="child.py")
    run.span(200, "interpreter.startup", "startup", 71, 76, child)
    run.span(200, "import slow", "import", 76, 86, child)
    run_id = run.load(store, tmp_path)
    assert server
    assert_figures(breakdown(store, run_id), {
        "interpreter start-up": (15, 15), "imports": (28, 28), "serialization": (10, 10),
        "http client overhead": (10, 10), "http server time": (20, 20), "subprocess spawn overhead": (1, 1),
        "interpreter teardown": (5, 5), "child processes' own work": (4, 4), "own work": (7, 7)})
    assert breakdown(store, run_id)["total"][0] == pytest.approx(100)


def test_overlapping_requests_from_threads_are_split_never_counted_twice(store: Store, tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 100)
    first = run.span(100, "GET", "http", 10, 60, main, kind="CLIENT")
    second = run.span(100, "GET", "http", 20, 80, main, kind="CLIENT")
    run.span(300, "GET /a", "http", 20, 50, first, kind="SERVER")
    run.span(300, "GET /b", "http", 30, 70, second, kind="SERVER")
    run_id = run.load(store, tmp_path)
    assert_figures(breakdown(store, run_id), {
        "own work": (30, 30), "http client overhead": (30, 40), "http server time": (40, 70)})


def test_parallel_children_share_the_instants_they_overlap(store: Store, tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 100)
    first_call = run.span(100, "subprocess", "subprocess", 10, 60, main, kind="CLIENT")
    second_call = run.span(100, "subprocess", "subprocess", 15, 90, main, kind="CLIENT")
    first = run.process(201, 11, 58, first_call, command="child.py")
    run.span(201, "interpreter.startup", "startup", 11, 21, first)
    run.span(201, "import slow", "import", 21, 41, first)
    second = run.process(202, 16, 88, second_call, command="child.py")
    run.span(202, "interpreter.startup", "startup", 16, 26, second)
    run.span(202, "import slow", "import", 26, 66, second)
    run_id = run.load(store, tmp_path)
    assert_figures(breakdown(store, run_id), {
        "own work": (20, 20), "subprocess spawn overhead": (1.5, 2), "interpreter teardown": (3, 4),
        "interpreter start-up": (12, 20), "imports": (33, 60), "child processes' own work": (30.5, 39)})


def test_a_child_s_teardown_and_cmd_s_own_are_interpreter_teardown(store: Store, tmp_path: Path) -> None:
    # the child's process span ends at its agent's last record; its parent's wait returns later
    run = RunBuilder()
    main = run.process(100, 0, 100)
    call = run.span(100, "subprocess", "subprocess", 10, 60, main, kind="CLIENT",
                    attributes={"selfopt_trace.spawn_ns": 2_000_000})
    child = run.process(200, 13, 50, call, command="child.py")
    run.span(200, "interpreter.startup", "startup", 13, 20, child)
    run.span(100, "Popen.wait", "wait", 12, 60, main, attributes={"selfopt_trace.wait.on": [call]})
    # `run` saw CMD (pid 100, the root process) exit 30 ms after its span ended
    run_id = run.load(store, tmp_path, end_ns=at(130), pid=100)
    expected = {"own work": (50, 50), "subprocess spawn overhead": (3, 3), "interpreter start-up": (7, 7),
                "child processes' own work": (30, 30), "interpreter teardown": (40, 40)}  # 50-60, 100-130
    assert_figures(breakdown(store, run_id), expected)
    assert breakdown(store, run_id)["total"][0] == pytest.approx(130)
    assert reference.breakdown(run.spans, TRACE, exited=130) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})


def test_cmd_replaced_by_an_exec_is_outside_traced_processes_after_it_not_teardown(store: Store, tmp_path: Path) -> None:
    # `run -- docker run ...`: CMD is a Python shim that execs the docker CLI (process.exec.replaced);
    # what follows its span's end until `run` saw it exit is docker's time, not an interpreter's teardown
    run = RunBuilder()
    main = run.process(100, 0, 20, end_attributes={"process.exec.replaced": True})
    run.span(100, "exec", "subprocess", 19, 20, main)
    run_id = run.load(store, tmp_path, end_ns=at(150), pid=100)
    expected = {"own work": (19, 19), "untraced child processes": (1, 1), "outside traced processes": (130, 130)}
    assert_figures(breakdown(store, run_id), expected)
    assert breakdown(store, run_id)["total"][0] == pytest.approx(150)
    assert reference.breakdown(run.spans, TRACE, exited=150, replaced=True) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})


def test_a_docker_cmd_s_container_start_and_stop_are_container_start_up(store: Store, tmp_path: Path) -> None:
    """`run -- docker run IMAGE python app.py`: the shim execs docker (its exec span's container.inject
    child says so); the container's Python (pid 1) runs 60-140 and exits at 145 (its finalize span).
    With no traced process alive, 20-60 and 145-200 are the engine starting and stopping the
    container: container start-up, not outside traced processes."""
    run = RunBuilder()
    main = run.process(100, 0, 20, end_attributes={"process.exec.replaced": True})
    exec_span = run.span(100, "exec", "subprocess", 19, 20, main, kind="CLIENT")
    run.span(100, "container.inject", "container", 19.2, 20, exec_span)
    container = run.process(1, 60, 140, exec_span, command="app.py")
    run.span(1, "interpreter.finalize", "finalize", 140, 145, container)
    run_id = run.load(store, tmp_path, end_ns=at(200), pid=100)
    actual = breakdown(store, run_id)
    assert actual["outside traced processes"] == (0, 0)
    assert actual["container start-up"][0] == pytest.approx(40 + 55 + 1, abs=1e-3)  # + the exec, 19-20
    assert actual["interpreter teardown"] == (5, 5) and actual["total"][0] == pytest.approx(200)
    assert reference.breakdown(run.spans, TRACE, exited=200, replaced=True, run=(0, 200)) == pytest.approx(
        {c: actual[c] for c in reference.CATEGORIES}, abs=1e-3)


def test_a_child_whose_interpreter_an_exec_replaced_is_an_untraced_child_after_it(store: Store, tmp_path: Path) -> None:
    # a Python launcher child that execs a program of no agent: its parent's wait after the child's
    # span ended waits on that program, not on an interpreter's teardown
    run = RunBuilder()
    main = run.process(100, 0, 100)
    call = run.span(100, "subprocess", "subprocess", 10, 60, main, kind="CLIENT",
                    attributes={"selfopt_trace.spawn_ns": 2_000_000})
    child = run.process(200, 13, 30, call, command="launcher.py", end_attributes={"process.exec.replaced": True})
    run.span(200, "interpreter.startup", "startup", 13, 20, child)
    run.span(100, "Popen.wait", "wait", 12, 60, main, attributes={"selfopt_trace.wait.on": [call]})
    run_id = run.load(store, tmp_path)
    expected = {"own work": (50, 50), "subprocess spawn overhead": (3, 3), "interpreter start-up": (7, 7),
                "child processes' own work": (10, 10), "untraced child processes": (30, 30)}  # 30-60
    assert_figures(breakdown(store, run_id), expected)
    assert reference.breakdown(run.spans, TRACE) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})


def test_a_child_killed_before_its_last_record_lives_until_it_was_reaped(store: Store, tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 100)
    call = run.span(100, "subprocess", "subprocess", 10, 60, main, kind="CLIENT",  # reaped at 60, exit -9
                    attributes={"selfopt_trace.spawn_ns": 2_000_000, "process.pid": 200, "process.exit.code": -9})
    child = run.process(200, 13, 0, call, command="child.py", killed=True)  # its file's last time known: 40
    run.span(200, "interpreter.startup", "startup", 13, 40, child)
    run.span(100, "Popen.wait", "wait", 12, 60, main, attributes={"selfopt_trace.wait.on": [call]})
    run_id = run.load(store, tmp_path)
    assert store.sql("SELECT incomplete, end_ns FROM spans WHERE pid = 200 AND name = 'process'")[1] == [(True, at(60))]
    assert_figures(breakdown(store, run_id), {  # 40-60: the child's own (nothing sampled: on the CPU), not spawning
        "own work": (50, 50), "subprocess spawn overhead": (3, 3), "interpreter start-up": (27, 27),
        "child processes' own work": (20, 20)})


@pytest.mark.parametrize("seen", ["selfopt_trace.child.exited_unseen", "selfopt_trace.child.running_at_exit", None])
def test_a_killed_child_whose_reap_is_not_known_ends_at_its_last_record(store: Store, tmp_path: Path,
                                                                        seen: str | None) -> None:
    """Its spawning span ended at its parent's exit, not at a reap (or has no exit status): no end to take."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    attributes = {"selfopt_trace.spawn_ns": 2_000_000, "process.pid": 200}
    attributes.update({seen: True, "process.exit.code": -9} if seen else {})
    call = run.span(100, "subprocess", "subprocess", 10, 100, main, kind="CLIENT", attributes=attributes)
    child = run.process(200, 13, 0, call, command="child.py", killed=True)
    run.span(200, "interpreter.startup", "startup", 13, 40, child)
    run.load(store, tmp_path)
    assert store.sql("SELECT incomplete, end_ns FROM spans WHERE pid = 200 AND name = 'process'")[1] == [(True, at(40))]


@pytest.mark.parametrize("pid, what", [(99, "a shell's"), (None, "unknown")])
def test_after_a_root_that_is_not_cmd_the_rest_is_outside_traced_processes(store: Store, tmp_path: Path,
                                                                           pid: int | None, what: str) -> None:
    run = RunBuilder()
    run.process(100, 0, 100)
    run_id = run.load(store, tmp_path, end_ns=at(130), pid=pid)
    expected = {"own work": (100, 100), "outside traced processes": (30, 30)}
    assert_figures(breakdown(store, run_id), expected)
    assert breakdown(store, run_id)["total"][0] == pytest.approx(130)
    assert reference.breakdown(run.spans, TRACE, run=(0, 130)) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})


def test_the_pythons_a_shell_ran_keep_their_teardown_to_their_exit(store: Store, tmp_path: Path) -> None:
    """`sh -c 'python a.py; python b.py; sleep 0.03'`: no traced process waits for the Pythons, whose
    exits the C twin timed (their interpreter.finalize spans, from their last record): their teardown,
    not time outside traced processes."""
    run = RunBuilder()
    first = run.process(100, 10, 50, command="a.py")
    run.span(100, "interpreter.finalize", "finalize", 50, 58, first)
    second = run.process(101, 70, 150, command="b.py")
    run.span(101, "interpreter.finalize", "finalize", 150, 165, second)
    run_id = run.load(store, tmp_path, end_ns=at(200), pid=199)
    expected = {"own work": (120, 120), "interpreter teardown": (23, 23), "outside traced processes": (57, 57)}
    assert_figures(breakdown(store, run_id), expected)
    assert breakdown(store, run_id)["total"][0] == pytest.approx(200)
    assert reference.breakdown(run.spans, TRACE, run=(0, 200)) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})
    # the critical path: each Python's teardown a row of its own after it, as CMD's would be
    path = run_query(store, "critical_path", {"run_id": run_id, "min_ms": 0}).records()
    assert [(r["span"], r["pid"], r["start_ms"], r["on_path_ms"]) for r in path] == [
        ("process", 100, 0, 40), ("interpreter teardown", 100, 40, 8),
        ("process", 101, 60, 80), ("interpreter teardown", 101, 140, 15)]


def test_cmd_s_own_exit_is_its_teardown_once(store: Store, tmp_path: Path) -> None:
    """CMD is the Python: its finalization (150-165) is within its teardown until `run` saw it exit
    (170), counted once."""
    run = RunBuilder()
    main = run.process(100, 0, 150)
    run.span(100, "interpreter.finalize", "finalize", 150, 165, main)
    run_id = run.load(store, tmp_path, end_ns=at(170), pid=100)
    expected = {"own work": (150, 150), "interpreter teardown": (20, 20)}
    assert_figures(breakdown(store, run_id), expected)
    assert reference.breakdown(run.spans, TRACE, exited=170, run=(0, 170)) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})


def test_a_run_that_starts_and_ends_outside_traced_processes_adds_up_to_its_wall_time(store: Store,
                                                                                      tmp_path: Path) -> None:
    """`sh -c 'sleep 0.2; python x.py; sleep 0.1'`: the shell's time before and after its Python
    child is outside traced processes; `sleep 0.2` alone: all of it (no span at all)."""
    run = RunBuilder()
    run.process(200, 20, 40, command="x.py")
    run_id = run.load(store, tmp_path, end_ns=at(50), pid=199)
    expected = {"own work": (20, 20), "outside traced processes": (30, 30)}
    assert_figures(breakdown(store, run_id), expected)
    assert breakdown(store, run_id)["total"][0] == pytest.approx(50)
    assert reference.breakdown(run.spans, TRACE, run=(0, 50)) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})
    untraced = RunBuilder("untraced")
    untraced_id = untraced.load(store, tmp_path, end_ns=at(200), pid=199)
    assert_figures(breakdown(store, untraced_id), {"outside traced processes": (200, 200)})
    assert breakdown(store, untraced_id)["total"][0] == pytest.approx(200)


def test_an_untraced_child_is_spawn_overhead_then_an_untraced_child_while_waited_on(store: Store,
                                                                                      tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 100)
    git = run.span(100, "subprocess", "subprocess", 10, 50, main, kind="CLIENT",
                   attributes={"process.command_args": ["git", "status"], "selfopt_trace.spawn_ns": 2_000_000})
    run.span(100, "Popen.wait", "wait", 20, 50, main, attributes={"selfopt_trace.wait.on": [git]})
    run_id = run.load(store, tmp_path)
    assert_figures(breakdown(store, run_id), {  # 12-20: the parent worked while git ran
        "own work": (68, 68), "subprocess spawn overhead": (2, 2), "untraced child processes": (30, 30)})


IDLE = {"selfopt_trace.spawn_ns": 1_000_000, "selfopt_trace.cpu.end_ns": 5_000_000,
        "selfopt_trace.cpu.reap_ns": 5_000_000}  # its spawner ran nothing until it reaped it


def test_an_idle_helper_takes_nothing_while_its_parent_waits_on_other_children(store: Store, tmp_path: Path) -> None:
    """A parent that starts a helper (idle: asleep) and then runs two children to completion. The
    helper's spawning span is a child read until it exits (its spawner ran nothing until the reap),
    and the waits on the other children used to stand beside it: it took half of them (its sleep,
    38 ms of the 76 of the children's work). Started while it is read, they hang under it."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    helper = run.span(100, "subprocess", "subprocess", 5, 95, main, kind="CLIENT", attributes=IDLE)
    idle = run.process(200, 5.5, 94, helper, command="helper.py")
    run.span(200, "time.sleep", "sleep", 10, 90, idle)
    for pid, start in ((201, 10), (202, 50)):
        child = run.span(100, "subprocess", "subprocess", start, start + 40, main, kind="CLIENT",
                         attributes={"selfopt_trace.spawn_ns": 1_000_000})
        run.process(pid, start + 1, start + 39, child, command="child.py")
        run.span(100, "Popen.wait", "wait", start + 1, start + 40, main, attributes={"selfopt_trace.wait.on": [child]})
    run.span(100, "Popen.wait", "wait", 92, 95, main, attributes={"selfopt_trace.wait.on": [helper]})
    run_id = run.load(store, tmp_path)
    expected = reference.breakdown(run.spans, TRACE)
    assert_figures(breakdown(store, run_id), expected)
    # the helper: its work before and after the children's (5.5-10, 90-94), none of its sleep
    assert {c: wall for c, (wall, _) in expected.items() if wall} == pytest.approx({
        "own work": 10, "subprocess spawn overhead": 2.5, "child processes' own work": 4.5 + 38 + 38 + 2 + 2,
        "interpreter teardown": 3})
    path = run_query(store, "critical_path", {"run_id": run_id, "min_ms": 0}).records()
    # the helper where the parent waited on nothing else, and in its wait; the children between
    assert [r["pid"] for r in path if r["span"].strip() == "process"] == [100, 200, 201, 202, 200, 200]


def test_a_child_that_exits_before_its_turn_to_be_reaped_is_no_teardown(store: Store, tmp_path: Path) -> None:
    """`a.wait(); b.wait()` where b is shorter: b's spawning span is a child read until it exits
    (its spawner ran nothing until the reap), and a.wait stood beside it: b's half of a.wait after b
    ended was interpreter teardown (25 ms of 100, and the summary's `os._exit()` advice followed).
    (b's read is all a.wait: no read. The spawning calls: a's child's work once it started, shared with
    b's call.)"""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    a = run.span(100, "subprocess", "subprocess", 0, 90, main, kind="CLIENT", attributes=IDLE)
    run.process(301, 0.5, 89, a, command="a.py")
    b = run.span(100, "subprocess", "subprocess", 1, 91, main, kind="CLIENT", attributes=IDLE)
    run.process(302, 1.5, 40, b, command="b.py")
    run.span(100, "Popen.wait", "wait", 2, 90, main, attributes={"selfopt_trace.wait.on": [a]})
    run.span(100, "Popen.wait", "wait", 90, 91, main, attributes={"selfopt_trace.wait.on": [b]})
    run_id = run.load(store, tmp_path)
    expected = reference.breakdown(run.spans, TRACE)
    assert_figures(breakdown(store, run_id), expected)
    assert {c: wall for c, (wall, _) in expected.items() if wall} == pytest.approx({
        "own work": 9, "subprocess spawn overhead": 1, "child processes' own work": 88, "interpreter teardown": 2})


def test_a_span_started_in_reads_started_at_once_goes_under_the_one_of_the_larger_span_id(store: Store,
                                                                                         tmp_path: Path) -> None:
    """Two children spawned at the same instant (a synthetic tie) and read together; a sleep the parent
    records meanwhile hangs under one read, the latest: at a tie, the one of the larger span id, git's
    here (the query took the smaller hashed id, the child's; the reference the last recorded: 202 and
    271 of the random runs). The child's read goes on beside the sleep."""
    run = RunBuilder()
    main = run.process(100, 0, 100, end_attributes={"process.cpu_ns": 20_000_000})  # a run of today
    run.span(100, "time.sleep", "sleep", 30, 50, main)
    traced = run.span(100, "subprocess", "subprocess", 10, 90, main, kind="CLIENT", attributes=IDLE)
    run.process(201, 11, 88, traced, command="child.py")
    git = run.span(100, "subprocess", "subprocess", 10, 90, main, kind="CLIENT",
                   attributes={**IDLE, "process.command_args": ["git", "status"]})
    assert git > traced
    assert_sql_and_reference(store, tmp_path, run, {
        "own work": (20, 20), "subprocess spawn overhead": (0.5, 1), "untraced child processes": (31, 60),
        "child processes' own work": (38.5, 77), "sleeps": (10, 20)})


def test_a_run_of_killed_processes_that_reaped_a_child_is_not_read_the_old_way(store: Store, tmp_path: Path) -> None:
    """CMD killed (no end record, so no `process.cpu_ns`) after reading git's output and reaping it, no
    wait recorded: the query took it for a run from before waits, where a subprocess span waits on its
    child's whole life (git's 50 ms), the reference for both at once (190 of the random runs with
    waits, 130 of those with containers). Only an agent that records waits reads the CPU at a reap:
    git was read until CMD's samples show it working (40)."""
    run = RunBuilder()
    main = run.process(100, 0, 100, killed=True)  # ended where `run` reaped it
    run.span(100, "subprocess", "subprocess", 10, 60, main, kind="CLIENT",
             attributes={**IDLE, "process.command_args": ["git", "status"]})
    cpu = [reference.CpuSample(100, 100, 0, 10, 10), reference.CpuSample(100, 100, 10, 40, 0),
           reference.CpuSample(100, 100, 40, 100, 60)]
    assert_sql_and_reference(store, tmp_path, run, {"own work": (70, 70), "untraced child processes": (30, 30)},
                             cpu, pid=100, exit_code=-9)


def test_a_shell_running_a_traced_python_among_untraced_programs_is_an_untraced_child_but_in_its_teardown(
        store: Store, tmp_path: Path) -> None:
    """`subprocess.run(["sh", "-c", "prep; python a.py; post"])`: the spawning span's own child (pid
    500) is the shell, untraced; the traced Python (501) ran in the middle. The shell's work before
    it was spawn overhead, after it teardown (58 % of a tester's run, with the os._exit() advice).
    The Python's teardown lasts until the CPU sampler last saw it alive (55)."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    shell = run.span(100, "subprocess", "subprocess", 10, 90, main, kind="CLIENT",
                     attributes={"selfopt_trace.spawn_ns": 1_000_000, "process.pid": 500,
                                 "process.command_args": ["sh", "-c", "prep; python a.py; post"]})
    run.process(501, 30, 50, shell, command="a.py")
    run.span(100, "Popen.wait", "wait", 11, 90, main, attributes={"selfopt_trace.wait.on": [shell]})
    run_id = run.load(store, tmp_path)
    cpu = [reference.CpuSample(501, 501, 40, 55, 15)]
    load_cpu(store, run_id, cpu)
    expected = reference.breakdown(run.spans, TRACE, cpu)
    assert_figures(breakdown(store, run_id), expected)
    assert {c: wall for c, (wall, _) in expected.items() if wall} == pytest.approx({
        "own work": 20, "subprocess spawn overhead": 1, "untraced child processes": 19 + 35,
        "child processes' own work": 20, "interpreter teardown": 5})


@pytest.mark.parametrize("command, wrapped", [("prep; python a.py; post", True), ("python a.py", False)])
def test_os_system_s_shell_running_a_compound_command_is_an_untraced_child_but_in_the_python_s_teardown(
        store: Store, tmp_path: Path, command: str, wrapped: bool) -> None:
    """os.system: no pid known for its shell, which runs a compound command itself (untraced, around
    the Python: was the Python's teardown, 321 ms with the os._exit() advice, and spawn overhead) and
    execs a simple one (the shell is then the Python: its teardown as before)."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    system = run.span(100, "subprocess", "subprocess", 10, 90, main, kind="CLIENT",
                      attributes={"process.shell": True, "process.command_args": ["/bin/sh", "-c", command]})
    run.process(501, 30, 50, system, command="a.py")
    run_id = run.load(store, tmp_path)
    cpu = [reference.CpuSample(501, 501, 40, 55, 15)]
    load_cpu(store, run_id, cpu)
    expected = reference.breakdown(run.spans, TRACE, cpu)
    assert_figures(breakdown(store, run_id), expected)
    walls = {c: wall for c, (wall, _) in expected.items() if wall}
    assert walls == pytest.approx({"own work": 20, "child processes' own work": 20, "interpreter teardown": 5,
                                   "untraced child processes": 20 + 35} if wrapped else
                                  {"own work": 20, "child processes' own work": 20, "interpreter teardown": 40,
                                   "subprocess spawn overhead": 20})


def test_a_shell_read_until_it_exits_then_reaped_counts_each_instant_once(store: Store, tmp_path: Path) -> None:
    """The same shell read to EOF (its spawning span a read wait) and reaped at its end: the reap's
    Popen.wait was cut at the Python's teardown's end, before the wait began, and that piece was
    recoded twice (spawn overhead -303 ms, untraced child processes 610 ms of a 540 ms run)."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    shell = run.span(100, "subprocess", "subprocess", 10, 90, main, kind="CLIENT",
                     attributes={"selfopt_trace.spawn_ns": 1_000_000, "process.pid": 500,
                                 "selfopt_trace.cpu.end_ns": 5_000_000, "selfopt_trace.cpu.reap_ns": 5_000_000})
    run.process(501, 30, 50, shell, command="a.py")
    run.span(100, "Popen.wait", "wait", 89, 90, main, attributes={"selfopt_trace.wait.on": [shell]})
    run_id = run.load(store, tmp_path)
    expected = reference.breakdown(run.spans, TRACE)
    assert_figures(breakdown(store, run_id), expected)
    assert {c: wall for c, (wall, _) in expected.items() if wall} == pytest.approx({
        "own work": 20, "untraced child processes": 60, "child processes' own work": 20})


def test_a_communicate_whose_child_ended_waits_on_the_grandchild_holding_its_pipe(store: Store,
                                                                                  tmp_path: Path) -> None:
    """`subprocess.run(cmd, stdout=PIPE)` of a child that starts a grandchild (inheriting its stdout)
    and exits: communicate() reads until the grandchild ends too. That time was the child's
    teardown (a tester's 393 ms, 70 % of the run, with the os._exit() advice)."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    call = run.span(100, "subprocess", "subprocess", 10, 90, main, kind="CLIENT",
                    attributes={"selfopt_trace.spawn_ns": 1_000_000})
    child = run.process(201, 11, 30, call, command="child.py")
    spawn = run.span(201, "subprocess", "subprocess", 15, 16, child, kind="CLIENT",
                     attributes={"selfopt_trace.spawn_ns": 1_000_000})
    run.process(202, 16, 85, spawn, command="grandchild.py")
    run.span(100, "Popen.communicate", "wait", 11, 90, main, attributes={"selfopt_trace.wait.on": [call]})
    run_id = run.load(store, tmp_path)
    expected = reference.breakdown(run.spans, TRACE)
    assert_figures(breakdown(store, run_id), expected)
    assert {c: wall for c, (wall, _) in expected.items() if wall} == pytest.approx({
        "own work": 20, "subprocess spawn overhead": 2, "child processes' own work": 18 + 55,
        "interpreter teardown": 5})


def test_small_calls_summed_onto_a_span_move_their_time_to_serialization_and_parsing(store: Store,
                                                                                      tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 100)
    run.span(100, "optimize", "phase", 20, 60, main, attributes={
        "selfopt_trace.small.json.dumps.count": 50, "selfopt_trace.small.json.dumps.duration_ns": 10_000_000,
        "selfopt_trace.small.ast.parse.count": 4, "selfopt_trace.small.ast.parse.duration_ns": 4_000_000})
    run_id = run.load(store, tmp_path)
    assert_figures(breakdown(store, run_id), {"own work": (86, 86), "serialization": (10, 10), "parsing": (4, 4)})


def test_the_server_may_be_traced_as_another_run(store: Store, tmp_path: Path) -> None:
    client_run = RunBuilder("client")
    main = client_run.process(100, 0, 50)
    client = client_run.span(100, "GET", "http", 10, 40, main, kind="CLIENT")
    server_run = RunBuilder("server", first_id=1000)
    server = server_run.process(300, -100, 200, command="server.py", trace=OTHER_TRACE)
    server_run.span(300, "GET /x", "http", 15, 35, server, kind="SERVER", trace=TRACE)
    # the SERVER span's parent is the client span, not its process: as the traceparent header says
    server_run.files["300-server.spans"][-1] = server_run.files["300-server.spans"][-1].replace(
        f"\t{server}\t", f"\t{client}\t")
    run_id = client_run.load(store, tmp_path)
    server_run.load(store, tmp_path)
    assert_figures(breakdown(store, run_id), {
        "own work": (20, 20), "http client overhead": (10, 10), "http server time": (20, 20)})


def test_a_server_span_outliving_its_client_counts_only_while_the_client_waited(store: Store, tmp_path: Path) -> None:
    # a client that timed out (or read a streamed body after its span): the server's work after
    # the call is nobody's wait, so its wall time is clipped to the client span (as roundtrip's)
    run = RunBuilder()
    main = run.process(100, 0, 100)
    client = run.span(100, "GET", "http", 10, 40, main, kind="CLIENT")
    run.process(300, -100, 200, command="server.py", trace=OTHER_TRACE)
    run.span(300, "GET /slow", "http", 15, 90, client, kind="SERVER")
    run_id = run.load(store, tmp_path)
    expected = {"own work": (70, 70), "http client overhead": (5, 5), "http server time": (25, 75)}
    assert reference.breakdown(run.spans, TRACE) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})
    assert_figures(breakdown(store, run_id), expected)


def test_a_server_in_the_client_s_own_process_outliving_it_counts_only_while_the_client_waited(
        store: Store, tmp_path: Path) -> None:
    """A server thread of the client's own process (a test's in-process server): its SERVER span
    was of the client's unit, and once the client timed out it was a second leaf of the client's
    thread, half its time (the client's own work after the timeout: 25 of 50 ms)."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    client = run.span(100, "GET", "http", 10, 40, main, kind="CLIENT")
    run.span(100, "thread", "thread", 5, 100, main, attributes={"thread.id": 101})
    run.span(100, "GET /slow", "http", 15, 90, client, kind="SERVER")
    run_id = run.load(store, tmp_path)
    expected = reference.breakdown(run.spans, TRACE)
    assert_figures(breakdown(store, run_id), expected)
    assert {c: wall for c, (wall, _) in expected.items() if wall} == pytest.approx(
        {"own work": 70, "http client overhead": 5, "http server time": 25})


def test_a_call_to_a_server_the_trace_does_not_see_into_is_that_server_s_time(store: Store, tmp_path: Path) -> None:
    # a remote API: no SERVER span answers the client; its connection set-up and its payload's
    # encoding stay what they are, the rest is the server's work and the network's, not the client's
    run = RunBuilder()
    main = run.process(100, 0, 100)
    client = run.span(100, "POST", "http", 10, 90, main, kind="CLIENT")
    run.span(100, "connect", "http", 10, 14, client)
    run.span(100, "json.dumps", "serialization", 14, 16, client)
    answered = run.span(100, "GET", "http", 90, 98, main, kind="CLIENT")
    run.span(300, "GET /x", "http", 91, 97, answered, kind="SERVER")
    run_id = run.load(store, tmp_path)
    assert_figures(breakdown(store, run_id), {
        "own work": (12, 12), "http client overhead": (6, 6), "serialization": (2, 2),
        "untraced http servers": (74, 74), "http server time": (6, 6)})


def _run_with_its_server(run_id: str) -> RunBuilder:
    """A client, and the server that answered it traced into the same run (two parses overlap in it)."""
    run = RunBuilder(run_id)
    main = run.process(100, 0, 100)
    client = run.span(100, "POST", "http", 40, 70, main, kind="CLIENT")
    server = run.process(300, -50, 150, command="server.py", trace=OTHER_TRACE)
    handler = run.span(300, "POST /items", "http", 45, 65, client, kind="SERVER")
    run.span(300, "json.loads", "parse", 46, 50, handler)
    run.span(300, "json.loads", "parse", 48, 52, handler)
    assert server
    return run


def test_copies_of_a_run_elsewhere_in_the_store_change_nothing(store: Store, tmp_path: Path) -> None:
    """The same spans loaded again under other run ids (a run dir loaded twice, a run copied in
    SQL): their SERVER spans answer this run's clients too, but are the run's own, counted once."""
    expected = {"parsing": (6, 8), "http client overhead": (10, 10), "http server time": (14, 14),
                "own work": (70, 70)}
    run_id = _run_with_its_server("run-1").load(store, tmp_path)
    assert_figures(breakdown(store, run_id), expected)
    _run_with_its_server("run-2").load(store, tmp_path)
    _run_with_its_server("run-3").load(store, tmp_path)
    for copy in (run_id, "run-2", "run-3"):
        assert_figures(breakdown(store, copy), expected)
    # a server traced as its own run, loaded twice: its spans answer the client once
    client_run = RunBuilder("client", first_id=2000)
    main = client_run.process(100, 0, 50)
    client = client_run.span(100, "GET", "http", 10, 40, main, kind="CLIENT")
    for server_id in ("server-a", "server-b"):
        server_run = RunBuilder(server_id, first_id=3000)
        server = server_run.process(300, -100, 200, command="server.py", trace=OTHER_TRACE)
        server_run.span(300, "GET /x", "http", 15, 35, client, kind="SERVER", trace=TRACE)
        server_run.load(store, tmp_path)
        assert server
    client_run.load(store, tmp_path)
    assert_figures(breakdown(store, "client"), {
        "own work": (20, 20), "http client overhead": (10, 10), "http server time": (20, 20)})


def test_an_exec_goes_on_where_the_replaced_process_was(store: Store, tmp_path: Path) -> None:
    run = RunBuilder()
    first = run.process(100, 0, 50)
    exec_span = run.span(100, "exec", "subprocess", 50, 50, first, kind="CLIENT")
    second = run.process(100, 50.5, 100, exec_span, command="new image", image="b")  # same pid, its own file
    run.span(100, "interpreter.startup", "startup", 50.5, 60, second, image="b")
    run_id = run.load(store, tmp_path, end_ns=at(100))
    assert_figures(breakdown(store, run_id), {
        "own work": (90, 90), "outside traced processes": (0.5, 0.5), "interpreter start-up": (9.5, 9.5)})


def random_run(seed: int) -> RunBuilder:
    """A process tree with threads, parallel and nested children, HTTP calls and spans poking out of their parent."""
    rng = random.Random(seed)
    run = RunBuilder(f"random-{seed}")
    pids = iter(range(100, 10_000))

    def fill(pid: int, parent: str, lo: float, hi: float, depth: int) -> None:
        t = lo + rng.uniform(0, 3)
        while t < hi - 2 and depth < 4:
            length = rng.uniform(1, (hi - lo) / 2)
            s, e = t, min(t + length, hi + (rng.uniform(0, 2) if rng.random() < 0.1 else 0))  # sometimes too long
            roll = rng.random()
            if roll < 0.2:  # a child process, maybe in parallel with the next span
                call = run.span(pid, "subprocess", "subprocess", s, e, parent, kind="CLIENT")
                child_pid = next(pids)
                child = run.process(child_pid, s + 0.1, e - 0.2, call, command="child.py")
                run.span(child_pid, "interpreter.startup", "startup", s + 0.1, s + 0.1 + (e - s) / 5, child)
                fill(child_pid, child, s + 0.1 + (e - s) / 5, e - 0.2, depth + 1)
            elif roll < 0.35:
                client = run.span(pid, "POST", "http", s, e, parent, kind="CLIENT")
                if rng.random() < 0.8:
                    run.span(999, "POST /x", "http", s + (e - s) / 4, e - (e - s) / 4, client, kind="SERVER")
            elif roll < 0.45:
                run.span(pid, "subprocess", "subprocess", s, e, parent, kind="CLIENT",
                         attributes={"selfopt_trace.spawn_ns": int((e - s) / 3 * 1_000_000)})
            else:
                category = rng.choice(("import", "serialization", "parse", "phase", "other", "container"))
                span = run.span(pid, f"{category} work", category, s, e, parent)
                fill(pid, span, s, e, depth + 1)
            # threads: the next sibling sometimes starts before this one ended
            t = e - rng.uniform(0, length) if rng.random() < 0.3 else e + rng.uniform(0, 2)

    main = run.process(next(pids), 0, 100)
    run.span(100, "interpreter.startup", "startup", 0, 8, main)
    fill(100, main, 8, 100, 0)
    return run


@pytest.mark.parametrize("seed", range(12))
def test_random_trees_of_runs_recorded_before_waits_match_the_reference(store: Store, tmp_path: Path,
                                                                         seed: int) -> None:
    run = random_run(seed)
    run_id = run.load(store, tmp_path)
    expected = reference.breakdown(run.spans, TRACE)
    actual = breakdown(store, run_id)
    assert_figures(actual, expected)
    assert actual["total"][0] == pytest.approx(100, abs=1e-3)


def random_run_with_waits(seed: int, containers: bool = False,
                          outliving: float = 0.0) -> tuple[RunBuilder, list[reference.CpuSample]]:
    """A process tree as the agent records it now: children and threads that are waited on (one at a
    time, several at once, late, or never), HTTP calls, untraced children, and CPU samples. With
    `containers`: also the Docker SDK's containers (run in the foreground or detached, their calls to
    the engine) and HTTP calls with spans of their own inside them (waiters that are not leaves)."""
    rng = random.Random(seed)
    run = RunBuilder(f"{'containers' if containers else 'waits'}-{seed}", first_id=seed * 10_000 + 1)
    pids = iter(range(100, 10_000))
    tids = iter(range(20_000, 30_000))
    cpu: list[reference.CpuSample] = []

    def sample(pid: int, tid: int, lo: float, hi: float, thread: bool = False) -> dict[str, int]:
        """CPU samples as the sampler reads them: from the start in clock ticks (early), the last
        reading before the end or a little after it (a process shutting down), or none at all; and,
        sometimes, the final reading the agent records at the unit's end (as attributes of its span)."""
        t, last = lo - rng.uniform(0, 2), hi - rng.uniform(-2, 3) if rng.random() < 0.9 else lo - 3
        used = 0.0
        while t < last:
            step = min(last - t, rng.uniform(1, 6))
            cpu.append(reference.CpuSample(pid, tid, t, t + step, round(step * rng.choice((0, 0.3, 1, 1)) * MS) / MS))
            used += cpu[-1].cpu if cpu[-1].end > lo else 0
            t += step
        if rng.random() < 0.5:
            return {}
        final = round((used + rng.uniform(0, max(0.0, hi - max(t, lo)))) * MS)
        if rng.random() < 0.5:  # read as CPU time and time queued for a CPU
            queued = rng.randrange(final + 1)
            readings = {"selfopt_trace.thread.cpu_ns": final - queued, "selfopt_trace.thread.runqueue_ns": queued}
            if thread and rng.random() < 0.5:  # and what a thread used before its span started
                readings["selfopt_trace.thread.start_cpu_ns"] = rng.randrange(round(MS) + 1)
                readings["selfopt_trace.thread.start_runqueue_ns"] = rng.randrange(round(MS) + 1)
            return readings
        return {"selfopt_trace.thread.cpu_ns": final}

    def process(pid: int, parent: str, lo: float, hi: float, depth: int, container_id: str = "") -> None:
        if container_id:
            in_container(run, pid, container_id)
        readings = sample(pid, pid, lo, hi)
        child = run.process(pid, lo, hi, parent, command="child.py", end_attributes=readings)
        run.span(pid, "interpreter.startup", "startup", lo, lo + (hi - lo) / 5, child)
        fill(pid, child, lo + (hi - lo) / 5, hi, depth + 1)

    def fill(pid: int, parent: str, lo: float, hi: float, depth: int) -> None:
        t = lo + rng.uniform(0, 3)
        while t < hi - 2 and depth < 4:
            length = rng.uniform(1, (hi - lo) / 2)
            s, e = t, min(t + length, hi)
            roll = rng.random()
            if containers and rng.random() < 0.2:
                container(pid, parent, s, e, depth)
            elif containers and rng.random() < 0.1:  # an HTTP call with a span of its own inside it
                client = run.span(pid, "POST", "http", s, e, parent, kind="CLIENT")
                if rng.random() < 0.7:
                    run.span(999, "POST /x", "http", s + (e - s) / 4, e - (e - s) / 4, client, kind="SERVER")
                inner = rng.uniform(s, e)
                run.span(pid, "json.dumps", "serialization", inner, rng.uniform(inner, e + 0.5), client)
            elif roll < 0.25:  # children, waited on from some point, or never
                calls, reaped = [], e
                outlives = outliving and rng.random() < outliving  # its siblings start in its children's life
                for _ in range(rng.choice((1, 1, 2))):
                    end = e + rng.uniform(-1, 1) if rng.random() < 0.5 else e
                    if outlives:
                        end = e + rng.uniform(0, max(0.0, hi - e))
                        reaped = max(reaped, end)
                    attributes = {"selfopt_trace.spawn_ns": 100_000}
                    if rng.random() < 0.5:  # reaped by the thread that spawned it: its CPU in between
                        gap = max(end, s + 0.5) - s - 0.1
                        attributes |= {"selfopt_trace.cpu.end_ns": 1_000_000,
                                       "selfopt_trace.cpu.reap_ns": 1_000_000 + round(gap * MS * rng.choice((0, 0.2, 0.3)))}
                    call = run.span(pid, "subprocess", "subprocess", s, max(end, s + 0.5), parent, kind="CLIENT",
                                    attributes=attributes)
                    if rng.random() < 0.8:
                        process(next(pids), call, s + 0.2, max(end, s + 0.5) - 0.1, depth)
                    calls.append(call)
                if rng.random() < 0.8:
                    run.span(pid, "Popen.wait", "wait", rng.uniform(max(s + 0.1, reaped - (e - s)), reaped), reaped,
                             parent, attributes={"selfopt_trace.wait.on": calls})
            elif roll < 0.4:  # a thread, joined (maybe after it ended), or not
                tid = next(tids)
                thread = run.span(pid, "thread", "thread", s, e, parent,
                                  attributes={"thread.id": tid, **sample(pid, tid, s, e, thread=True)})
                fill(pid, thread, s, e, depth + 1)
                if rng.random() < 0.7:
                    run.span(pid, "Thread.join", "wait", rng.uniform(s, e), e + rng.uniform(0, 1), parent,
                             attributes={"selfopt_trace.wait.on": [thread]})
            elif roll < 0.55:
                client = run.span(pid, "POST", "http", s, e, parent, kind="CLIENT")
                if rng.random() < 0.8:
                    run.span(999, "POST /x", "http", s + (e - s) / 4, e - (e - s) / 4, client, kind="SERVER")
            elif roll < 0.6:
                run.span(pid, "sleep", "wait", s, e, parent)  # a wait on nothing the trace knows
            elif roll < 0.68:  # a recorded time.sleep (off the CPU) or asyncio.sleep, in whatever its parent is
                run.span(pid, rng.choice(("time.sleep", "asyncio.sleep")), "sleep", s, e, parent)
            else:
                category = rng.choice(("import", "serialization", "parse", "phase", "other"))
                span = run.span(pid, f"{category} work", category, s, e, parent)
                fill(pid, span, s, e, depth + 1)
            t = e - rng.uniform(0, length) if rng.random() < 0.15 else e + rng.uniform(0, 2)

    def container(pid: int, parent: str, s: float, e: float, depth: int) -> None:
        """containers.run(): its calls to the engine inside its span; detached, the wait (by the id or
        its first 12 characters) and the removal after it. Its process may start and end anywhere."""
        container_id = f"{rng.randrange(16 ** 64):064x}"
        named = container_id if rng.random() < 0.5 else container_id[:12]
        detached = rng.random() < 0.5
        cut = rng.uniform(s + 0.5, e) if detached else e
        call = sdk_container(run, pid, s, cut, parent, detached)
        calls = sorted(rng.uniform(s + 0.2, cut) for _ in range(6))
        paths = ["/containers/create", f"/containers/{named}/start", f"/containers/{named}/json",
                 f"/containers/{named}/wait"]
        for (a, b), path in zip(zip(calls[::2], calls[1::2]), rng.sample(paths, 3)):
            engine_call(run, pid, "POST", path, a, b, call)
        if detached:
            wait_from = rng.uniform(cut, e)
            engine_call(run, pid, "POST", f"/containers/{named}/wait", wait_from, rng.uniform(wait_from, e), parent)
            engine_call(run, pid, "DELETE", f"/containers/{named}?v=False", rng.uniform(wait_from, e), e, parent)
        if rng.random() < 0.9:  # else the image has no Python: nothing traced inside
            lo = rng.uniform(s + 0.2, e - 0.5)
            process(next(pids), call, lo, rng.uniform(lo + 0.3, e + (2 if detached else 0)), depth, container_id)

    main_pid = next(pids)
    main = run.process(main_pid, 0, 100, end_attributes=sample(main_pid, main_pid, 0, 100))
    run.span(main_pid, "interpreter.startup", "startup", 0, 8, main)
    helper = run.span(main_pid, "subprocess", "subprocess", 8, 99, main, kind="CLIENT",
                      attributes={"selfopt_trace.spawn_ns": 500_000})
    process(next(pids), helper, 8.5, 98.5, 3)  # an idle helper alive for the whole run
    fill(main_pid, main, 9, 100, 0)
    return run, cpu


def with_gc_passes(run: RunBuilder, seed: int) -> RunBuilder:
    """The collector's timed passes (`gc` spans, SELFOPT_TRACE_GC=1) inside a third of the spans that
    can be current when one runs (not a wait, a sleep or a spawning span: the agent never makes those
    current), drawn apart: the trees are the other tests' own."""
    rng = random.Random(-1 - seed)
    for span in list(run.spans):
        pid = span.file.split("-", 1)[0]
        if span.category not in ("process", "thread", "import", "serialization", "parse", "phase", "other", "http") \
                or not pid.isdigit() or span.end - span.start < 1 or rng.random() < 0.67:
            continue
        start = rng.uniform(span.start, span.end - 0.5)
        run.span(int(pid), "gc", "gc", start, start + rng.uniform(0.1, (span.end - start) / 2), span.id,
                 attributes={"python.gc.generation": rng.choice((0, 1, 2)), "python.gc.collected": 0})
    return run


def load_cpu(store: Store, run_id: str, samples: list[reference.CpuSample]) -> None:
    store.sql("INSERT INTO cpu_samples (run_id, pid, tid, start_ns, end_ns, cpu_ns) "
              "SELECT $run_id, unnest($pids), unnest($tids), unnest($starts), unnest($ends), unnest($cpus)",
              {"run_id": run_id, "pids": [c.pid for c in samples], "tids": [c.tid for c in samples],
               "starts": [at(c.start) for c in samples], "ends": [at(c.end) for c in samples],
               "cpus": [round(c.cpu * MS) for c in samples]})


def as_stored(samples: list[reference.CpuSample]) -> list[reference.CpuSample]:
    """The samples as the reference sees what the store holds: times rounded to the nanosecond."""
    return [reference.CpuSample(c.pid, c.tid, (at(c.start) - at(0)) / MS, (at(c.end) - at(0)) / MS,
                                round(c.cpu * MS) / MS) for c in samples]


@pytest.mark.parametrize("seed", range(16))
def test_random_trees_with_waits_threads_and_cpu_samples_match_the_reference(store: Store, tmp_path: Path,
                                                                              seed: int) -> None:
    run, cpu = random_run_with_waits(seed)
    run_id = run.load(store, tmp_path)
    load_cpu(store, run_id, cpu)
    cpu = as_stored(cpu)
    expected = reference.breakdown(run.spans, TRACE, cpu)
    actual = breakdown(store, run_id)
    assert_figures(actual, expected)
    assert actual["total"][0] == pytest.approx(100, abs=1e-3)


@pytest.mark.parametrize("seed", range(12))
def test_random_trees_with_the_collector_s_passes_match_the_reference(store: Store, tmp_path: Path, seed: int) -> None:
    """A `gc` span takes its time from the span it interrupted, wherever that span's time goes (a
    process's own work, an import, a waited-on child's, a thread nobody waits on: nothing)."""
    run, cpu = random_run_with_waits(seed)
    run_id = with_gc_passes(run, seed).load(store, tmp_path)
    load_cpu(store, run_id, cpu)
    actual = breakdown(store, run_id)
    assert_figures(actual, reference.breakdown(run.spans, TRACE, as_stored(cpu)))
    assert actual["garbage collection"][1] > 0 and actual["total"][0] == pytest.approx(100, abs=1e-3)


@pytest.mark.parametrize("seed", range(12))
def test_random_trees_with_children_read_while_their_parent_goes_on_match_the_reference(
        store: Store, tmp_path: Path, seed: int) -> None:
    """Children that outlive their spawn's slot: their parent's next spans (waits on other children,
    spawns, HTTP calls) start while a child read until it exits lives, and hang under it."""
    run, cpu = random_run_with_waits(seed, outliving=0.7)
    run_id = run.load(store, tmp_path)
    load_cpu(store, run_id, cpu)
    cpu = as_stored(cpu)
    assert_figures(breakdown(store, run_id), reference.breakdown(run.spans, TRACE, cpu))


@pytest.mark.parametrize("seed", range(12))
def test_random_trees_with_sdk_containers_match_the_reference_and_nothing_is_negative(store: Store, tmp_path: Path,
                                                                                    seed: int) -> None:
    run, cpu = random_run_with_waits(seed, containers=True)
    run_id = run.load(store, tmp_path)
    load_cpu(store, run_id, cpu)
    cpu = as_stored(cpu)
    expected = reference.breakdown(run.spans, TRACE, cpu, resources=resources_of(run))
    actual = breakdown(store, run_id)
    assert_figures(actual, expected)  # none negative, too
    assert all(min(expected[c]) > -1e-6 for c in reference.CATEGORIES)
    assert actual["total"][0] == pytest.approx(100, abs=1e-3)


def test_spans_of_another_sdk_without_process_spans_are_own_work(store: Store, tmp_path: Path) -> None:
    run = RunBuilder()
    root = run.span(100, "GET /", "other", 0, 100)
    run.span(100, "SELECT", "other", 10, 30, root)
    run.span(100, "json.dumps", "serialization", 40, 50, root)
    run_id = run.load(store, tmp_path, run_start_ms=None)
    assert_figures(breakdown(store, run_id), {"own work": (90, 90), "serialization": (10, 10)})


def test_a_docker_run_is_container_start_up_around_the_containers_process(store: Store, tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 100)
    docker = run.span(100, "subprocess", "subprocess", 10, 90, main, kind="CLIENT",
                      attributes={"process.command_args": ["docker", "run", "img", "python", "app.py"]})
    run.span(100, "container.inject", "container", 10, 11, docker)
    container = run.process(1, 40, 80, docker, command="app.py")  # pid 1 inside the container
    run.span(1, "interpreter.startup", "startup", 40, 50, container)
    run_id = run.load(store, tmp_path)
    assert_figures(breakdown(store, run_id), {
        "own work": (20, 20), "container start-up": (40, 40), "interpreter start-up": (10, 10),
        "child processes' own work": (30, 30)})


CONTAINER_ID = "4f" * 32
ENGINE = "http+docker://localhost/v1.41"


def engine_call(run: RunBuilder, pid: int, method: str, path: str, start_ms: float, end_ms: float,
                parent: str) -> str:
    """An HTTP call of the Docker SDK to the engine's socket, as the agent's requests hook records it."""
    return run.span(pid, method, "http", start_ms, end_ms, parent, kind="CLIENT",
                    attributes={"http.request.method": method, "url.full": ENGINE + path})


def sdk_container(run: RunBuilder, pid: int, start_ms: float, end_ms: float, parent: str, detached: bool) -> str:
    """containers.run() of the Docker SDK: its container CLIENT span and the trace injected."""
    call = run.span(pid, "docker run", "container", start_ms, end_ms, parent, kind="CLIENT",
                    attributes={"container.runtime": "docker", "selfopt_trace.docker.sdk": True})
    run.span(pid, "container.inject", "container", start_ms, start_ms + 1, call,
             attributes={"selfopt_trace.docker.subcommand": "run", "selfopt_trace.docker.detached": detached})
    return call


def test_the_docker_sdk_s_calls_to_the_engine_are_container_start_up_around_its_process(store: Store,
                                                                                       tmp_path: Path) -> None:
    # containers.run(remove=True): create, start, wait and remove inside the SDK's container span; the
    # container's process runs from within the start call to within the wait. Counted once: the time
    # the calls wait on the process is the process's, the rest container start-up, nothing negative.
    run = RunBuilder()
    main = run.process(100, 0, 100)
    run.span(100, "interpreter.startup", "startup", 0, 5, main)
    call = sdk_container(run, 100, 10, 90, main, detached=False)
    engine_call(run, 100, "POST", "/containers/create", 11, 15, call)
    engine_call(run, 100, "POST", f"/containers/{CONTAINER_ID}/start", 16, 30, call)
    engine_call(run, 100, "POST", f"/containers/{CONTAINER_ID}/wait", 31, 85, call)
    engine_call(run, 100, "DELETE", f"/containers/{CONTAINER_ID}?v=False", 86, 89, call)
    in_container(run, 1, CONTAINER_ID)
    container = run.process(1, 25, 80, call, command="python -c time.sleep(0.5)")  # pid 1 inside the container
    run.span(1, "interpreter.startup", "startup", 25, 35, container)
    run.span(1, "time.sleep", "sleep", 35, 75, container)
    run_id = run.load(store, tmp_path)
    expected = {"interpreter start-up": (15, 15), "own work": (15, 15), "container start-up": (25, 25),
                "sleeps": (40, 40), "child processes' own work": (5, 5)}
    assert_figures(breakdown(store, run_id), expected)
    assert reference.breakdown(run.spans, TRACE, resources=resources_of(run)) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})


def test_a_detached_sdk_container_s_wait_waits_on_its_first_process(store: Store, tmp_path: Path) -> None:
    # containers.run(detach=True), then ct.wait() and ct.remove() (by name) outside the container span:
    # calls naming a container of the run are its time; the wait passes on to its first process.
    run = RunBuilder()
    main = run.process(100, 0, 100)
    run.span(100, "interpreter.startup", "startup", 0, 5, main)
    engine_call(run, 100, "GET", "/version", 5, 8, main)  # about no container: an untraced server's
    call = sdk_container(run, 100, 10, 30, main, detached=True)
    engine_call(run, 100, "POST", "/containers/create", 11, 15, call)
    engine_call(run, 100, "POST", f"/containers/{CONTAINER_ID}/start", 16, 30, call)
    in_container(run, 1, CONTAINER_ID, name="worker")
    container = run.process(1, 25, 80, call, command="python -c time.sleep(1)")
    run.span(1, "interpreter.startup", "startup", 25, 35, container)
    run.span(1, "time.sleep", "sleep", 35, 75, container)
    engine_call(run, 100, "POST", f"/containers/{CONTAINER_ID[:12]}/wait", 32, 85, main)
    engine_call(run, 100, "DELETE", "/containers/worker?v=False", 86, 89, main)
    run_id = run.load(store, tmp_path)
    # 30-32: the process runs, waited on by nobody: the main process's own work then
    expected = {"interpreter start-up": (13, 15), "untraced http servers": (3, 3), "container start-up": (23, 23),
                "own work": (16, 16), "sleeps": (40, 40), "child processes' own work": (5, 5)}
    assert_figures(breakdown(store, run_id), expected)
    assert reference.breakdown(run.spans, TRACE, resources=resources_of(run)) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})


def test_a_join_after_the_end_of_a_thread_that_ran_an_sdk_container_is_an_untraced_wait(store: Store,
                                                                                         tmp_path: Path) -> None:
    # A Thread.join past its thread's end (30-35) waits on nothing running: an untraced wait. The thread
    # is no spawning span, whatever it ran (its SDK container call made those 5 ms container start-up).
    run = RunBuilder()
    main = run.process(100, 0, 100)
    thread = run.span(100, "thread", "thread", 10, 30, main, attributes={"thread.id": 20_000})
    sdk_container(run, 100, 15, 20, thread, detached=False)
    run.span(100, "Thread.join", "wait", 25, 35, main, attributes={"selfopt_trace.wait.on": [thread]})
    assert_sql_and_reference(store, tmp_path, run,
                             {"own work": (95, 105), "container start-up": (0, 5), "untraced waits": (5, 5)})


def test_an_sdk_call_to_the_engine_hung_under_a_child_s_read_is_still_the_container_s(store: Store,
                                                                                      tmp_path: Path) -> None:
    # A child read until it exits (20-60) spawned during containers.run() (10-40): the SDK's create
    # call started in the read hangs under it (the read is no leaf meanwhile), and is still the
    # container's call, where it stands beside the container call (25-30: half of it each).
    run = RunBuilder()
    main = run.process(100, 0, 100)
    call = sdk_container(run, 100, 10, 40, main, detached=False)
    child = run.span(100, "subprocess", "subprocess", 20, 60, main, kind="CLIENT",
                     attributes={"selfopt_trace.spawn_ns": 1_000_000, "selfopt_trace.cpu.end_ns": 1_000_000,
                                 "selfopt_trace.cpu.reap_ns": 1_000_000})
    engine_call(run, 100, "POST", "/containers/create", 25, 30, call)
    run.span(100, "Popen.wait", "wait", 59, 60, main, attributes={"selfopt_trace.wait.on": [child]})
    assert_sql_and_reference(store, tmp_path, run, {"own work": (50, 50), "container start-up": (22.5, 35),
                                                    "untraced child processes": (27.5, 35)})


def assert_sql_and_reference(store: Store, tmp_path: Path, run: RunBuilder, expected: dict,
                             cpu: list[reference.CpuSample] = (), **run_json_fields: Any) -> None:
    """The breakdown and its reference both give `expected` (category: (wall, busy); others 0), with
    the CPU samples `cpu` (and run.json's `run_json_fields`)."""
    run_id = run.load(store, tmp_path, **run_json_fields)
    load_cpu(store, run_id, list(cpu))
    assert_figures(breakdown(store, run_id), expected)
    assert reference.breakdown(run.spans, TRACE, cpu) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})


def test_a_waiter_passes_nothing_on_while_a_child_of_its_own_is_open(store: Store, tmp_path: Path) -> None:
    # An HTTP call encoding its body (a serialization span inside it) while its server is already at
    # work: for those 10 ms the call is the encoding, not a wait on the server (the same instant
    # counted as both made its own self time negative).
    run = RunBuilder()
    main = run.process(100, 0, 100)
    client = run.span(100, "POST", "http", 10, 90, main, kind="CLIENT")
    run.span(100, "json.dumps", "serialization", 10, 30, client)
    server = run.process(300, -50, 150, command="server.py", trace=OTHER_TRACE)
    run.span(300, "POST /items", "http", 20, 80, client, kind="SERVER")
    run_id = run.load(store, tmp_path)
    assert server
    expected = {"own work": (20, 20), "serialization": (20, 20), "http server time": (50, 60),
                "http client overhead": (10, 10)}
    assert_figures(breakdown(store, run_id), expected)
    assert reference.breakdown(run.spans, TRACE) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})


def test_an_idle_helper_alive_for_the_whole_run_takes_nothing(store: Store, tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 100)
    helper = run.span(100, "subprocess", "subprocess", 5, 99, main, kind="CLIENT",
                      attributes={"selfopt_trace.spawn_ns": 1_000_000})
    idle = run.process(200, 6, 98, helper, command="jedi subprocess")
    run.span(200, "interpreter.startup", "startup", 6, 16, idle)
    run.span(100, "json.dumps", "serialization", 20, 60, main)
    run.span(100, "Popen.wait", "wait", 98.5, 99, main, attributes={"selfopt_trace.wait.on": [helper]})
    run_id = run.load(store, tmp_path)
    assert_figures(breakdown(store, run_id), {  # the helper's own life is busy time, never wall time
        "own work": (58.5, 58.5), "subprocess spawn overhead": (1, 1), "interpreter teardown": (0.5, 0.5),
        "serialization": (40, 40),
        "interpreter start-up": (0, 10), "child processes' own work": (0, 82)})


def test_a_server_started_first_and_stopped_last_counts_only_where_it_answers(store: Store, tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 100)
    spawn = run.span(100, "subprocess", "subprocess", 2, 95, main, kind="CLIENT",
                     attributes={"selfopt_trace.spawn_ns": 1_000_000})
    server = run.process(300, 3, 94, spawn, command="server.py")
    run.span(100, "json.dumps", "serialization", 10, 40, main)
    client = run.span(100, "POST", "http", 40, 70, main, kind="CLIENT")
    run.span(300, "POST /items", "http", 45, 65, client, kind="SERVER")
    run.span(100, "Popen.wait", "wait", 90, 95, main, attributes={"selfopt_trace.wait.on": [spawn]})
    run_id = run.load(store, tmp_path)
    assert server
    assert_figures(breakdown(store, run_id), {
        "own work": (34, 34), "subprocess spawn overhead": (1, 1), "interpreter teardown": (1, 1),
        "serialization": (30, 30), "http client overhead": (10, 10), "http server time": (20, 20),
        "child processes' own work": (4, 91)})
    path = {r["span"].strip(): r for r in run_query(store, "critical_path", {"run_id": run_id, "min_ms": 0}).records()}
    assert path["json.dumps"]["on_path_ms"] == 30 and path["POST"]["on_path_ms"] == 30
    assert path["POST /items"]["on_path_ms"] == 20


def test_off_the_cpu_own_work_is_an_untraced_wait(store: Store, tmp_path: Path) -> None:
    """Two threads, one spinning and one sleeping, joined in turn; the main thread sleeps a little first."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    spinner = run.span(100, "thread", "thread", 10, 60, main, attributes={"thread.id": 101})
    sleeper = run.span(100, "thread", "thread", 10, 90, main, attributes={"thread.id": 102})
    run.span(100, "Thread.join", "wait", 20, 60, main, attributes={"selfopt_trace.wait.on": [spinner]})
    run.span(100, "Thread.join", "wait", 60, 90, main, attributes={"selfopt_trace.wait.on": [sleeper]})
    run_id = run.load(store, tmp_path)
    load_cpu(store, run_id, [
        reference.CpuSample(100, 100, 0, 10, 10), reference.CpuSample(100, 100, 10, 20, 0),  # main: sleeps 10-20
        reference.CpuSample(100, 100, 90, 100, 10),
        reference.CpuSample(100, 101, 10, 60, 50), reference.CpuSample(100, 102, 10, 90, 0)])
    assert_figures(breakdown(store, run_id), {"own work": (60, 160), "untraced waits": (40, 0)})


def test_the_final_cpu_reading_fills_the_tail_after_the_last_sample(store: Store, tmp_path: Path) -> None:
    """The sampler's last reading of a thread comes before its end; the agent's reading at the end
    (selfopt_trace.thread.cpu_ns) says how much of the tail ran: here the spinner stops spinning at
    its last reading and sleeps, and the main thread ran 2 ms of its last 30."""
    run = RunBuilder()
    main = run.process(100, 0, 100, end_attributes={"selfopt_trace.thread.cpu_ns": 22_000_000})
    spinner = run.span(100, "thread", "thread", 10, 60, main,
                       attributes={"thread.id": 101, "selfopt_trace.thread.cpu_ns": 30_000_000})
    run.span(100, "Thread.join", "wait", 10, 60, main, attributes={"selfopt_trace.wait.on": [spinner]})
    run_id = run.load(store, tmp_path)
    load_cpu(store, run_id, [reference.CpuSample(100, 100, 0, 10, 10), reference.CpuSample(100, 100, 60, 70, 10),
                             reference.CpuSample(100, 101, 10, 40, 30)])
    # main: 0-10 and 60-70 running, 70-100 two of 30 ms; the spinner: 10-40 running, 40-60 nothing
    assert_figures(breakdown(store, run_id), {"own work": (52, 100), "untraced waits": (48, 0)})


def test_a_thread_read_before_its_span_counts_from_its_start_reading(store: Store, tmp_path: Path) -> None:
    """A thread that waited for the GIL before its first line was read meanwhile (6 ms of CPU); its
    span's start reading (6 ms) counts from the thread's start, so that much is not in its span: the
    reading across its start gives it 0.5 ms, and its end reading (7 ms) leaves 0.5 ms to the tail."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    thread = run.span(100, "thread", "thread", 40, 100, main,
                      attributes={"thread.id": 101, "selfopt_trace.thread.start_cpu_ns": 6_000_000,
                                  "selfopt_trace.thread.start_runqueue_ns": 0,
                                  "selfopt_trace.thread.cpu_ns": 7_000_000, "selfopt_trace.thread.runqueue_ns": 0})
    run.span(100, "Thread.join", "wait", 40, 100, main, attributes={"selfopt_trace.wait.on": [thread]})
    run_id = run.load(store, tmp_path)
    samples = [reference.CpuSample(100, 101, 10, 20, 3), reference.CpuSample(100, 101, 20, 30, 3),
               reference.CpuSample(100, 101, 30, 50, 0.5)]
    load_cpu(store, run_id, samples)
    expected = {"own work": (41, 100), "untraced waits": (59, 0)}  # main's first 40 ms, then 1 ms of the thread's 60
    assert_figures(breakdown(store, run_id), expected)
    spans = run.spans
    got = reference.breakdown(spans, spans[0].trace, samples)
    assert (round(got["own work"][0], 6), round(got["untraced waits"][0], 6)) == (41, 59)


def test_a_reused_pid_is_another_process(store: Store, tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 100)
    for start, end, image in ((10, 40, ""), (50, 80, "b")):
        call = run.span(100, "subprocess", "subprocess", start, end, main, kind="CLIENT",
                        attributes={"selfopt_trace.spawn_ns": 1_000_000})
        run.process(200, start + 1, end - 1, call, command="child.py", image=image)  # the same pid, twice
        run.span(100, "Popen.wait", "wait", start + 1, end, main, attributes={"selfopt_trace.wait.on": [call]})
    run_id = run.load(store, tmp_path)
    load_cpu(store, run_id, [reference.CpuSample(200, 200, 11, 39, 28), reference.CpuSample(200, 200, 51, 79, 0)])
    assert_figures(breakdown(store, run_id), {
        "own work": (40, 40), "subprocess spawn overhead": (2, 2), "interpreter teardown": (2, 2),
        "child processes' own work": (28, 56),
        "untraced waits": (28, 0)})


def test_a_recorded_sleep_in_own_work_is_sleeps_and_one_inside_a_category_stays_in_it(store: Store,
                                                                                      tmp_path: Path) -> None:
    run = RunBuilder()
    main = run.process(100, 0, 100)
    run.span(100, "time.sleep", "sleep", 10, 30, main)  # the program's own sleep: a poll, a back-off
    encoding = run.span(100, "json.dumps", "serialization", 40, 60, main)
    run.span(100, "time.sleep", "sleep", 45, 50, encoding)  # inside a category: that category's
    call = run.span(100, "subprocess", "subprocess", 60, 90, main, kind="CLIENT",
                    attributes={"selfopt_trace.spawn_ns": 1_000_000})
    child = run.process(200, 61, 89, call, command="child.py")
    run.span(200, "time.sleep", "sleep", 70, 80, child)  # a child's, while it is waited on
    run.span(100, "Popen.wait", "wait", 61, 90, main, attributes={"selfopt_trace.wait.on": [call]})
    run_id = run.load(store, tmp_path)
    expected = {"own work": (30, 30), "sleeps": (30, 30), "serialization": (20, 20), "subprocess spawn overhead": (1, 1),
                "child processes' own work": (18, 18), "interpreter teardown": (1, 1)}
    assert_figures(breakdown(store, run_id), expected)
    assert reference.breakdown(run.spans, TRACE) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})


def test_a_retry_s_back_off_inside_an_http_client_span_is_sleeps(store: Store, tmp_path: Path) -> None:
    """requests with urllib3's Retry: one client span over every attempt, the back-off sleeps between
    them inside it. They were http client overhead (a tester's 200 ms of back-off: 245 ms of it)."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    call = run.span(100, "GET", "http", 10, 90, main, kind="CLIENT")
    run.process(300, -10, 110, command="server.py", trace=OTHER_TRACE)
    run.span(300, "GET /", "http", 12, 20, call, kind="SERVER")  # 503
    run.span(100, "time.sleep", "sleep", 20, 45, call)
    run.span(300, "GET /", "http", 46, 54, call, kind="SERVER")  # 503
    run.span(100, "time.sleep", "sleep", 54, 79, call)
    run.span(300, "GET /", "http", 80, 88, call, kind="SERVER")  # 200
    run_id = run.load(store, tmp_path)
    expected = {"own work": (20, 20), "sleeps": (50, 50), "http server time": (24, 24), "http client overhead": (6, 6)}
    assert_figures(breakdown(store, run_id), expected)
    assert reference.breakdown(run.spans, TRACE) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})


def _with_a_server(run: RunBuilder, command: str) -> tuple:
    """A program (pid 100, 0-100 ms) that spawns a server (pid 200, `command`) at 1 ms, started by 12:
    its process span, the spawning span, the server's process span."""
    main = run.process(100, 0, 100)
    spawn = run.span(100, "subprocess", "subprocess", 1, 99, main, kind="CLIENT",
                     attributes={"selfopt_trace.spawn_ns": 1_000_000, "process.pid": 200})
    server = run.process(200, 2, 98, spawn, command=command)
    run.span(200, "interpreter.startup", "startup", 2, 12, server)
    return main, spawn, server


def test_a_readiness_poll_s_sleeps_wait_on_the_server_that_answers_next(store: Store, tmp_path: Path) -> None:
    """A program polling a server it started (`while True: try: get(url); break  except ConnectionError:
    time.sleep(...)`), then urllib3's Retry doing the same inside one client span: each sleep right
    after a connection that failed waits on the process that answered that address next, its start-up
    and its work (the loader makes it a wait on the server's spawning span). They were sleeps, and the
    server's start-up nobody's. A sleep more than 5 ms after the failure, and one after a failure at
    an address nobody answered, stay sleeps."""
    run = RunBuilder()
    main, spawn, server = _with_a_server(run, "server.py")
    address = {"server.address": "127.0.0.1", "server.port": 8000}

    def refused(start: float, port: int = 8000) -> None:
        call = run.span(100, "GET", "http", start, start + 1, main, kind="CLIENT", status="ERROR",
                        attributes={**address, "server.port": port, "error.type": "ConnectionRefusedError"})
        run.span(100, "connect", "http", start, start + 1, call, status="ERROR")

    refused(2)
    polls = [run.span(100, "time.sleep", "sleep", 3, 23, main)]
    refused(23)
    polls.append(run.span(100, "time.sleep", "sleep", 24, 44, main))
    retried = run.span(100, "GET", "http", 44, 60, main, kind="CLIENT", attributes=address)
    run.span(100, "connect", "http", 44, 45, retried, status="ERROR")
    polls.append(run.span(100, "time.sleep", "sleep", 45, 55, retried))  # urllib3's back-off
    run.span(100, "connect", "http", 55, 56, retried)
    run.span(200, "GET /health", "http", 56, 58, retried, kind="SERVER")
    run.span(100, "time.sleep", "sleep", 70, 75, main)  # 10 ms after the last failure: the program's own
    refused(76, port=9000)
    run.span(100, "time.sleep", "sleep", 77, 80, main)  # nobody answered 127.0.0.1:9000
    run.span(100, "Popen.wait", "wait", 80, 99, main, attributes={"selfopt_trace.wait.on": [spawn]})
    run_id = run.load(store, tmp_path)
    waits = store.sql("SELECT span_id, attributes->>'selfopt_trace.wait.on' FROM spans "
                      "WHERE run_id = ? AND name = 'time.sleep' AND category = 'wait' ORDER BY start_ns", [run_id])[1]
    assert waits == [(poll, f'["{spawn}"]') for poll in polls]
    wall = {c: wall for c, (wall, _) in breakdown(store, run_id).items()}
    expected = {"own work": 13, "subprocess spawn overhead": 1, "http client overhead": 7, "interpreter start-up": 9,
                "child processes' own work": 59, "http server time": 2, "sleeps": 8, "interpreter teardown": 1}
    assert {c: wall[c] for c in reference.CATEGORIES if wall[c]} == pytest.approx(expected)
    # the reference, given the polls as the waits the loader made of them
    as_waits = [replace(s, category="wait", attributes={"selfopt_trace.wait.on": [spawn]}) if s.id in polls else s
                for s in run.spans]
    assert reference.breakdown(as_waits, TRACE) == pytest.approx(
        {c: v for c, v in breakdown(store, run_id).items() if c in reference.CATEGORIES})


def test_a_prefork_server_s_readiness_poll_and_first_request_wait_on_its_master_then_its_worker(
        store: Store, tmp_path: Path) -> None:
    """gunicorn: the master starts (its imports), binds, forks a worker that imports the application,
    and the worker answers. A poll's sleep waits on the master where it began before the worker was
    forked, else on the worker; the first request, accepted by the master's socket while the worker
    still imported, is a `queued` wait the loader adds under the client span (from its connect's end
    to the worker's first answer) on the worker: that was the client's http client overhead."""
    run = RunBuilder()
    main, spawn, master = _with_a_server(run, "gunicorn")
    run.span(200, "import gunicorn", "import", 12, 30, master)
    fork = run.span(200, "fork", "subprocess", 30, 97, master, kind="CLIENT",
                    attributes={"selfopt_trace.spawn_ns": 1_000_000, "process.pid": 300})
    worker = run.process(300, 31, 96, fork, command="gunicorn")
    run.span(300, "import app", "import", 31, 61, worker)
    address = {"server.address": "127.0.0.1", "server.port": 8000}
    for start in (2, 23):  # refused, then a sleep on whoever is starting
        call = run.span(100, "GET", "http", start, start + 1, main, kind="CLIENT", status="ERROR", attributes=address)
        run.span(100, "connect", "http", start, start + 1, call, status="ERROR")
    polls = [run.span(100, "time.sleep", "sleep", 3, 23, main), run.span(100, "time.sleep", "sleep", 24, 44, main)]
    call = run.span(100, "GET", "http", 44, 70, main, kind="CLIENT", attributes=address)
    run.span(100, "connect", "http", 44, 45, call)  # the master's socket accepts it: the worker is not ready
    run.span(300, "GET /", "http", 65, 67, call, kind="SERVER")
    run.span(100, "Popen.wait", "wait", 70, 99, main, attributes={"selfopt_trace.wait.on": [spawn]})
    run_id = run.load(store, tmp_path)
    rows = store.sql("SELECT span_id, parent_span_id, category, start_ns, end_ns, attributes->>'selfopt_trace.wait.on'"
                     " FROM spans WHERE run_id = ? AND name IN ('time.sleep', 'queued') ORDER BY start_ns", [run_id])[1]
    (queued_id, *_), = [r for r in rows if r[0] not in polls]
    assert [r[1:] for r in rows] == [(main, "wait", at(3), at(23), f'["{spawn}"]'),  # the master booting
                                     (main, "wait", at(24), at(44), f'["{spawn}"]'),  # the worker forked mid-sleep
                                     (call, "wait", at(45), at(65), f'["{fork}"]')]  # queued while the worker imported
    expected = {"own work": 2, "subprocess spawn overhead": 2, "http client overhead": 6, "interpreter start-up": 9,
                "imports": 33, "child processes' own work": 45, "http server time": 2, "interpreter teardown": 1}
    wall = {c: wall for c, (wall, _) in breakdown(store, run_id).items()}
    assert {c: wall[c] for c in reference.CATEGORIES if wall[c]} == pytest.approx(expected)
    as_loaded = [replace(s, category="wait", attributes={"selfopt_trace.wait.on": [spawn]}) if s.id in polls else s
                 for s in run.spans]
    as_loaded.append(replace(as_loaded[0], id=queued_id, parent=call, name="queued", category="wait", start=45, end=65,
                             attributes={"selfopt_trace.wait.on": [fork]}))
    assert reference.breakdown(as_loaded, TRACE) == pytest.approx(
        {c: v for c, v in breakdown(store, run_id).items() if c in reference.CATEGORIES})


def test_a_server_a_script_started_beside_its_client_takes_the_time_only_when_alone(store: Store,
                                                                                    tmp_path: Path) -> None:
    """`sh -c "server & client; kill server"`: two top-level processes in the run's trace (their parent
    is the run's context, no span of the run); the script waits on the client, which calls the server."""
    run = RunBuilder()
    context = "f" * 16
    server = run.process(300, 0, 100, context, command="server.py")
    client = run.process(100, 5, 80, context, command="client.py")
    call = run.span(100, "GET", "http", 20, 60, client, kind="CLIENT")
    run.span(300, "GET /", "http", 25, 55, call, kind="SERVER")
    run.span(300, "time.sleep", "sleep", 85, 95, server)  # its shutdown polls
    run_id = run.load(store, tmp_path)
    expected = {"own work": (50, 125), "sleeps": (10, 10), "http client overhead": (10, 10),
                "http server time": (30, 30)}
    assert_figures(breakdown(store, run_id), expected)
    assert reference.breakdown(run.spans, TRACE) == pytest.approx(
        {c: expected.get(c, (0.0, 0.0)) for c in reference.CATEGORIES})
    rows = run_query(store, "critical_path", {"run_id": run_id, "min_ms": 0}).records()
    processes = [(r["pid"], r["start_ms"], r["on_path_ms"]) for r in rows if r["span"].strip() == "process"]
    # the server's start-up alone, the client, then the server's end: the run's 100 ms
    assert processes == [(300, 0, 5), (100, 5, 75), (300, 80, 20)], processes
    assert [r["on_path_ms"] for r in rows if r["span"].strip() == "GET /"] == [30]


@pytest.mark.parametrize("ran_ms, queued_ms, slept", [(2, 0, False), (25, 0, False), (2, 0, True), (2, 23, False)])
def test_a_child_read_until_it_exits_is_waited_on_if_its_spawner_idled(store: Store, tmp_path: Path, ran_ms: float,
                                                                       queued_ms: float, slept: bool) -> None:
    """`for line in proc.stdout` then `proc.wait()`: no hook sees the reads. A spawning thread that
    ran a quarter of the time since the spawn or less was waiting on the child, until it reaped it
    (the final wait), but where it recorded anything else (a sleep of its own, which ended the read
    before); with more CPU, or its CPU and its time queued for one (a busy machine's preemption is
    running), it was not."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    call = run.span(100, "subprocess", "subprocess", 10, 90, main, kind="CLIENT",
                    attributes={"selfopt_trace.spawn_ns": 1_000_000, "selfopt_trace.cpu.end_ns": 5_000_000,
                                "selfopt_trace.cpu.reap_ns": 5_000_000 + round(ran_ms * MS),
                                "selfopt_trace.cpu.end_runqueue_ns": 7_000_000,
                                "selfopt_trace.cpu.reap_runqueue_ns": 7_000_000 + round(queued_ms * MS)})
    child = run.process(200, 12, 88, call, command="child.py")
    run.span(200, "interpreter.startup", "startup", 12, 20, child)
    run.span(200, "time.sleep", "sleep", 20, 80, child)
    if slept:
        run.span(100, "time.sleep", "sleep", 50, 51, main)
    run.span(100, "Popen.wait", "wait", 89, 90, main, attributes={"selfopt_trace.wait.on": [call]})
    run_id = run.load(store, tmp_path)
    if slept:  # waited on but in its own sleep (50-51: its sleeps; the child's sleep goes on meanwhile)
        expected = {"own work": (20, 20), "subprocess spawn overhead": (2, 2), "interpreter start-up": (8, 8),
                    "sleeps": (60, 61), "child processes' own work": (8, 8), "interpreter teardown": (2, 2)}
    elif (ran_ms + queued_ms) * 4 <= 79:
        expected = {"own work": (20, 20), "subprocess spawn overhead": (2, 2), "interpreter start-up": (8, 8),
                    "sleeps": (60, 60), "child processes' own work": (8, 8), "interpreter teardown": (2, 2)}
    else:  # the child's life is busy time only, and the reads the parent's own work
        expected = {"own work": (98, 98), "subprocess spawn overhead": (1, 1), "interpreter teardown": (1, 1),
                    "interpreter start-up": (0, 8), "sleeps": (0, 60), "child processes' own work": (0, 8)}
    assert_figures(breakdown(store, run_id), expected)
    assert {k: v for k, v in reference.breakdown(run.spans, TRACE).items() if v != (0, 0)} == pytest.approx(expected)


@pytest.mark.parametrize("thread_ran_ms", [5, 30])
def test_a_child_read_by_a_thread_its_spawner_started_is_waited_on(store: Store, tmp_path: Path,
                                                                    thread_ran_ms: float) -> None:
    """A `threading.Thread` started while its spawner's thread reads a child (after the spawning call,
    before the reap) that ran a quarter of its life or less drains the child's pipe: the join waits on
    the thread, the thread on the child. One that ran more works on its own."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    call = run.span(100, "subprocess", "subprocess", 10, 95, main, kind="CLIENT",
                    attributes={"selfopt_trace.spawn_ns": 1_000_000, "selfopt_trace.cpu.end_ns": 5_000_000,
                                "selfopt_trace.cpu.reap_ns": 6_000_000})
    child = run.process(200, 12, 88, call, command="child.py")
    run.span(200, "interpreter.startup", "startup", 12, 20, child)
    reader = run.span(100, "thread", "thread", 12, 90, main,
                      attributes={"thread.id": 101, "selfopt_trace.thread.cpu_ns": round(thread_ran_ms * MS)})
    run.span(100, "Thread.join", "wait", 12, 90, main, attributes={"selfopt_trace.wait.on": [reader]})
    run.span(100, "Popen.wait", "wait", 90, 95, main, attributes={"selfopt_trace.wait.on": [call]})
    run_id = run.load(store, tmp_path)
    # the thread's time after the child's end (88-90), and where it did not read (12-90), is its own:
    # on the CPU as much as it ran (5 or 30 ms of 78), off it an untraced wait
    if thread_ran_ms * 4 <= 78:
        expected = {"own work": (16 + 2 * 5 / 78, 18), "untraced waits": (2 * 73 / 78, 0),
                    "subprocess spawn overhead": (1, 1), "interpreter start-up": (8, 8),
                    "child processes' own work": (68, 68), "interpreter teardown": (5, 5)}
    else:
        expected = {"own work": (16 + 30, 16 + 78), "untraced waits": (48, 0), "subprocess spawn overhead": (1, 1),
                    "interpreter teardown": (5, 5), "interpreter start-up": (0, 8), "child processes' own work": (0, 68)}
    assert_figures(breakdown(store, run_id), expected)
    assert {k: v for k, v in reference.breakdown(run.spans, TRACE).items() if v != (0, 0)} \
        == {k: pytest.approx(v) for k, v in expected.items()}


def test_an_asyncio_sleep_is_sleeps_where_its_thread_did_not_run_other_tasks(store: Store, tmp_path: Path) -> None:
    """A task sleeps 80 ms while the loop's thread runs other tasks for 24 of them (no span: own work)."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    run.span(100, "asyncio.sleep", "sleep", 10, 90, main)
    run_id = run.load(store, tmp_path)
    samples = [reference.CpuSample(100, 100, 0, 10, 10), reference.CpuSample(100, 100, 10, 90, 24),
               reference.CpuSample(100, 100, 90, 100, 10)]
    load_cpu(store, run_id, samples)
    expected = {"own work": (44, 20), "sleeps": (56, 80)}  # busy: self time, as a time.sleep's
    assert_figures(breakdown(store, run_id), expected)
    assert {k: v for k, v in reference.breakdown(run.spans, TRACE, samples).items() if v != (0, 0)} == \
        pytest.approx(expected)


def test_an_asyncio_sleep_under_a_child_s_read_is_still_own_work_on_the_cpu(store: Store, tmp_path: Path) -> None:
    """An asyncio.sleep started while its thread reads a child hangs under the read; the thread's CPU
    meanwhile (other tasks) is still own work, not the read's untraced child (138, 183 of the random
    runs: the reference took the category of the sleep's new parent)."""
    run = RunBuilder()
    main = run.process(100, 0, 100, end_attributes={"process.cpu_ns": 30_000_000})  # a run of today
    run.span(100, "subprocess", "subprocess", 10, 90, main, kind="CLIENT",
             attributes={**IDLE, "process.command_args": ["git", "status"]})
    run.span(100, "asyncio.sleep", "sleep", 30, 50, main)
    cpu = [reference.CpuSample(100, 100, 0, 10, 10), reference.CpuSample(100, 100, 10, 30, 0),
           reference.CpuSample(100, 100, 30, 50, 10), reference.CpuSample(100, 100, 50, 90, 0),
           reference.CpuSample(100, 100, 90, 100, 10)]
    assert_sql_and_reference(store, tmp_path, run, {
        "own work": (30, 20), "untraced child processes": (60, 60), "sleeps": (10, 20)}, cpu)


def test_a_wait_on_a_pool_goes_to_its_workers_not_waiting_for_a_task(store: Store, tmp_path: Path) -> None:
    """A ProcessPoolExecutor's Future.result names every worker (which one runs the task is not
    known); the worker reading its next task (Queue.get, hooks/waits.py) is not what the wait is on,
    while another is not in such a read. When both are, the wait is theirs equally: an untraced wait."""
    run = RunBuilder()
    main = run.process(100, 0, 100)
    starts = [run.span(100, "multiprocessing", "subprocess", at_ms, at_ms + 1, main, kind="CLIENT")
              for at_ms in (1, 2)]
    busy = run.process(201, 2, 99, starts[0], command="worker")
    idle = run.process(202, 3, 99, starts[1], command="worker")
    run.span(201, "Queue.get", "wait", 10, 30, busy, attributes={"selfopt_trace.wait.on": []})
    run.span(201, "Queue.get", "wait", 80, 98, busy, attributes={"selfopt_trace.wait.on": []})
    run.span(202, "Queue.get", "wait", 10, 98, idle, attributes={"selfopt_trace.wait.on": []})
    run.span(100, "Future.result", "wait", 20, 80, main, attributes={"selfopt_trace.wait.on": starts})
    run_id = run.load(store, tmp_path)
    figures = breakdown(store, run_id)
    assert figures["child processes' own work"][0] == pytest.approx(50)  # the task, 30-80: was 25
    assert figures["untraced waits"][0] == pytest.approx(10)  # 20-30: both workers waited for a task
    assert_figures(figures, reference.breakdown(run.spans, TRACE))
