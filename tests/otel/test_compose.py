"""docker/compose.yaml with the local images: a span sent to the collector over OTLP shows in Jaeger and in
the collector's files. Skips, saying why, without an engine or a compose CLI."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.otel.conftest import BUILD_SCRIPT, ROOT, OtelBinaries, accepts, free_port, http_get_json
from tests.otel.test_components import exported_span_ids, send_span, wait_for


def compose_cli(tmp_path: Path) -> str | None:
    """A `docker_command_path` for testcontainers' DockerCompose (it runs `<that> compose ...`)."""
    if subprocess.run(["docker", "compose", "version"], capture_output=True).returncode == 0:
        return "docker"
    if shutil.which("docker-compose") is None:
        return None
    # Compose v1 (Debian's docker-compose): the subcommands used here (up -d, logs, down) are the same.
    shim = tmp_path / "docker-compose-v1"
    shim.write_text('#!/bin/sh\n[ "$1" = compose ] && shift\nexec docker-compose "$@"\n')
    shim.chmod(0o755)
    return str(shim)


def engine_unavailable() -> str | None:
    try:
        info = subprocess.run(["docker", "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True,
                              timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"no Docker engine on this machine ({exc}); scripts/docker-test-setup.sh starts one"
    if info.returncode != 0:
        return f"no Docker engine answers ({info.stderr.strip()[:200]}); scripts/docker-test-setup.sh starts one"
    return None


class PortTaken(Exception):
    """A service of the stack could not bind its port: another process took it after free_port."""


@pytest.fixture
def compose_stack(otel_binaries: OtelBinaries, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    from testcontainers.compose import DockerCompose

    reason = engine_unavailable()
    if reason:
        pytest.skip(reason)
    cli = compose_cli(tmp_path)
    if cli is None:
        pytest.skip("no compose CLI (docker compose or docker-compose); scripts/docker-test-setup.sh installs one")
    images = subprocess.run(["bash", str(BUILD_SCRIPT), "--images"], capture_output=True, text=True, timeout=600)
    assert images.returncode == 0, images.stderr
    files = tmp_path / "collector"
    files.mkdir()
    files.chmod(0o777)  # the collector runs as uid 10001
    monkeypatch.setenv("SELFOPT_TRACE_COLLECTOR_DIR", str(files))
    monkeypatch.setenv("COMPOSE_PROJECT_NAME", f"selfopt-otel-{os.getpid()}")
    for attempt in range(3):  # a port found free may be taken before the stack binds it (start_with_free_ports)
        ports = {name: f"127.0.0.1:{free_port()}" for name in (
            "SELFOPT_TRACE_OTLP_GRPC_ENDPOINT", "SELFOPT_TRACE_OTLP_HTTP_ENDPOINT",
            "SELFOPT_TRACE_JAEGER_OTLP_GRPC_ENDPOINT", "SELFOPT_TRACE_JAEGER_OTLP_HTTP_ENDPOINT",
            "SELFOPT_TRACE_JAEGER_QUERY_ENDPOINT", "SELFOPT_TRACE_JAEGER_QUERY_GRPC_ENDPOINT")}
        for name, value in ports.items():
            monkeypatch.setenv(name, value)
        compose = DockerCompose(ROOT / "docker", compose_file_name="compose.yaml", wait=False, docker_command_path=cli)
        compose.start()
        query = "http://" + ports["SELFOPT_TRACE_JAEGER_QUERY_ENDPOINT"]

        def up() -> bool:
            if (http_get_json(f"{query}/api/services")[0] == 200 and accepts(ports["SELFOPT_TRACE_OTLP_GRPC_ENDPOINT"])
                    and accepts(ports["SELFOPT_TRACE_OTLP_HTTP_ENDPOINT"])):
                return True
            if "address already in use" in "".join(compose.get_logs()):
                raise PortTaken
            return False

        try:
            wait_for(up, "Jaeger API and collector receivers from compose", timeout=90)
            break
        except (AssertionError, PortTaken) as exc:
            stdout, stderr = compose.get_logs()
            compose.stop()
            if attempt == 2 or not isinstance(exc, PortTaken):
                print(stdout[-4000:], stderr[-4000:])
                raise
    try:
        yield {"query_url": query, "files": files, **ports}
    finally:
        stdout, stderr = compose.get_logs()
        print(stdout[-4000:], stderr[-4000:])
        compose.stop()


def test_compose_runs_the_collector_into_jaeger_and_files(compose_stack: dict) -> None:
    trace_id, span_id = send_span("http://" + compose_stack["SELFOPT_TRACE_OTLP_HTTP_ENDPOINT"], "http", "compose-test",
                                  "through compose")

    def in_jaeger() -> dict | None:
        status, body = http_get_json(f"{compose_stack['query_url']}/api/traces/{trace_id}")
        return body if status == 200 and body and body.get("data") else None

    [trace] = wait_for(in_jaeger, "the span in Jaeger")["data"]
    [span] = trace["spans"]
    assert (span["spanID"], span["operationName"]) == (span_id, "through compose")
    assert trace["processes"][span["processID"]]["serviceName"] == "compose-test"
    wait_for(lambda: span_id in exported_span_ids(compose_stack["files"]), "the span in the collector's file")
