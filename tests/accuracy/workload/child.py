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
last = time.time_ns()
with open(sys.argv[1], "a") as truth:
    truth.write(json.dumps({"what": "child", "pid": os.getpid(), "first": first, "import_start": import_start,
                            "import_end": import_end, "last": last}) + "\n")
