"""freezegun: the agent's modules on its ignore list, beside threading and queue.

`freeze_time` replaces every module global that is a clock function (time.time_ns, perf_counter, ...)
with its fake, except in the modules its ignore list names, and its fakes give the real time to a
caller in those. Without this, the agent's spans under a frozen clock started in 2020 and lasted
nothing: a test suite using freezegun (pytest's children under codeflash) showed its subprocesses,
sleeps and serialization as untraced waits. The program's own clocks stay frozen as it asked.
"""

from __future__ import annotations

AGENT = __name__.partition(".")[0]


def install(target: str, module) -> None:
    configure = getattr(module, "configure", None)
    if callable(configure):
        configure(extend_ignore_list=[AGENT])
