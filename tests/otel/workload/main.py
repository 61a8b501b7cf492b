"""The end-to-end workload: an HTTP server process, two calls to it from here (one answered 500), and
a worker process that calls it too. Three processes, three services (main.py, server.py, worker.py)."""

import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent

server = subprocess.Popen([sys.executable, str(HERE / "server.py")], stdout=subprocess.PIPE, text=True)
base = server.stdout.readline().strip()
with urllib.request.urlopen(f"{base}/items/17") as response:
    response.read()
try:
    urllib.request.urlopen(f"{base}/fail")
except urllib.error.HTTPError as error:
    error.read()
subprocess.run([sys.executable, str(HERE / "worker.py"), base], check=True)
with urllib.request.urlopen(f"{base}/quit") as response:
    response.read()
server.wait(timeout=30)
print("done")
