"""The workloads' own measurements (workload/truth.py files) as the spans and CPU samples a perfect
tracer would have recorded, and the critical path over them, for the reference computations.

Every process of a case writes `<pid>.truth`: its first line (`first`), its end (`last`) and its
blocks, each with wall-clock and thread-CPU times. They become:

- a process span from its start (the run's start for the main process, the parent's clock before
  the call that started it for a child) to `last`, with an `interpreter.startup` span up to `first`
  (for a spawned pool worker, which measures itself only from its initializer on, that span is its
  start-up, imports and bootstrap together: the tests compare no figure that needs them apart);
- one span per block that the tracer also records: imports, serialization, request (an HTTP client
  span) with the server's `served` block under it (a SERVER span), spawn (a subprocess span from the
  call to the wait that reaped the child, the call itself being its spawn time), wait (on the
  children, threads or tasks it names), thread / task / worker (a thread unit), phase. A block's
  parent is the innermost such block of its thread that contains it, else its thread's unit, else
  the process span; sleep (a time.sleep) is a `sleep` span, as the agent records one (up to the
  time asked for), or a wait on the children (`polled`) or threads (`threads`) that polls right
  before it found running, as the agent records a poll loop's sleep. spin and
  blocked are no span: they are the thread's own work;
- CPU samples: consecutive readings of a thread's CPU clock and of its time queued for a CPU (at
  every block boundary, every ms of a spin, and at first and last for a main thread), so whether
  it ran (on a CPU or queued for one, as the breakdown counts it) is known exactly between any two.

Times are in ms from the run's start, as reference.py wants them.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.queries.builder import Span
from tests.queries import reference
from tests.queries.reference import CpuSample

TRACE = "truth"
WAIT_ON = "selfopt_trace.wait.on"
OTHER_TRACE = "another run"
SPAN_KINDS = ("imports", "serialization", "request", "spawn", "wait", "thread", "task", "worker", "phase", "served",
              "sleep", "gc")
UNIT_KINDS = ("thread", "task", "worker")


@dataclass
class Block:
    kind: str
    start: int
    end: int
    start_cpu: int
    end_cpu: int
    tid: int
    info: dict[str, Any]
    start_queued: int | None = None  # time queued for a CPU so far (None: not read there)
    end_queued: int | None = None


@dataclass
class Process:
    pid: int
    role: str
    first: int
    last: int
    tid: int
    blocks: list[Block]
    data: dict[str, Any]

    def of(self, kind: str, **info: Any) -> list[Block]:
        return [b for b in self.blocks if b.kind == kind and all(b.info.get(k) == v for k, v in info.items())]

    def one(self, kind: str, **info: Any) -> Block:
        (block,) = self.of(kind, **info)
        return block


def read_truth(directory: Path) -> dict[int, Process]:
    processes = {}
    for path in sorted(directory.glob("*.truth")):
        data = ast.literal_eval(path.read_text())
        blocks = [Block(*block) for block in data["blocks"]]
        processes[data["pid"]] = Process(data["pid"], data.get("role", "child"), data["first"], data["last"],
                                         data["tid"], blocks, data)
    return processes


@dataclass
class Truth:
    """A case's truth as spans (reference.Span) and CPU samples, with what the checks look up."""

    run_start: int
    processes: dict[int, Process]
    spans: list[Span] = field(default_factory=list)
    cpu: list[CpuSample] = field(default_factory=list)
    role_of_file: dict[str, str] = field(default_factory=dict)
    role_of_pid: dict[int, str] = field(default_factory=dict)
    span_of_block: dict[int, Span] = field(default_factory=dict)  # id(block) -> its span

    def ms(self, ns: int) -> float:
        return (ns - self.run_start) / 1e6

    @property
    def main(self) -> Process:
        (main,) = [p for p in self.processes.values() if p.role == "main"]
        return main

    def role(self, pid: int) -> str:
        """What a process is in the case (main, child, helper, server, worker), by its pid."""
        return self.role_of_pid.get(pid, "unknown")


def build(run_start: int, processes: dict[int, Process], server: Process | None = None) -> Truth:
    """The truth spans of a run: `processes` its traced processes (their truth files), `server` a
    service traced as a run of its own (only its SERVER spans are in the run's trace)."""
    truth = Truth(run_start, processes)
    ms = truth.ms
    spawned_by: dict[int, tuple[Process, Block]] = {}
    for process in processes.values():
        for block in process.of("spawn"):
            spawned_by[block.info["pid"]] = (process, block)
    reaped_by: dict[int, Block] = {}
    for process in processes.values():
        for block in process.of("wait"):
            for pid in block.info.get("pids", ()) if block.info.get("reaps", True) else ():
                reaped_by[pid] = block  # the last wait on a child is the one that saw it exit

    def file(process: Process) -> str:
        return f"p{process.pid}"

    def add(span_id: str, parent: str, name: str, category: str, kind: str, start: int, end: int,
            process: Process, trace: str = TRACE, **attributes: Any) -> Span:
        span = Span(span_id, parent, name, category, kind, ms(start), ms(end), file(process), trace, attributes)
        truth.spans.append(span)
        return span

    everyone = list(processes.values()) + ([server] if server is not None else [])
    for process in everyone:
        truth.role_of_file[file(process)] = process.role
        truth.role_of_pid[process.pid] = process.role
    for pid in spawned_by:  # started and measured by nobody (multiprocessing's resource tracker)
        truth.role_of_pid.setdefault(pid, "unmeasured")
    # Process spans first: blocks name them as parents.
    process_span: dict[int, str] = {}
    for process in processes.values():
        span_id = f"process:{process.pid}"
        process_span[process.pid] = span_id
        if process.role == "main":
            start, parent = run_start, ""
        else:
            spawner, call = spawned_by[process.pid]
            start, parent = call.start, f"spawn:{spawner.pid}:{process.pid}"
        add(span_id, parent, "process", "process", "INTERNAL", start, process.last, process,
            **{"process.pid": process.pid})
        add(f"startup:{process.pid}", span_id, "interpreter.startup", "startup", "INTERNAL", start, process.first,
            process)
    # The units (threads, tasks) of each process, by name and by index, for waits to name.
    for process in everyone:
        trace = TRACE if process is not server else OTHER_TRACE
        units: dict[str, list[Span]] = defaultdict(list)
        shutdown = max((b.end for b in process.of("wait") if b.info.get("workers")), default=process.last)
        blocks = sorted(process.blocks, key=lambda b: (b.start, -b.end))

        def parent_of(block: Block) -> str:
            """The innermost span-making block of its thread around it (a SERVER span's contents are
            put under it below), else the process span; a unit hangs under the process span."""
            if block.kind not in UNIT_KINDS:
                outer = [b for b in blocks if b is not block and b.tid == block.tid and b.kind in SPAN_KINDS
                         and b.kind not in ("worker", "served") and b.info.get("recorded", True)
                         and b.start <= block.start and b.end >= block.end
                         and b.end - b.start > block.end - block.start]
                if outer:
                    return truth.span_of_block[id(min(outer, key=lambda b: b.end - b.start))].id
            return process_span.get(process.pid, "")

        for n, block in enumerate(blocks):
            if block.kind not in SPAN_KINDS or block.kind in ("wait", "served") or (
                    block.kind == "sleep" and block.info.get("threads")):  # below, with the waits: a wait on units
                continue
            span_id = f"{block.kind}:{process.pid}:{n}"
            parent = parent_of(block)
            if block.kind == "imports":
                span = add(span_id, parent, "imports", "import", "INTERNAL", block.start, block.end, process, trace)
            elif block.kind == "serialization":
                span = add(span_id, parent, "json", "serialization", "INTERNAL", block.start, block.end, process,
                           trace)
            elif block.kind == "request":
                span = add(f"request:{block.info['path']}", parent, "POST", "http", "CLIENT", block.start,
                           block.end, process, trace)
            elif block.kind == "spawn":
                child = block.info["pid"]
                reaped = reaped_by.get(child)
                # the spawning thread's CPU clock at the call's end and at the reap, as the agent reads
                # them: where it idled in between, the spawning span is a wait on the child (read_waits)
                clocks = {"selfopt_trace.cpu.end_ns": block.end_cpu, "selfopt_trace.cpu.reap_ns": reaped.end_cpu} \
                    if reaped is not None and reaped.tid == block.tid else {}
                if clocks and block.end_queued is not None and reaped.end_queued is not None:
                    clocks.update({"selfopt_trace.cpu.end_runqueue_ns": block.end_queued,
                                   "selfopt_trace.cpu.reap_runqueue_ns": reaped.end_queued})
                if not block.info.get("piped", True):  # nothing of it to read (macros.sql, read_candidates)
                    clocks["selfopt_trace.child.no_pipe"] = True
                span = add(f"spawn:{process.pid}:{child}", parent, "subprocess", "subprocess", "CLIENT",
                           block.start, reaped.end if reaped is not None else process.last, process, trace,
                           **{"selfopt_trace.spawn_ns": block.end - block.start}, **clocks)
            elif block.kind == "sleep":  # up to the time asked for from where the sleep itself began, as the
                # agent ends it (its wake-up is queued)
                end = min(block.end, block.info["asleep"] + round(block.info["seconds"] * 1e9))
                if block.info.get("polled"):  # right after polls that found children running: a wait on them
                    span = add(span_id, parent, "time.sleep", "wait", "INTERNAL", block.start, end, process, trace,
                               **{"selfopt_trace.wait.on": [f"spawn:{process.pid}:{pid}" for pid in block.info["polled"]]})
                else:
                    span = add(span_id, parent, "time.sleep", "sleep", "INTERNAL", block.start, end, process, trace)
            elif block.kind == "phase":
                span = add(span_id, parent, block.info["name"], "phase", "INTERNAL", block.start, block.end,
                           process, trace)
            elif block.kind == "gc":  # a collection (SELFOPT_TRACE_GC=1)
                span = add(span_id, parent, "gc", "gc", "INTERNAL", block.start, block.end, process, trace)
            else:  # a unit: a thread (to its end, a pool's worker to the pool's shutdown) or a task
                end = shutdown if block.kind == "worker" else block.end
                name = "task" if block.kind == "task" else "thread"
                span = add(span_id, parent, name, "thread", "INTERNAL", block.start, end, process, trace,
                           **{"thread.id": block.tid})
                units[block.info.get("name", block.kind)].append(span)
                if block.kind == "task":
                    units[f"task {block.info['index']}"].append(span)
            truth.span_of_block[id(block)] = span
        for n, block in enumerate(blocks):
            if block.kind == "sleep" and block.info.get("threads"):  # right after polls that found threads alive
                end = min(block.end, block.info["asleep"] + round(block.info["seconds"] * 1e9))
                on = [span.id for name in block.info["threads"] for span in units[name]]
                span = add(f"sleep:{process.pid}:{n}", parent_of(block), "time.sleep", "wait", "INTERNAL", block.start,
                           end, process, trace, **{"selfopt_trace.wait.on": on})
                truth.span_of_block[id(block)] = span
                continue
            if block.kind != "wait" or not block.info.get("recorded", True):
                continue
            on = [f"spawn:{process.pid}:{pid}" for pid in block.info.get("pids", ())]
            on += [span.id for name in block.info.get("threads", ()) for span in units[name]]
            on += [span.id for index in block.info.get("tasks", ()) for span in units[f"task {index}"]]
            if block.info.get("workers"):
                on += [span.id for span in units["worker"]]
            span = add(f"wait:{process.pid}:{n}", parent_of(block), block.info.get("name", "wait"), "wait",
                       "INTERNAL", block.start, block.end, process, trace, **{"selfopt_trace.wait.on": on})
            truth.span_of_block[id(block)] = span
    # SERVER spans: under the client span of the same path (in the run's trace, wherever the server is).
    paths = {b.info["path"] for p in processes.values() for b in p.of("request")}
    for process in everyone:
        for block in process.blocks:
            if block.kind == "served" and block.info["path"] in paths:
                span = add(f"served:{block.info['path']}", f"request:{block.info['path']}", "POST", "http", "SERVER",
                           block.start, block.end, process)
                truth.span_of_block[id(block)] = span
    # Spans nested in a SERVER span (the handler's own serialization) belong to the run's trace too.
    for process in everyone:
        served = [b for b in process.of("served") if b.info["path"] in paths]
        for block in process.blocks:
            span = truth.span_of_block.get(id(block))
            if span is None or block.kind == "served":
                continue
            outer = [s for s in served if s.tid == block.tid and s.start <= block.start and s.end >= block.end]
            if outer:
                span.parent = truth.span_of_block[id(outer[0])].id
                span.trace = TRACE
    # What the loader adds (store/loader.py, _WORKER_TASKS_SQL): under a pool's worker thread, a
    # `_WorkItem.run` wait on each task the thread ran.
    for thread in [s for s in truth.spans if s.name == "thread" and s.category == "thread"]:
        for task in [s for s in truth.spans if s.name == "task" and s.category == "thread" and s.file == thread.file
                     and s.attributes.get("thread.id") == thread.attributes.get("thread.id")
                     and thread.start <= s.start < thread.end]:
            truth.spans.append(Span(f"run:{task.id}", thread.id, "_WorkItem.run", "wait", "INTERNAL", task.start,
                                    task.end, task.file, task.trace, {WAIT_ON: [task.id]}))
    truth.cpu = in_ms(cpu_samples(processes.values()), run_start)
    return truth


@dataclass
class Reading:
    """A thread's CPU time and time queued for a CPU, both cumulative, between two readings (ns)."""

    pid: int
    tid: int
    start: int
    end: int
    cpu: int
    queued: int


def cpu_samples(processes) -> list[Reading]:
    """Each thread's CPU and queued time between consecutive readings of its clocks. Where the queued
    time was not read at both ends, it counts as none."""
    samples = []
    for process in processes:
        readings: dict[int, list[tuple]] = defaultdict(list)
        readings[process.tid] += [(process.first, process.data["first_cpu"], process.data.get("first_queued")),
                                  (process.last, process.data["last_cpu"], process.data["last_queued"])]
        for block in process.blocks:
            readings[block.tid] += [(block.start, block.start_cpu, block.start_queued),
                                    (block.end, block.end_cpu, block.end_queued)]
        for at, cpu, tid, queued in process.data.get("readings", ()):
            readings[tid].append((at, cpu, queued))
        for tid, points in readings.items():
            points.sort(key=lambda point: point[:2])
            for (t0, c0, q0), (t1, c1, q1) in zip(points, points[1:]):
                if t1 > t0:
                    queued = q1 - q0 if q0 is not None and q1 is not None else 0
                    samples.append(Reading(process.pid, tid, t0, t1, max(0, c1 - c0), max(0, queued)))
    return samples


def in_ms(samples: list[Reading], run_start: int) -> list[CpuSample]:
    """As the reference wants them: ms from the run's start, `cpu` the time running (on a CPU or
    queued for one: the breakdown counts a preempted thread as running)."""
    return [CpuSample(s.pid, s.tid, (s.start - run_start) / 1e6, (s.end - run_start) / 1e6, (s.cpu + s.queued) / 1e6)
            for s in samples]


# --- critical path ---------------------------------------------------------------------------------

@dataclass
class OnPath:
    span: Span
    depth: int
    start: float
    end: float
    self_ms: float = 0.0

    @property
    def on_path(self) -> float:
        return self.end - self.start


def critical_path(spans: list[Span], main_trace: str = TRACE, cpu: list[reference.CpuSample] = ()) -> list[OnPath]:
    """queries/critical_path.sql's rule over `spans` (ms), the slow obvious way (`cpu`: the threads'
    CPU readings, which say where a child read until it exits was read)."""
    nodes = {s.id: s for s in spans if s.trace == main_trace}
    parent = {s.id: (s.parent if s.parent in nodes else None) for s in nodes.values()}

    def is_root(s: Span) -> bool:
        p = parent[s.id]
        return s.category in ("process", "thread") or s.kind == "SERVER" or p is None or nodes[p].file != s.file

    def unit_of(s: Span) -> str:
        while not is_root(s):
            s = nodes[parent[s.id]]
        return s.id

    candidates = reference.read_candidates(spans, main_trace, nodes, unit_of, parent)
    read_until: dict[str, float] = {}  # spawning spans that wait, to where (below)

    def activity(s: Span) -> tuple[float, float]:
        if s.id in read_until:
            return s.start, read_until[s.id]
        if s.category == "subprocess":
            return s.start, min(s.end, s.start + s.attributes.get("selfopt_trace.spawn_ns", 0) / 1e6)
        return s.start, s.end

    ends, under = reference.read_waits(candidates, nodes, parent, unit_of, is_root, lambda s: activity(s)[1], cpu)
    read_until.update(ends)
    parent |= under

    children: dict[str | None, list[Span]] = defaultdict(list)
    for s in nodes.values():
        if not is_root(s):
            children[parent[s.id]].append(s)
        elif parent[s.id] is None:
            children[None].append(s)
    waited: dict[str, list[Span]] = defaultdict(list)  # the units each wait or HTTP call waits on
    for s in nodes.values():
        if s.category == "wait":
            for target in s.attributes.get("selfopt_trace.wait.on", []):
                if target in nodes and nodes[target].category == "subprocess":
                    waited[s.id] += [p for p in nodes.values() if p.category == "process" and parent[p.id] == target]
                elif target in nodes:
                    waited[s.id].append(nodes[target])
        elif (s.category == "http" and s.kind == "CLIENT") or s.id in read_until:
            waited[s.id] += [c for c in nodes.values() if parent[c.id] == s.id and is_root(c)]
    idle: dict[str, list[tuple[float, float]]] = defaultdict(list)  # each unit's waits on nothing traced
    for s in nodes.values():
        if s.category == "wait" and not waited.get(s.id):
            idle[unit_of(s)].append(activity(s))
    for waiter, units in waited.items():
        children[waiter] += units

    def worked(owner: str | None, c: Span, ce: float) -> float:
        """Where a unit waited on idles at its clipped end, since then, its work ended; else at its end."""
        if owner is None or not is_root(c):
            return ce
        return min((start for start, end in idle[c.id] if start < ce <= end), default=ce)

    def uncovered(owner: str) -> list[tuple[float, float]]:
        """Where a waiter passes its share on: its interval outside its own children (their union)."""
        lo, hi = activity(nodes[owner])
        gaps, at = [], lo
        for cs, ce in sorted((max(activity(c)[0], lo), min(activity(c)[1], hi)) for c in children[owner]
                             if not is_root(c)):
            if ce > cs:
                gaps.append((at, cs))
                at = max(at, ce)
        return [(a, b) for a, b in gaps + [(at, hi)] if b > a]

    def chain(owner: str | None) -> list[tuple[Span, float, float, float | None]]:
        lo, hi = activity(nodes[owner]) if owner is not None else (float("-inf"), float("inf"))
        clipped = [(max(activity(c)[0], a), min(activity(c)[1], b), c) for c in children[owner]
                   for a, b in (uncovered(owner) if owner is not None and is_root(c) else [(lo, hi)])]
        clipped = sorted([(cs, ce, worked(owner, c, ce), c) for cs, ce, c in clipped if ce > cs],
                         key=lambda c: (c[0], -c[1], -c[2], c[3].id))
        kept, latest = [], (float("-inf"), float("-inf"))
        for cs, ce, work, c in clipped:
            if (ce, work) > latest:  # of children that end together, the one whose work ended last
                kept.append((c, cs, ce))
            latest = max(latest, (ce, work))
        return [(c, cs, ce, kept[i + 1][1] if i + 1 < len(kept) else None) for i, (c, cs, ce) in enumerate(kept)]

    rows: list[OnPath] = []

    def walk(owner: str | None, depth: int, start: float, end: float) -> float:
        total = 0.0
        for c, cs, ce, next_start in chain(owner):
            a, b = max(cs, start), min(ce, next_start if next_start is not None else ce, end)
            if b <= a:
                continue
            row = OnPath(c, depth, a, b)
            rows.append(row)
            row.self_ms = (b - a) - walk(c.id, depth + 1, a, b)
            total += b - a
        return total

    top = chain(None)
    walk(None, 1, min(cs for _, cs, _, _ in top), max(ce for _, _, ce, _ in top))
    return rows
