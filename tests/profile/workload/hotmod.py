"""Two known hot functions, each inside a span of its own (run with --target hotmod:phase_parent
--target hotmod:phase_child): a phase is HOT_S seconds of busy loop, then SLEEP_S of time.sleep (a
recorded sleep: the breakdown's `sleeps`), then IDLE_S blocked in select() (an untraced wait)."""

import os
import select
import time

HOT_S = float(os.environ.get("HOT_S", "0.6"))
SLEEP_S = 0.1
IDLE_S = 0.3


def spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def hot_parent() -> None:
    end = time.perf_counter() + HOT_S
    while time.perf_counter() < end:
        pass


def hot_child() -> None:
    end = time.perf_counter() + HOT_S
    while time.perf_counter() < end:
        pass


def phase_parent() -> None:
    hot_parent()
    time.sleep(SLEEP_S)
    select.select([], [], [], IDLE_S)


def phase_child() -> None:
    hot_child()
    time.sleep(SLEEP_S)
    select.select([], [], [], IDLE_S)
