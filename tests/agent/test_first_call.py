"""A hook loaded by the first call of what it wraps (lazy.py's stand-ins) counts in that call's span:
the program lived the load inside the call (tracer.first_call)."""

from __future__ import annotations

import statistics
import sys

from tests.conftest import Traced

# The gap from the program's clock before a spawn to the subprocess span's start, for its first spawn
# (the subprocess hook loads then, 0.4-0.5 ms) and its second.
PROGRAM = """
import subprocess, sys, time
gaps = []
for _ in range(2):
    before = time.time_ns()
    subprocess.run([sys.executable, "-c", "pass"])
    gaps.append(before)
print(*gaps)
"""


def test_the_first_spawn_starts_its_span_before_the_hook_loads(tmp_path) -> None:
    first, second = [], []
    for attempt in range(5):
        traced = Traced(tmp_path / str(attempt))
        done = traced.python(PROGRAM)
        assert done.returncode == 0, done.stderr
        befores = [int(t) for t in done.stdout.split()]
        (main,) = [p for p in traced.spans().processes() if p.parent_span_id == ""]
        starts = sorted(s.start_ns for s in traced.spans().named("subprocess") if s.parent_span_id == main.span_id)
        first.append(starts[0] - befores[0])
        second.append(starts[1] - befores[1])
    # Without the first call's start, the first gap is the second's plus the hook's load (>= 0.3 ms here).
    assert statistics.median(first) - statistics.median(second) < 150_000, (first, second)
