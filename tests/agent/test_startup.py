"""interpreter.startup runs from the process's start to the first line of the program's own code."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from selfopt_trace import agent_build, interpreters, runner
from tests.conftest import BOOTSTRAP, PYTHONS  # start-up ends by other means from 3.12 (process.watch_for_main)

# The program also reports whether a profile function is set, and (3.12+) whether the agent still
# holds a sys.monitoring tool id: both must be gone by then.
FIRST_LINE = ("import time; FIRST = time.time_ns()\nimport sys\n"
              "held = [sys.monitoring.get_tool(tool) for tool in range(6)] if hasattr(sys, 'monitoring') else []\n"
              "print(FIRST, sys.getprofile(), 'selfopt-trace' in held)\n")


def startup_and_first_line(traced, args: list[str], **kwargs) -> tuple:
    done = traced.run(args, **kwargs)
    assert done.returncode == 0, done.stderr.decode()
    first, profile, tool_held = done.stdout.split()
    assert (profile, tool_held) == (b"None", b"False")
    first = int(first)
    (startup,) = traced.spans().named("interpreter.startup")
    return startup, first


@pytest.mark.parametrize("python", PYTHONS)
@pytest.mark.parametrize("how", ["script", "-c"])
def test_startup_ends_where_the_program_starts(traced, tmp_path: Path, how: str, python: str) -> None:
    script = tmp_path / "first_line.py"
    script.write_text(FIRST_LINE)
    args = [python, str(script)] if how == "script" else [python, "-c", FIRST_LINE]
    startup, first = startup_and_first_line(traced, args)
    attributes = startup.attributes
    # after the agent was ready, and right before the first line (up to 3.11 reading and compiling the
    # script is start-up; from 3.12 start-up ends as site returns)
    assert startup.end_ns - startup.start_ns >= attributes["python.startup.before_bootstrap_ns"] + attributes[
        "selfopt_trace.startup.agent_ns"]
    assert 0 <= first - startup.end_ns < 5_000_000  # microseconds; a loaded machine may preempt in between


@pytest.mark.parametrize("python", PYTHONS)
def test_startup_of_a_module_ends_before_runpy_imports_its_package(traced, tmp_path: Path, python: str) -> None:
    package = tmp_path / "slowpkg"
    package.mkdir()
    (package / "__init__.py").write_text("import time\ntime.sleep(0.03)\n")
    (package / "__main__.py").write_text(FIRST_LINE)
    startup, first = startup_and_first_line(traced, [python, "-m", "slowpkg"], cwd=tmp_path)
    # -m: start-up ends as CPython hands over to runpy; importing the package is import time
    (package_import,) = traced.spans().named("import slowpkg")
    assert startup.end_ns <= package_import.start_ns and package_import.end_ns <= first
    assert package_import.duration_ms >= 30
    assert startup.end_ns - startup.start_ns >= startup.attributes["python.startup.before_bootstrap_ns"]


@pytest.mark.parametrize("python", PYTHONS)
def test_a_program_that_never_starts_still_has_its_startup(traced, tmp_path: Path, python: str) -> None:
    """An exit during start-up (here: os._exit in the user's sitecustomize) still closes interpreter.startup."""
    site = tmp_path / "user_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import os\nos._exit(3)\n")
    done = traced.run([python, "-c", "print('never')"], extra_env={"PYTHONPATH": f"{traced.env()['PYTHONPATH']}:{site}"})
    assert done.returncode == 3 and done.stdout == b""
    (startup,) = traced.spans().named("interpreter.startup")
    assert startup.end_ns > startup.start_ns


@pytest.mark.parametrize("python", PYTHONS)
def test_the_users_sitecustomize_runs_before_the_watch_for_the_first_line(traced, tmp_path: Path, python: str) -> None:
    """The profile function (or, from 3.12, the local event) is set once the user's sitecustomize has
    run (not over the shim's search of sys.path for it), and start-up still ends at the program's
    first line."""
    site = tmp_path / "user_site"
    site.mkdir()
    (site / "sitecustomize.py").write_text("import sys\nprint('site', sys.getprofile())\n")
    done = traced.run([python, "-c", FIRST_LINE],
                      extra_env={"PYTHONPATH": f"{traced.env()['PYTHONPATH']}:{site}"})
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.split()[:2] == [b"site", b"None"]
    first, profile, tool_held = done.stdout.split()[2:]
    assert (profile, tool_held) == (b"None", b"False")
    (startup,) = traced.spans().named("interpreter.startup")
    assert 0 <= int(first) - startup.end_ns < 5_000_000


# What a traced program reports about the agent's start-up modules: the names loaded, whether tracer.py
# has the global that `from __future__ import annotations` leaves (the bundle compiles the flag
# instead) and whether `__future__` was imported, and tracer.py's file and spec.
AGENT_MODULES = """
import sys
agent = sorted(name for name in sys.modules if name.startswith("selfopt_trace_agent"))
tracer = sys.modules["selfopt_trace_agent.tracer"]
print(agent)
print(hasattr(tracer, "annotations"), "__future__" in sys.modules)
print(tracer.__file__ == tracer.__spec__.origin, tracer.__spec__.cached == tracer.__cached__, tracer.__package__)
"""


def agent_modules(traced, bootstrap: Path) -> list:
    done = traced.python(AGENT_MODULES, extra_env={"PYTHONPATH": str(bootstrap), "SELFOPT_TRACE_BOOTSTRAP": str(bootstrap)})
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    (process,) = traced.spans().named("process")
    assert process.attributes["selfopt_trace.overhead_ns"] > 0
    return done.stdout.decode().splitlines()


def test_a_program_that_imports_nothing_finds_neither_contextvars_nor_itertools_loaded(traced) -> None:
    """The tracer's context variable and span ids come from the import wrapper's C twin: a program
    that uses neither module does not pay for loading them (a tenth of a trivial process's start-up,
    docs/benchmarks.md), and one that imports them loads them as untraced."""
    runner.precompile_bootstrap()
    done = traced.python("import sys\nprint(sorted({'_contextvars', 'itertools'} & set(sys.modules)))\n"
                         "import contextvars, itertools\nprint(contextvars.ContextVar('v').get(7), list(itertools.repeat(1, 2)))\n")
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    assert done.stdout.decode().splitlines() == ["[]", "7 [1, 1]"]
    assert list(traced.spans().diagnostics) == []  # the twin loaded


def test_the_start_up_modules_come_from_the_bundle_as_importlib_would_load_them(traced) -> None:
    runner.precompile_bootstrap()
    loaded, future, spec = agent_modules(traced, BOOTSTRAP)
    names = ["selfopt_trace_agent" + ("." + name if name else "") for name in agent_build.STARTUP_MODULES]
    # every module the agent loads at start-up is in the bundle (container.py only in a container; the
    # import wrapper's C twin is no Python module)
    assert sorted(set(eval(loaded)) - {"selfopt_trace_agent.container", "selfopt_trace_agent._importtime"}) == sorted(names)
    assert future == "False False"  # no module of the bundle imported __future__ (untraced: not imported)
    assert spec == "True True selfopt_trace_agent"


# What a traced program reports about a hook module the agent loads when `ast` is imported
# (hooks/parsing.py): whether it has the global `from __future__ import annotations` leaves (the lazy
# bundle compiles the flag instead) and whether `__future__` was imported, and its file, spec, cache
# path and place in its package, against what importlib gives.
HOOK_MODULE = """
import ast, sys
from importlib.util import cache_from_source
parsing = sys.modules["selfopt_trace_agent.hooks.parsing"]
print(hasattr(parsing, "annotations"), "__future__" in sys.modules)
print(parsing.__file__ == parsing.__spec__.origin, parsing.__spec__.cached == parsing.__cached__ == cache_from_source(parsing.__file__),
      parsing.__package__, sys.modules["selfopt_trace_agent.hooks"].parsing is parsing, parsing.install.__code__.co_filename == parsing.__file__)
print(hasattr(ast.parse, "__wrapped__"))
"""


def hook_module(traced, bootstrap: Path) -> list:
    done = traced.python(HOOK_MODULE, extra_env={"PYTHONPATH": str(bootstrap), "SELFOPT_TRACE_BOOTSTRAP": str(bootstrap)})
    assert done.returncode == 0 and done.stderr == b"", done.stderr.decode()
    *reported, hooked = done.stdout.decode().splitlines()
    assert hooked == "True"  # the hook module installed its wrapper
    return reported


def test_a_hook_module_comes_from_the_lazy_bundle_as_importlib_would_load_it(traced) -> None:
    runner.precompile_bootstrap()
    future, spec = hook_module(traced, BOOTSTRAP)
    assert future == "False False"
    assert spec == "True True selfopt_trace_agent.hooks True True"


@pytest.mark.parametrize("bundle", ["start-up", "lazy"])
@pytest.mark.parametrize("change", ["a source edited", "another interpreter's bundle", "a truncated bundle"])
def test_a_bundle_that_does_not_match_is_not_used(traced, tmp_path: Path, bundle: str, change: str) -> None:
    bootstrap = tmp_path / "bootstrap"
    shutil.copytree(BOOTSTRAP, bootstrap, ignore=shutil.ignore_patterns("__pycache__"))
    runner.precompile_bootstrap(bootstrap)
    assert agent_build.bundles_fresh(bootstrap)
    if bundle == "start-up":
        path, source = agent_build.startup_bundle_path(bootstrap), bootstrap / "selfopt_trace_agent" / "tracer.py"
    else:
        path, source = agent_build.lazy_bundle_path(bootstrap), bootstrap / "selfopt_trace_agent" / "hooks" / "parsing.py"
    if change == "a source edited":
        source.write_text(source.read_text() + "\n# edited\n")
    elif change == "another interpreter's bundle":
        path.write_bytes(b"\0\0\r\n" + path.read_bytes()[4:])
    else:
        path.write_bytes(path.read_bytes()[:1000])
    # a start-up bundle damaged after it was written whole is not checked by `run` (its modules would
    # be unmarshalled in every run): the shim's load fails and imports the agent
    assert agent_build.bundles_fresh(bootstrap) == (bundle == "start-up" and change == "a truncated bundle")
    if bundle == "start-up":
        loaded, future, spec = agent_modules(traced, bootstrap)
        assert "selfopt_trace_agent.tracer" in loaded and spec == "True True selfopt_trace_agent"
    else:
        future, spec = hook_module(traced, bootstrap)
        assert spec == "True True selfopt_trace_agent.hooks True True"
    assert future == "True True"  # imported by importlib, as the sources say


IN_A_CONTAINER = Path("/.dockerenv").exists() or Path("/run/.containerenv").exists()


@pytest.mark.parametrize("module", [
    pytest.param("container", marks=pytest.mark.skipif(
        not IN_A_CONTAINER, reason="container.py loads at start-up only in a container (no /.dockerenv here)")),
    "hooks.parsing"])
def test_a_damaged_module_of_the_lazy_bundle_is_a_diagnostic_and_importlib_loads_it(
        traced, tmp_path: Path, module: str) -> None:
    """Fail open, and say so: a module whose code in the lazy bundle does not unmarshal (a bundle
    damaged after `run` checked its size) comes from its source. container.py loads while the
    process span is made, before its span file is named: its diagnostic must not be lost."""
    bootstrap = tmp_path / "bootstrap"
    shutil.copytree(BOOTSTRAP, bootstrap, ignore=shutil.ignore_patterns("__pycache__"))
    runner.precompile_bootstrap(bootstrap, [traced.executable])
    name = "selfopt_trace_agent." + module
    tag, magic = sys.implementation.cache_tag, agent_build.MAGIC_NUMBER  # the traced program's Python's
    if os.path.realpath(traced.executable) != os.path.realpath(sys.executable):
        facts = interpreters._known(bootstrap)[os.path.realpath(traced.executable)]
        tag, magic = facts["tag"], bytes.fromhex(facts["magic"])
    path = agent_build.lazy_bundle_path(bootstrap, tag)
    index, end = agent_build._bundle_head(path, magic)
    [(offset, length)] = [(offset, length) for entry_name, _, _, _, offset, length in index if entry_name == name]
    with open(path, "r+b") as bundle:
        bundle.seek(end + offset)
        bundle.write(b"\xff" * length)
    assert agent_build.bundles_fresh(bootstrap, tag, magic)  # its size is right: `run` does not unmarshal it
    program = f"import ast, sys\nprint({name!r} in sys.modules, sys.modules[{name!r}].__spec__.origin)\n"
    done = traced.python(program, extra_env={"PYTHONPATH": str(bootstrap), "SELFOPT_TRACE_BOOTSTRAP": str(bootstrap)})
    assert (done.returncode, done.stderr) == (0, b""), done.stderr.decode()
    assert done.stdout.decode().split() == ["True", str(bootstrap / (name.replace(".", "/") + ".py"))]
    (diagnostic,) = [d for d in traced.spans().diagnostics if d["code"] == "bundle_failed:" + name]
    assert "ValueError" in str(diagnostic) or "EOFError" in str(diagnostic)


# A traced process that says whether it loaded container.py and what it passes on, and (as
# "parent") runs itself again as a child.
CONTAINER_PROBE = """
import os, subprocess, sys
print("selfopt_trace_agent.container" in sys.modules, repr(os.environ.get("SELFOPT_TRACE_CONTAINER_ID")))
sys.stdout.flush()
if sys.argv[1:] == ["parent"]:
    subprocess.run([sys.executable, sys.argv[0]], check=True)
"""


def container_attributes(traced) -> dict:
    """pid -> the container.* attributes of the resource in the header of its span file."""
    attributes = {}
    for path in (traced.run_dir / "spans").glob("*.spans"):
        resource = json.loads(path.read_text().split("\n", 1)[0].split("\t")[10])["resource"]
        attributes[resource["process.pid"]] = {k: v for k, v in resource.items() if k.startswith("container.")}
    return attributes


@pytest.mark.skipif(not IN_A_CONTAINER, reason="no /.dockerenv or /run/.containerenv here: no container attributes")
def test_a_container_s_id_is_read_once_and_passed_on_within_its_mount_namespace(traced, tmp_path: Path) -> None:
    """The first traced process of a container reads the id (container.py, /proc) and passes it on;
    a child in the same mount namespace takes it from there: the same container.* attributes, and
    container.py not loaded. A value from another mount namespace is read again, never believed."""
    probe = tmp_path / "probe.py"
    probe.write_text(CONTAINER_PROBE)
    done = traced.run([sys.executable, str(probe), "parent"])
    assert done.returncode == 0, done.stderr.decode()
    parent, child = done.stdout.decode().splitlines()
    namespace = os.readlink("/proc/self/ns/mnt")
    passed_on = eval(parent.split(" ", 1)[1])  # what the parent put in its environment at start-up
    assert (parent, child) == ("True " + repr(passed_on), "False " + repr(passed_on))
    assert passed_on.split("\t")[0] == namespace
    first, second = container_attributes(traced).values()
    assert first == second and first["container.runtime"] in ("docker", "podman")
    assert first.get("container.id", "") == passed_on.split("\t")[1]
    # another mount namespace's value (carried into another container): read again
    shutil.rmtree(traced.run_dir)
    stale = traced.run([sys.executable, str(probe)], extra_env={"SELFOPT_TRACE_CONTAINER_ID": "mnt:[1]\t" + "ab" * 32})
    assert stale.returncode == 0, stale.stderr.decode()
    assert stale.stdout.decode() == "True " + repr(passed_on) + "\n"
    assert list(container_attributes(traced).values()) == [first]


def test_a_module_added_to_the_agent_makes_the_bundles_stale(tmp_path: Path) -> None:
    bootstrap = tmp_path / "bootstrap"
    shutil.copytree(BOOTSTRAP, bootstrap, ignore=shutil.ignore_patterns("__pycache__"))
    runner.precompile_bootstrap(bootstrap)
    assert agent_build.bundles_fresh(bootstrap)
    (bootstrap / "selfopt_trace_agent" / "hooks" / "new_.py").write_text("")
    assert not agent_build.bundles_fresh(bootstrap)
    runner.precompile_bootstrap(bootstrap)
    assert agent_build.bundles_fresh(bootstrap)


def test_a_bundled_module_whose_code_raises_fails_as_importlib_would_fail_it(traced, tmp_path: Path) -> None:
    bootstrap = tmp_path / "bootstrap"
    shutil.copytree(BOOTSTRAP, bootstrap, ignore=shutil.ignore_patterns("__pycache__"))
    (bootstrap / "selfopt_trace_agent" / "hooks" / "broken_.py").write_text("raise LookupError('in the module')\n")
    runner.precompile_bootstrap(bootstrap)
    program = """
import sys
for attempt in range(2):
    try:
        import selfopt_trace_agent.hooks.broken_
    except LookupError as exc:
        print(exc, "selfopt_trace_agent.hooks.broken_" in sys.modules)
"""
    done = traced.python(program, extra_env={"PYTHONPATH": str(bootstrap), "SELFOPT_TRACE_BOOTSTRAP": str(bootstrap)})
    assert done.returncode == 0, done.stderr.decode()
    assert done.stdout.decode().splitlines() == ["in the module False"] * 2
