"""time-machine: the agent's clock kept out of its travels.

`time_machine.travel()` swaps the C functions of the time module (`time_ns`, `clock_gettime_ns` of
the real-time clock, ...) for its own, so every holder of them reads the travelled time: the agent's
modules too, whose spans under a travel started in 2020 and lasted nothing. It leaves `perf_counter_ns`
alone (time-machine 2.x travels `monotonic_ns` too: the time-machine Python 3.8 and 3.9 install) and
has no ignore list. So from the first travel's start on (this module loads then:
lazy.ON_FIRST_CALL), the agent's modules read the wall clock as `perf_counter_ns()` plus the real-time
clock's offset from it then, before the travel patches the time module; those loaded later, as they
load (importtime.after_agent_import). The C twin reads its clock itself. The
program's clocks travel as it asked.
"""

from __future__ import annotations

import sys
import time
from time import perf_counter_ns

from .. import importtime

AGENT = __name__.partition(".")[0]


def install(target: str, module) -> None:
    offset = time.time_ns() - perf_counter_ns()
    real = time.time_ns

    def wall_ns() -> int:
        return perf_counter_ns() + offset

    def untravelled(agent_module) -> None:
        if agent_module.__dict__.get("time_ns") is real:
            agent_module.time_ns = wall_ns

    for name, agent_module in list(sys.modules.items()):
        if name == AGENT or name.startswith(AGENT + "."):
            untravelled(agent_module)
    importtime.after_agent_import = untravelled
