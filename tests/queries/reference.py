"""A readable reference of the `breakdown` query in plain Python, for checking the SQL against.

Same rules, computed the slow obvious way: time is cut into elementary segments at every boundary;
in each segment the run's weight (1) goes to the top-level processes alive, each unit (a thread:
a process's main thread, a `thread`/`task` span, a SERVER span) shares what reaches it equally
between its open leaves, and a leaf that waits on something alive passes its share on to it.
Small-call sums are not modelled here (they have their own exact tests).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

from tests.queries.builder import MS, Span

CATEGORIES = ("interpreter start-up", "imports", "parsing", "serialization", "http client overhead",
              "http server time", "subprocess spawn overhead", "interpreter teardown", "garbage collection", "child processes' own work",
              "container start-up", "own work", "sleeps", "untraced child processes", "untraced http servers",
              "untraced waits", "outside traced processes")
RESIDUAL = ("own work", "child processes' own work")  # split by CPU use: off-CPU is an untraced wait


@dataclass
class CpuSample:
    """A thread used `cpu` of CPU time in [start, end] (ms)."""

    pid: int
    tid: int
    start: float
    end: float
    cpu: float


def read_candidates(spans: list[Span], main_trace: str, nodes: dict[str, Span], unit,
                    parent: dict[str, str | None] | None = None) -> dict[str, tuple]:
    """The spawning spans that may have waited on their child where no hook sees it (macros.sql,
    read_candidates and read_spans): id -> (from: the spawning call's end, until: the reap or the
    first wait on the child in its unit, its traced child's end (`parent`: the spans' parents, exec
    followed) or None, the thread's CPU from the call's end to the reap). `unit(span)`: its unit's id."""
    reads = {}
    for s in nodes.values():
        a = s.attributes
        if (s.category != "subprocess" or s.name == "exec" or a.get("process.shell")
                or a.get("selfopt_trace.child.no_pipe")  # its output is not the parent's to read
                or "selfopt_trace.cpu.reap_ns" not in a or "selfopt_trace.cpu.end_ns" not in a):
            continue
        gap_start = s.start + a.get("selfopt_trace.spawn_ns", 0) / MS
        until = min([s.end] + [o.start for o in spans
                               if o.trace == main_trace and o.category == "wait" and o.id in nodes
                               and s.id in o.attributes.get("selfopt_trace.wait.on", [])
                               and gap_start < o.start < s.end and unit(o) == unit(s)])
        ran = (a["selfopt_trace.cpu.reap_ns"] - a["selfopt_trace.cpu.end_ns"]) / MS
        if "selfopt_trace.cpu.reap_runqueue_ns" in a and "selfopt_trace.cpu.end_runqueue_ns" in a:  # queued: running
            ran += (a["selfopt_trace.cpu.reap_runqueue_ns"] - a["selfopt_trace.cpu.end_runqueue_ns"]) / MS
        child_ends = [c.end for c in nodes.values() if c.name == "process" and (parent or {}).get(c.id) == s.id]
        reads[s.id] = (gap_start, until, max(child_ends) if child_ends else None, ran)
    return reads


def union(intervals: list[tuple[float, float]]) -> list[tuple[float, float]]:
    merged: list[tuple[float, float]] = []
    for lo, hi in sorted(i for i in intervals if i[1] > i[0]):
        if merged and lo <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(hi, merged[-1][1]))
        else:
            merged.append((lo, hi))
    return merged


def read_waits(reads: dict[str, tuple], nodes: dict[str, Span], parent: dict[str, str | None], unit, is_root,
               end_of, cpu: list[CpuSample] = ()) -> tuple[dict[str, float], dict[str, str]]:
    """Which candidates (`read_candidates`) were reads, and where each ends; and the spans that hang
    under them (macros.sql, read_inside .. read_children). The spans a candidate's unit started in
    it whose parent is older than it are its children (`end_of(span)`: a span's end as activity). A
    read lasts to its bound if its thread ran a quarter of the time it recorded nothing else or less
    (its CPU to the reap) and no other read of its thread has a live child at its child's end; else
    to its traced child's end. Then it is one if its CPU to the reap is a quarter of that time left
    between its children or less, or its thread's CPU samples there (prorated, over half of it
    sampled) say so; a child open at its end ends it at the child's start. A span inside several
    reads goes under the latest. Returns ({read: its end}, {span: the read it hangs under})."""
    pid_of = {s.file: s.attributes.get("process.pid") for s in nodes.values() if s.name == "process"}
    inside = {r: [s for s in nodes.values()
                  if s.id not in reads and not is_root(s) and unit(s) == unit(nodes[r]) and parent[s.id] != r
                  and frm <= s.start < until and nodes[parent[s.id]].start < frm]
              for r, (frm, until, _, _) in reads.items()}
    ends = {}
    for r, (frm, until, child_end, ran) in reads.items():
        children = union([(s.start, min(end_of(s), until)) for s in inside[r]])
        covered = sum(hi - lo for lo, hi in children)
        crowded = child_end is not None and any(
            o != r and unit(nodes[o]) == unit(nodes[r]) and o_from < child_end < min(o_until, o_child or o_until)
            for o, (o_from, o_until, o_child, _) in reads.items())
        if crowded or not (0 <= ran and ran * 4 <= until - frm - covered):
            until = min(until, child_end if child_end is not None else until)
        islands = [(lo, min(hi, until)) for lo, hi in children if lo < until]
        gaps, at = [], frm
        for lo, hi in islands:
            gaps.append((at, lo))
            at = max(at, hi)
        gaps = [(lo, hi) for lo, hi in gaps + [(at, until)] if hi > lo]
        u = nodes[unit(nodes[r])]
        thread = (pid_of.get(u.file), u.attributes.get("thread.id") if u.category == "thread" else pid_of.get(u.file))
        samples = sorted({(c.start, c.end, c.cpu) for c in cpu if (c.pid, c.tid) == thread and c.end > c.start
                          and any(c.end > lo and c.start < hi for lo, hi in gaps)})
        worked = [c[0] for c in samples if c[1] - c[0] >= 5 and c[2] * 4 >= 3 * (c[1] - c[0])]
        if worked:  # a reading mostly on the CPU: the thread works, the read is over
            until = min(until, max(frm, worked[0]))
        stretches = [(lo, min(hi, until)) for lo, hi in gaps if lo < until]
        gap = sum(hi - lo for lo, hi in stretches)
        used = sampled = 0.0
        for start, end, used_ns in samples:
            for lo, hi in stretches:
                lo, hi = max(start, lo), min(end, hi)
                if hi > lo:
                    used += used_ns * (hi - lo) / (end - start)
                    sampled += hi - lo
        if gap > 0 and ((0 <= ran and ran * 4 <= gap) or (sampled and sampled * 2 >= gap and used * 4 <= sampled)):
            ends[r] = until
    for r in ends:  # a child still open at the read's end ends it at the child's start
        ends[r] = min([ends[r]] + [s.start for s in inside[r] if s.start < ends[r] < end_of(s)])
    under = {}
    for r in sorted(ends, key=lambda r: (reads[r][0], r)):  # the latest read last: it wins (a tie: the larger id)
        under |= {s.id: r for s in inside[r] if s.start < ends[r]}
    return ends, under


def breakdown(spans: list[Span], main_trace: str, cpu: list[CpuSample] = (), exited: float | None = None,
              replaced: bool = False, run: tuple[float, float] | None = None,
              resources: dict[str, dict[str, Any]] | None = None,
              read_cpu: list[CpuSample] | None = None) -> dict[str, tuple[float, float]]:
    """category -> (wall, busy), in the spans' time unit; `exited`: when `run` saw CMD, the root
    process, exit (its teardown follows the top-level spans' end; `replaced`: an exec replaced its
    interpreter with a program of no agent, whose time is outside traced processes); `run`: the
    run's start and end (the runs row), where its wall time is (else the top-level spans' extent,
    to `exited`). What no top-level span covers there, CMD's teardown aside, is outside.
    `resources`: a span file's resource attributes, where they matter (container.id, container.name).
    `read_cpu`: the CPU samples that say where a child read until it exits was read, where they are
    not `cpu` (tests/accuracy: the sampler's, which the measured side decided them by)."""
    nodes = {s.id: s for s in spans if s.trace == main_trace and s.category not in ("sleep", "finalize")}
    exits = {s.parent: s.end for s in spans if s.category == "finalize"}  # a process's exit, the C twin's
    sleeps_in = [s for s in spans if s.trace == main_trace and s.category == "sleep" and s.parent in nodes]
    parent: dict[str, str | None] = {}
    for span in nodes.values():
        p = span.parent
        if p in nodes and nodes[p].name == "exec" and span.name == "process":  # the new image goes on where the old one was
            p = next(n for n in nodes.values() if n.file == nodes[p].file and n.name == "process").parent
        parent[span.id] = p if p in nodes else None
    pid_of = {s.file: s.attributes.get("process.pid") for s in nodes.values() if s.name == "process"}
    # (the agent that records waits ends process spans with process.cpu_ns and reads a spawner's CPU at
    # the reap: a run without waits is not legacy, nor a run of killed processes, with no end record)
    legacy = (not any(s.category in ("wait", "thread") for s in nodes.values())
              and not any(s.category == "process" and "process.cpu_ns" in s.attributes for s in spans)
              and not any(s.category == "subprocess" and "selfopt_trace.cpu.reap_ns" in s.attributes
                          and "selfopt_trace.cpu.end_ns" in s.attributes for s in spans))

    def is_root(span: Span) -> bool:
        p = parent[span.id]
        return (span.category in ("process", "thread") or span.kind == "SERVER" or p is None
                or nodes[p].file != span.file)

    def unit(span: Span) -> str:
        while not is_root(span):
            span = nodes[parent[span.id]]
        return span.id

    candidates = read_candidates(spans, main_trace, nodes, unit, parent)
    # A `threading.Thread` its spawner's thread started while it read a child, that ran a quarter of
    # its life or less and ended within 50 ms of the child's end, reads that child for it (macros.sql,
    # thread_reads): thread -> the reads (the latest; several started at once: all of them).
    thread_reads: dict[str, list[str]] = {}
    for t in nodes.values():
        cpu_ns, p = t.attributes.get("selfopt_trace.thread.cpu_ns"), parent[t.id]
        if t.name != "thread" or t.category != "thread" or cpu_ns is None or p is None \
                or cpu_ns / MS * 4 > t.end - t.start:
            continue
        reads = [(frm, r) for r, (frm, _, child_end, _) in candidates.items()
                 if frm <= t.start < nodes[r].end and child_end is not None and child_end <= t.end <= child_end + 50
                 and unit(nodes[p]) == unit(nodes[r])]
        if reads:
            latest = max(frm for frm, _ in reads)
            thread_reads[t.id] = [r for frm, r in reads if frm == latest]
    read_until: dict[str, float] = {}  # the reads' ends, found below (their children need the functions)
    top = [s for s in nodes.values() if parent[s.id] is None]
    # A top-level process whose tree answers a call from another top-level process's tree (a SERVER
    # span under a span of that tree) gets the run's time only while no top-level span that answers
    # nobody is alive (a script's `server & client`).
    process_of = {s.file: s for s in spans if s.name == "process" and s.category == "process"}
    by_id = {s.id: s for s in spans}

    def top_file(file: str) -> str:
        seen = set()
        while file in process_of and file not in seen:
            seen.add(file)
            up = by_id.get(process_of[file].parent)
            if up is None:
                break
            file = up.file
        return file

    served = {top_file(s.file) for s in spans if s.kind == "SERVER" and s.parent in by_id
              and top_file(by_id[s.parent].file) != top_file(s.file)}
    tops_end = max(s.end for s in top)
    run_start, run_end = run or (min(s.start for s in top), tops_end if exited is None else max(tops_end, exited))
    main_files = {s.file for s in top if s.name == "process"}
    any_process = any(s.name == "process" for s in nodes.values())
    processes_of = defaultdict(list)  # a spawning span -> the traced processes it started
    for s in nodes.values():
        if s.name == "process" and parent[s.id]:
            processes_of[parent[s.id]].append(s.id)
    dockers = {parent[s.id] for s in nodes.values() if s.category == "container" and parent[s.id]}

    # The Docker SDK's HTTP calls to the engine: inside an SDK container call (a container CLIENT
    # span), or naming a traced container of the run in their URL. The container's time; those
    # inside a container call wait on the processes it started, a POST /containers/{id}/wait on the
    # container's first process.
    first_in: dict[str, Span] = {}  # container id -> its first traced process
    for s in sorted((s for s in nodes.values() if s.name == "process" and s.category == "process"),
                    key=lambda s: s.start):
        container_id = (resources or {}).get(s.file, {}).get("container.id")
        if container_id:
            first_in.setdefault(container_id, s)

    def in_container_call(s: Span) -> bool:
        p = nodes.get(s.parent)  # as recorded: hung under a child's read (read_waits), it is still the SDK's call
        return (s.category == "http" and s.kind == "CLIENT" and p is not None and p.file == s.file
                and p.category == "container" and p.kind == "CLIENT")

    def named_containers(s: Span) -> tuple[list[str], bool]:
        """The first processes of the containers an HTTP client span's URL names, and whether it waits
        for their exit."""
        url = s.attributes.get("url.full") or ""
        found = re.search(r"/containers/([^/?#]+)", url) if s.category == "http" and s.kind == "CLIENT" else None
        if not found:
            return [], False
        named = found.group(1)
        ids = [first.id for cid, first in first_in.items()
               if (len(named) >= 12 and cid.startswith(named))
               or named == (resources or {}).get(first.file, {}).get("container.name")]
        return ids, bool(re.search(r"/containers/[^/?#]+/wait([?#]|$)", url))

    def engine_call(s: Span) -> bool:
        return in_container_call(s) or bool(named_containers(s)[0])

    def is_waiter(s: Span) -> bool:
        return (s.category == "wait" or (s.category == "http" and s.kind == "CLIENT")
                or (s.category == "container" and s.kind == "CLIENT")
                or (s.category == "subprocess" and (legacy or s.attributes.get("process.shell")))
                or s.id in read_until or s.id in thread_reads)

    def targets(s: Span) -> list[str]:
        if s.id in thread_reads:
            return [c.id for c in nodes.values() if parent[c.id] in thread_reads[s.id] and is_root(c)]
        if s.category != "wait":
            out = [c.id for c in nodes.values() if parent[c.id] == s.id and is_root(c)]
            if in_container_call(s):  # what its container call started
                out += [c.id for c in nodes.values() if parent[c.id] == s.parent and is_root(c)]
            named, waits = named_containers(s)
            return list(dict.fromkeys(out + (named if waits else [])))
        out = []
        for target in s.attributes.get("selfopt_trace.wait.on", []):
            if target in nodes and nodes[target].category == "subprocess":
                out += processes_of[target]
            elif target in nodes:
                out.append(target)
        return out

    def category(s: Span) -> str:
        """What a leaf's time is (a waiter's, when nothing it waits on is alive)."""
        if s.category == "sleep":
            return "sleeps"
        if s.category == "wait":
            spawners = [t for t in s.attributes.get("selfopt_trace.wait.on", [])
                        if t in nodes and nodes[t].category == "subprocess"]
            if any(t in dockers for t in spawners):
                return "container start-up"
            if any(processes_of[t] for t in spawners):
                return "subprocess spawn overhead"
            return "untraced child processes" if spawners or "process.pid" in s.attributes else "untraced waits"
        if s.category == "startup":
            return "interpreter start-up"
        if s.category == "gc":
            return "garbage collection"
        if s.category == "import":
            return "imports"
        if s.category == "parse":
            return "parsing"
        if s.category == "serialization":
            return "serialization"
        if s.category == "http":
            if s.kind == "SERVER":
                return "http server time"
            if engine_call(s):
                return "container start-up"
            unanswered = s.kind == "CLIENT" and not any(
                parent[c.id] == s.id and c.kind == "SERVER" for c in nodes.values())
            return "untraced http servers" if unanswered else "http client overhead"
        if s.category == "container" or (s.category == "subprocess" and s.id in dockers):
            return "container start-up"
        if s.category == "subprocess":
            traced = processes_of[s.id] or not is_waiter(s)  # the spawning call itself
            return "subprocess spawn overhead" if traced else "untraced child processes"
        if not any_process or s.file in main_files:
            return "own work"
        return "child processes' own work"

    def wrapped_tail(process: Span) -> float | None:
        """A traced process whose spawning span's own child was another, untraced program (a shell
        running it among others): until when its teardown lasts (its exit, or the CPU sampler saw it
        alive later)."""
        spawn = nodes.get(process.parent)
        if spawn is None or spawn.category != "subprocess" or spawn.name == "exec":
            return None
        child_pid = spawn.attributes.get("process.pid")
        args = spawn.attributes.get("process.command_args") or []
        if child_pid is None:  # os.system: its shell runs a compound command itself, execs a simple one
            if not (spawn.attributes.get("process.shell") and re.search(r"[;&|\n]", args[2] if len(args) > 2 else "")):
                return None
        elif child_pid in {pid_of.get(p.file) for p in nodes.values() if p.name == "process" and p.parent == spawn.id}:
            return None
        end, pid = interval(process)[1], pid_of.get(process.file)
        return max([end, exits.get(process.id, end)]
                   + [c.end for c in cpu if (c.pid, c.tid) == (pid, pid) and c.end > end and c.start < end + 1000])

    def own_category(leaf: Span, a: float, b: float) -> str:
        """A leaf's category at [a, b]: a waiter on traced children that have all ended waits on
        their teardown, not their spawn (on an untraced program, where an exec replaced one); one on
        a traced process run by an untraced program waits on that program, but in their teardowns."""
        name = category(leaf)
        if name == "subprocess spawn overhead" and is_waiter(leaf):
            tails = {t: wrapped_tail(nodes[t]) for t in targets(leaf)}
            if any(tail is not None for tail in tails.values()):
                in_teardown = any(tail is not None and interval(nodes[t])[1] <= a and tail >= b for t, tail in tails.items())
                return "interpreter teardown" if in_teardown else "untraced child processes"
            ends = [interval(nodes[t])[1] for t in targets(leaf)]
            if ends and max(ends) <= a:
                replaced = any(nodes[t].attributes.get("process.exec.replaced") is True for t in targets(leaf))
                return "untraced child processes" if replaced else "interpreter teardown"
        return name

    def interval(s: Span) -> tuple[float, float]:
        """The span's interval in its unit: a child process's whole life is not its spawner's activity,
        only the spawning call is (unless the span is itself a wait)."""
        lo, hi = max(s.start, run_start), min(s.end, run_end)
        if s.category == "subprocess" and not is_waiter(s):
            hi = min(hi, s.start + s.attributes.get("selfopt_trace.spawn_ns", 0) / MS)
        if s.id in read_until:
            hi = min(hi, read_until[s.id])
        return lo, hi

    def clipped(s: Span) -> tuple[float, float]:
        """Within its same-unit parent: the part of the span that keeps the parent from being a leaf."""
        lo, hi = interval(s)
        if is_root(s):
            return lo, hi
        p_lo, p_hi = interval(nodes[parent[s.id]])
        return max(lo, p_lo), min(hi, p_hi)

    # A recorded sleep in own work (a child's too), or a time.sleep in an HTTP client span (a retry's
    # back-off), is a leaf of its own, `sleeps`; elsewhere (a handler's sleep in an HTTP server span)
    # its time stays its parent's category.
    for s in sleeps_in:
        p = nodes[s.parent]
        if category(p) in RESIDUAL or (s.name != "asyncio.sleep" and p.category == "http" and p.kind == "CLIENT"):
            nodes[s.id] = s
            parent[s.id] = s.parent

    ends, under = read_waits(candidates, nodes, parent, unit, is_root, lambda s: interval(s)[1],
                             cpu if read_cpu is None else read_cpu)
    read_until.update(ends)
    parent.update(under)

    members = defaultdict(list)  # unit -> its spans
    children = defaultdict(list)  # same-unit children
    for s in nodes.values():
        members[unit(s)].append(s)
        if not is_root(s):
            children[parent[s.id]].append(s)
    tid = {}
    for s in nodes.values():
        if is_root(s) and s.name == "process":
            tid[s.id] = (pid_of.get(s.file), pid_of.get(s.file))
        elif s.category == "thread":
            tid[s.id] = (pid_of.get(s.file), s.attributes.get("thread.id"))

    # unit -> where its thread is known to be off the CPU: its blocking waits (not an asyncio await)
    # and its recorded sleeps (all of them, also those inside another category), merged where they overlap
    known_off = defaultdict(list)
    for s in spans:
        if s.trace != main_trace:
            continue
        if s.category == "sleep" and s.parent in nodes and s.name != "asyncio.sleep":  # other tasks run in that
            owner = nodes[unit(nodes[s.parent])]
        elif s.category == "wait" and s.id in nodes and not s.name.startswith("asyncio."):
            owner = nodes[unit(s)]
        else:
            continue
        lo, hi = max(s.start, owner.start), min(s.end, owner.end)
        if hi > lo:
            known_off[owner.id].append((lo, hi))
    sleeps = defaultdict(list)
    for owner, found in known_off.items():
        for lo, hi in sorted(found):
            if sleeps[owner] and lo <= sleeps[owner][-1][1]:
                sleeps[owner][-1] = (sleeps[owner][-1][0], max(hi, sleeps[owner][-1][1]))
            else:
                sleeps[owner].append((lo, hi))

    points = {run_start, run_end, min(max(tops_end, run_start), run_end)}
    for s in nodes.values():
        points.update(interval(s))
    for spans_slept in sleeps.values():
        for lo, hi in spans_slept:
            points.update((lo, hi))
    for c in cpu:
        points.update((c.start, c.end))
    # a top-level process's life after its last record, to its exit (no traced process waited for it)
    tails = [(s.end, exits[s.id]) for s in top if s.id in exits]
    points.update(t for tail in tails for t in tail)
    # CMD is `docker run ...`: replaced by an exec whose container.inject child says it runs a container;
    # after the exec, the run waits on the engine's start and stop of the container
    docker_from = min((e.start for e in nodes.values() if replaced and e.name == "exec" and e.parent in nodes
                       and parent[e.parent] is None and nodes[e.parent].name == "process"
                       and any(c.name == "container.inject" and c.parent == e.id for c in nodes.values())),
                      default=None)
    if docker_from is not None:
        points.add(docker_from)
    points = sorted(t for t in points if run_start <= t <= run_end)
    wall, busy = defaultdict(float), defaultdict(float)

    def is_open(s: Span, a: float, b: float) -> bool:
        lo, hi = interval(s)
        return lo <= a and hi >= b and hi > lo

    def leaves(u: str, a: float, b: float) -> list[Span]:
        found = []
        for s in members[u]:
            if not is_open(s, a, b):
                continue
            if any(clipped(c)[0] <= a and clipped(c)[1] >= b for c in children[s.id]):
                continue
            found.append(s)
        return found

    def slept(u: str, lo: float, hi: float) -> float:
        return sum(max(0.0, min(hi, e) - max(lo, s)) for s, e in sleeps[u])

    def running(u: str, a: float, b: float) -> float:
        """The sampled fraction of [a, b] the unit's thread ran: the CPU time of the reading around
        [a, b] (its samples clipped to the unit's start, less what the thread used before its span
        started, the last one's fraction carried on to the unit's end) over the reading's time
        outside where the thread is known off the CPU (a wait, a sleep); inside those, what did not
        fit outside (a thread waking is queued for a CPU before the call returns). With no reading
        there: 1, or 0 where known off the CPU in a unit never read."""
        inside = any(s <= a and e >= b for s, e in sleeps[u])
        key = tid.get(u)
        lo, hi = nodes[u].start, nodes[u].end
        final = nodes[u].attributes.get("selfopt_trace.thread.cpu_ns") if nodes[u].name != "task" else None
        attributes = nodes[u].attributes
        if final is not None:  # and the time it was queued for a CPU, where read (as the samples count it)
            final += attributes.get("selfopt_trace.thread.runqueue_ns", 0)
        before = 0.0  # what the thread used before its span started (its start reading), where read
        earlier = 0.0  # what its samples before the span add up to (counted in that start reading)
        if "selfopt_trace.thread.start_cpu_ns" in attributes and "selfopt_trace.thread.start_runqueue_ns" in attributes:
            before = (attributes["selfopt_trace.thread.start_cpu_ns"]
                      + attributes["selfopt_trace.thread.start_runqueue_ns"]) / MS
            earlier = sum(c.cpu for c in cpu if key and (c.pid, c.tid) == key and c.end <= lo)
        mine = [c for c in cpu if key and (c.pid, c.tid) == key and c.end > max(c.start, lo) and c.start < hi
                and (final is None or c.end <= hi)]
        last = max((c.end for c in mine), default=None)

        def fraction(start: float, reading_end: float, used: float) -> float:
            off = slept(u, start, reading_end)
            awake = reading_end - start - off
            outside = min(1.0, used / awake) if awake > 0 else 0.0
            if not inside:
                return outside
            return min(1.0, max(0.0, used - outside * awake) / off) if off > 0 else 0.0

        for c in mine:
            start = max(c.start, lo)
            end = max(c.end, hi) if c.end == last and final is None else c.end
            if start <= a and end >= b:
                return fraction(start, c.end, max(0.0, c.cpu + earlier - before) if start == lo else c.cpu)
        tail = last if last is not None else lo
        if final is not None and tail <= a and hi >= b and hi > tail:
            so_far = sum(c.cpu for c in mine) + earlier if mine else before
            return fraction(tail, hi, max(0.0, final / MS - so_far))  # the rest of the final reading
        return 0.0 if inside and not mine and final is None else 1.0

    def reading_a_task(u: str, a: float, b: float) -> bool:
        """A process pool's worker waiting for its next task: not what a wait on its pool waits on."""
        return any(s.category == "wait" and s.name in ("SimpleQueue.get", "Queue.get") and unit(s) == u
                   and s.start <= a and s.end >= b for s in nodes.values())

    def live_targets(leaf: Span, a: float, b: float) -> list[Span]:
        """What a waiter waits on in [a, b]: its targets alive; for a `Popen.communicate` whose
        children have all ended, the traced processes they started (holding its pipes)."""
        live = [nodes[t] for t in targets(leaf) if is_open(nodes[t], a, b)]
        if live or leaf.name != "Popen.communicate" or not targets(leaf):
            return live
        children = [nodes[t] for t in targets(leaf)]
        ended = max(interval(c)[1] for c in children)
        if a < ended:
            return []
        return [g for g in nodes.values() if g.name == "process" and g.parent in nodes
                and nodes[g.parent].category == "subprocess" and is_open(g, a, b)
                and any(pid_of.get(nodes[g.parent].file) == pid_of.get(c.file)
                        and c.start <= nodes[g.parent].start <= ended for c in children)]

    def give(u: str, weight: float, a: float, b: float, depth: int = 0) -> None:
        found = leaves(u, a, b)
        for leaf in found:
            share = weight / len(found)
            if is_waiter(leaf):
                live = live_targets(leaf, a, b)
                live = [t for t in live if not reading_a_task(t.id, a, b)] or live
                if live and depth < 64:
                    for target in live:
                        give(target.id, share / len(live), a, b, depth + 1)
                    continue
            name = own_category(leaf, a, b)
            if leaf.name == "asyncio.sleep":  # on the CPU, the thread ran other tasks: its own work
                r = running(u, a, b)  # (its recorded parent's: hung under a child's read, it is still that work)
                wall[category(nodes[leaf.parent])] += share * r * (b - a)
                wall["sleeps"] += share * (1 - r) * (b - a)
            elif name in RESIDUAL:
                r = running(u, a, b)
                wall[name] += share * r * (b - a)
                wall["untraced waits"] += share * (1 - r) * (b - a)
            else:
                wall[name] += share * (b - a)

    units = [s for s in nodes.values() if is_root(s)]
    for a, b in zip(points, points[1:]):
        alive = [s for s in top if is_open(s, a, b)]
        answering_nobody = [s for s in alive if not (s.name == "process" and s.file in served)]
        alive = answering_nobody or alive
        if not alive:
            in_teardown = (exited is not None and not replaced and a >= tops_end
                           or any(lo <= a and b <= hi for lo, hi in tails))
            after = "interpreter teardown" if in_teardown else \
                "container start-up" if docker_from is not None and a >= docker_from else "outside traced processes"
            wall[after] += b - a
            busy[after] += b - a
        for s in alive:
            give(s.id, 1 / len(alive), a, b)
        for u in units:  # busy: every self interval in full, waited on or not
            for leaf in leaves(u.id, a, b):
                if is_waiter(leaf) and live_targets(leaf, a, b):
                    continue
                busy[own_category(leaf, a, b)] += b - a
    return {name: (wall[name], busy[name]) for name in CATEGORIES}
