"""Work submitted to thread pools and threads sits under the span that submitted it (in a `task` or
`thread` span of its own), and the program sees nothing else change: its context variables, its
tracebacks."""

from __future__ import annotations

import subprocess
import sys
import textwrap

from tests.agent.http.conftest import client_spans

# A "phase" span made with the agent's own API (the codeflash phase hooks make such spans).
PHASE_WORK = textwrap.dedent("""
    import concurrent.futures, requests, sys, threading
    from selfopt_trace_agent import tracer
    url = sys.argv[1] + "/echo"
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        phase = tracer.start_span("optimize", "phase")
        token = tracer.activate(phase)
        futures = [pool.submit(requests.post, url, json={"i": i}) for i in range(2)]
        print([f.result().status_code for f in futures])
        thread = threading.Thread(target=requests.get, args=(url,))
        thread.start(); thread.join()
        tracer.deactivate(token)
        tracer.end_span(phase)
        # the same worker threads, after the phase: back at the process span
        print(pool.submit(requests.get, url).result().status_code)
        print(list(pool.map(lambda _: requests.get(url).status_code, range(2))))
""")


def test_pool_and_thread_work_is_under_the_submitting_span(traced, server):
    result = traced.python(PHASE_WORK, server.url)
    assert (result.returncode, result.stderr) == (0, b"")
    assert result.stdout == b"[200, 200]\n200\n[200, 200]\n"
    spans = traced.spans()
    [phase] = spans.named("optimize")
    process = spans.processes()[0]
    # Each request sits in the span of the work item (`task`) or thread (`thread`) that made it,
    # a child of the span current where the work was handed over.
    holders = [spans.parent(s) for s in client_spans(spans)]
    assert [h.name for h in holders] == ["task", "task", "thread", "task", "task", "task"]
    assert [h.parent_span_id for h in holders] == [phase.span_id] * 3 + [process.span_id] * 3
    assert {h.category for h in holders} == {"thread"}
    assert len(spans.trace_ids()) == 1


# Run traced and untraced: every line must be the same.
FIDELITY = textwrap.dedent("""
    import concurrent.futures, contextvars, decimal, threading, traceback
    from selfopt_trace_agent import tracer
    user_var = contextvars.ContextVar("user_var", default="unset")
    user_var.set("main")
    decimal.getcontext().prec = 5
    tracer.activate(tracer.start_span("phase", "phase"))

    def look():
        return user_var.get(), decimal.getcontext().prec

    def boom():
        raise ValueError("from the pool")

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        print(pool.submit(look).result())
        try:
            pool.submit(boom).result()
        except ValueError:
            traceback.print_exc()
    seen = []
    thread = threading.Thread(target=lambda: seen.append(look()))
    thread.start(); thread.join()
    print(seen)
    thread = threading.Thread(target=boom, name="boom")
    thread.start(); thread.join()
""")


def test_context_variables_and_tracebacks_unchanged(traced):
    script = traced.tmp_path / "fidelity.py"
    script.write_text(FIDELITY)
    env = traced.env()
    del env["SELFOPT_TRACE_DIR"]  # the agent importable but not started: the untraced program
    untraced = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, timeout=60)
    result = traced.run([sys.executable, str(script)])
    assert untraced.returncode == 0
    assert b"ValueError: from the pool" in untraced.stderr and b"Exception in thread boom" in untraced.stderr
    assert untraced.stdout == b"('unset', 28)\n[('unset', 28)]\n"
    assert (result.returncode, result.stdout, result.stderr) == (0, untraced.stdout, untraced.stderr)
    assert traced.spans().named("phase")
