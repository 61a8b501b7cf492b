"""Two known hot functions, each inside a span of its own (run with --target hotmod:phase_parent
--target hotmod:phase_child): a phase is HOT_S seconds of busy loop then IDLE_S of sleep."""

import os
import time

HOT_S = float(os.environ.get("HOT_S", "0.6"))
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
    time.sleep(IDLE_S)


def phase_child() -> None:
    hot_child()
    time.sleep(IDLE_S)
