"""Busy work of a known duration (CPU, not sleep, so it shows as work in any profiler)."""

from __future__ import annotations

import time


def spin(seconds: float) -> int:
    """Keep the CPU busy for `seconds`; returns how many rounds it did."""
    deadline = time.perf_counter() + seconds
    rounds = 0
    while time.perf_counter() < deadline:
        rounds += sum(i * i for i in range(200)) & 1
    return rounds
