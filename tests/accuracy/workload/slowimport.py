"""A module whose import costs a known time, on the CPU (as imports mostly are)."""

import os

import truth

truth.spin(float(os.environ["ACCURACY_IMPORT_MS"]))
