"""One trace across every way of starting a process, each process span under the span that started it."""

from __future__ import annotations

import shutil
import sys
import textwrap

import pytest

from tests.conftest import PYTHONS
from tests.spanfiles import RunSpans, SpanRecord

# A leaf that does nothing but identify itself.
LEAF = "import sys; print('leaf', sys.argv[1])"


def spawner(how: str, tag: str) -> str:
    """Python code that starts the leaf `tag` the way `how` says, then waits for it."""
    leaf = f"[sys.executable, '-c', {LEAF!r}, {tag!r}]"
    return {
        "subprocess.run": f"import subprocess, sys; subprocess.run({leaf}, check=True)",
        "check_output": f"import subprocess, sys; sys.stdout.write(subprocess.check_output({leaf}).decode())",
        "python -m": f"import subprocess, sys; subprocess.run([sys.executable, '-m', 'tests_leaf_module', {tag!r}], check=True)",
        "sh -c": f"import subprocess, sys, shlex; subprocess.run(['sh', '-c', shlex.join({leaf})], check=True)",
        "bash -c": f"import subprocess, sys, shlex; subprocess.run(['bash', '-c', 'true; ' + shlex.join({leaf}) + '; true'], check=True)",
        "os.system": f"import os, sys, shlex; assert os.system(shlex.join({leaf})) == 0",
        "posix_spawn": f"import os, sys; pid = os.posix_spawn(sys.executable, {leaf}, os.environ); os.waitpid(pid, 0)",
        "posix_spawnp": f"import os, sys; pid = os.posix_spawnp(os.path.basename(sys.executable), {leaf}, dict(os.environ)); os.waitpid(pid, 0)",
        "os.spawnv": f"import os, sys; os.spawnv(os.P_WAIT, sys.executable, {leaf})",
        "fork+execv": f"import os, sys\npid = os.fork()\nif pid == 0:\n    os.execv(sys.executable, {leaf})\nos.waitpid(pid, 0)",
        "asyncio": textwrap.dedent(f"""
            import asyncio, sys
            async def main():
                proc = await asyncio.create_subprocess_exec(*{leaf})
                await proc.wait()
            asyncio.run(main())"""),
    }[how]


HOWS = ["subprocess.run", "check_output", "python -m", "sh -c", "bash -c", "os.system", "posix_spawn",
        "posix_spawnp", "os.spawnv", "fork+execv", "asyncio"]


def assert_child_of_spawn(spans: RunSpans, child: SpanRecord, parent_process: SpanRecord) -> SpanRecord:
    """`child`'s process span hangs under a CLIENT span recorded in `parent_process`'s file."""
    spawn = spans.parent(child)
    assert spawn is not None, f"parent of {child.attributes['process.command_args']} not recorded"
    while spawn.name == "process" and spawn.file != parent_process.file:  # forked then exec'd
        spawn = spans.parent(spawn)
    if spawn.name == "exec":
        spawn = spans.parent(spans.parent(spawn))  # exec <- forked child's process <- fork span
    assert spawn.kind == "CLIENT" and spawn.category == "subprocess", spawn
    assert spawn.file == parent_process.file
    return spawn


@pytest.mark.parametrize("python", PYTHONS)  # 3.13's Popen hands env=None to os.posix_spawn
@pytest.mark.parametrize("how", HOWS)
def test_every_way_of_starting_a_process_joins_one_trace(traced, tmp_path, how, python):
    traced.executable = python
    (tmp_path / "tests_leaf_module.py").write_text("import sys; print('leaf', sys.argv[1])\n")
    result = traced.python(spawner(how, "L1"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert b"leaf L1" in result.stdout
    spans = traced.spans()
    assert len(spans.trace_ids()) == 1
    root = [p for p in spans.processes() if p.parent_span_id == ""]
    assert len(root) == 1
    leaf = [p for p in spans.processes() if "L1" in p.attributes["process.command_args"]]
    assert leaf, [p.attributes["process.command_args"] for p in spans.processes()]
    spawn = assert_child_of_spawn(spans, leaf[-1], root[0])
    assert spawn.end_ns is not None and spawn.end_ns >= leaf[-1].end_ns - 1_000_000
    # never before the call that started it (through a shell, the kernel's start is in 10 ms ticks, rounded down)
    assert leaf[-1].start_ns >= spawn.start_ns, (how, leaf[-1].attributes["process.start.source"])
    assert not [s for s in spans.spans if s.incomplete]
    assert spans.diagnostics == []


def test_three_levels_deep_mixing_ways(traced, tmp_path):
    """python -> bash -> python (multiprocessing spawn) -> python (posix_spawn) -> leaf."""
    level3 = spawner("posix_spawn", "deep")
    level2 = ("import multiprocessing as mp, subprocess, sys\n"
              "def work(code):\n    subprocess.run([sys.executable, '-c', code], check=True)\n"
              "if __name__ == '__main__':\n"
              "    mp.set_start_method('spawn')\n"
              f"    p = mp.Process(target=work, args=({level3!r},)); p.start(); p.join()\n"
              "    sys.exit(p.exitcode)\n")
    script = tmp_path / "level2.py"
    script.write_text(level2)
    level1 = f"import subprocess, sys; subprocess.run(['bash', '-c', sys.executable + ' {script}'], check=True)"
    result = traced.python(level1, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"leaf deep\n"
    assert result.stderr == b""
    spans = traced.spans()
    assert len(spans.trace_ids()) == 1
    leaf = spans.process_of("deep")
    chain = []
    span = leaf
    while span is not None:
        chain.append((span.name, span.kind))
        span = spans.parent(span)
    processes = [name for name, _ in chain if name == "process"]
    assert len(processes) >= 4, chain  # leaf, posix_spawn caller (mp child), level2, level1
    assert chain[-1] == ("process", "INTERNAL")


@pytest.mark.parametrize("method", ["fork", "spawn", "forkserver"])
def test_multiprocessing_children_sit_under_their_start_span(traced, tmp_path, method):
    code = ("import multiprocessing as mp, os\n"
            "def work(n):\n    print('child', n, flush=True)\n"
            "if __name__ == '__main__':\n"
            f"    mp.set_start_method({method!r})\n"
            "    procs = [mp.Process(target=work, args=(i,)) for i in range(2)]\n"
            "    [p.start() for p in procs]; [p.join() for p in procs]\n"
            "    print('codes', [p.exitcode for p in procs])\n")
    script = tmp_path / "mp_main.py"
    script.write_text(code)
    result = traced.run([sys.executable, str(script)], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stderr == b""
    assert b"codes [0, 0]" in result.stdout
    spans = traced.spans()
    assert len(spans.trace_ids()) == 1
    starts = [s for s in spans.named("multiprocessing")]
    assert len(starts) == 2
    (main,) = [p for p in spans.processes() if p.parent_span_id == ""]
    for start in starts:
        assert start.parent_span_id == main.span_id
        assert start.attributes["process.exit.code"] == 0
        # The first start may also parent the helpers it launches (resource tracker, fork server).
        workers = [p for p in spans.children(start) if p.name == "process"
                   and p.attributes["process.pid"] == start.attributes["process.pid"]]
        assert len(workers) == 1, (method, [(s.name, s.file) for s in spans.children(start)])


def test_exec_replaces_the_image_and_the_new_image_is_its_child(traced):
    code = "import os, sys; print('before', flush=True); os.execv(sys.executable, [sys.executable, '-c', 'print(\"after\")'])"
    result = traced.python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"before\nafter\n" and result.stderr == b""
    spans = traced.spans()
    first, second = sorted(spans.processes(), key=lambda s: s.start_ns)
    assert first.attributes["process.pid"] == second.attributes["process.pid"]
    exec_span = spans.parent(second)
    assert exec_span.name == "exec" and exec_span.parent_span_id == first.span_id
    assert first.attributes.get("process.exec.replaced") is True
    assert second.start_ns >= exec_span.start_ns


def test_the_subprocess_hooks_load_at_the_first_spawn_not_at_the_import(traced):
    """Importing subprocess (most libraries do) loads no spawn hook; the first Popen installs them and
    is a span like any other, reaped with its exit code."""
    code = ("import subprocess, sys\n"
            "print([m for m in ('subprocess_', 'spawn') if 'selfopt_trace_agent.hooks.' + m in sys.modules])\n"
            "subprocess.run([sys.executable, '-c', 'pass'], check=True)\n"
            "print(subprocess.Popen._execute_child.__name__, hasattr(subprocess.Popen._execute_child, '__wrapped__'))\n")
    result = traced.python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"[]\n_execute_child True\n", b"")
    spans = traced.spans()
    [span] = spans.named("subprocess")
    assert span.attributes["process.exit.code"] == 0
    assert [p.parent_span_id for p in spans.processes()].count(span.span_id) == 1


def test_the_multiprocessing_hooks_load_at_the_first_start_not_at_the_import(traced, tmp_path):
    """Importing multiprocessing (pytest's plugins do) loads no hook of it; the first Process.start
    installs them, and its Process is a span with its child under it, as with the hooks loaded first."""
    code = ("import multiprocessing as mp, sys\n"
            "import multiprocessing.spawn, multiprocessing.util\n"
            "def work():\n    pass\n"
            "if __name__ == '__main__':\n"
            "    print([m for m in ('multiprocessing_', 'spawn', 'os_') if 'selfopt_trace_agent.hooks.' + m in sys.modules])\n"
            "    mp.set_start_method('spawn')\n"
            "    p = mp.Process(target=work); p.start(); p.join()\n"
            "    print(p.exitcode, hasattr(mp.process.BaseProcess.start, '__selfopt_trace__'))\n")
    script = tmp_path / "mp_first.py"
    script.write_text(code)
    result = traced.run([sys.executable, str(script)], cwd=tmp_path)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"[]\n0 True\n", b"")
    spans = traced.spans()
    [start] = spans.named("multiprocessing")
    assert start.attributes["process.exit.code"] == 0
    assert [p.attributes["process.pid"] for p in spans.children(start) if p.name == "process"].count(
        start.attributes["process.pid"]) == 1


def test_incoming_traceparent_is_joined(traced):
    parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    result = traced.python("import subprocess, sys; subprocess.run([sys.executable, '-c', 'pass'])",
                           extra_env={"TRACEPARENT": parent})
    assert result.returncode == 0, result.stderr
    spans = traced.spans()
    assert spans.trace_ids() == {"0af7651916cd43dd8448eb211c80319c"}
    roots = [p for p in spans.processes() if p.parent_span_id == "b7ad6b7169203331"]
    assert len(roots) == 1


def test_explicit_env_is_merged_not_replaced(traced):
    code = ("import subprocess, sys\n"
            "subprocess.run([sys.executable, '-c', 'import os; print(os.environ[\"ONLY\"], \"PATH\" in os.environ)'],"
            " env={'ONLY': 'me'}, check=True)")
    result = traced.python(code)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"me False\n"  # the program's env is what it asked for, plus tracing
    spans = traced.spans()
    assert len(spans.processes()) == 2 and len(spans.trace_ids()) == 1


def test_make_passes_the_context_on(traced, tmp_path):
    if shutil.which("make") is None:
        pytest.skip("GNU make is not installed on this machine")
    (tmp_path / "Makefile").write_text(f"all:\n\t{sys.executable} -c \"print('from make')\"\n")
    result = traced.python("import subprocess; subprocess.run(['make', '-s'], check=True)", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"from make\n"
    spans = traced.spans()
    child = spans.process_of("print('from make')")
    assert spans.parent(child).name == "subprocess"


def test_a_child_with_a_run_of_its_own_keeps_it_and_joins_the_trace(traced, tmp_path):
    inner = tmp_path / "inner-run"
    code = ("import os, subprocess, sys\n"
            f"env = dict(os.environ, SELFOPT_TRACE_DIR={str(inner)!r})\n"
            "subprocess.run([sys.executable, '-c', 'pass'], env=env, check=True)\n")
    result = traced.python(code)
    assert result.returncode == 0 and result.stderr == b""
    from tests.spanfiles import read_run

    outer_spans, inner_spans = traced.spans(), read_run(inner)
    assert len(outer_spans.processes()) == 1 and len(inner_spans.processes()) == 1
    spawn, = outer_spans.named("subprocess")
    assert inner_spans.processes()[0].parent_span_id == spawn.span_id
    assert inner_spans.trace_ids() == outer_spans.trace_ids()


def test_a_fork_on_another_thread_while_subprocess_spawns_is_traced(traced):
    """subprocess's own fork of a child that execs at once is no process of ours; a fork on another
    thread meanwhile is (the flag was one for the whole process: that child went untraced)."""
    code = """
import os, subprocess, threading, time
slow_exec = threading.Thread(target=subprocess.run, args=(["true"],), kwargs={"preexec_fn": lambda: time.sleep(0.5)})
slow_exec.start()
time.sleep(0.2)  # that thread waits in Popen._execute_child for its child to exec
pid = os.fork()
if pid == 0:
    os._exit(0)
os.waitpid(pid, 0)
slow_exec.join()
"""
    result = traced.python(code)
    assert result.returncode == 0, result.stderr
    spans = traced.spans()
    assert [p.attributes["process.pid"] for p in spans.processes()
            if p.attributes["process.start.source"] == "fork"] != []
    assert [s for s in spans.spans if s.name == "subprocess"]  # and the spawn's child is no fork of ours
    assert len(spans.processes()) == 2
