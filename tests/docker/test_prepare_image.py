"""`selfopt-trace prepare --image` (interpreters.prepare_image): the agent made ready for a container
image's Python, which `run` cannot find on the host. Real engine, real image: a traced host process
runs a container of it, with the agent's bootstrap a copy nothing was prepared for."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from selfopt_trace import interpreters
from tests.cli.test_interpreters import agent_unprepared, unprepared_copy
from tests.conftest import Traced
from tests.docker.conftest import host_program, result_of, run_args


def test_a_container_s_python_prepared_by_image_runs_the_agent_s_bundles(image: str, tmp_path: Path) -> None:
    """Before: the container's process compiled the agent from the read-only bootstrap (~20 ms a
    process) and said how to prepare it, naming the image; after `prepare --image`, run in a
    container of the image as the host's user, neither it nor the host's process (the same Python
    version here) finds anything missing, and what it wrote is the host user's."""
    bootstrap = unprepared_copy(tmp_path)
    env = {"PYTHONPATH": str(bootstrap), "SELFOPT_TRACE_BOOTSTRAP": str(bootstrap)}
    program = host_program(run_args(image, "python3", "-c", "print('in container')"))
    before = Traced(tmp_path / "before")
    assert result_of(before.python(program, text=True, timeout=180, extra_env=env)) == (0, "in container\n", "")
    messages = agent_unprepared(before)
    assert len(messages) == 2, messages  # the host's process, the container's
    assert [m for m in messages if m.endswith(f"in {image}) has no bundle of the agent made for it: "
                                              f"`selfopt-trace prepare --image {image}`")], messages

    assert interpreters.prepare_image(image, bootstrap) == ""
    made = list((bootstrap / "selfopt_trace_agent" / "__pycache__").glob("*.bundle"))
    assert made and {path.stat().st_uid for path in made} == {os.getuid()}
    after = Traced(tmp_path / "after")
    assert result_of(after.python(program, text=True, timeout=180, extra_env=env)) == (0, "in container\n", "")
    assert agent_unprepared(after) == []
    assert len(after.spans().processes()) == 2


def test_an_image_without_python_is_named_in_the_error(no_python_image: str, tmp_path: Path) -> None:
    error = interpreters.prepare_image(no_python_image, unprepared_copy(tmp_path))
    assert error.startswith(f"{no_python_image}: ") and "python3" in error, error
    assert interpreters.prepare_image("selfopt-trace-test/no-such-image:0", unprepared_copy(tmp_path / "x")).startswith(
        "selfopt-trace-test/no-such-image:0: ")


def test_run_prepares_the_image_cmd_starts_once_per_image(image: str, tmp_path: Path) -> None:
    """`run -- docker run ... IMAGE ...`: `run` sees the image in CMD and prepares the agent for its
    Python before CMD starts (interpreters.image_named_by), once: what it learnt is kept in
    interpreters.json, and the next run starts no container for it. An install of its own (a copy of
    the package) so that this run is the first to see the image."""
    import json
    import shutil
    import subprocess

    from tests.cli.conftest import REPO, clean_environ

    install = tmp_path / "install"
    shutil.copytree(REPO / "selfopt_trace", install / "selfopt_trace",
                    ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "queries", install / "queries")
    env = clean_environ(PYTHONPATH=str(install), SELFOPT_TRACE_HOME=str(tmp_path / "home"))
    argv = [sys.executable, "-m", "selfopt_trace", "run", "--json", "--", *run_args(image, "python3", "-c", "pass")]
    first = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    assert not [note for note in json.loads(first.stdout)["notes"] if "selfopt-trace prepare" in note]
    bootstrap = install / "selfopt_trace" / "bootstrap"
    tag = subprocess.run(["docker", "run", "--rm", "--network", "none", image, "python3", "-c",
                          "import sys; print(sys.implementation.cache_tag)"], capture_output=True, text=True).stdout.strip()
    assert interpreters._known(bootstrap)["docker image " + image]["tag"] == tag
    kept = interpreters._cache_path(bootstrap).stat().st_mtime_ns
    second = subprocess.run(argv, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stderr
    assert interpreters._cache_path(bootstrap).stat().st_mtime_ns == kept


def test_an_image_prepared_by_prepare_is_kept_and_run_does_not_prepare_it_again(image: str, tmp_path: Path) -> None:
    """`prepare --image IMAGE` records the image in interpreters.json as `run` does: the next
    `run -- docker run IMAGE ...` finds it there and starts no container to prepare it. An install
    of its own (a copy of the package), so that nothing was prepared for the image before."""
    import shutil
    import subprocess

    from tests.cli.conftest import REPO, clean_environ

    install = tmp_path / "install"
    shutil.copytree(REPO / "selfopt_trace", install / "selfopt_trace", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "queries", install / "queries")
    env = clean_environ(PYTHONPATH=str(install), SELFOPT_TRACE_HOME=str(tmp_path / "home"))
    prepared = subprocess.run([sys.executable, "-m", "selfopt_trace", "prepare", "--image", image], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=300)
    assert prepared.returncode == 0, prepared.stderr
    bootstrap = install / "selfopt_trace" / "bootstrap"
    facts = interpreters._known(bootstrap)["docker image " + image]
    assert facts["tag"] and facts["twin_suffix"] is None, facts
    kept = interpreters._cache_path(bootstrap).stat().st_mtime_ns
    run = subprocess.run([sys.executable, "-m", "selfopt_trace", "run", "-q", "--", *run_args(image, "python3", "-c", "pass")],
                         env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert interpreters._cache_path(bootstrap).stat().st_mtime_ns == kept  # nothing prepared, nothing rewritten
