"""time.sleep as evidence of where a thread was off the CPU: one `sleep` span per sleep that blocked.

Real programs, traced: each sleep is a span under the span it slept in (the thread's, the main
thread's process span); the agent's own sleeps (its flusher thread) and those of a thread with no
span of its own are not recorded; a sleep that raises reaches the program exactly as untraced.
"""

from __future__ import annotations

import json

import pytest

from tests.agent.test_waits import ancestors, run

SLEEPS = """
import threading, time
from time import sleep

time.sleep(0.03)
sleep(0.02)                          # bound before the first call: the stand-in, then the wrapper
def worker():
    time.sleep(0.04)
thread = threading.Thread(target=worker); thread.start(); thread.join()
import _thread
done = threading.Event()
def bare():                          # no thread span: its sleeps are not the main thread's
    time.sleep(0.03); done.set()
_thread.start_new_thread(bare, ())
done.wait()
time.sleep(0.25)                     # the flusher sleeps meanwhile, never recorded
print(time.sleep.__name__, hasattr(time.sleep, "__wrapped__"))
"""


def test_each_sleep_is_a_span_under_the_span_it_slept_in(traced):
    spans = run(traced, SLEEPS)
    assert spans.stdout == "sleep True\n"
    sleeps = sorted((s for s in spans.spans if s.category == "sleep"), key=lambda s: s.start_ns)
    assert [s.name for s in sleeps] == ["time.sleep"] * 4, [(s.name, s.duration_ms) for s in sleeps]
    lengths_ms = [(s.end_ns - s.start_ns) / 1e6 for s in sleeps]
    for length, asked in zip(lengths_ms, (30, 20, 40, 250)):
        assert asked <= length < asked + 200, lengths_ms
    parents = [ancestors(spans, s)[0] for s in sleeps]
    assert [p.category for p in parents] == ["process", "process", "thread", "process"]
    assert all(s.kind == "INTERNAL" and s.status == "UNSET" for s in sleeps)
    # where the program slept, not the agent's wrapper
    assert [(s.attributes["code.function"], s.attributes["code.lineno"]) for s in sleeps] == [
        ("<module>", 5), ("<module>", 6), ("worker", 8), ("<module>", 16)]
    assert {s.attributes["code.filepath"].rpartition("/")[2] for s in sleeps} == {"program.py"}


ERRORS = """
import time, traceback
try:
    time.sleep(-1)
except ValueError:
    traceback.print_exc()
try:
    time.sleep("1")
except TypeError:
    traceback.print_exc()
import signal
signal.signal(signal.SIGALRM, lambda *_: 1 / 0)
signal.setitimer(signal.ITIMER_REAL, 0.05)
time.sleep(5)
"""


# A spinning thread started, then a sleep: it returns late, when the spinner lets go of the GIL.
SLEEPS_BESIDE_A_SPINNER = """
sys.setswitchinterval(0.2)           # a spinning thread keeps the GIL 200 ms at a time
stop = False
def spin():
    while not stop:
        pass
thread = threading.Thread(target=spin); thread.start()
time.sleep(0.01)                     # up after 10 ms; returns when the spinner lets go of the GIL
"""
LATE = "import sys, threading, time" + SLEEPS_BESIDE_A_SPINNER + """\
start = time.time_ns(); time.sleep(0.01); print(time.time_ns() - start >= 50_000_000)
stop = True; thread.join()
"""


def test_a_sleep_span_ends_when_the_time_asked_for_is_up(traced):
    """After it the thread is runnable (queued for a CPU, or taking the GIL back), not known off the
    CPU: a late return is not the sleep's."""
    spans = run(traced, LATE)
    assert spans.stdout == "True\n"  # the call returned late
    sleeps = sorted((s for s in spans.spans if s.category == "sleep"), key=lambda s: s.start_ns)
    assert sleeps and all((s.end_ns - s.start_ns) == 10_000_000 for s in sleeps), [s.duration_ms for s in sleeps]


WAKE = ("selfopt_trace.cpu.tid", "selfopt_trace.cpu.wake_time_ns", "selfopt_trace.cpu.wake_ns",
        "selfopt_trace.cpu.wake_runqueue_ns")

PROMPT_THEN_LATE = """
import json, os, sys, threading, time
returns = []
for _ in range(5):                   # prompt, as a rule: nothing else wants the GIL
    t = time.time_ns(); time.sleep(0.005); returns.append(time.time_ns() - t)
""" + SLEEPS_BESIDE_A_SPINNER + """\
t = time.time_ns(); time.sleep(0.01); returned = time.time_ns()
stop = True; thread.join()
print(json.dumps([os.getpid(), returns, returned - t, returned]))
"""


def test_a_late_sleep_carries_the_thread_s_clocks_where_it_woke_and_a_prompt_one_does_not(traced):
    """Past the time asked for by more than 0.5 ms, the recorder reads the thread's CPU clock, its time
    queued for a CPU and the wall clock (tracer.CPU_WAKE*): an exact CPU edge for the loader. A sleep
    back in time pays one comparison and carries nothing."""
    spans = run(traced, PROMPT_THEN_LATE)
    pid, returns, late_ns, returned = json.loads(spans.stdout)
    sleeps = sorted((s for s in spans.spans if s.category == "sleep"), key=lambda s: s.start_ns)
    assert len(sleeps) == 7, [(s.duration_ms, s.attributes) for s in sleeps]
    for took, sleep in zip(returns, sleeps[:5]):
        if took < 5_300_000:  # back within 0.3 ms (the program's clock reads around the call)
            assert not set(WAKE) & set(sleep.attributes), (took, sleep.attributes)
    assert any(took < 5_300_000 for took in returns), returns  # one prompt at least, even on a busy machine
    late = sleeps[-1]
    assert late_ns >= 50_000_000 and late.end_ns - late.start_ns == 10_000_000
    tid, at, cpu, queued = (late.attributes[k] for k in WAKE)
    assert tid == pid  # the main thread's native id
    assert late.end_ns + 500_000 < at <= returned  # read after the late return
    assert 0 < cpu and 0 <= queued


# A thread spinning on the CPU: it keeps the GIL 50 ms at a time; `stop = True` ends it.
SPINNER = """
import sys, threading, time
sys.setswitchinterval(0.05)
stop = False
def spin():
    while not stop:
        pass
spinner = threading.Thread(target=spin); spinner.start()
"""

BESIDE_A_SPINNER = SPINNER + """
called = []
def sleeper():                       # the process's first long sleep: it starts the flusher thread
    called.append(time.time_ns()); time.sleep(0.2)
thread = threading.Thread(target=sleeper); thread.start(); thread.join()
stop = True; spinner.join()
print(called[0])
"""


def test_a_thread_s_sleep_starts_where_it_was_called_beside_a_thread_holding_the_gil(traced):
    """A thread's first long sleep starts the flusher thread (tracer.before_block) without waiting
    for it: only the main thread, where signal handlers run, waits. Waiting took two hand-overs of
    the GIL from the spinner (50 ms each here; 49 ms on a busy machine at the default 5 ms), before
    the sleep span began: own work for the breakdown, a sleep for the program."""
    spans = run(traced, BESIDE_A_SPINNER)
    (sleep,) = [s for s in spans.spans if s.category == "sleep"]
    assert 0 <= sleep.start_ns - int(spans.stdout) < 5_000_000, (sleep.start_ns - int(spans.stdout)) / 1e6
    assert sleep.end_ns - sleep.start_ns >= 200_000_000


MAIN_BESIDE_A_SPINNER = SPINNER + """
called = time.time_ns(); time.sleep(0.2); woke = time.time_ns()  # waits for the flusher thread it starts
stop = True; spinner.join()
print(called, woke)
"""


def test_the_main_thread_s_first_long_sleep_lasts_the_time_asked_for_from_where_it_began(traced):
    """The main thread waits for the flusher thread its first long sleep starts (signals): beside
    a thread holding the GIL, from 0.3 ms to two hand-overs of it (100 ms at this switch interval).
    The span starts at the call and ends when the time asked for is up, counted from where the
    sleep itself began, after that wait: counted from the call, it ended that wait's length before
    the thread woke, asleep still (an untraced wait for a parent waiting on it: tests/accuracy,
    outlive beside two CPU hogs), exactly 200 ms after the call. The call's tail past it is the
    thread's (taking the GIL back from the spinner)."""
    spans = run(traced, MAIN_BESIDE_A_SPINNER)
    called, woke = map(int, spans.stdout.split())
    (sleep,) = [s for s in spans.spans if s.category == "sleep"]
    assert 0 <= sleep.start_ns - called < 5_000_000, (sleep.start_ns - called) / 1e6
    (process,) = [s for s in spans.spans if s.category == "process"]
    if called - process.start_ns < 900_000_000:  # older, a record may have started the flusher (FLUSHER_AGE_NS)
        assert sleep.end_ns - sleep.start_ns > 200_000_000, sleep.duration_ms
    assert sleep.end_ns <= woke, ((woke - sleep.end_ns) / 1e6, (woke - called) / 1e6, sleep.duration_ms)


ASYNC_SLEEPS = """
import asyncio, inspect
from asyncio import sleep                       # bound before the first call: the stand-in

async def spin():
    await asyncio.sleep(0.02)

async def main():
    await asyncio.sleep(0)                      # a yield to the loop: not timed
    await sleep(0.03)
    await asyncio.gather(spin(), asyncio.sleep(0.04))
    print(inspect.iscoroutinefunction(asyncio.sleep), inspect.iscoroutinefunction(sleep), asyncio.sleep.__name__)

asyncio.run(main())
"""


def test_each_asyncio_sleep_is_a_span_where_the_program_awaited_it(traced):
    spans = run(traced, ASYNC_SLEEPS)
    assert spans.stdout == "True True sleep\n"
    sleeps = sorted((s for s in spans.spans if s.category == "sleep"), key=lambda s: (s.start_ns, s.duration_ms))
    assert [s.name for s in sleeps] == ["asyncio.sleep"] * 3, [(s.name, s.duration_ms) for s in sleeps]
    for sleep, asked in zip(sleeps, (30, 20, 40)):
        assert asked <= sleep.duration_ms < asked + 200, sleeps
    assert all(ancestors(spans, s)[0].category == "process" for s in sleeps)
    # where the program awaited it; a sleep that is a task itself (gather) has no line of the program's
    assert [(s.attributes.get("code.function"), s.attributes.get("code.lineno")) for s in sleeps] == [
        ("main", 10), ("spin", 6), (None, None)]


ASYNC_ERRORS = """
import asyncio, traceback

async def main():
    try:
        await asyncio.sleep("1")
    except TypeError:
        traceback.print_exc()
    try:
        await asyncio.wait_for(asyncio.sleep(5), 0.05)
    except asyncio.TimeoutError:
        traceback.print_exc()
    await asyncio.sleep(-1)

asyncio.run(main())
1 / 0
"""


@pytest.mark.parametrize("program, raised, name", [(ERRORS, b"ZeroDivisionError", "time.sleep"),
                                                   (ASYNC_ERRORS, b"CancelledError", "asyncio.sleep")])
def test_a_sleep_that_raises_reaches_the_program_as_untraced(traced, program: str, raised: bytes, name: str):
    untraced, result = traced.both_ways("errors.py", program)
    assert untraced.returncode == result.returncode == 1
    assert (result.stdout, result.stderr) == (untraced.stdout, untraced.stderr)
    assert raised in result.stderr and b"time_.py" not in result.stderr
    (interrupted,) = [s for s in traced.spans().spans if s.category == "sleep"]  # by a signal, or cancelled
    assert interrupted.name == name and 40 <= interrupted.duration_ms < 2000


def test_a_sleep_refused_for_its_argument_is_never_recorded(traced):
    """time.sleep(-1) and time.sleep("1") raise at once; on a loaded machine "at once" took 20 us or
    more (CI), and the refusal was recorded as a sleep: -1 as a span ending before its start. The
    recorder is handed here what a slow refusal hands it, and then a real sleep."""
    spans = run(traced, """
        import time
        from selfopt_trace_agent.hooks import time_

        def hand(*args):  # the recorder finds the caller's line two frames above it, as from the wrapper
            return (lambda: time_.record(*args))()

        t0 = time.time_ns()
        for seconds in (-1, "1", b"1", float("nan"), 0):
            hand(t0, t0 + 1_000_000, seconds)
        hand(t0, t0 + 1_000_000, 0.0005)
    """)
    assert [s.end_ns - s.start_ns for s in spans.spans if s.category == "sleep"] == [500_000]


def test_the_first_recorded_sleep_imports_nothing_the_program_did_not(traced):
    """Its hook modules (time_, waits) load from the agent's bundle; the standard library's modules
    they use are the ones the program has, or built-in C modules (functools.py brought collections,
    operator, reprlib and types: 3.4 ms of a script that only sleeps)."""
    spans = run(traced, "import sys, time\nbefore = set(sys.modules)\ntime.sleep(0.02)\n"
                        "print(sorted(m for m in set(sys.modules) - before\n"
                        "             if not m.startswith('selfopt_trace_agent') and m not in sys.builtin_module_names))\n")
    assert spans.stdout == "[]\n"
    assert [s.name for s in spans.spans if s.category == "sleep"] == ["time.sleep"]


SLEEP_SEMANTICS = """
import os, signal, sys, threading, time, traceback
audited = []
if hasattr(sys, "addaudithook"):
    sys.addaudithook(lambda event, args: audited.append(event) if event == "time.sleep" else None)

def timed(seconds, at_least=0.0, under=60.0):  # the outcome, and whether it slept within the bounds
    t0 = time.monotonic()
    try:
        time.sleep(seconds)
        outcome = "ok"
    except BaseException as exc:  # and where it was raised: the program's frames only
        outcome = repr(exc) + " in " + ", ".join(entry.name for entry in traceback.extract_tb(exc.__traceback__))
    return outcome, at_least <= time.monotonic() - t0 < under

for seconds in (0, 0.001, 1, True, -1, -0.5, float("nan"), float("inf"), 10**30, 2**70, "1", None):
    print(repr(seconds), timed(seconds)[0])
taken = []
stacks = []  # the handler's frame is the sleeping line's, as untraced (no frame of the agent's above it)
signal.signal(signal.SIGUSR1, lambda signum, frame: (taken.append("usr1"), stacks.append(traceback.format_stack(frame))))
threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
print("a handler that returns: the sleep goes on to its end", timed(0.4, at_least=0.4), taken)
print("the handler's frame", stacks[0][-1].strip())
def interrupt(*_):
    raise KeyboardInterrupt("from the handler")
signal.signal(signal.SIGUSR2, interrupt)
threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR2)).start()
print("a handler that raises: out at once", timed(3, under=2))
signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGUSR1})
threading.Timer(0.1, os.kill, (os.getpid(), signal.SIGUSR1)).start()
print("the program's blocked signal stays blocked", timed(0.3, at_least=0.3), taken,
      signal.SIGUSR1 in signal.pthread_sigmask(signal.SIG_BLOCK, set()))
signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGUSR1})
print("and is taken once unblocked", taken)
done = []
thread = threading.Thread(target=lambda: done.append(timed(0.2, at_least=0.2))); thread.start(); thread.join()
print("a thread's sleep", done, "audit events", len(audited))
"""


def test_time_sleep_answers_signals_errors_and_audit_hooks_as_untraced(traced):
    """The traced time.sleep is the C twin's (importtime.sleep_after_signals: signals blocked from
    the last check for them into the poll that sleeps, so one taken in between ends the sleep at
    once, where CPython's own waits for its end). Everything else as untraced: each argument's
    error, a handler that returns (the sleep goes on to its end, PEP 475) or raises (out at once,
    with no frame of the agent's in its traceback), the handler's `frame` (the sleeping line's: the
    wrapper is the twin's, importtime.sleeper; a Python wrapper's frame was on top of it), a signal
    the program blocked, a thread's sleep, the audit events of Python 3.13 and later (the flusher
    thread's naps are none: they were, as time.sleep)."""
    untraced, result = traced.both_ways("semantics.py", SLEEP_SEMANTICS)
    assert result.returncode == untraced.returncode == 0, result.stderr
    assert (result.stdout, result.stderr) == (untraced.stdout, untraced.stderr)
    assert b"goes on to its end ('ok', True)" in result.stdout
    assert b"out at once (\"KeyboardInterrupt('from the handler') in timed, interrupt\", True)" in result.stdout
    assert b"the handler's frame File" in result.stdout and b"in timed\n    time.sleep(seconds)" in result.stdout
    assert b"stays blocked ('ok', True) ['usr1'] True\nand is taken once unblocked ['usr1', 'usr1']" in result.stdout
    assert b"a thread's sleep [('ok', True)]" in result.stdout


SERVER_LOOPS = """
import http.server, selectors, socketserver, threading, time, urllib.request

class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200); self.send_header("Content-Length", "1"); self.end_headers(); self.wfile.write(b"x")
    def log_message(self, *args): pass

server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
loop = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1})
loop.start()
time.sleep(0.35)                     # three selects time out (two, the thread started late), the next runs on
urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/").read()  # one that got a request
server.shutdown()                    # waits for the select running to time out
loop.join()
server.timeout = 0.05
server.handle_request()              # nobody comes: handle_timeout
print(issubclass(socketserver._ServerSelector, selectors.PollSelector), socketserver._ServerSelector.__name__)
"""


def test_a_server_loop_s_select_that_timed_out_is_a_sleep_at_its_line(traced):
    """socketserver's loops select for poll_interval at a time (0.5 s unless given), and shutdown()
    waits for the select running to end: asleep where no hook saw it (untraced waits). A select that
    returned nothing after its timeout is a sleep of the loop's, at its line; one that got a request
    is no sleep."""
    spans = run(traced, SERVER_LOOPS)
    assert spans.stdout == "True PollSelector\n"  # as untraced
    sleeps = sorted((s for s in spans.spans if s.category == "sleep" and s.name != "time.sleep"), key=lambda s: s.start_ns)
    names = [s.name for s in sleeps]
    assert names[-1] == "BaseServer.handle_request" and set(names[:-1]) == {"BaseServer.serve_forever"}, names
    assert len(names) >= 4, names  # two or more before the request, the one shutdown waited for, handle_request's
    for sleep in sleeps:
        asked = 50 if sleep.name == "BaseServer.handle_request" else 100
        assert asked <= sleep.duration_ms < asked + 100, (sleep.name, sleep.duration_ms)
        assert sleep.attributes["code.filepath"].endswith("socketserver.py")
        assert sleep.attributes["code.function"] == sleep.name.rpartition(".")[2]
    (thread,) = [s for s in spans.spans if s.name == "thread"]
    assert {ancestors(spans, s)[0].span_id for s in sleeps[:-1]} == {thread.span_id}
    # the request came within a select: no sleep spans the request's time
    (served,) = [s for s in spans.spans if s.kind == "SERVER"]
    assert not [s for s in sleeps if s.start_ns < served.start_ns < s.end_ns]
