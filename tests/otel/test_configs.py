"""Every shipped configuration is accepted by the real binaries; the distribution has the components it says."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.otel.conftest import CONFIGS, ROOT, OtelBinaries

COLLECTOR_CONFIGS = [ROOT / "otel-config.yaml", *sorted(CONFIGS.glob("otelcol-*.yaml"))]
ALL_CONFIGS = [*COLLECTOR_CONFIGS, CONFIGS / "jaeger.yaml"]
# The one variable a shipped configuration needs without default.
REQUIRED_ENV = {"SELFOPT_TRACE_FORWARD_ENDPOINT": "https://otel.example.org:4318"}


def validate(binary: Path, config: Path | str, **env: str) -> subprocess.CompletedProcess:
    base = {k: v for k, v in os.environ.items() if not k.startswith("SELFOPT_TRACE_")}
    return subprocess.run([str(binary), "validate", f"--config={config}"], capture_output=True, text=True,
                          timeout=120, env={**base, **env})


def test_the_shipped_configurations() -> None:
    names = {path.name for path in ALL_CONFIGS}
    assert names == {"otel-config.yaml", "otelcol-file.yaml", "otelcol-forward.yaml", "otelcol-jaeger.yaml",
                     "otelcol-selfopt.yaml", "jaeger.yaml"}


@pytest.mark.parametrize("config", ALL_CONFIGS, ids=lambda path: path.name)
def test_one_comment_line_at_the_top_says_what_it_is_for(config: Path) -> None:
    first, second = config.read_text().splitlines()[:2]
    assert first.startswith("# ") and len(first) > 40
    assert not second.startswith("#")


@pytest.mark.parametrize("config", COLLECTOR_CONFIGS, ids=lambda path: path.name)
def test_otelcol_validates_each_collector_configuration(otel_binaries: OtelBinaries, config: Path) -> None:
    result = validate(otel_binaries.otelcol, config, **REQUIRED_ENV)
    assert result.returncode == 0, result.stderr


def test_jaeger_validates_its_configuration(otel_binaries: OtelBinaries) -> None:
    result = validate(otel_binaries.jaeger, CONFIGS / "jaeger.yaml")
    assert result.returncode == 0, result.stderr


def test_forwarding_without_an_endpoint_is_refused(otel_binaries: OtelBinaries) -> None:
    result = validate(otel_binaries.otelcol, CONFIGS / "otelcol-forward.yaml")
    assert result.returncode != 0
    assert "otlp_http/remote" in result.stderr and "endpoint" in result.stderr


def test_validate_rejects_what_the_distribution_lacks(otel_binaries: OtelBinaries, tmp_path: Path) -> None:
    config = yaml.safe_load((CONFIGS / "otelcol-jaeger.yaml").read_text())
    config["exporters"]["zipkin"] = {"endpoint": "http://127.0.0.1:9411/api/v2/spans"}
    config["service"]["pipelines"]["traces"]["exporters"] = ["zipkin"]
    path = tmp_path / "zipkin.yaml"
    path.write_text(yaml.safe_dump(config))
    result = validate(otel_binaries.otelcol, path)
    assert result.returncode != 0 and "zipkin" in result.stderr


def test_the_distribution_has_exactly_its_components(otel_binaries: OtelBinaries) -> None:
    listed = subprocess.run([str(otel_binaries.otelcol), "components"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    components = yaml.safe_load(listed.stdout)
    assert components["buildinfo"]["version"] == "0.161.0"
    names = {kind: sorted(item["name"] for item in components.get(kind) or [])
             for kind in ("receivers", "processors", "exporters", "extensions", "connectors")}
    assert names == {"receivers": ["otlp"], "processors": ["batch", "memory_limiter"],
                     "exporters": ["debug", "file", "otlp_grpc", "otlp_http"], "extensions": [], "connectors": []}
    modules = {item["module"] for kind in ("receivers", "processors", "exporters") for item in components[kind]}
    assert {module.rsplit(" ", 1)[1] for module in modules} == {"v0.161.0"}
