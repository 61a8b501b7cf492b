"""An asyncio.sleep is the program's chosen wait, as a time.sleep is: the breakdown's `sleeps`, where
its thread did not run other tasks meanwhile. Before, its time was untraced waits."""

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
