"""The profiled workload: a hot phase here, a hot phase in a child process, a child that lives 200 ms.

`main.py pidfile` writes its pid first and waits for `go` to appear beside it before the short
child (the killed-profiler test kills our py-spy in between).

Each hot phase starts once this process's py-spy says it is sampling: on a loaded machine py-spy's
start-up took longer than a fixed wait, and the phase was sampled in part."""

import os
import subprocess
import sys
import time
from pathlib import Path

import hotmod

HERE = Path(__file__).resolve().parent


def wait_for_profiler(timeout_s: float = 20.0) -> None:
    """Until the py-spy started on this process (`py-spy record --pid PID`) has said in its log that it samples."""
    me = str(os.getpid()).encode()
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for proc in Path("/proc").iterdir():
            try:
                argv = (proc / "cmdline").read_bytes().split(b"\0")
                if b"--pid" in argv and argv[argv.index(b"--pid") + 1: argv.index(b"--pid") + 2] == [me]:
                    if b"Sampling process" in Path(os.readlink(proc / "fd" / "1")).read_bytes():
                        return
            except (OSError, ValueError):
                continue
        time.sleep(0.01)
    sys.exit("no py-spy sampled this process within %.0f s" % timeout_s)

if __name__ == "__main__":
    if sys.argv[1:] == ["child"]:
        wait_for_profiler()
        hotmod.phase_child()
        sys.exit(0)
    if sys.argv[1:] == ["short"]:
        hotmod.spin(0.2)
        sys.exit(0)
    pidfile = Path(sys.argv[1]) if sys.argv[1:] else None
    if pidfile is not None:
        pidfile.with_suffix(".tmp").write_text(str(os.getpid()))
        pidfile.with_suffix(".tmp").rename(pidfile)  # whole when it appears: the test reads it at once
    wait_for_profiler()
    hotmod.phase_parent()
    subprocess.run([sys.executable, str(HERE / "main.py"), "child"], check=True)
    if pidfile is not None:
        while not (pidfile.parent / "go").exists():
            time.sleep(0.01)
    subprocess.run([sys.executable, str(HERE / "main.py"), "short"], check=True)
    print("workload done")
    sys.exit(3)
