"""The breakdown of a Docker SDK containers.run() against a real engine: the SDK's HTTP calls to the
engine are the container's time around its process, never an untraced HTTP server's beside it, and
no category goes negative to make the total add up."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path

import pytest

from tests.cli.conftest import Cli

pytest.importorskip("docker", reason="the Docker SDK for Python (package `docker`) is not installed")


def breakdown_and_docker(cli: Cli, run_id: str) -> tuple[dict[str, float], list[dict]]:
    rows = {}
    for query in ("breakdown", "docker"):
        done = cli("query", query, "--run", run_id, "-f", "json")
        assert done.returncode == 0, done.stderr
        rows[query] = json.loads(done.stdout)
    return {r["category"]: r["wall_ms"] for r in rows["breakdown"]}, rows["docker"]


@pytest.mark.parametrize("detach", [False, True])
def test_sdk_containers_run_is_container_start_up_around_its_process(image: str, tmp_path: Path,
                                                                     detach: bool) -> None:
    program = textwrap.dedent(f"""
        import docker
        client = docker.from_env()
        argv = ["python3", "-c", "import time; time.sleep(0.5)"]
        if {detach!r}:
            container = client.containers.run({image!r}, argv, network_mode="host", detach=True)
            print(container.wait()["StatusCode"])
            container.remove()
        else:
            print(client.containers.run({image!r}, argv, network_mode="host", remove=True) == b"")
        """)
    cli = Cli(tmp_path)
    done = cli("run", "--run-id", "sdk", "--quiet", "--", sys.executable, "-c", program, timeout=180)
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().split() == ["0" if detach else "True"]
    wall, docker_rows = breakdown_and_docker(cli, "sdk")
    negative = {c: ms for c, ms in wall.items() if ms < 0}
    assert not negative, wall
    [container] = [r for r in docker_rows if r["row"] == "container"]
    assert container["traced"] and container["detached"] is detach, container
    # the container's sleep is the run's, once; the calls waiting on the container do not take it again
    assert 495 <= wall["sleeps"] <= 505, wall
    assert wall["untraced http servers"] < 100, wall  # GET /version and the like, not POST /wait
    # container start-up: the engine's start-up before the container's process and its teardown
    # after it (`query docker`'s figures: the detached one's end is the wait's and the removal's)
    outside_process = container["engine_startup_ms"] + (container["teardown_ms"] or 0)
    assert outside_process * 0.9 - 5 <= wall["container start-up"], (wall, container)
    if not detach:
        assert wall["container start-up"] <= outside_process + 5, (wall, container)
    assert abs(sum(ms for c, ms in wall.items() if c != "total") - wall["total"]) < 0.05
