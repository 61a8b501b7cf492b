"""The agent prepared for one interpreter: its .pyc files, its two bundles, the import wrapper's C twin.

`run` prepares the agent's directory before CMD starts so that no traced process compiles the
agent (PYTHONDONTWRITEBYTECODE is often set, and compiling it costs every process ~20 ms) or goes
through importlib for its modules. Everything here is for the interpreter that runs it, so the
interpreters of CMD's tree other than selfopt-trace's own run this module themselves
(interpreters.py: `python -I -c ... DIR`): it imports nothing outside the standard library and
this package's paths.py and import_twin.py, and runs on Python 3.8 and later.
"""

from __future__ import annotations

import json
import os
import struct
import sys
from _frozen_importlib_external import MAGIC_NUMBER  # (importlib.util: more imports for `run` to pay)
from pathlib import Path

from .paths import AGENT_PACKAGE


def prepare(directory: Path, twin: bool = True) -> None:
    """The .pyc files, the bundles and (`twin`) the C twin of the agent under `directory`, for this
    interpreter, each written only when missing or stale. Best effort, silent."""
    try:
        if not bootstrap_compiled(directory):  # the check costs less than importing compileall (~5 ms)
            import compileall

            compileall.compile_dir(str(directory), quiet=2)
        if (directory / AGENT_PACKAGE).is_dir() and not bundles_fresh(directory):
            write_bundles(directory)
    except Exception:
        pass
    if not twin:
        return
    try:
        from . import import_twin

        import_twin.build(directory)
    except Exception:
        pass  # no compiler, or it failed: traced processes run the Python wrapper (importtime.py)


def bootstrap_compiled(directory: Path, tag: str | None = None, magic: bytes = MAGIC_NUMBER) -> bool:
    """Every .py under `directory` has its .pyc for the interpreter of cache tag `tag` (this one's by
    default) and magic number `magic`, made from this very source: the header compileall compares
    (magic number, no flags, the source's mtime) and the source's size."""
    tag = tag or sys.implementation.cache_tag
    for folder, _, names in os.walk(directory):
        for name in names:
            if not name.endswith(".py"):
                continue
            source = os.stat(os.path.join(folder, name))
            expected = magic + struct.pack("<LLL", 0, int(source.st_mtime) & 0xFFFFFFFF, source.st_size & 0xFFFFFFFF)
            try:
                with open(os.path.join(folder, "__pycache__", f"{name[:-3]}.{tag}.pyc"), "rb") as compiled:
                    if compiled.read(16) != expected:
                        return False
            except OSError:
                return False
    return True


# The agent's bundles: its modules compiled into two files that the agent runs without importlib's
# search per module (~200,000 instructions each at the top level, and a stat, an open and a read of
# the .pyc) and without the `__future__` module (each module's `from __future__ import annotations`
# becomes the compiler flag it stands for).
# - The start-up bundle: the modules every traced process loads before the program starts, in the
#   order they run; the sitecustomize shim reads it whole and runs them (sitecustomize.py,
#   _selfopt_trace_load). The file: the interpreter's magic number, the length of the stamps'
#   marshal data (4 bytes, little-endian), the stamps: (path from the bootstrap directory,
#   st_mtime_ns, st_size) of each source, then the modules: (name, path, code) each.
# - The lazy bundle: every other module of the agent (the hooks, container.py), each run at its
#   first import (importtime.py, _load_bundled) from its own piece of the file, read with one pread:
#   a process reads only the modules it uses, and one that uses none pays nothing. The file: the
#   magic number, the length of the index's marshal data, the index: (name, path, st_mtime_ns,
#   st_size, offset, length) of each module, then each module's code as marshal data (its offset
#   counted from the end of the index).
# A stamp that does not match, another interpreter or an unreadable file: the module is imported as
# usual, from its .pyc.
STARTUP_MODULES = ("", "config", "spanfile", "tracer", "redact", "process", "lazy", "importtime")


def startup_bundle_path(directory: Path, tag: str | None = None) -> Path:
    return directory / AGENT_PACKAGE / "__pycache__" / f"startup.{tag or sys.implementation.cache_tag}.bundle"


def lazy_bundle_path(directory: Path, tag: str | None = None) -> Path:
    return directory / AGENT_PACKAGE / "__pycache__" / f"lazy.{tag or sys.implementation.cache_tag}.bundle"


def write_bundles(directory: Path) -> None:
    """The start-up bundle and the lazy bundle of the agent under `directory` (see above)."""
    import marshal

    startup_paths = [f"{AGENT_PACKAGE}/{module or '__init__'}.py" for module in STARTUP_MODULES]
    lazy_paths = sorted(path for path in _agent_sources(directory) if path not in startup_paths)

    def startup() -> tuple[tuple, bytes]:
        compiled = [_compile_agent_module(directory, path) for path in startup_paths]
        modules = tuple((_module_name(path), path, code) for (path, *_), code in compiled)
        return tuple(stamp for stamp, _ in compiled), marshal.dumps(modules)

    def lazy() -> tuple[tuple, bytes]:
        index, pieces, offset = [], [], 0
        for path in lazy_paths:
            (_, mtime_ns, size), code = _compile_agent_module(directory, path)
            pieces.append(marshal.dumps(code))
            index.append((_module_name(path), path, mtime_ns, size, offset, len(pieces[-1])))
            offset += len(pieces[-1])
        return tuple(index), b"".join(pieces)

    _write_bundle(startup_bundle_path(directory), startup)
    _write_bundle(lazy_bundle_path(directory), lazy)


def _agent_sources(directory: Path) -> list[str]:
    """The agent's .py files, as paths from `directory` with "/" (os.walk: Path.rglob took 0.5 ms more)."""
    sources = []
    for folder, folders, names in os.walk(os.path.join(directory, AGENT_PACKAGE)):
        folders[:] = [name for name in folders if name != "__pycache__"]
        relative = os.path.relpath(folder, directory).replace(os.sep, "/")
        sources += [f"{relative}/{name}" for name in names if name.endswith(".py")]
    return sources


def _module_name(path: str) -> str:
    """selfopt_trace_agent/hooks/os_.py -> selfopt_trace_agent.hooks.os_ (a package's __init__.py: its name)."""
    name = path[:-3]
    if name.endswith("/__init__"):
        name = name[:-len("/__init__")]
    return name.replace("/", ".")


def _compile_agent_module(directory: Path, path: str) -> tuple:
    """((path, st_mtime_ns, st_size), code) of an agent module, its `from __future__` imports compiled
    in as flags, without docstrings and asserts (optimize=2: the agent reads neither; the start-up bundle is
    13 % smaller, `python -c pass` 0.1 M instructions less)."""
    import __future__
    import ast

    source = directory / path
    status = source.stat()  # before the read: an edit in between leaves the bundle stale, not wrong
    tree = ast.parse(source.read_bytes(), str(source))
    tree.body = [node for node in tree.body if not (isinstance(node, ast.ImportFrom) and node.module == "__future__")]
    code = compile(tree, str(source), "exec", flags=__future__.annotations.compiler_flag, dont_inherit=True, optimize=2)
    return (path, status.st_mtime_ns, status.st_size), code


def _write_bundle(target: Path, contents) -> None:
    """A bundle of `contents()` (its head, marshalled, and the bytes after it) in a file that
    replaces `target` once whole."""
    import marshal

    target.parent.mkdir(exist_ok=True)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        with open(partial, "wb") as written:  # first: a directory we cannot write to costs no compiling
            head, body = contents()
            head = marshal.dumps(head)
            written.write(MAGIC_NUMBER + len(head).to_bytes(4, "little") + head + body)
        os.replace(partial, target)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise


def bundles_fresh(directory: Path, tag: str | None = None, magic: bytes = MAGIC_NUMBER) -> bool:
    """Both bundles exist for the interpreter of cache tag `tag` and magic number `magic` (this one's
    by default), the lazy one whole, and every source in them is as it was compiled. (The start-up
    bundle's modules are not unmarshalled here, ~1 ms of every `run`: a file damaged after it was
    written whole fails the shim's own load, which then imports the agent.)"""
    try:
        startup = _bundle_head(startup_bundle_path(directory, tag), magic)
        lazy = _bundle_head(lazy_bundle_path(directory, tag), magic)
        if startup is None or lazy is None:
            return False
        index, end = lazy
        if lazy_bundle_path(directory, tag).stat().st_size != end + sum(length for *_, length in index):
            return False
        stamps = {path: (mtime_ns, size) for path, mtime_ns, size in (*startup[0], *(entry[1:4] for entry in index))}
        if set(_agent_sources(directory)) != set(stamps):  # a module added or removed since
            return False
        for path, (mtime_ns, size) in stamps.items():
            status = os.stat(os.path.join(directory, path))
            if (status.st_mtime_ns, status.st_size) != (mtime_ns, size):
                return False
    except (OSError, ValueError, EOFError, TypeError):
        return False
    return True


def _bundle_head(bundle: Path, magic: bytes) -> tuple | None:
    """(the stamps or the index at the head of a bundle, where the head ends); None when another
    interpreter wrote it. (The head holds only tuples, str and int: any Python 3's marshal reads it.)"""
    import marshal

    with open(bundle, "rb") as read:
        head = read.read(8)
        if head[:4] != magic:
            return None
        size = int.from_bytes(head[4:8], "little")
        return marshal.loads(read.read(size)), 8 + size


def this_interpreter() -> dict:
    """What interpreters.py keeps of an interpreter to check, without starting it, that its agent is
    prepared: its cache tag, magic number, and the file name ending of its C twin ("" for none)."""
    from . import import_twin

    return {"tag": sys.implementation.cache_tag, "magic": MAGIC_NUMBER.hex(),
            "twin_suffix": import_twin.twin_suffix() or ""}


def main(directory: str, twin: bool = True) -> None:
    """`python -I -c ...` of another interpreter (interpreters.py): prepare the agent under
    `directory` for it, then print what this_interpreter() says of it, as JSON."""
    prepare(Path(directory), twin)
    print(json.dumps(this_interpreter()))
