"""What each thread waits on (`wait` spans) and which thread each span ran in (`thread`/`task` spans).

Real programs, traced: each blocking wait is exactly one `wait` span naming, in
`selfopt_trace.wait.on`, the spans of what it waited on (a child's subprocess span, a thread's
`thread` span, a future's `task` span); a wait that does not block records nothing; a wait's
exception (a timeout) reaches the program exactly as untraced.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.spanfiles import RunSpans, SpanRecord

ON = "selfopt_trace.wait.on"
SLEEPER = "[sys.executable, '-c', 'import time; time.sleep(0.15)']"


def run(traced, code: str, *args: str) -> RunSpans:
    script = traced.tmp_path / "program.py"
    script.write_text(textwrap.dedent(code))
    result = traced.run([sys.executable, str(script), *args], cwd=traced.tmp_path)
    assert (result.returncode, result.stderr) == (0, b""), result.stderr.decode()
    spans = traced.spans()
    assert spans.diagnostics == []
    spans.stdout = result.stdout.decode()  # type: ignore[attr-defined]
    return spans


def ancestors(spans: RunSpans, span: SpanRecord) -> list[SpanRecord]:
    by_id = spans.by_id()
    out = []
    while span.parent_span_id in by_id:
        span = by_id[span.parent_span_id]
        out.append(span)
    return out


def main_thread_waits(spans: RunSpans, name: str | None = None) -> list[SpanRecord]:
    """The wait spans of the first process's main thread (not under a thread or task span), in time order."""
    (root,) = [p for p in spans.processes() if p.parent_span_id == ""]
    found = []
    for span in spans.spans:
        if span.category != "wait" or span.file != root.file or (name and span.name != name):
            continue
        if not any(a.category == "thread" for a in ancestors(spans, span)):
            found.append(span)
    return sorted(found, key=lambda s: s.start_ns)


def targets(spans: RunSpans, wait: SpanRecord) -> list[SpanRecord]:
    """The spans a wait names, each of which must exist in the run."""
    by_id = spans.by_id()
    ids = wait.attributes[ON]
    assert isinstance(ids, list)
    missing = [i for i in ids if i not in by_id]
    assert not missing, (wait.name, missing)
    return [by_id[i] for i in ids]


def assert_wait(wait: SpanRecord, name: str) -> None:
    assert (wait.name, wait.kind, wait.category, wait.status) == (name, "INTERNAL", "wait", "UNSET")
    assert wait.end_ns - wait.start_ns >= 20_000


def test_subprocess_waits_name_the_child(traced):
    spans = run(traced, f"""
        import subprocess, sys
        subprocess.run({SLEEPER})                                   # Popen.communicate
        subprocess.check_output({SLEEPER})                          # Popen.communicate
        p = subprocess.Popen({SLEEPER}); p.wait()                   # Popen.wait
        p.wait(); p.poll(); p.communicate()                         # reaped: nothing blocks
        p = subprocess.Popen({SLEEPER}, stdout=subprocess.PIPE); p.communicate()
        subprocess.check_call({SLEEPER})                            # Popen.wait (call)
    """)
    children = sorted(spans.named("subprocess"), key=lambda s: s.start_ns)
    waits = main_thread_waits(spans)
    assert [w.name for w in waits] == ["Popen.communicate", "Popen.communicate", "Popen.wait", "Popen.communicate",
                                       "Popen.wait"]
    assert len(children) == 5
    for wait, child in zip(waits, children):
        assert_wait(wait, wait.name)
        assert targets(spans, wait) == [child]
        assert child.start_ns < wait.start_ns and wait.end_ns >= child.end_ns - 1_000_000
        assert wait.parent_span_id == spans.processes()[0].span_id


def test_a_wait_that_starts_the_flusher_thread_spans_the_call(traced):
    """The main thread's first wait on a child starts the flusher thread and waits for it to sleep
    (signals: tracer.before_block); beside a thread holding the GIL that takes two hand-overs of it
    (50 ms each here). The program is in its call meanwhile: the wait span starts at the call."""
    spans = run(traced, f"""
        import subprocess, sys, threading, time
        sys.setswitchinterval(0.05)
        stop = False
        def spin():
            while not stop:
                pass
        child = subprocess.Popen({SLEEPER})
        spinner = threading.Thread(target=spin); spinner.start()
        called = time.time_ns(); child.wait()
        stop = True; spinner.join()
        print(called)
    """)
    (wait,) = main_thread_waits(spans, "Popen.wait")
    assert targets(spans, wait) == spans.named("subprocess")
    assert 0 <= wait.start_ns - int(spans.stdout) < 5_000_000, (wait.start_ns - int(spans.stdout)) / 1e6


def test_os_waitpid_on_a_pid_and_on_any_child(traced):
    spans = run(traced, """
        import os, sys, time
        leaf = [sys.executable, '-c', 'import time; time.sleep(0.15)']
        pid = os.posix_spawn(sys.executable, leaf, os.environ)
        os.waitpid(pid, 0)
        a = os.posix_spawn(sys.executable, leaf, os.environ)
        # b outlives a: the second waitpid(-1) blocks (two that end together left it nothing to wait for)
        b = os.posix_spawn(sys.executable, [sys.executable, '-c', 'import time; time.sleep(0.4)'], os.environ)
        os.waitpid(-1, 0)
        os.waitpid(-1, 0)
        pid = os.fork()
        if pid == 0:
            time.sleep(0.1)
            os._exit(0)
        os.wait()
        time.sleep(0.1)
        os.waitpid(os.posix_spawn("/bin/sleep", ["sleep", "0.2"], os.environ), os.WNOHANG)   # a poll: no wait
        time.sleep(0.6)                                             # right after it: a wait on that child
        os.wait()                                                   # an exited child: (almost) no wait
    """)
    spawns = sorted([s for s in spans.spans if s.kind == "CLIENT" and s.category == "subprocess"],
                    key=lambda s: s.start_ns)
    first, a, b, forked, last = spawns
    waits = main_thread_waits(spans)
    if len(waits) == 6:  # os.wait on the exited child took 20 us (a loaded machine): its wait names it
        assert targets(spans, waits.pop())[0] == last
    polled = waits.pop()
    assert targets(spans, polled) == [last] and polled.name == "time.sleep"
    assert [w.name for w in waits] == ["os.waitpid", "os.waitpid", "os.waitpid", "os.wait"]
    for wait in waits:
        assert_wait(wait, wait.name)
    assert targets(spans, waits[0]) == [first]
    # Any child: the one reaped first, and the other still alive.
    assert sorted(s.span_id for s in targets(spans, waits[1])) == sorted([a.span_id, b.span_id])
    reaped_second = targets(spans, waits[2])
    assert len(reaped_second) == 1 and reaped_second[0] in (a, b)
    assert targets(spans, waits[3])[0] == forked


def test_a_poll_loop_s_sleeps_are_waits_on_the_children_it_polls(traced):
    """`while p.poll() is None: time.sleep(...)` waits on p as Popen.wait(timeout=...) does: each
    sleep begun right after polls that found children (or a thread: `Thread.is_alive()`) running is
    a wait on them (at the sleep's line); a sleep after other work, or with no poll before it, or after subprocess's own polls of
    a Popen the program let go (its __del__, _cleanup() at the next Popen), is a sleep."""
    spans = run(traced, f"""
        import subprocess, sys, time
        a = subprocess.Popen({SLEEPER})
        while a.poll() is None:
            time.sleep(0.02)                                        # line 5
        both = [subprocess.Popen({SLEEPER}) for _ in range(2)]
        while None in [p.poll() for p in both]:
            time.sleep(0.02)                                        # line 8
        c = subprocess.Popen({SLEEPER})
        c.poll()
        t = time.perf_counter()
        while time.perf_counter() - t < 0.02:                       # work after the poll: not a poll loop
            pass
        time.sleep(0.03)                                            # line 14
        c.wait()
        time.sleep(0.03)                                            # line 16: polled nothing
        subprocess.Popen({SLEEPER})                                 # let go: its __del__ polls it
        time.sleep(0.03)                                            # line 18: no poll of the program's
        d = subprocess.Popen({SLEEPER})
        subprocess.Popen([sys.executable, '-c', 'pass'])            # _cleanup() polls the one let go
        time.sleep(0.03)                                            # line 21: no poll of the program's
        d.wait()
        import threading
        t = threading.Thread(target=time.sleep, args=(0.15,)); t.start()
        while t.is_alive():
            time.sleep(0.02)                                        # line 26: a wait on the thread
    """)
    a, b1, b2, c = sorted(spans.named("subprocess"), key=lambda s: s.start_ns)[:4]
    polls = [s for s in spans.named("time.sleep") if s.category == "wait"]
    by_line: dict[int, list[SpanRecord]] = {}
    for span in polls:
        assert_wait(span, "time.sleep")
        by_line.setdefault(span.attributes["code.lineno"], []).append(span)
    assert sorted(by_line) == [5, 8, 26], by_line.keys()
    (thread,) = spans.named("thread")
    assert len(by_line[26]) >= 4 and all(targets(spans, s) == [thread] for s in by_line[26])
    assert len(by_line[5]) >= 4 and all(targets(spans, s) == [a] for s in by_line[5])
    assert len(by_line[8]) >= 4 and {b1.span_id, b2.span_id} == {t.span_id for t in targets(spans, by_line[8][0])}
    assert all({t.span_id for t in targets(spans, s)} <= {b1.span_id, b2.span_id} for s in by_line[8])
    plain = [s for s in spans.named("time.sleep") if s.category == "sleep" and s.file == polls[0].file
             and s.attributes["code.function"] == "<module>"]  # not the thread's own (its target is time.sleep)
    assert sorted(s.attributes["code.lineno"] for s in plain) == [14, 16, 18, 21]
    assert [w.name for w in main_thread_waits(spans) if w.name != "time.sleep"] == ["Popen.wait", "Popen.wait"]


def test_a_sleep_while_a_child_asked_to_end_is_not_reaped_waits_for_its_exit(traced):
    """A supervisor stopping its workers (gunicorn's arbiter: SIGTERM to each, then sleeps until its
    SIGCHLD handler has reaped them all) waits on them: each sleep while a child of ours it sent a
    signal that ends a process (os.kill, Popen.terminate or kill) is not reaped yet is a wait on that
    child; once reaped, or for another signal, a sleep is a sleep."""
    spans = run(traced, """
        import os, signal, subprocess, sys, time
        slow_exit = "import signal, sys, time\\n" \\
            "def stop(*_):\\n    time.sleep(0.15)\\n    sys.exit(0)\\n" \\
            "signal.signal(signal.SIGTERM, stop)\\nprint('up', flush=True)\\ntime.sleep(30)\\n"
        alive = set()
        def reap(*_):
            while alive:
                pid, _ = os.waitpid(-1, os.WNOHANG)
                if not pid:
                    return
                alive.discard(pid)
        signal.signal(signal.SIGCHLD, reap)
        child = subprocess.Popen([sys.executable, "-c", slow_exit], stdout=subprocess.PIPE)
        alive.add(child.pid)
        child.stdout.readline()
        os.kill(child.pid, signal.SIGWINCH)                                # ends no process
        time.sleep(0.03)                                                   # line 18: a sleep
        child.terminate()
        while alive:
            time.sleep(0.02)                                               # line 21: waits on the child
        time.sleep(0.03)                                                   # line 22: reaped: a sleep
    """)
    (child,) = spans.named("subprocess")
    waits_on_child = [s for s in spans.named("time.sleep") if s.category == "wait"]
    assert len(waits_on_child) >= 4, waits_on_child  # 150 ms of the child's handler, 20 ms apart
    for wait in waits_on_child:
        assert_wait(wait, "time.sleep")
        assert wait.attributes["code.lineno"] == 21 and targets(spans, wait) == [child]
    plain = sorted(s.attributes["code.lineno"] for s in spans.named("time.sleep") if s.category == "sleep"
                   and s.file == waits_on_child[0].file and s.attributes["code.function"] == "<module>")
    assert plain[0] == 18 and plain[-1] == 22 and set(plain) <= {18, 21, 22}, plain  # (the reap's sleep: 21)


def test_a_wait_on_a_child_the_agent_did_not_start_says_its_pid(traced):
    spans = run(traced, """
        import os, posix, time
        pid = posix.fork()                                          # the C function: no fork span
        if pid == 0:
            time.sleep(0.1)
            os._exit(0)
        os.waitpid(pid, 0)
        print(pid)
    """)
    (wait,) = main_thread_waits(spans)
    assert_wait(wait, "os.waitpid")
    assert wait.attributes[ON] == []
    assert wait.attributes["process.pid"] == [p for p in spans.processes() if p.parent_span_id][0].attributes["process.pid"]


def test_thread_join_names_the_thread_span_and_the_thread_holds_its_spans(traced):
    spans = run(traced, f"""
        import subprocess, sys, threading
        def work():
            subprocess.run({SLEEPER})
        thread = threading.Thread(target=work, name="worker")
        thread.start()
        thread.join()
        thread.join()                                               # finished: nothing blocks
        threading.Thread(target=int).start()                        # never joined
    """)
    process = [p for p in spans.processes() if p.parent_span_id == ""][0]
    threads = sorted(spans.named("thread"), key=lambda s: s.start_ns)
    assert len(threads) == 2
    worker = threads[0]
    assert worker.category == "thread" and worker.kind == "INTERNAL"
    assert worker.attributes["thread.name"] == "worker"
    assert isinstance(worker.attributes["thread.id"], int) and worker.attributes["thread.id"] != process.attributes["process.pid"]
    assert worker.parent_span_id == process.span_id
    (join,) = main_thread_waits(spans)
    assert_wait(join, "Thread.join")
    assert targets(spans, join) == [worker]
    # What the thread did is under its span, and its own wait is the thread's, not the main thread's.
    (child,) = spans.named("subprocess")
    assert worker in ancestors(spans, child)
    (inner,) = [w for w in spans.spans if w.category == "wait" and w.name == "Popen.communicate"]
    assert spans.parent(inner) == worker
    assert not [s for s in spans.spans if s.incomplete]


def test_the_thread_hooks_load_at_the_first_thread_start_not_at_the_import(traced):
    """Importing threading (most programs do) loads neither threads.py nor waits.py; the first
    Thread.start, through a reference taken before it, installs them and is a thread like any other."""
    code = ("import sys, threading\n"
            "print([m for m in ('threads', 'waits') if 'selfopt_trace_agent.hooks.' + m in sys.modules])\n"
            "start = threading.Thread.start\n"
            "thread = threading.Thread(target=int, name='first')\n"
            "start(thread)\n"
            "thread.join()\n"
            "print(threading.Thread.start.__name__, hasattr(threading.Thread.start, '__wrapped__'))\n")
    result = traced.python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"[]\nstart True\n", b"")
    (thread,) = traced.spans().named("thread")
    assert thread.attributes["thread.name"] == "first"


def test_the_future_and_asyncio_wait_hooks_load_at_the_first_wait_not_at_the_import(traced):
    """Importing concurrent.futures and asyncio.subprocess (pytest's plugins do) loads no waits.py;
    their stand-ins answer as the originals (a coroutine function stays one), and the first wait,
    through a reference taken before it, installs the hook and is a wait like any other."""
    code = textwrap.dedent("""
        import asyncio.subprocess, concurrent.futures as cf, inspect, sys, threading
        print("selfopt_trace_agent.hooks.waits" in sys.modules)
        process = asyncio.subprocess.Process
        print([inspect.iscoroutinefunction(f) for f in (process.wait, process.communicate, cf.Future.result, cf.wait)])
        result = cf.Future.result
        future = cf.Future()
        threading.Timer(0.1, future.set_result, (7,)).start()
        print(result(future), cf.Future.result.__name__, inspect.signature(cf.Future.result))
    """)
    untraced = subprocess.run([sys.executable, "-c", code], capture_output=True)
    assert untraced.stdout == b"False\n[True, True, False, False]\n7 result (self, timeout=None)\n"
    spans = run(traced, code)
    assert spans.stdout.encode() == untraced.stdout
    (wait,) = main_thread_waits(spans, "Future.result")
    assert_wait(wait, "Future.result")


def test_a_thread_started_under_a_span_is_its_child(traced):
    spans = run(traced, """
        import threading
        from selfopt_trace_agent import tracer
        phase = tracer.start_span("phase", "phase")
        token = tracer.activate(phase)
        t = threading.Thread(target=lambda: None); t.start()
        tracer.deactivate(token)
        t.join()
        tracer.end_span(phase)
    """)
    (phase,) = spans.named("phase")
    (thread,) = spans.named("thread")
    assert thread.parent_span_id == phase.span_id


POOL = f"""
import concurrent.futures as cf, subprocess, sys, time
def work(n):
    time.sleep(0.05 * (n + 1))
    return n
def spawn(_):
    subprocess.run({SLEEPER})
with cf.ThreadPoolExecutor(2) as pool:
    futures = [pool.submit(work, i) for i in range(3)]
    print(sorted(f.result() for f in cf.as_completed(futures)))
    print(pool.submit(work, 0).result())
    print(list(pool.map(work, [0, 1])))
    done = pool.submit(int, "5"); time.sleep(0.1); print(done.result(), done.exception())
    print(len(cf.wait([pool.submit(work, 1), pool.submit(work, 0)])[0]))
    pool.submit(spawn, 0).result()
"""


def test_thread_pool_tasks_and_waits_on_them(traced):
    spans = run(traced, POOL)
    process = [p for p in spans.processes() if p.parent_span_id == ""][0]
    tasks = sorted(spans.named("task"), key=lambda s: s.start_ns)
    assert len(tasks) == 3 + 1 + 2 + 1 + 2 + 1
    for task in tasks:
        assert (task.kind, task.category, task.parent_span_id) == ("INTERNAL", "thread", process.span_id)
        assert task.attributes["code.function"] in ("work", "int", "spawn")
        assert isinstance(task.attributes["thread.id"], int)
    workers = spans.named("thread")
    assert {t.attributes["thread.id"] for t in tasks} == {w.attributes["thread.id"] for w in workers}
    waits = main_thread_waits(spans)
    names = [w.name for w in waits]
    # as_completed: three blocking steps; result; map: two results; the done future: nothing; wait;
    # result; then the pool's shutdown joins its two workers (when a join takes 20 us or more).
    assert names[:8] == ["futures.as_completed"] * 3 + ["Future.result"] * 3 + ["futures.wait", "Future.result"], names
    assert names[8:] in (["Thread.join"] * 2, ["Thread.join"], []), names
    for wait in waits:
        assert_wait(wait, wait.name)
        named = targets(spans, wait)
        assert named, wait
        kinds = {s.name for s in named}
        assert kinds == ({"thread"} if wait.name == "Thread.join" else {"task"})
        # every target was running during the wait
        assert all(s.start_ns < wait.end_ns and s.end_ns > wait.start_ns for s in named if s.name == "task")
    first = targets(spans, waits[0])
    assert tasks[0] in first
    assert sorted(s.span_id for s in targets(spans, waits[6])) == sorted(s.span_id for s in tasks[7:9])
    assert targets(spans, waits[7]) == [tasks[9]]
    # what a task did is under its task span
    (child,) = spans.named("subprocess")
    assert tasks[-1] in ancestors(spans, child)
    assert not [s for s in spans.spans if s.incomplete]


def test_tasks_and_threads_keep_the_submitting_span(traced):
    spans = run(traced, """
        import asyncio, concurrent.futures as cf, time
        from selfopt_trace_agent import tracer
        phase = tracer.start_span("phase", "phase")
        token = tracer.activate(phase)
        with cf.ThreadPoolExecutor(1) as pool:
            pool.submit(time.sleep, 0.01).result()
            async def main():
                await asyncio.get_running_loop().run_in_executor(pool, time.sleep, 0.01)
                await asyncio.to_thread(time.sleep, 0.01)
            asyncio.run(main())
        tracer.deactivate(token)
        tracer.end_span(phase)
    """)
    (phase,) = spans.named("phase")
    tasks = spans.named("task")
    assert len(tasks) >= 3
    assert {t.parent_span_id for t in tasks} == {phase.span_id}
    assert {t.attributes["code.function"] for t in tasks} >= {"sleep"}


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_multiprocessing_join_and_pool_map(traced, method):
    spans = run(traced, f"""
        import multiprocessing as mp, time
        def work(n):
            time.sleep(0.05)
            return n * n
        if __name__ == "__main__":
            mp.set_start_method({method!r})
            p = mp.Process(target=work, args=(1,)); p.start(); p.join(); p.join()
            with mp.Pool(2) as pool:
                print(pool.map(work, range(4)))
                print(pool.apply(work, (3,)))
                pool.close(); pool.join()
    """)
    starts = {s.attributes["process.command_args"][0]: s for s in spans.named("multiprocessing")}
    waits = main_thread_waits(spans)
    names = [w.name for w in waits]
    assert names[:3] == ["Process.join", "AsyncResult.get", "AsyncResult.get"], names
    assert targets(spans, waits[0]) == [starts["Process-1"]]
    pool_workers = sorted(k for k in starts if "PoolWorker" in k)
    assert len(pool_workers) == 2
    for wait in waits[1:3]:
        assert sorted(s.attributes["process.command_args"][0] for s in targets(spans, wait)) == pool_workers
    # pool.join (when it blocked): one wait on the pool's workers, the joins of its threads inside it
    rest = waits[3:]
    assert [w.name for w in rest] in ([], ["Pool.join"]), rest
    for wait in rest:
        assert_wait(wait, "Pool.join")
        assert sorted(s.attributes["process.command_args"][0] for s in targets(spans, wait)) == pool_workers
    # a worker's reads of its next task that blocked (at least the other worker's, for the apply's):
    # waits on nothing traced, in the workers (the read of the sentinel at the pool's close too), none
    # in the main process
    worker_files = {p.file for p in spans.processes()
                    if p.parent_span_id in {starts[name].span_id for name in pool_workers}}
    reads = spans.named("SimpleQueue.get")
    assert reads and {r.file for r in reads} <= worker_files, (reads, worker_files)
    for read in reads:
        assert_wait(read, "SimpleQueue.get")
        assert read.attributes[ON] == []


@pytest.mark.parametrize("method", ["fork", "spawn"])
def test_process_pool_executor_futures_name_the_workers(traced, method):
    spans = run(traced, f"""
        import concurrent.futures as cf, multiprocessing as mp, time
        def work(n):
            time.sleep(0.05)
            return n
        if __name__ == "__main__":
            with cf.ProcessPoolExecutor(2, mp_context=mp.get_context({method!r})) as pool:
                print(pool.submit(work, 1).result())
                print(sorted(f.result() for f in cf.as_completed([pool.submit(work, i) for i in range(2)])))
    """)
    workers = {s.span_id for s in spans.named("multiprocessing")}
    assert len(workers) == 2
    waits = [w for w in main_thread_waits(spans) if w.name in ("Future.result", "futures.as_completed")]
    assert [w.name for w in waits][:1] == ["Future.result"]
    assert "futures.as_completed" in [w.name for w in waits]
    for wait in waits:
        named = {s.span_id for s in targets(spans, wait)}
        assert named and named <= workers
    # a worker's reads of its next task that blocked (the idle worker's while the other ran the first
    # task, each one's for the shutdown's sentinel): waits on nothing traced, in the workers only
    worker_files = {p.file for p in spans.processes() if p.parent_span_id in workers}
    reads = spans.named("Queue.get")
    assert reads and {r.file for r in reads} <= worker_files, (reads, worker_files)
    for read in reads:
        assert_wait(read, "Queue.get")
        assert read.attributes[ON] == []


def test_uvloop_s_children_are_spawned_and_waited_on_as_asyncio_s(traced):
    """uvloop spawns and reaps in C (libuv): its children had no spawn span, their process span hung
    under the parent's parent, the at-fork handlers it runs before libuv's exec left an incomplete
    process span, and a wait on them named no span."""
    spans = run(traced, f"""
        import asyncio, sys, uvloop
        async def main():
            proc = await asyncio.create_subprocess_exec(*{SLEEPER})
            await proc.wait()
            shell = await asyncio.create_subprocess_shell("sleep 0.1; exit 3")
            print(await shell.wait())
        uvloop.run(main())
    """)
    assert spans.stdout == "3\n"
    python_child, shell = sorted(spans.named("subprocess"), key=lambda s: s.start_ns)
    assert shell.attributes["process.command_args"] == ["/bin/sh", "-c", "sleep 0.1; exit 3"]
    root, child = sorted(spans.processes(), key=lambda s: s.start_ns)  # no process span of the fork
    assert child.parent_span_id == python_child.span_id and not child.incomplete
    assert python_child.attributes["process.pid"] == child.attributes["process.pid"]
    waits = main_thread_waits(spans, "asyncio.Process.wait")
    assert [targets(spans, wait) for wait in waits] == [[python_child], [shell]]
    assert (shell.attributes["process.exit.code"], shell.status) == (3, "ERROR")  # as its asyncio wait saw it


def test_an_await_on_a_pool_s_task_is_a_wait_on_it(traced):
    """asyncio.to_thread and loop.run_in_executor hand work to a pool through asyncio.wrap_future: the
    awaiting task waited on the pool's task (its thread's `task` span, a process pool's workers),
    where the loop's thread, idle, was an untraced wait."""
    spans = run(traced, """
        import asyncio, concurrent.futures as cf, time
        def work():
            time.sleep(0.1)
            return 1
        async def main():
            print(await asyncio.to_thread(work))
            with cf.ProcessPoolExecutor(1) as pool:
                print(await asyncio.get_running_loop().run_in_executor(pool, time.sleep, 0.1))
        asyncio.run(main())
    """)
    assert spans.stdout == "1\nNone\n"
    in_thread, in_process = main_thread_waits(spans, "asyncio.wrap_future")
    (task,) = spans.named("task")
    assert targets(spans, in_thread) == [task] and in_thread.start_ns <= task.start_ns < task.end_ns <= in_thread.end_ns
    assert [t.category for t in targets(spans, in_process)] == ["subprocess"]
    assert all(w.end_ns - w.start_ns >= 100_000_000 for w in (in_thread, in_process))


def test_asyncio_subprocess_wait(traced):
    spans = run(traced, f"""
        import asyncio, sys
        async def main():
            proc = await asyncio.create_subprocess_exec(*{SLEEPER})
            await proc.wait()
            await proc.wait()                                       # exited: nothing blocks
            proc = await asyncio.create_subprocess_exec(*{SLEEPER}, stdout=asyncio.subprocess.PIPE)
            await proc.communicate()
        asyncio.run(main())
    """)
    children = sorted(spans.named("subprocess"), key=lambda s: s.start_ns)
    waits = main_thread_waits(spans)
    assert [w.name for w in waits] == ["asyncio.Process.wait", "asyncio.Process.communicate"]
    for wait, child in zip(waits, children):
        assert_wait(wait, wait.name)
        assert targets(spans, wait) == [child]


def test_waits_that_do_not_block_record_nothing(traced):
    spans = run(traced, """
        import concurrent.futures as cf, multiprocessing.pool, subprocess, sys, threading, time
        p = subprocess.Popen([sys.executable, '-c', 'pass'])
        t = threading.Thread(target=int); t.start()
        with cf.ThreadPoolExecutor(1) as pool:
            f = pool.submit(int, "1")
        with multiprocessing.pool.ThreadPool(1) as tpool:
            r = tpool.apply_async(int, ("1",)); r.wait()
            time.sleep(0.5)
            p.wait(); t.join()
            print(time.time_ns(), flush=True)
            for _ in range(200):
                p.wait(); t.join(); f.result(); f.exception(); cf.wait([f]); list(cf.as_completed([f])); r.get(); r.wait()
            print(time.time_ns(), flush=True)
    """)
    begin, end = map(int, spans.stdout.split())
    during = [w.name for w in main_thread_waits(spans) if begin <= w.start_ns <= end]
    assert during == []


TIMEOUTS = """
import concurrent.futures as cf, subprocess, sys, threading, time, traceback
p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(5)'])
try:
    p.wait(timeout=0.1)
except subprocess.TimeoutExpired:
    traceback.print_exc()
p.kill(); p.wait()
with cf.ThreadPoolExecutor(1) as pool:
    f = pool.submit(time.sleep, 0.4)
    for call in (lambda: f.result(timeout=0.05), lambda: list(cf.as_completed([f], timeout=0.05))):
        try:
            call()
        except cf.TimeoutError:
            traceback.print_exc()
    def boom():
        raise ValueError("from the pool")
    try:
        pool.submit(boom).result()
    except ValueError:
        traceback.print_exc()
import os
try:
    os.waitpid(-1, 0)
except ChildProcessError:
    traceback.print_exc()
subprocess.run([sys.executable, '-c', 'import time; time.sleep(5)'], timeout=0.2)
"""


def test_timeouts_and_errors_reach_the_program_as_untraced(traced):
    untraced, result = traced.both_ways("timeouts.py", TIMEOUTS)
    assert untraced.returncode == result.returncode == 1

    def normal(err: bytes) -> bytes:  # the timeout's own measured seconds differ from run to run
        import re

        return re.sub(rb"after [0-9.]+ seconds", b"after N seconds", err)

    assert normal(result.stderr) == normal(untraced.stderr)
    assert result.stdout == untraced.stdout
    spans = traced.spans()
    waits = main_thread_waits(spans)
    # (os.waitpid with no child fails at once; on a loaded machine that may still take 20 us)
    timed_out = [w for w in waits if w.attributes.get("error.type") not in (None, "ChildProcessError")]
    assert [(w.name, w.attributes["error.type"]) for w in timed_out] == [
        ("Popen.wait", "subprocess.TimeoutExpired"), ("Future.result", "TimeoutError"),
        ("futures.as_completed", "TimeoutError"), ("Future.result", "ValueError"),
        ("Popen.communicate", "subprocess.TimeoutExpired")]
    assert all(w.status == "UNSET" for w in timed_out)
    assert 90_000_000 <= timed_out[0].end_ns - timed_out[0].start_ns < 2_000_000_000


def test_threads_still_running_at_exit_end_with_the_process(traced):
    spans = run(traced, """
        import threading, time
        threading.Thread(target=time.sleep, args=(30,), daemon=True).start()
        worker = threading.Thread(target=time.sleep, args=(0.2,)); worker.start()   # joined at exit
    """)
    process = [p for p in spans.processes() if p.parent_span_id == ""][0]
    daemon, worker = sorted(spans.named("thread"), key=lambda s: s.start_ns)
    assert not daemon.incomplete and daemon.end_ns <= process.end_ns
    (shutdown,) = main_thread_waits(spans)
    assert_wait(shutdown, "threading._shutdown")
    assert targets(spans, shutdown) == [worker]


def test_the_store_holds_waits_whose_targets_are_in_the_run(tmp_path):
    """Through `selfopt-trace run`: the loader keeps the new categories and every target is a span of the run."""
    import duckdb

    from tests.cli.conftest import Cli

    cli = Cli(tmp_path)
    script = tmp_path / "program.py"
    script.write_text(textwrap.dedent(f"""
        import concurrent.futures as cf, subprocess, sys, threading, time
        subprocess.run({SLEEPER})
        t = threading.Thread(target=time.sleep, args=(0.05,)); t.start(); t.join()
        with cf.ThreadPoolExecutor(1) as pool:
            pool.submit(time.sleep, 0.05).result()
    """))
    result = cli("run", "--quiet", "--", sys.executable, str(script))
    assert result.returncode == 0, result.stderr.decode()
    with duckdb.connect(str(cli.db), read_only=True) as con:
        rows = con.execute("SELECT name, category, attributes FROM spans WHERE category IN ('wait', 'thread')").fetchall()
        ids = {row[0] for row in con.execute("SELECT span_id FROM spans").fetchall()}
    waits = [(name, json.loads(attributes)) for name, category, attributes in rows if category == "wait"]
    # (the pool's shutdown may add a join of its worker; the loader, its worker's wait on its task)
    assert {name for name, _ in waits} == {"Future.result", "Popen.communicate", "Thread.join", "_WorkItem.run"}
    for _, attributes in waits:
        assert attributes[ON] and set(attributes[ON]) <= ids
    assert sorted(name for name, category, _ in rows if category == "thread") == ["task", "thread", "thread"]


# --- the wrapper itself, in process, on a fake clock -------------------------------------------------

@pytest.fixture()
def agent(tmp_path, monkeypatch):
    """The agent's tracer writing to tmp_path/spans, and hooks/waits.py reading a clock the test moves."""
    from selfopt_trace.bootstrap.selfopt_trace_agent import tracer
    from selfopt_trace.bootstrap.selfopt_trace_agent.hooks import waits

    tracer.configure(str(tmp_path / "spans"), "")  # the flusher counts as started: no thread in pytest
    root = tracer.Span(tracer.new_span_id(), None, "", "ab" * 16, "process", tracer.INTERNAL, "process", 1, None)
    tracer.set_root(root, root.trace_id, "")
    clock = [1_800_000_000_000_000_000]
    monkeypatch.setattr(waits, "time_ns", lambda: clock[0])

    def records() -> list[list[str]]:
        """The wait records written, in the order of their start (a flush writes the common ones last)."""
        tracer.flush()
        lines = [line.split("\t") for path in (tmp_path / "spans").iterdir() for line in path.read_text().splitlines()]
        return sorted([fields for fields in lines if fields[0] == "X" and fields[6] == "wait"], key=lambda f: int(f[7]))

    yield waits, clock, records
    tracer.set_root(None, "", "")
    tracer.flush()


def test_only_a_call_that_blocked_past_the_threshold_is_recorded(agent):
    waits, clock, records = agent

    class Thing:
        done = False

        def wait(self, timeout=None):  # "blocks" for `timeout` ns of the fake clock
            clock[0] += timeout
            if timeout == 99:
                raise TimeoutError("late")
            return timeout

    wait = waits.method(Thing.wait, "Thing.wait", lambda thing, captured: (["00000000000000aa"], None),
                        ready=lambda thing: thing.done)
    thing = Thing()
    assert wait(thing, waits.THRESHOLD_NS - 1) == waits.THRESHOLD_NS - 1
    assert records() == []
    start = clock[0]
    assert wait(thing, timeout=waits.THRESHOLD_NS) == waits.THRESHOLD_NS
    (record,) = records()
    assert record[4:10] == ["Thing.wait", "INTERNAL", "wait", str(start), str(start + waits.THRESHOLD_NS), "UNSET"]
    assert json.loads(record[10]) == {ON: ["00000000000000aa"]}
    thing.done = True
    wait(thing, 10**9)  # ready: it cannot block, so it is not even timed
    assert len(records()) == 1


def test_a_nested_wait_is_part_of_the_outer_one_and_errors_pass_through(agent):
    waits, clock, records = agent
    inner = waits.method(lambda self, timeout=None: clock.__setitem__(0, clock[0] + timeout), "Inner.wait",
                         lambda thing, captured: ([], {"process.pid": 7}))

    def outer_call(self, timeout=None):
        inner(self, timeout)
        if timeout == 99_999:
            raise TimeoutError("late")
        return "done"

    outer = waits.method(outer_call, "Outer.wait", lambda thing, captured: (["00000000000000bb"], None), outer=True)
    assert outer(object(), 50_000) == "done"
    with pytest.raises(TimeoutError, match="late") as caught:
        outer(object(), 99_999)
    assert caught.value.__traceback__.tb_next.tb_frame.f_code is outer_call.__code__  # no wrapper frame of ours
    assert inner(object(), 30_000) is None
    found = [(r[4], json.loads(r[10])) for r in records()]
    assert found == [("Outer.wait", {ON: ["00000000000000bb"]}),
                     ("Outer.wait", {ON: ["00000000000000bb"], "error.type": "TimeoutError"}),
                     ("Inner.wait", {ON: [], "process.pid": 7})]
    assert not waits.busy


def test_the_common_record_is_what_the_general_encoder_writes(agent):
    """The one-target record is formatted inline (the wrapper, _write): the same line as record_line's."""
    from selfopt_trace.bootstrap.selfopt_trace_agent import spanfile, tracer

    waits, clock, records = agent

    class Owner:  # carries the span it waits on, as a Thread, a Popen or a Future does
        def wait(self, timeout=None):
            clock[0] += timeout

    owner = Owner()
    owner.__dict__[waits.SPAN] = "00000000000000cc"
    wrapped = waits.method(Owner.wait, "Thread.join", lambda thing, captured: pytest.fail("own span known"), own=True)
    outer = waits.method(Owner.wait, "Popen.wait", lambda thing, captured: pytest.fail("own span known"), own=True,
                         outer=True)
    start = clock[0]
    wrapped(owner, 30_000)
    outer(owner, 40_000)
    waits.record("os.waitpid", clock[0], clock[0] + 50_000, ["00000000000000dd"])
    root = tracer.root()
    found = records()
    expected = [
        (name, on, t0, t0 + duration) for name, on, t0, duration in (
            ("Thread.join", "00000000000000cc", start, 30_000),
            ("Popen.wait", "00000000000000cc", start + 30_000, 40_000),
            ("os.waitpid", "00000000000000dd", start + 70_000, 50_000))]
    assert ["\t".join(fields) + "\n" for fields in found] == [
        spanfile.complete_line(fields[1], root.span_id, root.trace_id, name, tracer.INTERNAL, "wait", t0, t1,
                               tracer.UNSET, spanfile.encode({ON: [on]}))
        for fields, (name, on, t0, t1) in zip(found, expected)]
    assert len({fields[1] for fields in found}) == 3


def test_recorded_waits_count_as_tracer_overhead(agent):
    """The common records are not timed one by one: the flush counts them at a calibrated cost."""
    from selfopt_trace.bootstrap.selfopt_trace_agent import tracer

    waits, clock, records = agent

    class Owner:
        def wait(self, timeout=None):
            clock[0] += timeout

    owner = Owner()
    owner.__dict__[waits.SPAN] = "00000000000000cc"
    wrapped = waits.method(Owner.wait, "Thread.join", lambda thing, captured: ([], None), own=True)
    for _ in range(waits.CALIBRATION):  # the cost a record is calibrated (in the thread's CPU time) on these
        wrapped(owner, 30_000)
    tracer.flush()
    before, counted, written = tracer.overhead_ns(), tracer.formatted_cost[0], len(records())
    for _ in range(10):
        wrapped(owner, 30_000)
    tracer.flush()
    assert tracer.formatted_cost[0] - counted == 10 and tracer.formatted_cost[1] > 0
    assert tracer.overhead_ns() - before >= 10 * tracer.formatted_cost[1]
    assert len(records()) - written == 10


def test_a_method_another_library_decorated_is_still_hooked(traced):
    """functools.wraps (or wrapt) gives a decorator's wrapper a __wrapped__: the agent's own mark,
    not that, says a function is wrapped already."""
    spans = run(traced, f"""
        import functools, subprocess, sys
        plain_wait = subprocess.Popen.wait

        @functools.wraps(plain_wait)
        def wait(self, *args, **kwargs):
            return plain_wait(self, *args, **kwargs)

        subprocess.Popen.wait = wait
        p = subprocess.Popen({SLEEPER}); p.wait()                   # Popen.wait, through the decorator
    """)
    [child] = spans.named("subprocess")
    [wait] = main_thread_waits(spans)
    assert_wait(wait, "Popen.wait")
    assert targets(spans, wait) == [child]


CONDITIONS = """
import concurrent.futures as cf, queue, threading, time
q = queue.Queue()
def spin(seconds):
    t = time.thread_time()
    while time.thread_time() - t < seconds:
        pass
def producer():
    spin(0.1)
    q.put("item")
    spin(0.05)  # after the put: its thread goes on, the wait does not
worker = threading.Thread(target=producer, name="producer"); worker.start()
print("got", q.get(), time.time_ns(), flush=True)
event = threading.Event()
threading.Thread(target=lambda: (time.sleep(0.1), event.set()), name="setter").start()
event.wait()
requests, replies = queue.Queue(), queue.Queue()
def server():  # waits on the main thread's request: a wait in the thread on the process's main unit
    request = requests.get()
    spin(0.02)  # the main thread's wait for the reply: 20 ms, not a wake-up's few us
    replies.put(request * 2)
threading.Thread(target=server, name="server").start()
spin(0.05)
requests.put(21)
print("reply", replies.get(), flush=True)
print("timed out", threading.Event().wait(0.05), flush=True)
with cf.ThreadPoolExecutor(1) as pool:
    pool.submit(spin, 0.05).result()
    cf.wait([pool.submit(spin, 0.05)])
    list(cf.as_completed([pool.submit(spin, 0.05)]))
worker.join()
"""


def test_a_condition_wait_is_a_wait_on_the_unit_that_notified_it(traced):
    """Event.wait, Queue.get (Condition.wait inside them): a wait on the thread that set the event or
    put the item (its `thread` span; the main thread's: the process span), ending at that notify."""
    spans = run(traced, CONDITIONS)
    process = [p for p in spans.processes() if p.parent_span_id == ""][0]
    threads = {t.attributes["thread.name"]: t for t in spans.named("thread")}
    waits = main_thread_waits(spans)
    names = [w.name for w in waits]
    # Thread.start's own wait for its thread to begin is not one; nor the timed-out Event.wait; a
    # future's Condition is part of the wait on it (one span each)
    assert names[:3] == ["Queue.get", "Event.wait", "Queue.get"], names
    assert names[3:6] == ["Future.result", "futures.wait", "futures.as_completed"], names
    get, event_wait, reply = waits[:3]
    assert [s.span_id for s in targets(spans, get)] == [threads["producer"].span_id]
    assert [s.span_id for s in targets(spans, event_wait)] == [threads["setter"].span_id]
    assert [s.span_id for s in targets(spans, reply)] == [threads["server"].span_id]
    got_ns = int(spans.stdout.split()[2])
    assert get.end_ns <= got_ns and threads["producer"].end_ns - get.end_ns >= 40_000_000  # the put, not the end
    assert 80_000_000 <= get.end_ns - get.start_ns < 1_000_000_000
    (served,) = [w for w in spans.named("Queue.get") if w.parent_span_id == threads["server"].span_id]
    assert [s.span_id for s in targets(spans, served)] == [process.span_id]
    for wait in waits[:3]:
        assert_wait(wait, wait.name)
    assert [w for w in spans.spans if w.category == "wait" and w.name == "Condition.wait"] == []


def test_condition_waits_reach_the_program_as_untraced(traced):
    code = """
        import inspect, threading, traceback
        threading.Thread(target=int).start()  # the thread hooks load at the first start
        c = threading.Condition()
        print(inspect.signature(c.wait), inspect.signature(c.notify), threading.Condition.wait.__qualname__)
        for call in (c.wait, c.notify, c.notify_all):
            try:
                call()
            except RuntimeError:
                traceback.print_exc()
        with c:
            print(c.wait(0.01), c.wait_for(lambda: True, 0.01))
            c.notify_all()
        event = threading.Event()
        threading.Timer(0.05, event.set).start()
        print(event.wait())
    """
    untraced, result = traced.both_ways("conditions.py", textwrap.dedent(code))
    assert (result.returncode, result.stdout, result.stderr) == (untraced.returncode, untraced.stdout, untraced.stderr)
    assert result.stderr.count(b"\nRuntimeError: cannot ") == 3
    # the hooks were there (at the exit, threading._shutdown may wait on the timer's thread too)
    assert [w.name for w in main_thread_waits(traced.spans()) if w.name != "threading._shutdown"] == ["Event.wait"]


def test_a_thread_spinning_on_the_gil_is_not_the_tracer_s_cost(traced):
    """A thread sleeping 1 ms in a loop beside a CPU-bound thread: each recorded sleep's calibration
    sample held a hand-over of the GIL (5 ms, the switch interval) in wall time, and the process span
    said the tracer took 78-82 % of the wall. Its records are calibrated in the thread's CPU time."""
    spans = run(traced, """
        import threading, time
        def naps():
            while True:
                time.sleep(0.001)
        def spin():
            while True:
                pass
        threading.Thread(target=naps, daemon=True).start()
        threading.Thread(target=spin, daemon=True).start()
        time.sleep(0.4)
    """)
    (process,) = spans.processes()
    overhead = process.attributes["selfopt_trace.overhead_ns"]
    assert len(spans.named("time.sleep")) >= 20  # the naps were recorded
    assert overhead < 0.3 * (process.end_ns - process.start_ns), overhead


def test_asyncio_to_thread_s_function_runs_under_its_task_span(traced):
    """asyncio.to_thread runs its function in a copy of the awaiting task's context (Context.run):
    its spans hung under that task's span, in another thread, and its time.sleep was not recorded
    (the breakdown: 200 ms of untraced waits for a 200 ms sleep). The pool task's span is current in
    the copy too."""
    spans = run(traced, """
        import asyncio, subprocess, sys, time
        def work():
            time.sleep(0.05)
            subprocess.run([sys.executable, "-c", "pass"], check=True)
        async def main():
            await asyncio.to_thread(work)
        asyncio.run(main())
    """)
    (task,) = spans.named("task")
    (sleep,) = spans.named("time.sleep")
    (child,) = spans.named("subprocess")
    assert sleep.parent_span_id == task.span_id and child.parent_span_id == task.span_id
    assert task.attributes["code.function"] == "work"
