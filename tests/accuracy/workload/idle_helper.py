"""Case (a): an idle helper process alive for the whole run while the main process works.

    python idle_helper.py TRUTH_DIR

Starts helper.py first (blocked on a pipe), then works a known time on the CPU (a phase), serializes
a payload, sleeps (a wait the trace cannot see), and at the end closes the helper's stdin and waits
for it to exit.
"""

import time

# truth.clocks() and clocks_before() before truth.py (its import is measured) is imported. `first` ends
# start-up: the wall clock, the queued time as of then (a read that took long waited for a CPU, after
# `first`), the CPU clock last (its read can end the time slice: that wait too comes after `first`).
# `imports` starts the imports: the wall clock last (the import spans start after it).
QUEUED = "/proc/thread-self/schedstat"
at, queued = time.time_ns(), int(open(QUEUED, "rb").read().split()[1])
waited = time.time_ns() - at
first = (at, time.thread_time_ns(), queued - (waited if waited > 100_000 else 0))
cpu, queued = time.thread_time_ns(), int(open(QUEUED, "rb").read().split()[1])
imports = (time.time_ns(), cpu, queued)
import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402

import phases  # noqa: E402
import truth  # noqa: E402

imported = truth.clocks()
record = truth.main_process(first, imports, imported, wrap_waits=False)

helper = truth.spawn(record, truth.workload("helper.py", record), stdin=subprocess.PIPE)
phases.work(record, float(os.environ["ACCURACY_WORK_MS"]))
data = {"rows": [{"id": i, "name": "row %d" % i, "values": list(range(20))} for i in range(4000)]}
serialization = record.begin_call()
payload = json.dumps(data)
record.end(serialization, "serialization", bytes=len(payload))
record.sleep(float(os.environ["ACCURACY_SLEEP_MS"]) / 1000)
record.wait(helper.communicate, pids=[helper.pid])
