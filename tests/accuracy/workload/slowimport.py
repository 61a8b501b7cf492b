"""A module whose import costs a known time."""

import os
import time

time.sleep(float(os.environ["ACCURACY_IMPORT_MS"]) / 1000)
