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
