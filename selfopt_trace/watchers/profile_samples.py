"""The profile samples file (`<run_dir>/profile/samples.tsv`): its format, and py-spy's output turned into it.

`run --profile` starts py-spy (watchers/profiler.py), which writes what it sampled only when it
stops, as a Chrome trace: begin/end events of frames, in microseconds from its own start. This
module turns one such file into lines of the samples file (docs/span-format.md, "Profile
samples"), which the loader reads with DuckDB's CSV reader as it reads span files.

py-spy's Chrome trace merges consecutive identical stacks of a thread: an event is written only
where a thread's stack changed. So one `S` line here is a *slice*: a stack a thread was seen in
from one sample to the sample that saw something else, with its length (`duration_ns`) and the
samples it stands for (`weight` = length x rate: py-spy samples at random, exponentially spaced
moments, rate per second on average). A thread sampled at one line for a second at 100 Hz is one
line of weight ~100, not 100 lines. py-spy always runs with `--idle` here, so a thread that goes
idle changes its stack (the wait shows) instead of leaving a gap the slice before it would cover.

Frames and stacks are written once each: a frame (`F`: a function in a file) gets a number, the
next one in the file; a stack (`K`) is the numbers of its frames, root first, with their lines,
named by a 64-bit hash of its frames, so the same stack from two processes or two files is one
stack. So the loader reads each function's and file's name once, not once in every stack it is in
(a stack is 45-250 frames deep in a codeflash run; docs/profiling.md).

The agent's own frames are left out, as they are of the tracebacks it lets through: a hooked call
(`time.sleep`, `os.waitpid`, `json.dumps`) shows under the program's line that made it, as it would
untraced, not under the hook's wrapper; the import machinery the agent runs to load one of its own
modules (a hook's, at its first call) goes with it; a stack of the agent's frames alone (its
flusher thread) is not the program's and is not written. What the agent's code costs is its own figure
(`selfopt_trace.overhead_ns`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

from ..paths import AGENT_PACKAGE

FORMAT_NAME = "selfopt-trace/samples"
FORMAT_VERSION = 2  # 1: a K record's frames were JSON (still loaded: upgrade_v1)
FIELDS = ("rec", "time_ns", "pid", "tid", "duration_ns", "weight", "stack_id", "flags", "name", "message",
          "terminator")
SAMPLE, STACK, FRAME, PROFILER, ATTACHED, CONVERTED, DIAGNOSTIC = "S", "K", "F", "P", "A", "C", "D"
TERMINATOR = "."
HEADER_PREFIX = f"#{FORMAT_NAME} "
HEADER = f"{HEADER_PREFIX}{FORMAT_VERSION}\t" + "\t".join(FIELDS[:-1]) + "\n"
LIST_SEPARATOR = ","  # between a K record's frame numbers, and between its lines
PROFILE_DIR = Path("profile")  # under the run directory: py-spy's files and samples.tsv
SAMPLES_PATH = PROFILE_DIR / "samples.tsv"

# S flags, one letter each: i = the thread looked idle (its innermost frame is a known wait). (Files
# written before 2026-12-05 may hold `l` too, the last slice of a thread: the loader no longer reads it.)
IDLE_FLAG = "i"

# Diagnostic codes (the loader copies D records into `diagnostics`).
UNAVAILABLE = "profile.unavailable"  # --profile=auto without py-spy or ptrace: no samples
FAILED = "profile.failed"  # a py-spy that could not attach or stopped with an error
LOST = "profile.lost"  # a py-spy that wrote nothing (killed): its process's samples are missing

# py-spy --threads adds this frame under each stack: "thread (<native id>): <name>"; the native
# id is hexadecimal (the pthread id) where py-spy could not learn it (Python < 3.11, --nonblocking).
_THREAD_FRAME = re.compile(r"thread \((0x[0-9A-Fa-f]+|\d+)\)(?:: (.*))?", re.S)
# py-spy --subprocesses adds one of these per process, outermost first.
_PROCESS_FRAME = re.compile(r'process \d+:".*"', re.S)


def header() -> str:
    return HEADER


def line(rec: str, time_ns: int | str = "", pid: int | str = "", tid: int | str = "", duration_ns: int | str = "",
         weight: float | str = "", stack_id: int | str = "", flags: str = "", name: str = "", message: str = "") -> str:
    """One record; text fields lose tabs and newlines (JSON text never has them)."""
    return "\t".join((rec, str(time_ns), str(pid), str(tid), str(duration_ns),
                      weight if isinstance(weight, str) else f"{weight:.6g}", str(stack_id), flags,
                      _clean(name), _clean(message), TERMINATOR)) + "\n"


def _clean(text: str) -> str:
    if "\t" in text or "\n" in text or "\r" in text:
        return text.replace("\t", " ").replace("\n", " ").replace("\r", " ")
    return text


def stack_id(frames: tuple) -> int:
    """A stack's id: 64 bits of a hash of its frames, as a signed BIGINT."""
    import hashlib  # here: every load imports this module for its names, few make stacks (~2 ms)

    digest = hashlib.blake2b(json.dumps(frames, separators=(",", ":")).encode("utf-8", "surrogatepass"),
                             digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass
class Interned:
    """What a samples file holds already: its stacks (ids) and frames ((function, file) -> number)."""

    stacks: set[int] = field(default_factory=set)
    frames: dict[tuple[str, str], int] = field(default_factory=dict)
    next_frame: int = 1

    def stack_lines(self, sid: int, frames: tuple) -> list[str]:
        """The K record of a stack not written yet, after the F records of its frames not written yet."""
        if sid in self.stacks:
            return []
        self.stacks.add(sid)
        out = []
        numbers = []
        for function, file, _ in frames:
            number = self.frames.get((function, file))
            if number is None:
                number = self.frames[(function, file)] = self.next_frame
                self.next_frame += 1
                out.append(line(FRAME, stack_id=number, name=function, message=file))
            numbers.append(str(number))
        out.append(line(STACK, stack_id=sid, name=LIST_SEPARATOR.join(numbers),
                        message=LIST_SEPARATOR.join(str(line_no) for _, _, line_no in frames)))
        return out


_AGENT_DIRS = (f"/{AGENT_PACKAGE}/", f"\\{AGENT_PACKAGE}\\")


_IMPORT_MACHINERY = "<frozen importlib"
_SHIM = "_selfopt_trace_"  # the bootstrap's sitecustomize.py: its functions run the agent's modules


def _is_agents(frame: tuple) -> bool:
    function, file = frame[0], frame[1]
    return any(part in file for part in _AGENT_DIRS) or (function.startswith(_SHIM) and file.endswith("sitecustomize.py"))


def _program_frames(frames: tuple) -> tuple:
    """The frames of a stack that are not the agent's (its package's files, wherever it is mounted,
    and the bootstrap shim's functions), nor the import machinery's frames the agent called with no
    program frame after them: the agent
    loading its own module (a hook's at its first call), its work, not the program's (a sample
    there showed as an idle `_call_with_frames_removed` under the program's line). A program module
    imported through them keeps them."""
    kept: list = []
    machinery: list = []  # import machinery since the last agent frame
    after_agent = False
    for frame in frames:
        if _is_agents(frame):
            after_agent = True
            machinery.clear()
        elif after_agent and frame[1].startswith(_IMPORT_MACHINERY):
            machinery.append(frame)
        else:
            kept += machinery
            machinery.clear()
            after_agent = False
            kept.append(frame)
    return tuple(kept)


def looks_idle(frames: tuple) -> bool:
    """py-spy's own heuristic, on the innermost frame: a wait of threading or a selector's select."""
    if not frames:
        return False
    function, file, _ = frames[-1]
    short = function.rsplit(".", 1)[-1]
    return ((short == "wait" and file.endswith("threading.py"))
            or (short == "select" and file.endswith("selectors.py"))
            or (short == "poll" and ("asyncore" in file or "zmq" in file or "gevent" in file or "tornado" in file)))


_MAX_LINE = 2**31 - 1  # the store's lines are INTEGER


def slices(events: Iterable[dict]) -> Iterator[tuple[int, int, int, int, tuple]]:
    """(pid, thread key, start us, end us, frames root first) for each stretch a thread stayed in one stack.

    py-spy writes, for each sample of a thread whose stack changed, the end events of the frames it
    left (innermost first) and the begin events of the frames it entered (outermost first), all at
    the sample's time; when it stops, end events of every frame still open.
    """
    state: dict[tuple[int, int], list] = {}  # (pid, tid) -> [stack, since_us]
    for event in events:
        phase = event.get("ph")
        if phase != "B" and phase != "E":
            continue
        key = (event.get("pid", 0), event.get("tid", 0))
        ts = event.get("ts", 0)
        entry = state.get(key)
        if entry is None:
            entry = state[key] = [[], ts]
        stack = entry[0]
        if ts != entry[1]:
            if stack:
                yield key[0], key[1], entry[1], ts, tuple(stack)
            entry[1] = ts
        if phase == "B":
            args = event.get("args") or {}
            line_no = int(args.get("line") or 0)
            # --nonblocking reads a frame while the program changes it: a torn one can hold any line
            # (4294967045 seen, under `__package__` in file `__doc__`): not a line, so none
            stack.append((str(event.get("name", "")), str(args.get("filename") or ""),
                          line_no if 0 <= line_no <= _MAX_LINE else 0))
        elif stack:
            stack.pop()


def time_zero(anchor_ns: int, attached_ns: int | None, first_us: int | None) -> int:
    """py-spy's time zero on the trace's clock.

    `anchor_ns` is when starting py-spy returned; its zero (taken as it begins) comes just after,
    unless its start-up is slow: 0.6-1 s once in CI, where every sample then came out that much
    early. `attached_ns` is when it printed "Sampling process" (its log's mtime, ATTACHED), which
    bounds its zero from both sides: no later than that line, and no earlier than that line less
    its first sample's time (py-spy stamps a sample when it handles it, after that line). An anchor
    outside those bounds gives way to the earliest zero within them: its times then come out early
    by the wait before py-spy's first sample (one interval on average; at most that first sample's
    time, the C record's `within_ms`, which the loader's placement allows for, as it allows for the
    time starting py-spy took), never late."""
    if attached_ns is None or first_us is None:
        return anchor_ns
    earliest = attached_ns - first_us * 1000
    return anchor_ns if earliest <= anchor_ns <= attached_ns else earliest


def convert(events: list, anchor_ns: int, rate_hz: float, known: Interned,
            attached_ns: int | None = None) -> tuple[list[str], dict]:
    """The samples-file lines (F and K for frames and stacks not in `known`, which grows, then S) of
    one py-spy Chrome trace started at `anchor_ns` on the trace's clock (time_zero: where its zero
    is); and counts, with how far its zero moved from the anchor and how well it is then known."""
    first_us = min((event.get("ts", 0) for event in events if event.get("ph") == "B"), default=None)
    zero_ns = time_zero(anchor_ns, attached_ns, first_us)
    out: list[str] = []
    stacks: dict[tuple, tuple[int | None, bool]] = {}  # py-spy's frames -> (stack id or None: the agent's alone, idle)
    threads: set[tuple[int, int]] = set()  # (pid, thread key)
    samples = 0
    weight_total = 0.0
    for pid, thread_key, start_us, end_us, frames in slices(events):
        tid, name, frames = _split_thread(pid, frames)
        known_stack = stacks.get(frames)
        if known_stack is None:
            kept = _program_frames(frames)
            known_stack = stacks[frames] = (stack_id(kept) if kept else None, looks_idle(kept))
            if kept:
                out += known.stack_lines(known_stack[0], kept)
        sid, idle = known_stack
        if sid is None:
            continue
        duration_ns = (end_us - start_us) * 1000
        weight = duration_ns * rate_hz / 1e9
        threads.add((pid, thread_key))
        out.append(line(SAMPLE, zero_ns + start_us * 1000, pid, "" if tid is None else tid, duration_ns, weight,
                        sid, IDLE_FLAG if idle else "", name))
        samples += 1
        weight_total += weight
    moved = zero_ns != anchor_ns
    return out, {"slices": samples, "samples": round(weight_total), "threads": len(threads),
                 "pids": sorted({pid for pid, _ in threads}), "moved_ms": round((zero_ns - anchor_ns) / 1e6, 3),
                 "within_ms": round(first_us / 1e3, 3) if moved and first_us is not None else 0}


def _split_thread(pid: int, frames: tuple) -> tuple[int | None, str, tuple]:
    """(native thread id or None, thread name, the Python frames) of a stack with py-spy's own frames."""
    tid: int | None = None
    name = ""
    skip = 0
    for function, file, line_no in frames:
        if file or line_no:
            break
        match = _THREAD_FRAME.fullmatch(function)
        if match:
            ident, name = match.group(1), match.group(2) or ""
            if not ident.startswith("0x"):
                tid = int(ident)
            elif name == "MainThread":
                tid = pid  # the main thread's native id is the process's
        elif not _PROCESS_FRAME.fullmatch(function):
            break
        skip += 1
    return tid, name, frames[skip:]


def convert_file(path: Path, anchor_ns: int, rate_hz: float, known: Interned,
                 pid: int | None = None, attached_ns: int | None = None) -> tuple[list[str], dict]:
    """convert() of a py-spy Chrome trace file, then the C record that says it was converted."""
    with open(path, "rb") as stream:
        events = json.load(stream)
    if not isinstance(events, list):
        raise ValueError("not a Chrome trace (a JSON array of events)")
    before = (set(known.stacks), dict(known.frames), known.next_frame)
    try:
        lines, counts = convert(events, anchor_ns, rate_hz, known, attached_ns)
    except (ValueError, TypeError, AttributeError) as exc:  # nothing of it is written: `known` as it was
        known.stacks, known.frames, known.next_frame = before
        raise ValueError(f"not a py-spy Chrome trace: {exc}") from exc
    lines.append(line(CONVERTED, pid="" if pid is None else pid, name=path.name,
                      message=json.dumps(counts, separators=(",", ":"))))
    return lines, counts


def upgrade_v1(source: Path, target: Path) -> None:
    """A samples file of version 1 (a K record's frames as JSON in its name field) as version 2.

    Every other record is the same in both. A K record whose JSON is no list of frames is copied as
    it is: the loader counts it as a damaged line, as it did."""
    known = Interned()
    with open(source, encoding="utf-8", errors="surrogateescape", newline="\n") as lines, \
            open(target, "w", encoding="utf-8", errors="surrogateescape", newline="\n") as out:
        lines.readline()
        out.write(HEADER)
        for text in lines:
            fields = text.split("\t")
            if fields[0] == STACK and len(fields) == len(FIELDS):
                try:
                    frames = tuple((str(f["function"]), str(f["file"]), int(f["line"])) for f in json.loads(fields[8]))
                    sid = int(fields[6])
                except (ValueError, TypeError, KeyError):
                    frames = ()
                if frames:
                    out.writelines(known.stack_lines(sid, frames))
                    continue
            out.write(text)
