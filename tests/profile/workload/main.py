"""The profiled workload: a hot phase here, a hot phase in a child process, a child that lives 200 ms.

`main.py pidfile` writes its pid first and waits for `go` to appear beside it before the short
child (the killed-profiler test kills our py-spy in between)."""

import os
import subprocess
import sys
import time
from pathlib import Path

import hotmod

HERE = Path(__file__).resolve().parent

if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        time.sleep(0.15)  # py-spy attaches meanwhile: the phase is sampled whole
        hotmod.phase_child()
        sys.exit(0)
    if sys.argv[1:] == ["short"]:
        hotmod.spin(0.2)
        sys.exit(0)
    pidfile = Path(sys.argv[1]) if sys.argv[1:] else None
    if pidfile is not None:
        pidfile.write_text(str(os.getpid()))
    time.sleep(0.15)
    hotmod.phase_parent()
    subprocess.run([sys.executable, str(HERE / "main.py"), "child"], check=True)
    if pidfile is not None:
        while not (pidfile.parent / "go").exists():
            time.sleep(0.01)
    subprocess.run([sys.executable, str(HERE / "main.py"), "short"], check=True)
    print("workload done")
    sys.exit(3)
