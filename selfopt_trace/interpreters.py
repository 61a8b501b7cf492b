"""The agent prepared for the other Python interpreters a run's tree will start.

`run` prepares the agent (agent_build.py: .pyc files, bundles, the import wrapper's C twin) for the
interpreter running selfopt-trace, in its own process. A tree whose Python is another one (a
codeflash installed under Python 3.12, a `python3.13 script.py`) found nothing made for it: each
of its processes imported the agent through importlib, and compiled it from source where
PYTHONDONTWRITEBYTECODE is set (+21 ms a process against +2.2 ms, docs/benchmarks.md), and timed
its imports with the Python wrapper. So `run` also prepares the agent for each interpreter CMD
names, by running agent_build.py in it once; what it learnt of the interpreter (cache tag, magic
number, twin suffix) is kept in the agent's __pycache__, so that later runs check the prepared
files without starting it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from . import agent_build, import_twin
from .paths import AGENT_PACKAGE
from .runner import CommandNotRunnable, container_command, resolve_command

_PYTHON_NAME = re.compile(r"python[0-9.]*")
# Run by the other interpreter: this package's agent_build.py, on Python 3.8 and later (the agent's own
# oldest), isolated from the environment (-I: no PYTHONPATH, no user site, no PYTHON* settings).
_PREPARE = ("import sys\n"
            "if sys.version_info < (3, 8): sys.exit(3)\n"
            "sys.path.insert(0, sys.argv[1])\n"
            "from selfopt_trace import agent_build\n"
            "agent_build.main(sys.argv[2], '--no-twin' not in sys.argv[3:])\n")
_PACKAGE_PARENT = Path(__file__).resolve().parent.parent  # _PREPARE's sys.path entry for this package
PREPARE_TIMEOUT_S = 60  # compiling the agent and the twin: ~0.5-2 s; a hung interpreter does not hold the run


def named_by(command: list[str], environ: dict[str, str] | os._Environ) -> list[str]:
    """The Python interpreters CMD names, as real paths: CMD itself when it is one (python3.12, a
    venv's bin/python), the interpreter on its #! line when it is a script (a console script such
    as `codeflash` or `pytest`), and the python3 and python a shell or a Makefile of CMD would find
    on PATH. Only files that are interpreters themselves (ELF executables named python...): a
    wrapper script (a pyenv shim) decides on its interpreter when it runs."""
    path = environ.get("PATH", os.defpath)
    found = []
    for name in (command[0] if command else "", "python3", "python"):
        program = _interpreter(_which(name, path), path)
        if program and program not in found:
            found.append(program)
    return found


def _which(name: str, path: str) -> str | None:
    """The file a shell would run for `name` (runner.resolve_command's lookup), or None."""
    try:
        return resolve_command(name, path)[0]
    except CommandNotRunnable:
        return None


def _interpreter(program: str | None, path: str, follow_script: bool = True) -> str | None:
    """`program`'s real path when it is a Python interpreter; for a script, its #! line's (once)."""
    try:
        with open(program, "rb") as file:  # type: ignore[arg-type]  (None: TypeError)
            head = file.read(256)
    except (OSError, TypeError):
        return None
    if head.startswith(b"\x7fELF"):
        real = os.path.realpath(program)
        named = any(_PYTHON_NAME.fullmatch(os.path.basename(p)) for p in (program, real))
        return real if named else None
    if not (follow_script and head.startswith(b"#!")):
        return None
    words = head[2:].split(b"\n", 1)[0].decode(errors="replace").split()
    if words and os.path.basename(words[0]) == "env":  # #!/usr/bin/env [-S] [VAR=value] python3 ...
        words = [word for word in words[1:] if not word.startswith("-") and "=" not in word]
        return _interpreter(_which(words[0], path), path, False) if words else None
    return _interpreter(words[0], path, False) if words else None


def prepare_for(command: list[str], environ: dict[str, str] | os._Environ, directory: Path) -> None:
    """The agent under `directory` prepared for each interpreter CMD names other than this one. Best
    effort, silent: an interpreter where it fails runs the agent as it is (importlib, the Python
    wrapper)."""
    cache = _cache_path(directory).parent
    if not os.access(cache if cache.is_dir() else cache.parent, os.W_OK):
        return  # nothing could be written for them (an installed agent, another user's): no interpreter started
    try:
        known = _known(directory)
        own, changed = os.path.realpath(sys.executable), False
        for program in named_by(command, environ):
            if program == own:
                continue
            stamp = _stamp(program)
            facts = known.get(program)
            if facts is None or facts.get("stamp") != stamp:
                facts = known[program] = {"stamp": stamp, **_prepare_in(program, directory)[0]}
                changed = True
            elif facts["tag"] not in (None, sys.implementation.cache_tag) and not _prepared(directory, facts):
                facts.update(_prepare_in(program, directory)[0])
                changed = True
        engine_args, image = image_named_by(command)
        key = _IMAGE_KEY + image
        if image and (key not in known or known[key]["tag"] is not None and not _prepared(directory, known[key])):
            facts, error = _image_facts(image, directory, engine_args)
            if not error or facts.get("no_python"):  # an engine that did not answer: asked again next run
                known[key] = facts
                changed = True
        if changed:
            _save(directory, known)
    except Exception:
        pass


# interpreters.json's key of a container image CMD runs (`run -- docker run ... IMAGE ...`).
_IMAGE_KEY = "docker image "


def image_named_by(command: list[str]) -> tuple[list, str]:
    """docker's global options (-H, --context) and the image CMD starts a container of, when CMD is
    `docker run` or `docker create` (as the docker hook reads it), else ([], ""). Prepared once per
    image name: a rebuilt image with another Python says so (the `agent_unprepared` diagnostic)."""
    parsed = container_command(command)
    if parsed is None or os.path.basename(command[0]) != "docker" or parsed.subcommand not in ("run", "create"):
        return [], ""
    return parsed.engine_args, parsed.target


def _prepared(directory: Path, facts: dict) -> bool:
    """The interpreter's .pyc files, bundles and twin (or its build's failure) are there and fresh."""
    tag, magic, suffix = facts["tag"], bytes.fromhex(facts["magic"]), facts["twin_suffix"]
    if not (agent_build.bootstrap_compiled(directory, tag, magic) and agent_build.bundles_fresh(directory, tag, magic)):
        return False
    twin = import_twin.twin_path(directory, suffix) if suffix else None
    return twin is None or twin.exists() or import_twin.failure_path(twin).exists()


def _stamp(program: str) -> list:
    """What says an interpreter changed: its file's mtime and size."""
    status = os.stat(program)
    return [status.st_mtime_ns, status.st_size]


def _prepare_in(program: str, directory: Path) -> tuple[dict, str]:
    """Run agent_build in `program`: its facts ({"tag": None} when it is no Python 3.8+ or failed),
    and what went wrong ("" when nothing did)."""
    return _facts([program, "-I", "-c", _PREPARE, str(_PACKAGE_PARENT), str(directory)])


def _facts(command: list[str]) -> tuple[dict, str]:
    """Run `command` (_PREPARE in some interpreter): its facts ({"tag": None} on failure), and what
    went wrong ("" when nothing did)."""
    try:
        result = subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=PREPARE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as exc:
        return {"tag": None}, str(exc)
    failed = {"tag": None, "no_python": result.returncode in (3, 127)}  # older than 3.8; no python3 (docker's 127)
    try:
        facts = json.loads(result.stdout.strip().splitlines()[-1]) if result.returncode == 0 else {}
    except (ValueError, IndexError):
        facts = {}
    if isinstance(facts, dict) and {"tag", "magic", "twin_suffix"} <= facts.keys():
        return {key: facts[key] for key in ("tag", "magic", "twin_suffix")}, ""
    if result.returncode == 3:
        return failed, "its Python is older than 3.8, which the agent does not trace"
    said = [line for line in result.stderr.splitlines() if line.strip() and not line.startswith("Run 'docker")]  # its hint
    return failed, said[-1] if said else f"exit status {result.returncode}"


def prepare_python(program: str, directory: Path) -> str:
    """The agent under `directory` prepared for the host's interpreter `program` (`selfopt-trace
    prepare --python`), remembered as `run` remembers those CMD names. Returns what went wrong, or ""."""
    real = _interpreter(program if os.sep in program else _which(program, os.environ.get("PATH", os.defpath)),
                        os.environ.get("PATH", os.defpath), follow_script=False)
    if real is None:
        return f"{program}: not a Python interpreter"
    stamp = _stamp(real)
    facts, error = _prepare_in(real, directory)
    if facts["tag"] is not None:
        known = _known(directory)
        known[real] = {"stamp": stamp, **facts}
        _save(directory, known)
    return f"{program}: {error}" if error else ""


# Where an image's container sees this package and the agent while it prepares the agent for its Python.
CONTAINER_PACKAGE = "/selfopt-trace/package"


def prepare_image(image: str, directory: Path) -> str:
    """`selfopt-trace prepare --image` (_image_facts), remembered in interpreters.json as `run`
    remembers the image CMD names, so that `run -- docker run IMAGE` does not prepare it again.
    Returns what went wrong, or ""."""
    facts, error = _image_facts(image, directory)
    if not error or facts.get("no_python"):  # as run keeps it: an engine that did not answer is asked again
        known = _known(directory)
        known[_IMAGE_KEY + image] = facts
        try:
            _save(directory, known)
        except OSError as exc:
            error = error or f"prepared, but not recorded in {_cache_path(directory)}: {exc.strerror or exc}"
    return f"{image}: {error}" if error else ""


def _image_facts(image: str, directory: Path, engine_args: Sequence[str] = ()) -> tuple[dict, str]:
    """The agent under `directory` prepared for the Python of container image `image` (`selfopt-trace
    prepare --image`): agent_build run once by the image's python3 in a container, with the agent
    mounted writable where traced containers find it read-only (hooks/docker_.py), as the host's
    user, without network. A traced container of an image whose Python has no bundle made for it
    compiles the agent in each process (~20 ms; the agent's `agent_unprepared` diagnostic). No C
    twin: built by another C library, it may not load here; the container's processes time their
    imports in Python (so the facts name none). Returns the facts and what went wrong ("" when
    nothing did); an image that is not there locally is not pulled."""
    from .bootstrap.selfopt_trace_agent.hooks.docker_ import CONTAINER_BOOTSTRAP, volume_flag

    command = ["docker", *engine_args, "run", "--rm", "--pull", "never", "--network", "none", "--user", f"{os.getuid()}:{os.getgid()}",
               "--entrypoint", "python3", *volume_flag(str(_PACKAGE_PARENT), CONTAINER_PACKAGE, True),
               *volume_flag(str(directory.resolve()), CONTAINER_BOOTSTRAP, False),
               image, "-I", "-c", _PREPARE, CONTAINER_PACKAGE, CONTAINER_BOOTSTRAP, "--no-twin"]
    facts, error = _facts(command)
    return {**facts, "twin_suffix": None} if not error else facts, error


def _cache_path(directory: Path) -> Path:
    return directory / AGENT_PACKAGE / "__pycache__" / "interpreters.json"


def _builder() -> list:
    """What the facts depend on besides the interpreter: the code that learnt them. A selfopt-trace that
    builds the twin for more versions (import_twin.SUPPORTED_TAGS) asks every interpreter again."""
    return [[status.st_mtime_ns, status.st_size] for status in map(os.stat, (agent_build.__file__, import_twin.__file__))]


def _known(directory: Path) -> dict:
    """Interpreter path -> its facts, as this selfopt-trace's agent_build learnt them (else none)."""
    try:
        cache = json.loads(_cache_path(directory).read_text())
        known = cache.get("interpreters") if isinstance(cache, dict) and cache.get("builder") == _builder() else None
        return known if isinstance(known, dict) else {}
    except (OSError, ValueError):
        return {}


def _save(directory: Path, known: dict) -> None:
    target = _cache_path(directory)
    partial = target.with_name(f".{target.name}.{os.getpid()}")
    try:
        partial.write_text(json.dumps({"builder": _builder(), "interpreters": known}, indent=1))
        os.replace(partial, target)  # whole or not at all: another run may be reading it
    finally:
        partial.unlink(missing_ok=True)
