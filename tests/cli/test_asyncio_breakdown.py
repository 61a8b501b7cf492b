"""What an asyncio program waits on: its sleeps (the breakdown's `sleeps`, where its thread did not
run other tasks meanwhile) and the work it hands to threads (asyncio.to_thread, run_in_executor: a
wait on that task). Before, both were untraced waits."""

from __future__ import annotations

import json

from tests.cli.conftest import python

PROGRAM = """
import asyncio, time

async def spin(seconds):
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        pass

async def main():
    await asyncio.gather(asyncio.sleep(0.3), spin(0.1))  # 0.1 s of the sleep, the loop spins

asyncio.run(main())
"""


def test_an_asyncio_sleep_is_sleeps_less_the_other_tasks_work(cli) -> None:
    done = cli("run", "-q", "--json", "--", *python(PROGRAM))
    assert done.returncode == 0, done.stderr
    by_category = json.loads(done.stdout)["time_by_category_ms"]
    assert 180 <= by_category["sleeps"] <= 225 and by_category["own work"] >= 95, by_category
    assert by_category["untraced waits"] < 20, by_category


TO_THREAD = """
import asyncio, time

def spin(seconds):
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        pass

async def main():
    await asyncio.to_thread(spin, 0.2)
    await asyncio.get_running_loop().run_in_executor(None, spin, 0.1)

asyncio.run(main())
"""


def test_work_handed_to_a_thread_is_what_the_loop_waited_on(cli) -> None:
    done = cli("run", "-q", "--json", "--", *python(TO_THREAD))
    assert done.returncode == 0, done.stderr
    by_category = json.loads(done.stdout)["time_by_category_ms"]
    # 300 ms of spinning, within the accuracy tests' 5 % (294.9 beside a heavy neighbour in CI)
    assert by_category["own work"] >= 285 and by_category["untraced waits"] < 20, by_category
