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
