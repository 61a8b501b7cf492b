"""Process names (docs/agent.md, "Process names"): one rule, what a person calls the process."""

from __future__ import annotations

import sys

import pytest

from selfopt_trace.bootstrap.selfopt_trace_agent.process import CODE_CHARS, command_name, split_command

PY = "/venv/bin/python3.11"


@pytest.mark.parametrize("args, name", [
    ([PY, "app.py", "--x"], "app.py"),
    ([PY, "-m", "pytest", "-q"], "pytest"),
    ([PY, "-X", "importtime", "-W", "ignore", "-m", "pytest"], "pytest"),
    ([PY, "-um", "pytest"], "pytest"),
    ([PY, "-mpytest"], "pytest"),
    ([PY, "/venv/bin/codeflash", "--file", "f.py"], "codeflash"),
    ([PY, "-c", "import sys; sys.path.insert(0, '/x'); from tool.cli import main; main()"],
     "python -c from tool.cli import main"),
    ([PY, "-c", "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, pipe_handle=7)",
      "--multiprocessing-fork"], "python -c from multiprocessing.spawn import spawn_main"),
    ([PY, "-c", "import json, decimal"], "python -c import json, decimal"),
    ([PY, "-c", "# a comment\n\nprint('a;b'); x = 1"], "python -c print('a;b')"),
    ([PY, "-I", "-c", "pass"], "python -c pass"),
    ([PY, "/site/jedi/inference/compiled/subprocess/__main__.py", "3.11"], "subprocess/__main__.py"),
    ([PY], "python3.11"),
    ([PY, "-"], "python3.11"),
    (["sh", "-c", "make -j4 && ./check"], "sh -c make -j4 && ./check"),
    (["/usr/bin/git", "status", "--short"], "git status"),
    (["git", "-C", "/repo", "status"], "git"),
    (["python3", "-m", "json.tool"], "json.tool"),
])
def test_the_rule(args, name):
    assert command_name(args) == name


def test_a_long_program_is_cut_and_the_arguments_after_it_are_the_rest():
    name, rest = split_command([PY, "-c", "x = " + "1 + " * 100 + "1", "a", "b"], python=True)
    assert len(name) == len("python -c ") + CODE_CHARS and name.endswith("…")
    assert rest == ["a", "b"]
    assert split_command([PY, "-m", "pytest", "-q", "t.py"]) == ("pytest", ["-q", "t.py"])


def test_every_kind_of_c_child_of_multiprocessing_has_a_name_of_its_own(traced):
    """spawn and forkserver children, the forkserver and the resource tracker: four kinds of `-c`."""
    code = ("import multiprocessing as mp\n"
            "def f(): pass\n"
            "if __name__ == '__main__':\n"
            "    for method in ('spawn', 'forkserver'):\n"
            "        p = mp.get_context(method).Process(target=f); p.start(); p.join()\n")
    script = traced.tmp_path / "pool.py"
    script.write_text(code)
    result = traced.run([sys.executable, str(script)])
    assert result.returncode == 0, result.stderr
    processes = traced.spans().processes()
    names = {p.attributes["process.command"] for p in processes}
    services = {h["resource"]["service.name"] for h in traced.spans().headers}
    assert {"pool.py", "python -c from multiprocessing.spawn import spawn_main",
            "python -c from multiprocessing.resource_tracker import main",
            "python -c from multiprocessing.forkserver import main"} <= names, names
    assert names == services  # service.name is the same name
