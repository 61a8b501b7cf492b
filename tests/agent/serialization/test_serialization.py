"""Serialization spans: json, pickle, dill, pydantic v2; small calls summed onto the enclosing span."""

from __future__ import annotations

import json

import pytest

from tests.agent.serialization.programs import Program, process, sums


@pytest.fixture
def program(traced, tmp_path) -> Program:
    return Program(traced, tmp_path)


def line_of(source: str, marker: str) -> int:
    """The 1-based line of `marker` in `source` as Program writes it (dedented, first newline kept)."""
    import textwrap

    return next(i for i, line in enumerate(textwrap.dedent(source).splitlines(), 1) if marker in line)


BIG = """
import hashlib, json, pickle
data = {"items": [{"id": i, "name": "n%d" % i} for i in range(20000)]}
text = json.dumps(data)  # DUMPS
back = json.loads(text)  # LOADS
blob = pickle.dumps(data, protocol=4)  # PICKLE
again = pickle.loads(blob)
print(len(text), hashlib.sha256(text.encode()).hexdigest(), back == data, len(blob), again == data)
"""


def test_large_calls_are_spans_with_sizes_type_and_calling_site(program):
    out, spans = program.run(BIG)
    assert out == program.untraced(BIG)
    text_len, blob_len = int(out.split()[0]), int(out.split()[3])
    root = process(spans)
    dumps, = spans.named("json.dumps")
    loads, = spans.named("json.loads")
    pdumps, = spans.named("pickle.dumps")
    ploads, = spans.named("pickle.loads")
    for span in (dumps, loads, pdumps, ploads):
        assert span.category == "serialization" and span.parent_span_id == root.span_id
        assert span.end_ns - span.start_ns >= 100_000
        assert span.attributes["code.filepath"].endswith("prog.py")
        assert span.attributes["code.function"] == "<module>"
    assert dumps.attributes["code.lineno"] == line_of(BIG, "# DUMPS")
    assert loads.attributes["code.lineno"] == line_of(BIG, "# LOADS")
    assert pdumps.attributes["code.lineno"] == line_of(BIG, "# PICKLE")
    assert dumps.attributes["selfopt_trace.bytes_out"] == text_len == loads.attributes["selfopt_trace.bytes_in"]
    assert pdumps.attributes["selfopt_trace.bytes_out"] == blob_len == ploads.attributes["selfopt_trace.bytes_in"]
    assert dumps.attributes["selfopt_trace.python.type"] == "dict" == loads.attributes["selfopt_trace.python.type"]
    assert dumps.attributes["selfopt_trace.library"] == "json" and pdumps.attributes["selfopt_trace.library"] == "pickle"


SMALL = """
import json
total = 0
for i in range(500):
    total += len(json.dumps([i]))
print(total)
"""


def test_small_calls_are_summed_onto_the_enclosing_span_exactly(program):
    out, spans = program.run(SMALL)
    assert out == program.untraced(SMALL)
    count, duration, size = sums(process(spans), "json.dumps")
    slow = spans.named("json.dumps")  # a call the machine delayed past 100 us is a span instead
    assert count + len(slow) == 500
    assert size + sum(s.attributes["selfopt_trace.bytes_out"] for s in slow) == int(out)
    assert 0 < duration < process(spans).end_ns - process(spans).start_ns
    assert len(slow) < 25


MANY_SMALL = """
import json
for i in range(100_000):
    json.dumps([i])
"""


def test_the_cost_of_summing_small_calls_is_charged_as_tracer_overhead(program):
    """Past the first 64 calls (timed with a clock) each summed call is counted, charged at their
    median: 100,000 calls put at least ~100 ns each (10 ms, over twice what the agent's start-up
    costs) into the process span's overhead, which never exceeds the process's life."""
    _, spans = program.run(MANY_SMALL)
    root = process(spans)
    assert sums(root, "json.dumps")[0] > 95_000
    assert 100_000 * 100 < root.attributes["selfopt_trace.overhead_ns"] < root.end_ns - root.start_ns


def test_sums_go_to_the_current_span_not_the_process(program):
    program.write("work.py", """
        import json

        def work(n):
            return sum(len(json.dumps({"i": i})) for i in range(n))
    """)
    out, spans = program.run("import sys; sys.path.insert(0, '.'); import work; print(work.work(300))",
                             SELFOPT_TRACE_TARGETS="work:work")
    work, = spans.named("work")
    count, _, size = sums(work, "json.dumps")
    slow = [s for s in spans.named("json.dumps") if s.parent_span_id == work.span_id]
    assert count + len(slow) == 300 and size + sum(s.attributes["selfopt_trace.bytes_out"] for s in slow) == int(out)
    assert sums(process(spans), "json.dumps")[0] == 0


def test_calls_made_after_their_span_ended_go_to_the_closest_open_one(program):
    """A thread started under a span still serializing after that span ended (codeflash sends its
    /ai/refinement request that way): its small calls are not lost, they sum onto an open span
    (the thread's own `thread` span, a child of the span that started it)."""
    program.write("work.py", """
        import json, threading

        def work(started, go):
            thread = threading.Thread(target=late, args=(started, go))
            thread.start()
            started.wait()
            return thread

        def late(started, go):
            json.dumps({"early": 1})
            started.set()
            go.wait()
            for i in range(200):
                json.dumps({"late": i})

        def outer():
            started, go = threading.Event(), threading.Event()
            thread = work(started, go)
            go.set()  # work's span has ended: what the thread does now is later than it
            thread.join()
    """)
    _, spans = program.run("import sys; sys.path.insert(0, '.'); import work; work.outer()",
                           SELFOPT_TRACE_TARGETS="work:work,work:outer")
    work, = spans.named("work")
    outer, = spans.named("outer")
    thread, = spans.named("thread")
    assert thread.parent_span_id == work.span_id
    slow = spans.named("json.dumps")  # calls the machine delayed past the threshold: spans of their own
    assert sums(work, "json.dumps")[0] + sums(outer, "json.dumps")[0] == 0
    assert sums(thread, "json.dumps")[0] + len(slow) == 201


def test_calls_made_while_importing_are_not_lost_with_the_import_frame(program):
    program.write("heavy.py", """
        import json, time
        SIZES = [len(json.dumps([i, "x"])) for i in range(200)]
        time.sleep(0.01)  # a recorded import span
    """)
    out, spans = program.run("import sys; sys.path.insert(0, '.'); import heavy; print(sum(heavy.SIZES))")
    heavy, = spans.named("import heavy")
    assert not any(".small." in key for key in heavy.attributes)
    count, _, size = sums(process(spans), "json.dumps")
    slow = spans.named("json.dumps")
    assert count + len(slow) == 200 and size + sum(s.attributes["selfopt_trace.bytes_out"] for s in slow) == int(out)


NESTED = """
import json
import pydantic

class Item(pydantic.BaseModel):
    name: str
    tags: list

data = list(range(100000))
with open("big.json", "w") as f:
    json.dump(data, f)
with open("big.json") as f:
    loaded = json.load(f)  # calls json.loads inside
items = [Item(name="n%d" % i, tags=[i]) for i in range(3000)]
text = json.dumps(items, default=lambda item: item.model_dump())  # calls model_dump inside, 3000 times
print(loaded == data, len(text))
"""


def test_nested_calls_count_once(program):
    out, spans = program.run(NESTED)
    assert out == program.untraced(NESTED)
    root = process(spans)
    assert len(spans.named("json.dump")) == 1 and len(spans.named("json.load")) == 1
    assert not spans.named("json.loads") and sums(root, "json.loads")[0] == 0
    dumps = [s for s in spans.named("json.dumps")]
    assert len(dumps) == 1 and dumps[0].attributes["selfopt_trace.bytes_out"] == int(out.split()[1])
    assert dumps[0].attributes["selfopt_trace.python.type"] == "list"
    assert not spans.named("pydantic.model_dump") and sums(root, "pydantic.model_dump")[0] == 0


ERRORS = """
import json, pickle
for text in ['{bad', '[1, 2', '']:
    try:
        json.loads(text)
    except ValueError as e:
        print(type(e).__name__, e)
big_bad = json.dumps(list(range(200000)))[:-1]
try:
    json.loads(big_bad)
except ValueError as e:
    print(type(e).__qualname__, e.pos, e.msg)
try:
    pickle.loads(b"not a pickle")
except Exception as e:
    print(type(e).__name__, e)
"""


def test_exceptions_propagate_unchanged_and_slow_failures_are_error_spans(program):
    out, spans = program.run(ERRORS)
    assert out == program.untraced(ERRORS)
    loads = spans.named("json.loads")
    [failed] = [span for span in loads if span.attributes["selfopt_trace.bytes_in"] > 1_000_000]
    assert failed.status == "ERROR" and failed.attributes["error.type"] == "json.decoder.JSONDecodeError"
    # the three small ones are summed, not spans (a preemption can push one past the threshold)
    assert sums(process(spans), "json.loads")[0] + len(loads) - 1 == 3 and sums(process(spans), "pickle.loads")[0] == 1


def test_the_threshold_is_configurable(program):
    source = "import json\nfor i in range(10):\n    json.dumps([i])\njson.dumps(list(range(300000)))\n"
    _, every = program.run(source, SELFOPT_TRACE_SMALL_NS="0")
    assert len(every.named("json.dumps")) == 11
    program.traced.run_dir = program.dir / "run2"
    _, none = program.run(source, SELFOPT_TRACE_SMALL_NS="1e12")
    assert not none.named("json.dumps") and sums(process(none), "json.dumps")[0] == 11


PYDANTIC = """
import pydantic

class Item(pydantic.BaseModel):
    name: str
    tags: list[int]

item = Item(name="x", tags=[1, 2])
text = item.model_dump_json()
adapter = pydantic.TypeAdapter(list[int])
print(item.model_dump(), text, Item.model_validate({"name": "y", "tags": []}), Item.model_validate_json(text))
print(adapter.validate_python([1, "2"]), adapter.validate_json("[3]"), adapter.dump_python([4]), adapter.dump_json([5]))
try:
    Item.model_validate_json('{"name": 1}')
except pydantic.ValidationError as e:
    print(e.error_count())
"""


def test_pydantic_v2_models_and_type_adapters(program):
    out, spans = program.run(PYDANTIC, SELFOPT_TRACE_SMALL_NS="0")
    assert out == program.untraced(PYDANTIC)
    by_name = {}
    for span in spans.spans:
        if span.category == "serialization":
            by_name.setdefault(span.name, []).append(span)
    assert {"pydantic.model_dump", "pydantic.model_dump_json", "pydantic.model_validate",
            "pydantic.model_validate_json", "pydantic.TypeAdapter.validate_python", "pydantic.TypeAdapter.validate_json",
            "pydantic.TypeAdapter.dump_python", "pydantic.TypeAdapter.dump_json"} <= set(by_name)
    dump_json, = by_name["pydantic.model_dump_json"]
    assert dump_json.attributes["selfopt_trace.python.type"] == "__main__.Item"
    assert dump_json.attributes["selfopt_trace.bytes_out"] == len('{"name":"x","tags":[1,2]}')
    ok, bad = by_name["pydantic.model_validate_json"]
    assert ok.attributes["selfopt_trace.python.type"] == "__main__.Item"
    assert bad.status == "ERROR" and bad.attributes["error.type"] == "pydantic_core._pydantic_core.ValidationError"
    assert all(s.attributes["selfopt_trace.library"] == "pydantic" for spans_ in by_name.values() for s in spans_
               if s.name.startswith("pydantic."))


DILL = """
import dill
square = lambda x: x * x
blob = dill.dumps(square)
print(dill.loads(blob)(7), len(blob))
"""


def test_dill(program):
    out, spans = program.run(DILL, SELFOPT_TRACE_SMALL_NS="0")
    assert out == program.untraced(DILL)
    dumps, = spans.named("dill.dumps")
    loads, = spans.named("dill.loads")
    assert dumps.attributes["selfopt_trace.bytes_out"] == int(out.split()[1]) == loads.attributes["selfopt_trace.bytes_in"]
    assert dumps.attributes["selfopt_trace.python.type"] == "function"


IDENTITY = """
import inspect, json, pickle
import pydantic
print(inspect.signature(json.dumps), json.dumps.__name__, json.dumps.__module__, json.dumps.__qualname__)
print(pickle.loads(pickle.dumps(json.dumps)) is json.dumps, pickle.loads(pickle.dumps(pickle.dumps)) is pickle.dumps)
print(inspect.signature(pydantic.BaseModel.model_dump), inspect.signature(pydantic.BaseModel.model_validate))
print(pydantic.BaseModel.model_dump.__qualname__, json.dumps.__doc__ == json.JSONEncoder.encode.__doc__)
"""


def test_wrappers_look_like_the_originals(program):
    out, _ = program.run(IDENTITY)
    assert out == program.untraced(IDENTITY)
    assert "True True" in out


def test_a_failing_recorder_changes_nothing_but_leaves_a_diagnostic(program):
    source = """
        import json
        from selfopt_trace_agent import tracer

        def broken(*args, **kwargs):
            raise RuntimeError("recorder broke")

        tracer.record_complete = broken
        text = json.dumps(list(range(100000)))
        print(len(text), json.loads(text)[-1])
    """
    out, spans = program.run(source)
    assert out == "688890 99999\n"
    assert {d["code"] for d in spans.diagnostics} >= {"measure_failed:json.dumps", "measure_failed:json.loads"}
    assert json.dumps(spans.diagnostics).count("recorder broke") >= 2


FIRST_CALL = """
import sys, json, pickle
from json import dumps  # bound before the first call: the stand-in
print([m for m in ("serialization", "timed") if "selfopt_trace_agent.hooks." + m in sys.modules])
print(dumps.__name__, dumps.__module__, json.loads.__qualname__, pickle.dumps.__name__)
text = dumps({"items": list(range(100000))})  # DUMPS
print(len(text), [m for m in ("serialization", "timed") if "selfopt_trace_agent.hooks." + m in sys.modules])
print(pickle.loads(pickle.dumps(json.dumps)) is json.dumps, pickle.loads(pickle.dumps(pickle.dumps)) is pickle.dumps)
"""


def test_the_hooks_load_at_the_first_call_not_at_the_import(program):
    """Most programs import json and pickle and call neither (pytest's plugins): importing them loads
    no hook module; the first call, through a reference taken before it, loads it and is recorded
    from the program's line like any other."""
    out, spans = program.run(FIRST_CALL)
    traced, untraced = out.splitlines(), program.untraced(FIRST_CALL).splitlines()
    assert traced[0] == untraced[0] == "[]"  # imported, not loaded
    assert traced[1] == untraced[1] == "dumps json loads dumps" and traced[3] == untraced[3] == "True True"
    assert traced[2] == untraced[2].replace("[]", "['serialization', 'timed']")  # loaded by the first call
    dumps, = spans.named("json.dumps")
    assert dumps.attributes["code.filepath"].endswith("prog.py")
    assert dumps.attributes["code.lineno"] == line_of(FIRST_CALL, "# DUMPS")


SLOW_FIRST_CALLS = """
import json, os, time
class Slow:
    pass
def encode(value):
    time.sleep(0.002)
    return "slow"
called = []
for _ in range(2):
    called.append(time.time_ns()); json.dumps(Slow(), default=encode)
print(os.getpid(), *called)
"""


def test_the_call_that_loads_the_hook_is_a_span_from_the_call(program):
    """The first json.dumps loads the serialization hook (~0.4 ms, lazy.py's stand-in): a slow
    first call's span starts where the program called, as the second's does, not after the load
    (own work for the breakdown). The least difference of three processes: a preemption in one
    cannot make it pass or fail."""
    differences = []
    for _ in range(3):
        out, spans = program.run(SLOW_FIRST_CALLS)
        pid, *called = map(int, out.split())
        first, second = sorted((s for s in spans.named("json.dumps") if s.pid == pid), key=lambda s: s.start_ns)
        assert first.end_ns - first.start_ns >= 2_000_000 and second.end_ns - second.start_ns >= 2_000_000
        differences.append((first.start_ns - called[0]) - (second.start_ns - called[1]))
    assert min(differences) < 100_000, differences
