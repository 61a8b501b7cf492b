"""docs/docker.md's commands as a reader would copy them: run against the real CLI and binaries."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.cli.conftest import clean_environ
from tests.otel.conftest import CONFIGS, ROOT, OtelBinaries

DOC = (ROOT / "docs" / "docker.md").read_text()


def shell_block(after: str) -> str:
    """The first ```bash block after the line `after`."""
    begin = DOC.index("```bash\n", DOC.index(after)) + len("```bash\n")
    return DOC[begin:DOC.index("\n```", begin)]


def default_ports(config: Path) -> set[int]:
    """The ports a configuration listens on by default (`${env:NAME:-host:port}`)."""
    return {int(port) for port in re.findall(r"\$\{env:\w+:-[\w.]+:(\d+)\}", config.read_text())}


def test_the_documented_query_docker_command_runs(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = clean_environ(SELFOPT_TRACE_HOME=str(home))
    done = subprocess.run([sys.executable, "-m", "selfopt_trace", "run", "--run-id", "doc", "-q", "--export", "never",
                           "--", sys.executable, "-c", "pass"], env=env, cwd=tmp_path, capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    commands = re.findall(r"`(selfopt-trace query docker[^`]*)`", DOC)
    assert commands
    for command in commands:
        argv = shlex.split(command.replace("RUN", "doc"))[1:]
        done = subprocess.run([sys.executable, "-m", "selfopt_trace", *argv], env=env, cwd=tmp_path,
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (command, done.stderr)


def test_the_without_docker_block_listens_on_each_port_once() -> None:
    """`selfopt-trace collector` beside Jaeger: not on a port Jaeger's configuration takes."""
    block = shell_block("Without Docker")
    assert "jaeger.yaml" in block
    taken = default_ports(CONFIGS / "jaeger.yaml")
    ports = [int(port) for port in re.findall(r"selfopt-trace collector .*--port (\d+)", block)]
    assert ports and not set(ports) & taken, (ports, taken)
    # and otelcol-selfopt.yaml is pointed at that port
    assert f"SELFOPT_TRACE_COLLECTOR_ENDPOINT=http://127.0.0.1:{ports[0]}" in block


def test_the_documented_validate_command_passes(otel_binaries: OtelBinaries) -> None:
    """Each `otelcol validate` line of the block, with the variables it sets, as a shell runs it."""
    lines = [line for line in shell_block("Without Docker").splitlines() if " validate " in line]
    assert lines
    base = {k: v for k, v in os.environ.items() if not k.startswith("SELFOPT_TRACE_")}
    for line in lines:
        command = line.split("#", 1)[0].replace("$bin/", f"{otel_binaries.otelcol.parent}/")
        done = subprocess.run(["sh", "-c", command], cwd=ROOT, env=base, capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, (line, done.stderr[-1000:])


def test_every_variable_compose_reads_is_documented() -> None:
    compose = (ROOT / "docker" / "compose.yaml").read_text()
    variables = set(re.findall(r"\$\{(\w+)", compose)) | set(re.findall(r"^\s+- (SELFOPT_\w+)$", compose, re.M))
    assert "SELFOPT_COLLECTOR_USER" in variables
    assert not {name for name in variables if name not in DOC}, variables
