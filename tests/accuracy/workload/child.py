"""A child process: imports a slow module, works a known time, records its own truth."""

import time

first = time.time_ns()
import_start = time.time_ns()
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402

import slowimport  # noqa: E402,F401

import_end = time.time_ns()
time.sleep(float(os.environ["ACCURACY_CHILD_WORK_MS"]) / 1000)
truth = os.open(sys.argv[1], os.O_WRONLY | os.O_APPEND | os.O_CREAT)  # opened before `last`: after it, one write
last = time.time_ns()
os.write(truth, (json.dumps({"pid": os.getpid(), "first": first, "import_start": import_start,
                             "import_end": import_end, "last": last}) + "\n").encode())
