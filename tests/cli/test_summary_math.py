"""The summary's time accounting (`exclusive_time`) and the `--json` option parsing, on known inputs."""

from __future__ import annotations

from selfopt_trace.cli.run import normalize_json_option
from selfopt_trace.summary import OUTSIDE, OWN_WORK, exclusive_time


def by_label(intervals, window):
    return {label: ns for label, ns in exclusive_time(sorted(intervals, key=lambda i: i[1]), window).items() if ns}


def test_nested_spans_give_each_instant_to_the_deepest():
    spans = [("process", 0, 100), ("startup", 0, 20), ("import", 30, 60), ("import", 35, 45), ("subprocess", 70, 90)]
    assert by_label(spans, (0, 110)) == {"start-up": 20, "imports": 30, "subprocess wait": 20, OWN_WORK: 30, OUTSIDE: 10}


def test_overlapping_threads_are_never_counted_twice():
    # two HTTP calls from two threads overlap for 10 ns: that time counts once
    spans = [("process", 0, 100), ("http", 10, 40), ("http", 30, 50)]
    totals = by_label(spans, (0, 100))
    assert totals == {"HTTP": 40, OWN_WORK: 60}
    assert sum(totals.values()) == 100


def test_gaps_before_between_and_after_processes_are_outside():
    # a non-Python parent (bash) running two traced processes one after the other
    spans = [("process", 10, 30), ("process", 50, 80)]
    assert by_label(spans, (0, 100)) == {OWN_WORK: 50, OUTSIDE: 50}


def test_equal_starts_go_to_the_shorter_span():
    spans = [("process", 0, 50), ("startup", 0, 10)]
    assert by_label(spans, (0, 50)) == {"start-up": 10, OWN_WORK: 40}


def test_unknown_categories_are_own_work_and_empty_spans_are_ignored():
    spans = [("process", 0, 10), ("phase", 2, 8), ("import", 5, 5)]
    assert by_label(spans, (0, 10)) == {OWN_WORK: 10}


def test_json_option_takes_a_file_only_before_a_double_dash():
    value = {"--out", "--db", "--run-id", "--service", "--import-threshold-ms", "--repeat", "--warmup"}
    assert normalize_json_option(["--json", "--", "cmd"], value) == ["--json=-", "--", "cmd"]
    assert normalize_json_option(["--json", "f.json", "--", "cmd"], value) == ["--json=f.json", "--", "cmd"]
    assert normalize_json_option(["--json", "cmd", "arg"], value) == ["--json=-", "cmd", "arg"]
    assert normalize_json_option(["--json=f.json", "cmd"], value) == ["--json=f.json", "cmd"]
    assert normalize_json_option(["--out", "d", "--json", "-q", "--", "c"], value) == ["--out", "d", "--json=-", "-q", "--", "c"]
    # options of the command are the command's
    assert normalize_json_option(["cmd", "--json", "x", "--", "y"], value) == ["cmd", "--json", "x", "--", "y"]
