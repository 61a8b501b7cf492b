"""The OpenTelemetry bridge (hooks/otel_.py): a traced program's own OTel spans land in the run's
trace with correct parents both ways, with its own SDK provider (whose exporter keeps working) or
with the API only; nothing of it runs before the program imports opentelemetry; one span per
HTTP request; a failure is a diagnostic."""

from __future__ import annotations

import json
import textwrap

import pytest

SDK_SETUP = """
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)

    def exported():
        return [{"name": s.name, "span_id": "%016x" % s.context.span_id, "trace_id": "%032x" % s.context.trace_id,
                 "parent": s.parent and "%016x" % s.parent.span_id, "kind": s.kind.name,
                 "attributes": dict(s.attributes)} for s in exporter.get_finished_spans()]
"""
API_SETUP = """
    from opentelemetry import trace

    def exported():
        return []
"""
SETUPS = {"sdk": SDK_SETUP, "api": API_SETUP}

PARENTS = """
    import concurrent.futures, json, subprocess, sys
    tracer = trace.get_tracer("my.app", "1.0")
    with tracer.start_as_current_span("outer", attributes={"k": 1}) as outer:
        outer.set_attribute("later", "yes")
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        with tracer.start_as_current_span("inner") as inner:
            assert trace.get_current_span() is inner
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(lambda: tracer.start_span("in a task").end()).result()
    try:
        with tracer.start_as_current_span("failing"):
            raise KeyError("nope")
    except KeyError:
        pass
    print(json.dumps(exported()))
"""


def program(setup: str, body: str) -> str:
    return textwrap.dedent(SETUPS[setup]) + textwrap.dedent(body)


@pytest.mark.parametrize("setup", ["sdk", "api"])
def test_otel_spans_join_the_trace_with_parents_both_ways(traced, setup):
    result = traced.python(program(setup, PARENTS))
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    spans = traced.spans()
    assert spans.diagnostics == []
    [process] = [p for p in spans.processes() if p.parent_span_id == ""]
    [outer], [inner], [in_task], [failing] = (spans.named(n) for n in ("outer", "inner", "in a task", "failing"))
    assert len(spans.trace_ids()) == 1
    assert outer.parent_span_id == process.span_id  # no span current: the process span, as for the agent's own
    assert inner.parent_span_id == outer.span_id
    [subprocess_span] = [s for s in spans.spans if s.category == "subprocess"]
    assert subprocess_span.parent_span_id == outer.span_id  # an agent span inside an OTel span is its child
    assert spans.parent(in_task).name == "task"  # an OTel span inside an agent span is its child
    assert (outer.kind, outer.category, outer.status) == ("INTERNAL", "other", "UNSET")
    assert outer.attributes == {"otel.scope.name": "my.app", "otel.scope.version": "1.0", "k": 1, "later": "yes"}
    assert outer.start_ns < inner.start_ns < inner.end_ns < outer.end_ns
    assert failing.status == "ERROR"
    assert failing.attributes["exception.type"] == "KeyError"
    assert failing.attributes["otel.status_description"] == "KeyError: 'nope'"
    exported = json.loads(result.stdout)
    if setup == "sdk":  # the program's own exporter got its spans, with the run's trace and parents
        by_name = {span["name"]: span for span in exported}
        assert set(by_name) == {"outer", "inner", "in a task", "failing"}
        for span in exported:
            recorded = spans.named(span["name"])[0]
            assert (span["span_id"], span["trace_id"], span["parent"]) == \
                (recorded.span_id, recorded.trace_id, recorded.parent_span_id)
        assert by_name["outer"]["attributes"] == {"k": 1, "later": "yes"}


def test_nothing_is_imported_or_patched_before_the_program_imports_opentelemetry(traced):
    code = textwrap.dedent("""
        import sys
        before = sorted(m for m in sys.modules if m.startswith("opentelemetry") or m.endswith("otel_"))
        import opentelemetry.context
        import opentelemetry.context as c
        wrapped_early = type(c._RUNTIME_CONTEXT).__name__
        from opentelemetry import trace
        after = type(c._RUNTIME_CONTEXT).__name__
        print(before, wrapped_early, after, "selfopt_trace_agent.hooks.otel_" in sys.modules)
    """)
    result = traced.python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"[] ContextVarsRuntimeContext Runtime True\n"


def test_a_remote_context_attached_by_the_program_parents_the_agents_spans(traced):
    code = program("api", """
        import subprocess, sys
        from opentelemetry import context
        from opentelemetry.propagate import extract
        remote = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
        token = context.attach(extract({"traceparent": remote}))
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        with trace.get_tracer("t").start_as_current_span("under remote"):
            pass
        context.detach(token)
        subprocess.run([sys.executable, "-c", "pass"], check=True)
    """)
    result = traced.python(code)
    assert result.returncode == 0, result.stderr
    spans = traced.spans()
    first, second = sorted((s for s in spans.spans if s.category == "subprocess"), key=lambda s: s.start_ns)
    assert (first.trace_id, first.parent_span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    [under] = spans.named("under remote")
    assert (under.trace_id, under.parent_span_id) == ("0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331")
    [process] = [p for p in spans.processes() if p.parent_span_id == ""]
    assert second.parent_span_id == process.span_id  # detached: the agent's own context again


@pytest.mark.parametrize("setup", ["sdk", "api"])
def test_one_span_per_httpx_request_with_otels_instrumentation(traced, setup):
    code = program(setup, """
        import httpx, json, sys, threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            def do_GET(self):
                if self.path == "/a":  # the client's span written (an S record) before the OTel span merges into it
                    sys.modules["selfopt_trace_agent.tracer"].flush()
                self.send_response(200 if self.path != "/missing" else 404)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")
            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        HTTPXClientInstrumentor().instrument()
        with httpx.Client() as client:
            for path in ("/a", "/missing"):
                client.get(f"http://127.0.0.1:{server.server_address[1]}{path}")
        server.shutdown()
        print(json.dumps(exported()))
    """)
    result = traced.python(code)
    assert result.returncode == 0, result.stderr
    spans = traced.spans()
    assert spans.diagnostics == []
    clients = [s for s in spans.spans if s.kind == "CLIENT" and s.category == "http"]
    servers = [s for s in spans.spans if s.kind == "SERVER"]
    assert len(clients) == 2 and len(servers) == 2  # one span per request, not an OTel and an agent span
    for client in clients:
        assert client.attributes["selfopt_trace.http.library"] == "httpx"
        assert client.attributes["http.method"] == "GET"  # the instrumentation's own attributes, merged
        assert [s.span_id for s in servers if s.parent_span_id == client.span_id]
    assert {c.status for c in clients} == {"UNSET", "ERROR"}
    if setup == "sdk":  # the program's exporter still has the instrumentation's spans
        assert [span["kind"] for span in json.loads(result.stdout)] == ["CLIENT", "CLIENT"]


def test_an_otel_server_span_is_merged_into_the_agents(traced):
    code = program("sdk", """
        import json, threading, urllib.request
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
        from opentelemetry.propagate import extract

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):
                with trace.get_tracer("framework").start_as_current_span(
                        "GET /route", context=extract(dict(self.headers)), kind=trace.SpanKind.SERVER,
                        attributes={"http.route": "/route"}):
                    with trace.get_tracer("app").start_as_current_span("view"):
                        pass
                    self.send_response(200)
                    self.send_header("Content-Length", "2")
                    self.end_headers()
                    self.wfile.write(b"ok")
            def log_message(self, *args):
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/route").read()
        server.shutdown()
        print(json.dumps(exported()))
    """)
    result = traced.python(code)
    assert result.returncode == 0, result.stderr
    spans = traced.spans()
    [server] = [s for s in spans.spans if s.kind == "SERVER"]
    [view] = spans.named("view")
    assert view.parent_span_id == server.span_id  # in the run: under the one SERVER span
    assert server.attributes["http.route"] == "/route" and spans.parent(server).kind == "CLIENT"
    exported = {span["name"]: span for span in json.loads(result.stdout)}
    assert exported["view"]["parent"] == exported["GET /route"]["span_id"]  # the program's exporter: its own tree


def test_a_failure_in_the_bridge_is_a_diagnostic_never_an_exception(traced):
    code = program("sdk", """
        import selfopt_trace_agent.hooks.otel_ as bridge

        bridge.KINDS = None  # the kinds' names, read by on_start for a CLIENT span
        with trace.get_tracer("t").start_as_current_span("still works", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("x", 1)
        print(json.dumps([s["name"] for s in exported()]))
    """.replace("import selfopt", "import json, selfopt"))
    result = traced.python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b'["still works"]\n' and result.stderr == b""
    codes = {d["code"] for d in traced.spans().diagnostics}
    assert "otel_bridge_failed:on_start" in codes


def test_the_bridges_inlined_span_records_are_what_the_constructor_makes(traced):
    """_start (API only) builds the agent's Span field by field, as tracer.start_span does, for speed:
    every field set, and the defaults Span.__init__ gives."""
    code = program("api", """
        import json, sys
        agent = sys.modules["selfopt_trace_agent.tracer"]
        with trace.get_tracer("t", "2").start_as_current_span("one", attributes={"a": 1}) as span:
            ours = span.native
            built = agent.Span(ours.span_id, ours.parent, ours.parent_id, ours.trace_id, ours.name, ours.kind,
                               ours.category, ours.start_ns, ours.attributes)
            fields = {name: (getattr(ours, name, "unset"), getattr(built, name)) for name in agent.Span.__slots__}
            print(json.dumps({"type": type(ours).__name__, "otel": ours.otel is span,
                              "differ": [name for name, (a, b) in fields.items() if a is not b and a != b]}))
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert json.loads(result.stdout) == {"type": "Bridged", "otel": True, "differ": []}


def test_an_sdk_span_made_current_is_the_agents_current_span_with_its_ids(traced):
    """An SDK span has no record of the agent's until it is made current. Attached alone in its
    context over a context with no other value (start_as_current_span), the agent's current span is
    its Held, which gives OTel back the context attached; attached with another value (baggage), its
    Attached, kept on it, OTel's own context variable set as well, and so while a context without a
    span is attached inside it. Either way the agent's current span has the SDK span's ids and a new
    Span's defaults where the agent reads them (deferred, ended, sums, ...), and OTel sees the span
    and values attached; a span started and not made current has none."""
    code = program("sdk", """
        import json, sys
        from opentelemetry import baggage, context
        agent = sys.modules["selfopt_trace_agent.tracer"]
        app = trace.get_tracer("t", "2")
        idle = app.start_span("never current")
        built = agent.Span("x", None, "", "y", "n", "INTERNAL", "other", 0, None)
        read = ("deferred", "keep", "end_ns", "child_ns", "sums", "status", "end_attributes", "written", "kind")

        def seen(span):
            ours = agent.current()
            return {"type": type(ours).__name__, "record": span._selfopt_trace_span is ours,
                    "ids": [ours.span_id == "%016x" % span.get_span_context().span_id,
                            ours.trace_id == "%032x" % span.get_span_context().trace_id,
                            ours.traceparent() == "00-%s-%s-01" % (ours.trace_id, ours.span_id)],
                    "differ": [name for name in read if getattr(ours, name) != getattr(built, name)],
                    "current": trace.get_current_span() is span, "baggage": baggage.get_baggage("b"),
                    "context": sorted(key[:-37] for key in context.get_current())}  # (create_key's uuid)

        with app.start_as_current_span("one", attributes={"a": 1}) as one:
            alone = seen(one)
            token = context.attach(baggage.set_baggage("b", "1"))
            with_baggage = seen(one)
            with app.start_as_current_span("two") as two:  # over a context with baggage: both set
                inner = seen(two)
            context.detach(token)
            token = context.attach(baggage.set_baggage("b", "2", context.Context()))  # no span in it
            without_span = seen(one)
            context.detach(token)
            back = seen(one)
        print(json.dumps({"alone": alone, "with baggage": with_baggage, "inner": inner, "back": back,
                          "without span": without_span,
                          "after": [agent.current() is None, trace.get_current_span() is not one,
                                    baggage.get_baggage("b") is None],
                          "idle": idle._selfopt_trace_span}))
        idle.end()
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    found = json.loads(result.stdout)
    held = {"type": "Held", "record": False, "ids": [True, True, True], "differ": [], "current": True,
            "baggage": None, "context": ["current-span"]}
    attached = {**held, "type": "Attached", "record": True, "baggage": "1", "context": ["baggage", "current-span"]}
    assert found["alone"] == held and found["back"] == held
    assert found["with baggage"] == attached and found["inner"] == attached
    # no span attached: OTel is shown the agent's current span, the SDK span's Attached, over that context
    assert found["without span"] == {**attached, "current": False, "baggage": "2"}
    assert found["after"] == [True, True, True] and found["idle"] is None


@pytest.mark.parametrize("setup", ["sdk", "api"])
def test_a_records_attributes_are_its_scopes_and_its_own_whatever_they_hold(traced, setup):
    """The end joins the span's attributes to its scope's JSON, encoded once per scope: the same
    attributes as one object of both, where a span's key is the scope's, with none, escaped text,
    a span written open (an S record) at a flush, and a span's attributes as they were at its end
    (an SDK span's: the flush encodes them, here in a thread of the program's, after the program
    changed the dict it gave)."""
    code = program(setup, """
        import sys
        agent = sys.modules["selfopt_trace_agent.tracer"]
        app = trace.get_tracer("my.app", "1.0")
        with app.start_as_current_span("plain", attributes={"n": 1, "s": "a\\tb", "list": [1, 2]}):
            pass
        with app.start_as_current_span("none"):
            pass
        with app.start_as_current_span("clash", attributes={"otel.scope.name": "mine", "k": True}):
            pass
        with trace.get_tracer("unversioned").start_as_current_span("escaped", attributes={"path": "\\udcff/x"}):
            pass
        with app.start_as_current_span("open at a flush", attributes={"n": 2}):
            agent.flush()
        given = {"n": 3}
        with app.start_as_current_span("changed after its end", attributes=given):
            pass
        given["n"] = 4
        import threading
        flusher = threading.Thread(target=agent.flush)
        flusher.start()
        flusher.join()
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    spans = traced.spans()
    assert spans.diagnostics == []
    scope = {"otel.scope.name": "my.app", "otel.scope.version": "1.0"}
    names = ("plain", "none", "clash", "escaped", "open at a flush", "changed after its end")
    attributes = {name: spans.named(name)[0].attributes for name in names}
    assert attributes == {
        "plain": {**scope, "n": 1, "s": "a\tb", "list": [1, 2]},
        "none": scope,
        "clash": {"otel.scope.name": "mine", "otel.scope.version": "1.0", "k": True},
        "escaped": {"otel.scope.name": "unversioned", "path": "\\xff/x", "selfopt_trace.escaped": ["path"]},
        "open at a flush": {**scope, "n": 2},
        "changed after its end": {**scope, "n": 3},
    }


def test_sdk_attributes_encoded_by_the_flush_from_its_cache_are_what_they_were(traced):
    """The flush encodes an SDK span's attributes with the bridge's loop (hooks/otel_.py _members),
    each (key, string) pair's JSON made once and looked up after: values repeated across spans,
    equal values of other types on one key (True, 1, 1.0, "1"), a key first seen in a later span,
    and values the loop leaves to spanfile.encode (floats, tuples, quotes, line breaks)."""
    values = ["same", "same", True, 1, 1.0, "1", "same", 'say "hi"', "two\nlines", 2.5, ("a", "b"), False, 0]
    code = program("sdk", f"""
        app = trace.get_tracer("my.app", "1.0")
        for index, value in enumerate({values!r}):
            with app.start_as_current_span("span %d" % index, attributes={{"v": value, "i": index}}) as span:
                if index >= 5:
                    span.set_attribute("later", value)
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    spans = traced.spans()
    assert spans.diagnostics == []
    scope = {"otel.scope.name": "my.app", "otel.scope.version": "1.0"}
    for index, value in enumerate(values):
        expected = list(value) if type(value) is tuple else value
        later = {"later": expected} if index >= 5 else {}
        [span] = spans.named("span %d" % index)
        assert span.attributes == {**scope, "v": expected, "i": index, **later}
        assert [type(v) for v in span.attributes.values()] == [type(v) for v in
                                                               {**scope, "v": expected, "i": index, **later}.values()]


@pytest.mark.parametrize("setup", ["sdk", "api"])
def test_a_name_with_tabs_and_line_breaks_is_kept_with_spaces(traced, setup):
    """The span file separates fields with tabs and records with line breaks: a program's own span
    name may hold either, at its start or renamed before its end, open at a flush or not."""
    code = program(setup, """
        import sys
        agent = sys.modules["selfopt_trace_agent.tracer"]
        app = trace.get_tracer("my.app")
        with app.start_as_current_span("a\\tb\\nc"):
            pass
        with app.start_as_current_span("plain") as span:
            span.update_name("re\\tnamed\\r")
        with app.start_as_current_span("open\\tat a flush"):
            agent.flush()
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    spans = traced.spans()
    assert spans.diagnostics == []
    assert all(spans.named(name) for name in ("a b c", "re named ", "open at a flush")), \
        sorted(s.name for s in spans.spans)


def test_a_provider_with_a_multi_processor_of_another_kind_is_recorded_and_exports(traced):
    """The bridge records through the provider's SynchronousMultiSpanProcessor's own methods; a
    provider given a ConcurrentMultiSpanProcessor gets a processor of the bridge's added instead."""
    code = textwrap.dedent("""
        import json
        from opentelemetry.sdk.trace import ConcurrentMultiSpanProcessor, TracerProvider
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
        exporter = InMemorySpanExporter()
        provider = TracerProvider(active_span_processor=ConcurrentMultiSpanProcessor(2))
        provider.add_span_processor(SimpleSpanProcessor(exporter))
        tracer = provider.get_tracer("concurrent")
        with tracer.start_as_current_span("outer"):
            with tracer.start_as_current_span("inner", attributes={"n": 1}):
                pass
        provider.shutdown()
        print(json.dumps(sorted(s.name for s in exporter.get_finished_spans())))
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert json.loads(result.stdout) == ["inner", "outer"]
    spans = traced.spans()
    assert spans.diagnostics == []
    [outer], [inner] = spans.named("outer"), spans.named("inner")
    assert inner.parent_span_id == outer.span_id
    assert inner.attributes == {"otel.scope.name": "concurrent", "n": 1}


def test_small_calls_inside_an_otel_span_are_summed_onto_it(traced):
    code = program("sdk", """
        import json
        with trace.get_tracer("t").start_as_current_span("summing"):
            for _ in range(3):
                json.dumps({"a": 1})
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    [summing] = traced.spans().named("summing")
    assert summing.attributes["otel.scope.name"] == "t"
    assert any(key.startswith("selfopt_trace.small.") and key.endswith(".count") and value == 3
               for key, value in summing.attributes.items()), summing.attributes


def test_sdk_spans_reach_the_store_through_the_flushs_marshal_block_as_they_were(traced):
    """An SDK span's end buffers its raw fields and the flush writes them in one M record
    (docs/span-format.md): a real run loaded by the loader gives every span the independent reader of
    the documented format gives, field for field, with the attributes the exporter saw; a value
    marshal cannot write (an IntEnum the SDK lets through) has its span written as an X record."""
    from selfopt_trace.store import Store

    code = program("sdk", """
        import enum, json, sys
        agent = sys.modules["selfopt_trace_agent.tracer"]

        class Level(enum.IntEnum):
            HIGH = 3

        app = trace.get_tracer("my.app", "1.0")
        with app.start_as_current_span("outer", attributes={"k": 1}):
            for index in range(20):
                with app.start_as_current_span("work", kind=trace.SpanKind.CLIENT,
                                               attributes={"i": index, "http.method": "GET", "f": index / 4,
                                                           "t": ("a", "b"), "ok": index % 2 == 0}) as span:
                    span.set_attribute("text", 'line "%d"\\n' % index)
            with app.start_as_current_span("enum", attributes={"level": Level.HIGH, "n": 1}):
                pass
            agent.flush()
            try:
                with app.start_as_current_span("failing", attributes={"path": "\\udcff/x"}):
                    raise ValueError("bad")
            except ValueError:
                pass
        print(json.dumps(exported()))
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    text = "".join(path.read_text(errors="replace") for path in (traced.run_dir / "spans").iterdir())
    assert "\nM\t" in text  # the SDK spans' block
    assert "\tenum\tINTERNAL\tother\t" in text  # the span marshal could not write, as text
    independent = traced.spans()
    assert independent.diagnostics == []
    with Store(traced.tmp_path / "store.duckdb") as store:
        loaded_run = store.load_run(traced.run_dir)
        columns, rows = store.sql("SELECT span_id, parent_span_id, trace_id, name, kind, category, start_ns, end_ns,"
                                  " status, incomplete, attributes FROM spans"  # (not the loader's own: a pool's)
                                  " WHERE (attributes->'selfopt_trace.derived') IS NULL")
    assert loaded_run.warnings == [] and loaded_run.skipped_lines == 0
    loaded = {row[0]: (row[1] or "", *row[2:10], json.loads(row[10])) for row in rows}
    # the one refinement of the loader's here: the exit status the C twin wrote at exit() on its
    # interpreter.finalize span is the process span's too (no parent saw it)
    exited = {span.parent_span_id: span.attributes for span in independent.named("interpreter.finalize")}
    assert loaded == {span.span_id: (span.parent_span_id, span.trace_id, span.name, span.kind, span.category,
                                     span.start_ns, span.end_ns, span.status, span.incomplete,
                                     {**span.attributes, **exited.get(span.span_id, {})})
                      for span in independent.spans}
    exported = {span["span_id"]: span for span in json.loads(result.stdout)}
    assert len(exported) == 23
    scope = {"otel.scope.name": "my.app", "otel.scope.version": "1.0"}
    for span_id, span in exported.items():
        attributes = loaded[span_id][-1]
        if span["name"] == "work":
            assert loaded[span_id][3:5] == ("CLIENT", "http")
            assert attributes == {**scope, **span["attributes"], "t": ["a", "b"]}
    [failing] = independent.named("failing")
    assert failing.attributes["path"] == "\\xff/x" and failing.attributes["selfopt_trace.escaped"] == ["path"]
    assert failing.status == "ERROR" and failing.attributes["exception.type"] == "ValueError"
    # the IntEnum as its number, as the SDK's exporter sends it (its str() is "Level.HIGH" before 3.11)
    assert independent.named("enum")[0].attributes == {**scope, "level": 3, "n": 1}


def test_a_flush_of_many_sdk_spans_writes_them_in_blocks_of_at_most_256(traced):
    """A flush holding thousands of SDK spans wrote one M record of megabytes (fresh pages for it and
    its copies at every flush); it writes blocks of spanblock.BLOCK_SPANS at most, and every span
    still reaches the run."""
    from selfopt_trace.bootstrap.selfopt_trace_agent import spanblock

    code = program("sdk", """
        import sys, threading
        agent = sys.modules["selfopt_trace_agent.tracer"]
        app = trace.get_tracer("my.app", "1.0")
        held, done = threading.Event(), threading.Event()
        def hold():  # every flush skips its turn meanwhile: the flush below takes all 600
            with agent._flush_lock:
                held.set()
                done.wait()
        holder = threading.Thread(target=hold)
        holder.start()
        held.wait()
        for index in range(600):
            with app.start_as_current_span("work", attributes={"i": index}):
                pass
        done.set()
        holder.join()
        agent.flush()
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    text = "".join(path.read_text() for path in (traced.run_dir / "spans").iterdir())
    blocks = [spanblock.rows(line.split("\t")[10]) for line in text.splitlines() if line.startswith("M\t")]
    assert [len(rows) for rows in blocks] == [256, 256, 88]
    spans = traced.spans()
    assert spans.diagnostics == []
    assert sorted(span.attributes["i"] for span in spans.named("work")) == list(range(600))


def test_every_recorded_sdk_span_counts_in_the_agents_overhead(traced):
    """An SDK span's estimated cost is counted when a flush takes its values (not in its hot path),
    when it is merged into the agent's span, or when its E is written: once each."""
    code = program("sdk", """
        import sys
        agent = sys.modules["selfopt_trace_agent.tracer"]
        bridge = sys.modules["selfopt_trace_agent.hooks.otel_"]
        app = trace.get_tracer("my.app", "1.0")
        before = bridge._cost[0]
        with app.start_as_current_span("long"):
            agent.flush()  # its S: its end writes an E
            for index in range(600):  # a flush by count among them
                with app.start_as_current_span("work"):
                    pass
        agent.flush()
        print(bridge._cost[0] - before)
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert result.stdout.split() == [b"601"]


@pytest.mark.parametrize("setup", ["sdk", "api"])
def test_parents_both_ways_across_nesting_late_attaches_threads_and_tasks(traced, setup):
    """Parents where the SDK span has no record of the agent's until it is made current: an agent span
    inside an OTel span inside an agent span; a span started early, made current later inside an
    agent span started after it; a thread started inside an OTel span (its span, and an OTel span in
    it); asyncio tasks, each with its OTel span current across an await."""
    code = program(setup, """
        import asyncio, subprocess, sys, threading
        from concurrent.futures import ThreadPoolExecutor
        app = trace.get_tracer("my.app")

        def child(tag):
            subprocess.run([sys.executable, "-c", "pass", tag], check=True)

        with ThreadPoolExecutor(1) as pool:  # the agent's task span
            def nested():
                with app.start_as_current_span("in a task"):
                    child("in a task")
            pool.submit(nested).result()

        early = app.start_span("started early")
        def attached_late():
            with trace.use_span(early, end_on_exit=True):
                child("attached late")
        with ThreadPoolExecutor(1) as pool:
            pool.submit(attached_late).result()

        with app.start_as_current_span("thread starter"):
            def in_thread():
                with app.start_as_current_span("in the thread"):
                    child("in the thread")
            worker = threading.Thread(target=in_thread)
            worker.start()
            worker.join()

        async def task(tag):
            with app.start_as_current_span("task " + tag):
                await asyncio.sleep(0.01)
                child("task " + tag)

        async def main():
            await asyncio.gather(task("a"), task("b"))
        asyncio.run(main())
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    spans = traced.spans()
    assert spans.diagnostics == []
    assert len(spans.trace_ids()) == 1
    children = {s.attributes["process.command_args"][-1]: s for s in spans.spans
                if s.category == "subprocess" and "process.command_args" in s.attributes}

    def parent_of(tag):
        return spans.parent(children[tag])

    assert parent_of("in a task").name == "in a task"
    assert spans.parent(spans.named("in a task")[0]).name == "task"
    [early] = spans.named("started early")
    assert parent_of("attached late").span_id == early.span_id  # current only from its attach on
    assert spans.parent(early).name == "process"  # what was current at its start
    [starter] = spans.named("thread starter")
    [thread] = [s for s in spans.children(starter) if s.name == "thread"]
    assert spans.parent(spans.named("in the thread")[0]).span_id == thread.span_id
    assert parent_of("in the thread").name == "in the thread"
    for tag in ("a", "b"):
        assert parent_of("task " + tag).name == "task " + tag


def test_the_flushs_rows_of_common_spans_are_what_the_general_row_makes(traced):
    """The flush reads a common span's row itself (_rows: a parent, no event, not an ERROR, a scope
    seen before) and leaves the others to _row: both give the same rows for the same spans."""
    code = program("sdk", """
        import json, sys
        bridge = sys.modules["selfopt_trace_agent.hooks.otel_"]
        from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
        ended = []

        class Keep(SpanExporter):
            def export(self, spans):
                ended.extend(spans)
                return SpanExportResult.SUCCESS

        provider.add_span_processor(SimpleSpanProcessor(Keep()))
        app, other = trace.get_tracer("my.app", "1.0"), trace.get_tracer("other")
        with app.start_as_current_span("outer"):
            for index in range(5):
                with (app if index % 2 else other).start_as_current_span("work %d" % index, attributes={"i": index}):
                    pass
            with app.start_as_current_span("client", kind=trace.SpanKind.CLIENT, attributes={"http.method": "GET"}):
                pass
        by_span = [value for span in ended for value in bridge._row(span)]  # (and the scopes seen)
        row, bridge._row = bridge._row, None  # the next rows all read by _rows itself, or a TypeError
        in_c = bridge._rows(ended)
        bridge._row = row
        print(json.dumps([in_c == by_span, len(in_c) // len(ended), in_c[:11] == list(bridge._row(ended[0]))]))
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert json.loads(result.stdout) == [True, 11, True]


def test_an_sdk_span_open_across_a_fork_is_the_parents_alone(traced):
    """A forked child inherits the parent's open SDK spans: ended in the child too (the program's
    `with` block runs on in both), they are written by the parent only, once."""
    code = program("sdk", """
        import os
        app = trace.get_tracer("my.app")
        with app.start_as_current_span("across the fork"):
            with app.start_as_current_span("open at the fork"):
                pid = os.fork()
                with app.start_as_current_span("in the child" if pid == 0 else "in the parent"):
                    pass
        if pid == 0:
            os._exit(0)
        os.waitpid(pid, 0)
    """)
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    spans = traced.spans()
    assert spans.diagnostics == []
    [across], [at_fork] = spans.named("across the fork"), spans.named("open at the fork")
    [child], [parent] = spans.named("in the child"), spans.named("in the parent")
    forked = spans.parent(child)  # the child's process span, under the fork's, under the span current then
    assert (forked.name, forked.pid, spans.parent(forked).name) == ("process", child.pid, "fork")
    assert spans.parent(spans.parent(forked)).span_id == at_fork.span_id
    assert parent.parent_span_id == at_fork.span_id and at_fork.parent_span_id == across.span_id
    assert child.pid != at_fork.pid == parent.pid == across.pid
