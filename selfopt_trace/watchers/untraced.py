"""Untraced Python processes: which process of CMD's tree fell out of the trace, and why.

A Python process is traced when it finds the bootstrap on its PYTHONPATH. A traced parent and `run`
itself keep it there (also through `env PYTHONPATH=...`), but a program that is not Python (a shell
script that exports PYTHONPATH, `env -i`, a Makefile) can start Python without it, and `-I`/`-E`/`-S`
turn it off. Such a process leaves no span, so only the outside can say so: a thread of `run`
follows CMD's process tree in /proc (`task/*/children`, every POLL_S), and for each Python process
in it reads the environment and command line it was started with. Its note names the process, its
parent and the reason, e.g. `process 4242 python -c import time (started by 4241 sh) is not traced:
its PYTHONPATH=/x does not hold the bootstrap directory`. A process that lives less than one poll
may go unseen. Linux only (no /proc: no notes).
"""

from __future__ import annotations

import os
import threading

from ..bootstrap.selfopt_trace_agent import config as agent_config
from ..bootstrap.selfopt_trace_agent.process import command_name
from . import WatchedRun

POLL_S = 0.02
MAX_NOTES = 5


class UntracedProcesses:
    """A Watcher (selfopt_trace/watchers): notes for the Python processes of the tree left untraced."""

    name = "untraced processes"

    def __init__(self, bootstrap_dir: str, proc_root: str = "/proc") -> None:
        self.bootstrap_dir = bootstrap_dir
        self.proc = proc_root
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._seen: dict[int, str] = {}  # pid -> the executable it had when last looked at
        self._notes: dict[int, str] = {}
        self._run: WatchedRun | None = None

    def start(self, run: WatchedRun) -> None:
        if not os.path.isdir(os.path.join(self.proc, str(run.pid), "task")):
            return
        self._run = run
        self._thread = threading.Thread(target=self._follow, name="selfopt-trace untraced", daemon=True)
        self._thread.start()

    def stop(self) -> list[str]:
        if self._thread is None:
            return []
        self._stop.set()
        self._thread.join(1.0)
        notes = list(self._notes.values())
        if len(notes) > MAX_NOTES:
            notes = notes[:MAX_NOTES] + [f"... and {len(notes) - MAX_NOTES} more Python processes not traced"]
        return notes

    def _follow(self) -> None:
        assert self._run is not None
        alive = {self._run.pid}
        while not self._stop.is_set():
            for pid in list(alive):
                children = self._children(pid)
                if children is None:
                    alive.discard(pid)
                    continue
                alive.update(children)
                self._look_at(pid)
            if self._stop.wait(POLL_S):
                break

    def _children(self, pid: int) -> list[int] | None:
        task = os.path.join(self.proc, str(pid), "task")
        try:
            out = []
            for tid in os.listdir(task):
                with open(os.path.join(task, tid, "children"), "rb") as stream:
                    out += [int(child) for child in stream.read().split()]
            return out
        except (OSError, ValueError):
            return None

    def _look_at(self, pid: int) -> None:
        """A process seen for the first time, or since it exec'd another program."""
        try:
            exe = os.readlink(os.path.join(self.proc, str(pid), "exe"))
        except OSError:
            return
        if self._seen.get(pid) == exe or pid in self._notes:
            return
        self._seen[pid] = exe
        if not os.path.basename(exe).startswith(("python", "pypy")):
            return
        try:
            argv = self._read(pid, "cmdline").split("\0")[:-1]
            environ = dict(item.partition("=")[::2] for item in self._read(pid, "environ").split("\0") if "=" in item)
        except OSError:
            return
        why = self._why_untraced(argv, environ)
        if why:
            parent = self._parent(pid)
            self._notes[pid] = f"process {pid} `{command_name(argv, python=True)}` ({parent}) is not traced: {why}"

    def _why_untraced(self, argv: list[str], environ: dict[str, str]) -> str | None:
        """Why a Python process started with `argv` and `environ` records nothing, or None (it is traced)."""
        assert self._run is not None
        run_dir = environ.get(agent_config.ENV_DIR)
        if not run_dir:
            return f"its environment has no {agent_config.ENV_DIR} (a parent cleared it: `env -i`, a sanitised environment)"
        if run_dir != str(self._run.run_dir) or any(
                (environ.get(name) or "").strip().lower() in ("1", "true", "yes", "on")
                for name in (agent_config.ENV_DISABLED, "OTEL_SDK_DISABLED")):
            return None  # a run of its own, or tracing turned off on purpose
        flags = ""
        for arg in argv[1:]:  # the interpreter's options, up to what it runs
            if arg.startswith("--") or not arg.startswith("-") or arg == "-":
                if arg.startswith("--") and arg != "--":
                    continue
                break
            flags += arg[1:]
            if "c" in arg or "m" in arg:
                break
        for letter, meaning in (("I", "-I (isolated mode) ignores PYTHONPATH"), ("E", "-E ignores PYTHONPATH"),
                                ("S", "-S loads no site, so no sitecustomize")):
            if letter in flags:
                return f"it was started with {meaning}"
        pythonpath = environ.get("PYTHONPATH")
        if self.bootstrap_dir not in (pythonpath or "").split(os.pathsep):
            shown = "unset" if pythonpath is None else f"PYTHONPATH={pythonpath}"
            return (f"its PYTHONPATH ({shown}) does not hold the bootstrap directory: a parent that is not "
                    "Python (a shell, a script) set it; add the bootstrap there, or export PYTHONPATH before `run`")
        return None

    def _parent(self, pid: int) -> str:
        try:
            stat = self._read(pid, "stat")
            ppid = int(stat[stat.rindex(")") + 2:].split()[1])
            return f"started by {ppid} `{self._read(ppid, 'comm').strip()}`"
        except (OSError, ValueError):
            return "its parent gone"

    def _read(self, pid: int, name: str) -> str:
        with open(os.path.join(self.proc, str(pid), name), "rb") as stream:
            return os.fsdecode(stream.read())
