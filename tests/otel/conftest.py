"""The real OpenTelemetry Collector and Jaeger v2 as processes on free 127.0.0.1 ports.

`collectors/build.sh` builds both (cached; scripts/test runs it first); without Go, or when the build
fails, the tests that need them skip, saying why. Fixtures:

- `otel_binaries` (session): `.otelcol`, `.jaeger` paths.
- `jaeger`: a Jaeger v2 (collectors/configs/jaeger.yaml, in-memory) per test, ready to query.
- `start_collector(config, env=None, cwd=None)`: an otelcol with the given configuration, its OTLP
  receivers on free ports (through the SELFOPT_TRACE_OTLP_*_ENDPOINT variables every shipped
  configuration reads), in `cwd` (default: a new folder under tmp_path).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = ROOT / "collectors" / "configs"
BUILD_SCRIPT = ROOT / "collectors" / "build.sh"
START_TIMEOUT_S = 60.0  # a loaded 2-core machine: Jaeger and otelcol take ~1 s when idle
BUILD_TIMEOUT_S = 3600.0


@dataclass(frozen=True)
class OtelBinaries:
    otelcol: Path
    jaeger: Path


def build_binaries() -> OtelBinaries | str:
    """The built binaries, or why there are none."""
    if shutil.which("go") is None:
        return "Go is not installed: collectors/build.sh needs it to build the Collector and Jaeger (Go >= 1.26)"
    try:
        built = subprocess.run(["bash", str(BUILD_SCRIPT)], capture_output=True, text=True, timeout=BUILD_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"collectors/build.sh did not finish within {BUILD_TIMEOUT_S:.0f} s"
    paths = built.stdout.split()
    if built.returncode != 0 or len(paths) != 2:
        return f"collectors/build.sh failed (exit {built.returncode}): {built.stderr.strip()[-600:]}"
    return OtelBinaries(otelcol=Path(paths[0]), jaeger=Path(paths[1]))


@pytest.fixture(scope="session")
def otel_binaries() -> OtelBinaries:
    binaries = build_binaries()
    if isinstance(binaries, str):
        pytest.skip(binaries)
    return binaries


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def accepts(address: str) -> bool:
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def http_get_json(url: str, timeout: float = 5.0) -> tuple[int, dict | None]:
    """(status, JSON body); status 0 when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, None
    except (urllib.error.URLError, OSError):
        return 0, None


class Server:
    """A binary run with a configuration until stop(), in `cwd`; its output goes to `log`."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> None:
        self.argv, self.log, self.cwd = argv, log, cwd
        with log.open("wb") as out:
            self.process = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, start_new_session=True)

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_until(self, ready: Callable[[], bool], what: str, timeout: float = START_TIMEOUT_S) -> None:
        deadline = time.monotonic() + timeout
        while not ready():
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.argv[0]} exited ({self.process.returncode}) before {what}:\n{self.output()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.argv[0]}: no {what} within {timeout:.0f} s:\n{self.output()[-3000:]}")
            time.sleep(0.05)

    def ready(self) -> None:
        """Return once the server answers; RuntimeError (with its output) when it cannot."""
        raise NotImplementedError

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=15)


S = TypeVar("S", bound=Server)


def start_with_free_ports(start: Callable[[], S], attempts: int = 3) -> S:
    """start() until its ports were still free when it bound them (another process may take one first)."""
    for attempt in range(attempts):
        server = start()
        try:
            server.ready()
            return server
        except RuntimeError:
            server.stop()
            if attempt == attempts - 1 or "address already in use" not in server.output():
                raise
    raise AssertionError("unreachable")


class Jaeger(Server):
    """Jaeger v2 with in-memory storage: OTLP in, its HTTP API (the UI's) out."""

    def __init__(self, binary: Path, workdir: Path) -> None:
        self.otlp_grpc_endpoint = f"127.0.0.1:{free_port()}"
        self.otlp_http_endpoint = f"http://127.0.0.1:{free_port()}"
        self.query_url = f"http://127.0.0.1:{free_port()}"
        env = {**os.environ,
               "SELFOPT_TRACE_JAEGER_OTLP_GRPC_ENDPOINT": self.otlp_grpc_endpoint,
               "SELFOPT_TRACE_JAEGER_OTLP_HTTP_ENDPOINT": self.otlp_http_endpoint.removeprefix("http://"),
               "SELFOPT_TRACE_JAEGER_QUERY_ENDPOINT": self.query_url.removeprefix("http://"),
               "SELFOPT_TRACE_JAEGER_QUERY_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}"}
        workdir.mkdir(parents=True, exist_ok=True)
        super().__init__([str(binary), f"--config={CONFIGS / 'jaeger.yaml'}"], env, workdir / "jaeger.log", workdir)

    def ready(self) -> None:
        self.wait_until(lambda: http_get_json(f"{self.query_url}/api/services")[0] == 200
                        and accepts(self.otlp_grpc_endpoint) and accepts(self.otlp_http_endpoint.removeprefix("http://")),
                        "query API and OTLP receivers")

    def services(self) -> list[str]:
        status, body = http_get_json(f"{self.query_url}/api/services")
        assert status == 200 and body is not None, f"GET /api/services: {status}"
        return sorted(body["data"] or [])

    def trace(self, trace_id_hex: str, min_spans: int = 1, timeout: float = 30.0) -> dict:
        """GET /api/traces/{id} (the UI's JSON: data[0].spans, .processes) once it has min_spans spans."""
        return self._poll(f"{self.query_url}/api/traces/{trace_id_hex}", timeout,
                          lambda body: sum(len(t["spans"]) for t in body.get("data") or []) >= min_spans)

    def trace_otlp(self, trace_id_hex: str, min_spans: int = 1, timeout: float = 30.0) -> dict:
        """GET /api/v3/traces/{id}: the trace as OTLP/JSON ({"result": {"resourceSpans": [...]}})."""
        def count(body: dict) -> int:
            return sum(len(scope.get("spans") or []) for resource in (body.get("result") or {}).get("resourceSpans") or []
                       for scope in resource.get("scopeSpans") or [])
        return self._poll(f"{self.query_url}/api/v3/traces/{trace_id_hex}", timeout, lambda body: count(body) >= min_spans)

    def _poll(self, url: str, timeout: float, complete: Callable[[dict], bool]) -> dict:
        deadline = time.monotonic() + timeout
        last: tuple[int, dict | None] = (0, None)
        while time.monotonic() < deadline:
            last = http_get_json(url)
            if last[0] == 200 and last[1] is not None and complete(last[1]):
                return last[1]
            time.sleep(0.2)
        raise AssertionError(f"GET {url}: not complete within {timeout:.0f} s (last: {last[0]} {str(last[1])[:500]})\n"
                             f"jaeger log:\n{self.output()[-2000:]}")


@pytest.fixture
def jaeger(otel_binaries: OtelBinaries, tmp_path: Path) -> Iterator[Jaeger]:
    server = start_with_free_ports(lambda: Jaeger(otel_binaries.jaeger, tmp_path / "jaeger"))
    try:
        yield server
    finally:
        server.stop()


class Collector(Server):
    """otelcol with one configuration; OTLP gRPC at `grpc_endpoint`, HTTP at `http_endpoint`."""

    def __init__(self, binary: Path, config: Path, env: dict[str, str] | None, workdir: Path) -> None:
        self.config = config
        full_env = {**os.environ,
                    "SELFOPT_TRACE_OTLP_GRPC_ENDPOINT": f"127.0.0.1:{free_port()}",
                    "SELFOPT_TRACE_OTLP_HTTP_ENDPOINT": f"127.0.0.1:{free_port()}",
                    **(env or {})}
        self.grpc_endpoint = full_env["SELFOPT_TRACE_OTLP_GRPC_ENDPOINT"]
        self.http_endpoint = "http://" + full_env["SELFOPT_TRACE_OTLP_HTTP_ENDPOINT"]
        workdir.mkdir(parents=True, exist_ok=True)
        log = workdir / f"otelcol-{free_port()}.log"  # one per start in a shared working directory
        super().__init__([str(binary), f"--config={config}"], full_env, log, workdir)

    def ready(self) -> None:
        self.wait_until(lambda: accepts(self.grpc_endpoint) and accepts(self.http_endpoint.removeprefix("http://")),
                        "OTLP receivers")


@pytest.fixture
def start_collector(otel_binaries: OtelBinaries, tmp_path: Path) -> Iterator[Callable[..., Collector]]:
    started: list[Collector] = []

    def start(config_path: Path, env: dict[str, str] | None = None, cwd: Path | None = None) -> Collector:
        workdir = cwd or tmp_path / f"otelcol-{len(started)}"  # relative paths of the configuration land here
        collector = start_with_free_ports(lambda: Collector(otel_binaries.otelcol, Path(config_path), env, workdir))
        started.append(collector)
        return collector

    try:
        yield start
    finally:
        for collector in started:
            collector.stop()
