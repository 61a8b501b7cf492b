"""A child process: imports a slow module, works a known time, records its own truth."""

import time

first = time.time_ns()
import_start = time.time_ns()
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import slowimport  # noqa: E402,F401

import_end = time.time_ns()
import atexit  # noqa: E402

time.sleep(float(os.environ["ACCURACY_CHILD_WORK_MS"]) / 1000)
truth = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)
known = json.dumps({"pid": os.getpid(), "first": first, "import_start": import_start, "import_end": import_end})


def record_truth() -> None:
    """`last` is the process's exit: the exit handler registered last runs first (the tracer's runs after)."""
    last = time.time_ns()
    os.write(truth, ('%s, "last": %d}\n' % (known[:-1], last)).encode())  # after `last`, one write


atexit.register(record_truth)
