"""`selfopt-trace run -- codeflash --file ... --function ... --no-pr` on the real CLI gives one trace of it all.

One traced run (about 30 s) of codeflash 0.20.6 optimizing the toy bubble sort against the
stand-in of codeflash-internal, itself traced into the same run; each test below checks one
boundary of issue 3 in what was loaded into DuckDB.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from selfopt_trace.bootstrap.selfopt_trace_agent.process import command_name, python_main
from selfopt_trace.queries import run_query
from selfopt_trace.store import Store
from tests.e2e import harness

pytestmark = pytest.mark.e2e

RUN_ID = "codeflash-e2e"
STANDIN_PORTS = (8000, 3001)


@dataclass
class Span:
    span_id: str
    parent_span_id: str
    trace_id: str
    name: str
    kind: str
    category: str
    start_ns: int
    end_ns: int
    pid: int
    attributes: dict
    status: str


@dataclass
class Run:
    spans: list[Span]
    diagnostics: list[tuple]
    requests: list[dict]  # what the stand-in served, from its own log
    exit_code: int
    output: str
    project: Path
    standin_pid: int
    standin_stderr: str
    db: Path
    by_id: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.by_id = {s.span_id: s for s in self.spans}

    def named(self, name: str, pid: int | None = None) -> list[Span]:
        return [s for s in self.spans if s.name == name and (pid is None or s.pid == pid)]

    def parent(self, span: Span) -> Span | None:
        return self.by_id.get(span.parent_span_id)

    def ancestors(self, span: Span) -> list[Span]:
        out = []
        while (span := self.parent(span)) is not None:
            out.append(span)
        return out

    def children(self, span: Span) -> list[Span]:
        return [s for s in self.spans if s.parent_span_id == span.span_id]

    def codeflash(self) -> Span:
        [process] = [s for s in self.named("process") if s.attributes["process.command_args"][1].endswith("/codeflash")]
        return process


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Run:
    scratch = tmp_path_factory.mktemp("codeflash")
    project = harness.copy_toy(scratch / "project")
    env = harness.codeflash_environ(scratch)
    out, standin_dir = scratch / "runs", scratch / "standin-run"
    with harness.running_standin(harness.traced_environ(env, standin_dir, RUN_ID), scratch / "requests.jsonl") as server:
        result = subprocess.run(
            harness.selfopt_trace_argv("run", "--run-id", RUN_ID, "--out", str(out), "--no-load", "--quiet", "--",
                                       harness.codeflash_executable(), *harness.CODEFLASH_ARGS),
            cwd=project, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=600)
    standin_stderr = server.stderr.read()
    # The stand-in is another process of the same run: its span file joins codeflash's.
    for path in (standin_dir / "spans").glob("*.spans"):
        path.rename(out / RUN_ID / "spans" / path.name)
    with Store(scratch / "traces.duckdb") as store:
        store.load_run(out / RUN_ID)
        _, rows = store.sql("SELECT span_id, parent_span_id, trace_id, name, kind, category, start_ns, end_ns, pid, "
                            "attributes, status FROM spans WHERE run_id = ?", [RUN_ID])
        _, diagnostics = store.sql("SELECT * FROM diagnostics WHERE run_id = ?", [RUN_ID])
    spans = [Span(*row[:9], json.loads(row[9]) if isinstance(row[9], str) else row[9], row[10]) for row in rows]
    requests = [json.loads(line) for line in (scratch / "requests.jsonl").read_text().splitlines()]
    return Run(spans, diagnostics, requests, result.returncode, result.stdout + result.stderr, project, server.pid,
               standin_stderr, scratch / "traces.duckdb")


def test_codeflash_finds_the_faster_candidate_untroubled_by_tracing(run: Run) -> None:
    assert run.exit_code == 0, run.output[-3000:]
    assert "arr.sort()" in (run.project / "bubble" / "sorter.py").read_text()
    assert "Traceback" not in run.output
    assert run.standin_stderr == ""
    assert not [d for d in run.diagnostics if "target" in str(d)], "the built-in target list drifted from codeflash"


def test_one_trace_from_the_cli_to_the_stand_in(run: Run) -> None:
    trace_id = run.codeflash().trace_id
    assert {s.trace_id for s in run.spans if s.pid != run.standin_pid} == {trace_id}
    server_spans = [s for s in run.spans if s.kind == "SERVER"]
    assert server_spans and {s.pid for s in server_spans} == {run.standin_pid}
    assert {s.trace_id for s in server_spans} == {trace_id}


def test_codeflash_phases_are_spans_that_say_what_is_optimized(run: Run) -> None:
    pid = run.codeflash().pid
    main = run.named("codeflash.main", pid)[0]
    for name in ("codeflash.parse_args", "codeflash.version_check", "codeflash.config", "codeflash.run_with_args",
                 "codeflash.optimizer.run", "codeflash.discover_functions", "codeflash.call_graph",
                 "codeflash.discover_tests", "codeflash.optimize_function", "codeflash.context_extraction",
                 "codeflash.generate_optimizations", "codeflash.baseline", "codeflash.candidate",
                 "codeflash.run_and_parse_tests", "codeflash.execute_test_subprocess", "codeflash.parse_test_results",
                 "codeflash.review", "codeflash.cleanup"):
        found = run.named(name, pid)
        assert found, name
        assert all(main in run.ancestors(s) for s in found), name
        assert all(s.category == "phase" and s.status != "ERROR" for s in found), name
    [optimize] = run.named("codeflash.optimize_function", pid)
    assert optimize.attributes["codeflash.function"] == "sorter"
    # the two /ai/testgen calls run on a thread pool, under the phase that asked for them
    testgen = run.named("codeflash.generate_tests", pid)
    assert len(testgen) == 2 and {s.attributes["codeflash.test_index"] for s in testgen} == {0, 1}
    assert all(optimize in run.ancestors(s) for s in testgen)
    [candidate] = run.named("codeflash.candidate", pid)
    assert candidate.attributes["codeflash.candidate.id"] == "standin-sort-1"
    assert candidate.attributes["codeflash.function"] == "sorter"
    modes = {s.attributes["codeflash.testing_mode"] for s in run.named("codeflash.run_and_parse_tests", pid)
             if candidate in run.ancestors(s)}
    assert {"BEHAVIOR", "PERFORMANCE"} <= modes


def _standin_client_spans(run: Run) -> list[Span]:
    return sorted((s for s in run.spans if s.kind == "CLIENT" and s.category == "http"
                   and s.attributes.get("server.port") in STANDIN_PORTS), key=lambda s: s.start_ns)


def test_every_http_call_is_a_client_span_on_a_new_connection_with_its_server_span(run: Run) -> None:
    clients = _standin_client_spans(run)
    paths = sorted(r["path"] for r in run.requests)
    assert len(clients) == len(run.requests) >= 8
    assert sorted(c.attributes["url.full"].split(":", 2)[2].split("/", 1)[1] for c in clients) == \
        sorted(p.lstrip("/") for p in paths)
    assert {"/ai/optimize", "/ai/testgen", "/ai/explain", "/cfapi/mark-as-success"} <= set(paths)
    servers = {s.parent_span_id: s for s in run.spans if s.kind == "SERVER"}
    for client in clients:
        served = next(r for r in run.requests if r["traceparent"] and r["traceparent"].split("-")[2] == client.span_id)
        assert client.attributes["http.response.status_code"] == served["status"] == 200
        assert client.attributes.get("http.request.body.size", 0) == served["request_bytes"]
        assert client.attributes["http.response.body.size"] == served["response_bytes"]
        assert client.attributes["selfopt_trace.http.connection.reused"] is False  # codeflash: a new one each call
        assert any(child.name == "connect" for child in run.children(client))
        assert "cf-test" not in json.dumps(client.attributes)
        server = servers[client.span_id]
        assert server.trace_id == client.trace_id
        # the server span may end after the client's: the handler logs the request after answering it
        assert client.start_ns <= server.start_ns <= client.end_ns


def _summed(span: Span, key: str) -> tuple[int, int]:
    prefix = "selfopt_trace.small.%s." % key
    return span.attributes.get(prefix + "count", 0), span.attributes.get(prefix + "bytes", 0)


def test_every_payload_is_serialized_to_json_under_the_phase_that_sends_it(run: Run) -> None:
    posts: dict[str, list[Span]] = {}
    for client in _standin_client_spans(run):
        if client.attributes["http.request.method"] == "POST":
            posts.setdefault(client.parent_span_id, []).append(client)
    assert posts
    for parent_id, clients in posts.items():
        parent = run.by_id[parent_id]
        calls, size = _summed(parent, "json.dumps")
        for span in run.children(parent):
            if span.name == "json.dumps":
                calls, size = calls + 1, size + span.attributes["selfopt_trace.bytes_out"]
        # A request still in flight when its phase ended (codeflash's /ai/refinement, sent from a
        # worker thread) may have serialized its payload after that end: then it is summed onto
        # the closest span still open.
        holder = parent
        while any(c.end_ns > parent.end_ns for c in clients) and holder.parent_span_id in run.by_id:
            holder = run.by_id[holder.parent_span_id]
            if holder.end_ns > parent.end_ns:
                more_calls, more_size = _summed(holder, "json.dumps")
                calls, size = calls + more_calls, size + more_size
                break
        assert calls >= len(clients), parent.name
        assert size >= sum(c.attributes["http.request.body.size"] for c in clients), parent.name
    # and every answer codeflash reads is parsed with json.loads (requests' Response.json)
    pid = run.codeflash().pid
    loads = sum(_summed(s, "json.loads")[0] + (s.name == "json.loads") for s in run.spans if s.pid == pid)
    read = [r for r in run.requests if r["path"] in ("/ai/optimize", "/ai/testgen", "/ai/optimize-line-profiler",
                                                      "/ai/explain", "/ai/optimization_review")]
    assert loads >= len(read) >= 5


def test_parsing_with_ast_libcst_and_jedi_is_measured(run: Run) -> None:
    pid = run.codeflash().pid
    parse = [s for s in run.spans if s.pid == pid and s.category == "parse"]
    names = {s.name for s in parse}
    assert {"jedi.Script", "libcst.parse_module", "ast.parse"} <= names
    for span in parse:
        assert span.end_ns - span.start_ns >= 100_000 or run.children(span), "small calls are sums, not spans"
        assert span.attributes["code.filepath"] and span.attributes["code.lineno"] > 0
    # the many small ones are sums: codeflash's ast.parse calls, jedi's name lookups
    summed = {key.split(".small.")[1].rsplit(".", 1)[0] for s in run.spans if s.pid == pid for key in s.attributes
              if ".small." in key}
    assert {"ast.parse", "jedi.Name.full_name"} <= summed
    context = run.named("codeflash.context_extraction", pid)[0]
    assert any(context in run.ancestors(s) for s in parse if s.name.startswith(("jedi.", "libcst.")))


def _process_of(run: Run, client: Span) -> Span | None:
    return next((s for s in run.children(client) if s.name == "process"), None)


def test_every_pytest_child_is_a_process_with_start_up_imports_and_its_run(run: Run) -> None:
    executions = run.named("codeflash.execute_test_subprocess", run.codeflash().pid)
    assert len(executions) >= 5  # baseline behaviour (+ coverage erase), line profile, benchmark; the candidate's runs
    for execution in executions:
        [client] = [s for s in run.children(execution) if s.category == "subprocess"]
        process = _process_of(run, client)
        assert process is not None, client.attributes["process.command_args"]
        assert process.attributes["process.exit.code"] == 0
        children = run.children(process)
        assert any(s.name == "interpreter.startup" for s in children)
        if "pytest" in client.attributes["process.command_args"]:
            assert any(s.category == "import" and "pytest" in s.name for s in run.spans if process in run.ancestors(s))
        assert process.start_ns >= client.start_ns and process.end_ns <= client.end_ns
    discovery = [s for s in run.spans if s.category == "subprocess"
                 and any("pytest_new_process_discovery" in a for a in s.attributes["process.command_args"])]
    assert len(discovery) == 1 and _process_of(run, discovery[0]) is not None


def test_git_and_jedi_children_are_seen(run: Run) -> None:
    pid = run.codeflash().pid
    spawns = [s for s in run.spans if s.pid == pid and s.category == "subprocess"]
    git = [s for s in spawns if s.attributes["process.executable.name"] == "git"]
    assert git and all(s.attributes["process.command_args"][1:] for s in git)
    [jedi] = [s for s in spawns if any("jedi/inference/compiled/subprocess" in a
                                       for a in s.attributes["process.command_args"])]
    assert run.parent(jedi).name.startswith("jedi."), "the jedi call that needed the subprocess is its parent"
    assert _process_of(run, jedi) is not None


def _breakdown(store: Store, run_id: str) -> dict[str, float]:
    return {r["category"]: r["wall_ms"] for r in run_query(store, "breakdown", {"run_id": run_id}).records()}


def test_the_breakdown_follows_what_codeflash_waits_on_not_its_idle_jedi_helper(run: Run) -> None:
    """jedi's inference subprocess lives from its first use to the end, blocked on its pipe: the
    breakdown must be the same with it and without it (issue 10: it used to halve every figure), but
    where codeflash read its pipe: its start-up at its first use, which codeflash waits on for its
    first answer (seen into, its start-up and imports; unseen, an untraced child: 71 ms of 8.7 s)."""
    [jedi] = [s for s in run.spans if s.category == "subprocess"
              and any("jedi/inference/compiled/subprocess" in a for a in s.attributes["process.command_args"])]
    helper = _process_of(run, jedi)
    assert (helper.end_ns - helper.start_ns) / (run.codeflash().end_ns - run.codeflash().start_ns) > 0.5
    with Store(run.db) as store:
        store.sql("CREATE TABLE no_helper AS SELECT * FROM spans WHERE run_id = ? AND source_file <> "
                  "(SELECT source_file FROM spans WHERE span_id = ?)", [RUN_ID, helper.span_id])
        store.sql("INSERT INTO spans SELECT * REPLACE ('without-helper' AS run_id) FROM no_helper")
        store.sql("INSERT INTO runs SELECT * REPLACE ('without-helper' AS run_id) FROM runs WHERE run_id = ?", [RUN_ID])
        store.sql("INSERT INTO cpu_samples SELECT * REPLACE ('without-helper' AS run_id) FROM cpu_samples "
                  "WHERE run_id = ? AND pid <> ?", [RUN_ID, helper.pid])
        with_helper, without = _breakdown(store, RUN_ID), _breakdown(store, "without-helper")
    assert with_helper["total"] == pytest.approx(without["total"], abs=0.01)
    for figures in (with_helper, without):  # each figure is rounded to the microsecond
        assert sum(ms for category, ms in figures.items() if category != "total") == pytest.approx(
            figures["total"], abs=0.01)
    helpers = ("interpreter start-up", "imports", "child processes' own work", "interpreter teardown",
               "untraced child processes", "untraced waits")
    for category, ms in with_helper.items():
        if category not in helpers:
            assert ms == pytest.approx(without[category], abs=max(1.0, 0.005 * with_helper["total"])), category
    moved = sum(abs(with_helper[c] - without[c]) for c in helpers) / 2
    assert moved < 0.03 * with_helper["total"], {c: (with_helper[c], without[c]) for c in helpers}
    assert with_helper["untraced child processes"] <= without["untraced child processes"] + 1
    # and the figures say where codeflash's time goes: its pytest children, start-up and imports
    assert with_helper["child processes' own work"] + with_helper["imports"] + with_helper["interpreter start-up"] \
        > 0.3 * with_helper["total"]


def _program(args: list) -> tuple:
    """What a Python command line runs, its arguments aside: a -c program (its digits aside: a file
    descriptor, a pid), a module, a script."""
    kind, target, _ = python_main(args)
    return kind, "".join(c for c in target if not c.isdigit()) if kind == "command" else target


def test_every_process_is_named_after_what_it_runs(run: Run) -> None:
    """Issue 15: the naming rule on codeflash's process tree. Every name is the rule's, the service
    is the name, none is a bare `-c` or `-m X`, and processes running different programs (different
    -c programs among them) never share a name."""
    processes = run.named("process")
    assert len(processes) >= 8
    names: dict[str, set] = {}
    with Store(run.db) as store:
        _, rows = store.sql("SELECT span_id, service_name FROM spans WHERE run_id = ? AND name = 'process'", [RUN_ID])
    services = dict(rows)
    for process in processes:
        args = process.attributes["process.command_args"]
        name = process.attributes["process.command"]
        assert name == command_name(args, python=True) == services[process.span_id]
        assert name not in ("-c", "python") and not name.startswith(("-m ", "-c ")), args
        names.setdefault(name, set()).add(_program(args))
    assert {n: p for n, p in names.items() if len(p) > 1} == {}
    assert {"codeflash", "pytest", "coverage", "standin.py", "pytest_new_process_discovery.py",
            "subprocess/__main__.py"} <= set(names)
