"""Which waits of a Python thread are waits for the GIL, told from outside by the CPU sampler.

A thread waiting for the GIL is off the CPU like one waiting on a lock, a socket or a queue: its
schedstat alone cannot tell them apart, and threads computing at once showed about (n-1)/n of
their time as untraced waits (two pool tasks spinning 200 ms: own work 101-118 ms, untraced waits
90-111). What it is blocked in can tell: `/proc/<pid>/task/<tid>/syscall` names the system call and
its arguments. CPython waits for the GIL on a condition variable (and its mutex) that lives in the
interpreter's own static data (`_PyRuntime`, in libpython's or a static python's data or bss
segment), so its futex address is there; a lock, a semaphore, a queue or a join waits on a futex
in the heap or on a stack, and I/O in another system call. Checked on CPython 3.8 to 3.13 and a
static build (tests/cli/test_gil_waits.py).
"""

from __future__ import annotations

import os
import struct

# A wait that short is not looked at: a thread blocks for many reasons for a moment.
MIN_OFF_NS = 1_000_000
SYSCALL_BYTES = 256  # "<nr> <6 arguments> <sp> <pc>\n", "running\n" or "-1 <sp> <pc>\n"
# futex(2)'s number where glibc's condition variables and mutexes wait (x86_64, arm64, ...).
_FUTEX = {"x86_64": b"202", "aarch64": b"98", "riscv64": b"98", "ppc64le": b"221", "s390x": b"238"}
FUTEX = _FUTEX.get(os.uname().machine) if hasattr(os, "uname") else None
_PT_LOAD, _PF_W = 1, 2


def waiting_on(syscall: bytes, gil_ranges: list[tuple[int, int]]) -> bool | None:
    """From a thread's /proc syscall file: True when it waits for the GIL, False when it is blocked
    on something else, None when it is running (nothing to tell)."""
    fields = syscall.split()
    if not fields or fields[0] == b"running":
        return None
    if fields[0] != FUTEX or len(fields) < 2 or not gil_ranges:
        return False
    try:
        address = int(fields[1], 16)
    except ValueError:
        return False
    return any(low <= address < high for low, high in gil_ranges)


def interpreter_data(task_fd: int) -> list[tuple[int, int]]:
    """The address ranges of the interpreter's writable segments (data and bss) in a process: those
    of libpython, or of the executable where Python is linked into it. Read through the process's
    `task` directory descriptor (its `../maps`, `../exe`), so a reused pid is never read. Empty
    where they cannot be read."""
    try:
        exe = os.readlink("../exe", dir_fd=task_fd)
        fd = os.open("../maps", os.O_RDONLY | os.O_CLOEXEC, dir_fd=task_fd)
        try:
            with os.fdopen(fd, "rb", closefd=False) as stream:
                maps = stream.read().decode("utf-8", "replace")
        finally:
            os.close(fd)
    except OSError:
        return []
    first_mapped: dict[str, int] = {}  # each interpreter file: where its first page is mapped
    for line in maps.splitlines():
        fields = line.split(None, 5)
        if len(fields) < 6 or int(fields[2], 16) != 0:
            continue
        path = fields[5]
        if path == exe or os.path.basename(path).startswith("libpython"):
            first_mapped.setdefault(path, int(fields[0].split("-")[0], 16))
    ranges = []
    for path, start in first_mapped.items():
        for vaddr, memsz, first_vaddr in _writable_segments(path, task_fd):
            base = start - (first_vaddr & ~0xFFF)
            ranges.append((base + vaddr, base + vaddr + memsz))
    return ranges


def _writable_segments(path: str, task_fd: int) -> list[tuple[int, int, int]]:
    """(p_vaddr, p_memsz, the first PT_LOAD's p_vaddr) of each writable PT_LOAD segment of a 64-bit
    ELF file, read where the process sees it (its root: a container's file too); [] otherwise."""
    try:
        with open(f"/proc/self/fd/{task_fd}/../root{path}", "rb") as stream:
            header = stream.read(64)
            if header[:4] != b"\x7fELF" or header[4] != 2:  # 64-bit only
                return []
            order = "<" if header[5] == 1 else ">"
            phoff, = struct.unpack_from(order + "Q", header, 0x20)
            entry_size, count = struct.unpack_from(order + "HH", header, 0x36)
            stream.seek(phoff)
            table = stream.read(entry_size * count)
    except (OSError, struct.error, IndexError):
        return []
    loads = []
    for i in range(count):
        if (i + 1) * entry_size > len(table):
            break
        kind, flags, _, vaddr, _, _, memsz = struct.unpack_from(order + "IIQQQQQ", table, i * entry_size)
        if kind == _PT_LOAD:
            loads.append((vaddr, memsz, flags))
    if not loads:
        return []
    first_vaddr = min(vaddr for vaddr, _, _ in loads)
    return [(vaddr, memsz, first_vaddr) for vaddr, memsz, flags in loads if flags & _PF_W]
