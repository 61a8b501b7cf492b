"""Untraced Python processes: which process of CMD's tree fell out of the trace, and why.

A Python process is traced when it finds the bootstrap on its PYTHONPATH. A traced parent and `run`
itself keep it there (also through `env PYTHONPATH=...`), but a program that is not Python (a shell
script that exports PYTHONPATH, `env -i`, a Makefile) can start Python without it, and `-I`/`-E`/`-S`
turn it off. Such a process leaves no span, so only the outside can say so: a thread of `run`
follows CMD's process tree in /proc (every POLL_S one listing of /proc: a new pid whose parent is in
the tree joins it), and for each Python process in it reads the environment and command line it was
started with. Its note names the process, its parent and the reason, e.g. `process 4242 python -c
import time (started by 4241 sh) is not traced: its PYTHONPATH=/x does not hold the bootstrap
directory`. A process that lives less than one poll (or whose parent did) may go unseen. Cost: one
listing of /proc per poll, 85-115 us with 100 processes on the machine, and a look at each process
new to the tree: 0.75-1.0 % of a core at 20 Hz for the whole thread, wake-ups included (load average
3.7). Linux only (no /proc: no notes).
"""

from __future__ import annotations

import os
import threading

from ..bootstrap.selfopt_trace_agent import config as agent_config
from ..bootstrap.selfopt_trace_agent.process import command_name
from . import WatchedRun

POLL_S = 0.05
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
        self._python: set[int] = set()  # pids found running Python: looked at once
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
        """Each poll: one listing of /proc; a new pid whose parent is in the tree joins it and is looked
        at; members not seen running Python yet are looked at again (a shell may exec Python)."""
        assert self._run is not None
        tree = self._descendants(self._run.pid)
        known = self._pids()
        for pid in tree:
            self._look_at(pid)
        while not self._stop.wait(POLL_S):
            listing = self._pids()
            for pid in sorted(listing - known):  # parents (lower pids, mostly) first
                if self._parent_pid(pid) in tree:
                    tree.add(pid)
            known = listing
            tree &= listing
            for pid in tree:
                self._look_at(pid)

    def _pids(self) -> set[int]:
        try:
            return {int(name) for name in os.listdir(self.proc) if name.isdigit()}
        except OSError:
            return set()

    def _descendants(self, pid: int) -> set[int]:
        """CMD and what it started before the first poll (`task/*/children`)."""
        tree, todo = set(), [pid]
        while todo:
            current = todo.pop()
            tree.add(current)
            task = os.path.join(self.proc, str(current), "task")
            try:
                for tid in os.listdir(task):
                    with open(os.path.join(task, tid, "children"), "rb") as stream:
                        todo += [int(child) for child in stream.read().split() if int(child) not in tree]
            except (OSError, ValueError):
                pass
        return tree

    def _parent_pid(self, pid: int) -> int:
        try:
            stat = self._read(pid, "stat")
            return int(stat[stat.rindex(")") + 2:].split()[1])
        except (OSError, ValueError):
            return 0

    def _look_at(self, pid: int) -> None:
        """A process seen for the first time, or since it exec'd another program (a process found
        running Python, or noted, is not looked at again)."""
        if pid in self._python:
            return
        try:
            exe = os.readlink(os.path.join(self.proc, str(pid), "exe"))
        except OSError:
            return
        if self._seen.get(pid) == exe:
            return
        self._seen[pid] = exe
        if not os.path.basename(exe).startswith(("python", "pypy")):
            return
        self._python.add(pid)
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
        ppid = self._parent_pid(pid)
        try:
            return f"started by {ppid} `{self._read(ppid, 'comm').strip()}`"
        except OSError:
            return "its parent gone"

    def _read(self, pid: int, name: str) -> str:
        with open(os.path.join(self.proc, str(pid), name), "rb") as stream:
            return os.fsdecode(stream.read())
