"""The tracer's hot path: what it inlines must stay equal to what it stands for."""

from __future__ import annotations

import enum
import json
from pathlib import Path

import pytest

from selfopt_trace.bootstrap.selfopt_trace_agent import spanfile, tracer


@pytest.fixture()
def configured(tmp_path: Path):
    tracer.configure(str(tmp_path / "spans"), "")  # the flusher counts as started: no thread in pytest
    root = tracer.Span(tracer.new_span_id(), None, "", "ab" * 16, "process", tracer.INTERNAL, "process", 1, None)
    tracer.set_root(root, root.trace_id, "")
    yield tmp_path / "spans"
    tracer.set_root(None, "", "")
    tracer.flush()


def test_start_span_sets_every_field_as_the_constructor_does(configured: Path) -> None:
    attributes = {"code.function": "work"}
    span = tracer.start_span("work", "other", attributes=attributes)
    built = tracer.Span(span.span_id, span.parent, span.parent_id, span.trace_id, "work", tracer.INTERNAL,
                        "other", span.start_ns, attributes)
    assert {name: getattr(span, name) for name in tracer.Span.__slots__} == \
           {name: getattr(built, name) for name in tracer.Span.__slots__}
    assert span.parent is tracer.root() and span.parent_id == tracer.root().span_id


def test_span_ids_are_sixteen_hex_digits_and_unique(configured: Path) -> None:
    ids = [tracer.start_span("s", "other").span_id for _ in range(10_000)]
    assert len(set(ids)) == len(ids)
    assert all(len(span_id) == 16 and int(span_id, 16) != 0 for span_id in ids)


def test_an_ended_span_is_written_as_the_format_defines_a_complete_record(configured: Path) -> None:
    span = tracer.start_span("work", "other", attributes={"code.function": "work"})
    tracer.end_span(span, tracer.OK)
    tracer.flush()
    lines = [line for path in configured.iterdir() for line in path.read_text().splitlines(keepends=True)]
    assert [line for line in lines if span.span_id in line] == [spanfile.complete_line(
        span.span_id, tracer.root().span_id, tracer.root().trace_id, "work", tracer.INTERNAL, "other",
        span.start_ns, span.end_ns, tracer.OK, '{"code.function":"work"}')]


@pytest.mark.parametrize("value", ["work", 'a "quoted" name', "back\\slash", "tab\there", "new\nline",
                                   "bell\x07", "caf\u00e9", "\u2028", "\U0001F600", "", 7, -1.5, True, None,
                                   [1, "x"], {"nested": "dict"}])
def test_one_attribute_encodes_as_json_whatever_it_holds(value: object) -> None:
    text = spanfile.encode({"key": value})
    assert json.loads(text) == {"key": value}
    assert "\t" not in text and "\n" not in text
    assert spanfile.encode({"key": value, "other": 1}) == text[:-1] + ',"other":1}'  # the general path agrees


def test_a_subclass_of_a_json_type_encodes_as_the_value_it_is() -> None:
    """An IntEnum or a str Enum as the OTel SDK exports it: its value, not its str() ("Level.HIGH"
    before Python 3.11, what a 3.10 program's span said)."""
    class Level(enum.IntEnum):
        HIGH = 3

    class Color(str, enum.Enum):
        RED = "red"

    class Ratio(float):
        def __str__(self) -> str:
            return "a ratio"

    assert json.loads(spanfile.encode({"level": Level.HIGH, "color": Color.RED, "ratio": Ratio(0.5)})) == {
        "level": 3, "color": "red", "ratio": 0.5}


def test_counted_overhead_is_calls_times_their_cost_and_starts_over_in_a_forked_child(configured: Path) -> None:
    before = tracer.overhead_ns()
    cell = tracer.counted_overhead()
    try:
        cell[1] = 250
        cell[0] += 4
        assert tracer.overhead_ns() - before == 1000
        tracer.before_fork()
        tracer.reset_after_fork()  # what a forked child runs: its own cost only
        assert cell[0] == 0 and tracer.overhead_ns() == 0
    finally:
        tracer._counted.remove(cell)


def test_a_counted_cell_is_charged_the_mean_of_its_first_calls_without_the_longest(configured: Path) -> None:
    """Skewed costs (most calls cheap, some walking further): calls x median undercounted them; a
    preemption inside one timed call must not be charged to every later call."""
    cell, samples = tracer.counted_overhead(), []
    try:
        before = tracer.overhead_ns()
        costs = [1000] * 32 + [3000] * 28 + [10_000_000] * 4  # median 3000, mean 626,812
        for spent in costs:
            assert cell[1] == 0  # still timing
            tracer.calibrate(cell, samples, spent)
        assert cell[1] == (32 * 1000 + 28 * 3000) // 60
        assert tracer.overhead_ns() - before == sum(costs)  # the timed calls count as they were
    finally:
        tracer._counted.remove(cell)


def test_a_sampled_cell_is_charged_the_mean_of_its_later_samples_once_there_are_enough(configured: Path) -> None:
    """A summed compile's first 64 calls cost 4.5x its later ones: the later samples decide."""
    cell, samples = tracer.counted_overhead(), []
    try:
        for _ in range(tracer.CALIBRATION):
            tracer.calibrate(cell, samples, 2000)
        before = tracer.overhead_ns()
        for i in range(tracer.SAMPLES_TRUSTED):
            cell[0] += tracer.SAMPLE_EVERY - 1  # the calls counted between two samples
            assert cell[1] == 2000  # the first calls' cost until SAMPLES_TRUSTED samples are in
            tracer.sampled(cell, samples, 10_000_000 if i == 0 else 400)  # a preemption in the first
        assert samples[1] == tracer.SAMPLE_CAP * 2000  # capped: with two, one is kept
        assert cell[1] == 400  # the preemption left out
        calls = tracer.SAMPLE_EVERY * tracer.SAMPLES_TRUSTED
        assert cell[0] == calls and tracer.overhead_ns() - before == calls * cell[1]  # every call at the sampled cost
    finally:
        tracer._counted.remove(cell)


@pytest.fixture(params=["C twin", "itertools"])
def id_source(request, configured: Path):
    """Span ids from the import wrapper's C twin (as `run` prepares the agent), and from the chain of
    itertools the tracer builds without it."""
    twin = tracer.twin
    if request.param == "C twin" and twin is None:
        pytest.skip("no C twin of the import wrapper here (not CPython 3.8-3.13 on Linux, or no C compiler)")
    if request.param == "itertools":
        tracer.twin = None
    try:
        tracer.configure(str(configured), "")
        yield configured
    finally:
        tracer.twin = twin
        tracer.configure(str(configured), "")


def test_span_ids_count_up_as_sixteen_hex_digits_across_their_cached_upper_digits(id_source: Path) -> None:
    configured = id_source
    ids = [tracer.new_span_id() for _ in range(600)]  # the upper 14 digits change every 256 ids
    first = int(ids[0], 16)
    assert ids == ["%016x" % (first + i) for i in range(600)]
    tracer.configure(str(configured), "")  # a new start (a forked child's): random, a multiple of 256, never 0
    start = int(tracer.new_span_id(), 16)
    assert start % 256 == 0 and start >> 8 and abs(start - first) > 600
