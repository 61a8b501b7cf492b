"""A thread that waits for another through a queue, an event or a semaphore (a threading.Condition
inside) waited where no hook saw it: a main thread blocked in `Queue.get` while its worker ran
showed the worker's 200 ms as its own untraced waits. Such a wait now names the thread whose
notify woke it (hooks/threads.py), and the breakdown follows it there."""

from __future__ import annotations

import json

from tests.cli.conftest import python

PROGRAM = """
import queue, threading, time
results = queue.Queue()
def work():
    t = time.thread_time()
    while time.thread_time() - t < 0.2:
        pass
    results.put("done")
threading.Thread(target=work).start()
print(results.get())
ready = threading.Event()
threading.Thread(target=lambda: (time.sleep(0.15), ready.set())).start()
print(ready.wait())
"""


def test_a_wait_on_a_queue_or_an_event_follows_the_thread_that_woke_it(cli) -> None:
    done = cli("run", "-q", "--json", "--", *python(PROGRAM))
    assert done.returncode == 0, done.stderr
    out, _, printed = done.stdout.decode().partition("True\n")
    assert out == "done\n"
    by_category = json.loads(printed)["time_by_category_ms"]
    # the worker's CPU (200 ms) is own work, the setter's sleep (150 ms) a sleep: no longer untraced waits
    assert by_category["own work"] >= 180 and by_category["sleeps"] >= 145, by_category
    assert by_category["untraced waits"] < 100, by_category  # (a loaded machine's queueing for a CPU; was 350)


TIMED_OUT = """
import queue, threading
fired = []
timer = threading.Timer(0.3, fired.append, (1,))
timer.start()
timer.join()
event = threading.Event()
for _ in range(4):  # a poll: nobody sets it
    event.wait(0.05)
try:
    queue.Queue().get(timeout=0.1)
except queue.Empty:
    pass
print(fired)
"""


def test_a_wait_that_timed_out_is_a_sleep_the_program_asked_for(cli) -> None:
    """A threading.Timer's delay, a poll's Event.wait(0.05), a Queue.get(timeout=0.1) that nobody
    fed: each waited as long as the program asked, on nothing (they were 600 ms of untraced waits).
    Each is a sleep now, at the program's line (the Timer's in threading)."""
    done = cli("run", "-q", "--json", "--", *python(TIMED_OUT))
    assert done.returncode == 0 and done.stdout.decode().splitlines()[0] == "[1]", done.stderr
    by_category = json.loads(done.stdout.decode().split("\n", 1)[1])["time_by_category_ms"]
    assert by_category["sleeps"] >= 590 and by_category["untraced waits"] < 20, by_category
    sleeps = cli.query("SELECT name, attributes->>'code.function', count(*) FROM spans WHERE category = 'sleep' "
                       "GROUP BY ALL ORDER BY ALL")
    assert sleeps == [("Event.wait", "<module>", 4), ("Event.wait", "run", 1), ("Queue.get", "<module>", 1)], sleeps
