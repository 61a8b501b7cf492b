"""A real Docker engine and a Python image for the container tests; they skip, saying why, without one.

`scripts/docker-test-setup.sh` starts an engine and builds a local image on a machine with no
registry; the image comes from $SELFOPT_TRACE_TEST_IMAGE (default python:3.12-slim, pulled if needed).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

IMAGE = os.environ.get("SELFOPT_TRACE_TEST_IMAGE", "python:3.12-slim")
DERIVED = "selfopt-trace-test"


def docker(*args: str, timeout: float = 120, check: bool = True, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout, check=check, **kwargs)


def _unavailable() -> str | None:
    try:
        info = docker("info", "--format", "{{.ServerVersion}}", timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no Docker engine on this machine ({exc}); scripts/docker-test-setup.sh starts one"
    if info.returncode != 0:
        return f"no Docker engine answers ({info.stderr.strip()[:200]}); scripts/docker-test-setup.sh starts one"
    if docker("image", "inspect", IMAGE, check=False).returncode != 0:
        pulled = docker("pull", IMAGE, check=False, timeout=300)
        if pulled.returncode != 0:
            return (f"image {IMAGE} is not present and cannot be pulled (no registry reachable?); "
                    "set SELFOPT_TRACE_TEST_IMAGE, e.g. to the image scripts/docker-test-setup.sh builds")
    return None


@pytest.fixture(scope="session")
def image() -> str:
    reason = _unavailable()
    if reason:
        pytest.skip(reason)
    return IMAGE


def build(tag: str, dockerfile: str, files: dict[str, str], tmp: Path) -> str:
    context = tmp / tag.replace(":", "_").replace("/", "_")
    context.mkdir(parents=True, exist_ok=True)
    (context / "Dockerfile").write_text(textwrap.dedent(dockerfile))
    for name, text in files.items():
        (context / name).write_text(textwrap.dedent(text))
    docker("build", "--network", "host", "-q", "-t", tag, str(context), timeout=300)
    return tag


@pytest.fixture(scope="session")
def app_image(image: str, tmp_path_factory) -> str:
    """The image with its own ENV PYTHONPATH (a module the program imports from it)."""
    return build(f"{DERIVED}/app:1", f"""
        FROM {image}
        COPY appmod.py /opt/app/appmod.py
        ENV PYTHONPATH=/opt/app
        """, {"appmod.py": "VALUE = 'from-image-pythonpath'\n"}, tmp_path_factory.mktemp("images"))


@pytest.fixture(scope="session")
def no_python_image(image: str, tmp_path_factory) -> str:
    """The image with every Python interpreter removed: a non-Python image."""
    return build(f"{DERIVED}/nopython:1", f"""
        FROM {image}
        RUN rm -f /usr/bin/python* /usr/local/bin/python* && ! command -v python3
        """, {}, tmp_path_factory.mktemp("images"))


def run_args(image: str, *command: str, flags: tuple = ()) -> list[str]:
    return ["docker", "run", "--rm", "--network", "host", *flags, image, *command]


def host_program(argv: list[str], **run_kwargs) -> str:
    """Python code for the traced host: run argv, then print its exit code, stdout and stderr as JSON."""
    return textwrap.dedent(f"""
        import json, subprocess
        r = subprocess.run({argv!r}, capture_output=True, text=True, **{run_kwargs!r})
        print(json.dumps([r.returncode, r.stdout, r.stderr]))
        """)


def result_of(completed: subprocess.CompletedProcess) -> tuple[int, str, str]:
    assert completed.returncode == 0, completed.stderr
    assert completed.stderr == ""
    code, out, err = json.loads(completed.stdout)
    return code, out, err


def untraced(code: str, timeout: float = 180, **extra_env: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SELFOPT_TRACE_") and k != "TRACEPARENT"}
    env.update(extra_env)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=timeout)


def traced_python(traced, code: str, **kwargs) -> subprocess.CompletedProcess:
    """`code` run traced (tests/conftest.py's `traced` fixture), its output as text."""
    return traced.python(code, text=True, timeout=180, **kwargs)
