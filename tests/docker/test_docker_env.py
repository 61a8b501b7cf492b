"""`selfopt-trace docker-env`: the manual injection, in its three formats."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from selfopt_trace.docker_env import BOOTSTRAP_DIR

ROOT = Path(__file__).resolve().parents[2]


def docker_env(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SELFOPT_TRACE_") and k != "TRACEPARENT"}
    return subprocess.run([sys.executable, "-m", "selfopt_trace", "docker-env", *args], capture_output=True, text=True,
                          cwd=ROOT, env={**base, **(env or {})})


def test_compose_fragment_and_env_file(tmp_path):
    run_dir = tmp_path / "r1"
    compose = docker_env("--format", "compose", "--run-dir", str(run_dir), "--name", "svc", "--service", "docflash")
    assert compose.returncode == 0 and compose.stderr == ""
    fragment = yaml.safe_load(compose.stdout)
    assert fragment["environment"]["SELFOPT_TRACE_DIR"] == "/selfopt-trace/run"
    assert fragment["environment"]["SELFOPT_TRACE_RUN_ID"] == "r1"
    assert fragment["environment"]["SELFOPT_TRACE_SERVICE"] == "docflash"
    assert fragment["environment"]["SELFOPT_TRACE_CONTAINER_NAME"] == "svc"
    assert fragment["environment"]["PYTHONPATH"] == "/selfopt-trace/bootstrap"
    assert fragment["volumes"] == [
        {"type": "bind", "source": str(BOOTSTRAP_DIR), "target": "/selfopt-trace/bootstrap", "read_only": True},
        {"type": "bind", "source": str(run_dir), "target": "/selfopt-trace/run", "read_only": False},
    ]
    assert oct((run_dir / "spans").stat().st_mode & 0o777) == oct(0o777)

    env_file = docker_env("--format", "env-file", "--run-dir", str(run_dir))
    lines = env_file.stdout.splitlines()
    assert lines[0].startswith("# docker run --env-file THIS_FILE -v ") and f"{run_dir}:/selfopt-trace/run" in lines[0]
    assert "SELFOPT_TRACE_BOOTSTRAP=/selfopt-trace/bootstrap" in lines[1:]


def test_inside_a_traced_process_the_current_run_and_span(tmp_path):
    traceparent = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"
    out = docker_env(env={"SELFOPT_TRACE_DIR": str(tmp_path / "current"), "SELFOPT_TRACE_RUN_ID": "current-id",
                          "TRACEPARENT": traceparent})
    assert out.returncode == 0
    assert f"-e TRACEPARENT={traceparent}" in out.stdout and "-e SELFOPT_TRACE_RUN_ID=current-id" in out.stdout
    assert f"-v {tmp_path / 'current'}:/selfopt-trace/run" in out.stdout


def test_bad_format_and_path_with_a_colon(tmp_path):
    bad = docker_env("--format", "yaml", "--run-dir", str(tmp_path / "r"))
    assert bad.returncode == 2 and "unknown format 'yaml'" in bad.stderr and not (tmp_path / "r").exists()
    odd = docker_env("--run-dir", str(tmp_path / "a:b"))
    assert f" --mount type=bind,source={tmp_path / 'a:b'},target=/selfopt-trace/run" in odd.stdout
