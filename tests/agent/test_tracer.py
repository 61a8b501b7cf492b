"""The tracer's hot path: what it inlines must stay equal to what it stands for."""

from __future__ import annotations

import enum
import json
from pathlib import Path

import pytest

from selfopt_trace.bootstrap.selfopt_trace_agent import spanfile, tracer
from tests.agent.conftest import NO_TWIN


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
        pytest.skip(NO_TWIN)
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


@pytest.fixture()
def twin_writers(twin):
    assert tracer.encode is not spanfile.encode and tracer._span_line is not tracer._format


class _Name(str):
    """A str subclass: written as the text it is."""


ODD_VALUES = ["work", 'a "quoted" name', "back\\slash", "tab\there", "new\nline", "bell\x07", "del\x7f",
              "caf\u00e9", "\u2028", "\U0001F600", "sur\udcffrogate", "", 0, 7, 10, 99, 100, -1, -100, 2**63 - 1, -2**63, 2**63, 10**30,
              -1.5, 0.1, 1e300, 1e-7, float("nan"), float("inf"), float("-inf"), True, False, None, [1, "x"],
              ("t", 2), {"nested": "dict"}, _Name("subclass"), enum.IntEnum("Level", "HIGH").HIGH, b"bytes"]


@pytest.mark.parametrize("value", ODD_VALUES)
def test_the_twins_attribute_encoder_writes_what_spanfiles_does(twin_writers, value: object) -> None:
    for attributes in ({"key": value}, {"key": value, "other": 1}, {"first": "a", "key": value, "last": None},
                       {value: 1} if isinstance(value, (str, int, float, tuple)) else {"k\u00e9y": value}):
        assert tracer.encode(attributes) == spanfile.encode(attributes), attributes


def test_the_twins_attribute_encoder_takes_any_size_and_anything_falsy(twin_writers) -> None:
    for attributes in (None, {}, {"url.full": "http://h/" + "p" * 5000}, {"k%d" % i: i for i in range(500)}):
        assert tracer.encode(attributes) == spanfile.encode(attributes)


def _spans(value: object) -> list:
    """Ended spans (and one open) holding `value` where each field of a record can carry it."""
    spans = []
    for start, end in (({"key": value}, None), (None, {"key": value}), ({"key": value, "a": 1}, {"key": 2, "b": value}),
                       ({"a": value}, {}), ({}, {"a": value}), (None, None), ({"x": 1}, {"x": value, "y": 2})):
        span = tracer.Span("00000000000000ab", None, "00000000000000cd", "ef" * 16, "GET", tracer.CLIENT, "http",
                           1_700_000_000_000_000_000, start)
        span.end_ns, span.status, span.end_attributes = 1_700_000_000_123_456_789, tracer.OK, end
        spans.append(span)
    if isinstance(value, str):
        for field in ("name", "span_id", "parent_id", "trace_id", "kind", "category", "status"):
            span = tracer.Span("00000000000000ab", None, "00000000000000cd", "ef" * 16, "GET", tracer.CLIENT,
                               "http", 5, {"a": 1})
            span.end_ns = 6
            setattr(span, field, value)
            spans.append(span)
    open_span = tracer.Span("00000000000000ab", None, "", "ef" * 16, "GET", tracer.CLIENT, "http", 5, {"key": value})
    return spans + [open_span]


@pytest.mark.parametrize("value", ODD_VALUES + ["x" * 9000])
def test_the_twins_span_record_is_the_one_the_python_formatter_writes(twin_writers, value: object) -> None:
    for span in _spans(value):
        assert tracer._span_line(span) == tracer._format(span), (value, span.attributes, span.end_attributes)
