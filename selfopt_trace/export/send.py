"""Send a stored run to a running OpenTelemetry Collector (or any OTLP/HTTP receiver, Jaeger included).

Plain OTLP/HTTP with JSON bodies, POSTed to `/v1/traces`: the lines `otlp_json` writes are exactly
such request bodies, so no SDK is needed (importing the OTel SDK and exporter costs more than the
whole send). `run` calls this after every run, so when nothing listens it must cost nothing: a TCP
connect with a short timeout answers that before any span is read.

Endpoint: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT (the full URL), else OTEL_EXPORTER_OTLP_ENDPOINT
(+ /v1/traces), else http://127.0.0.1:4318/v1/traces. Headers: OTEL_EXPORTER_OTLP_HEADERS and
OTEL_EXPORTER_OTLP_TRACES_HEADERS (`key=value,...`, values URL-encoded), as the OTel spec says.
"""

from __future__ import annotations

import os
import socket
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from . import fetch_spans
from .otlp_json import to_otlp_json_lines

DEFAULT_ENDPOINT = "http://127.0.0.1:4318"
CONNECT_TIMEOUT_S = 0.2
REQUEST_TIMEOUT_S = 10.0


def traces_url(endpoint: str | None = None) -> str:
    """The URL spans are POSTed to."""
    if endpoint:
        return endpoint if urllib.parse.urlsplit(endpoint).path.rstrip("/").endswith("/v1/traces") \
            else endpoint.rstrip("/") + "/v1/traces"
    full = os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    if full:
        return full
    return (os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/") + "/v1/traces"


def collector_listening(url: str, timeout_s: float = CONNECT_TIMEOUT_S) -> bool:
    """Whether something accepts TCP connections where `url` points."""
    parts = urllib.parse.urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", port), timeout=timeout_s):
            return True
    except OSError:
        return False


def send_to_collector(store: Any, run_id: str, endpoint: str | None = None) -> bool:
    """POST the run's spans as OTLP/JSON; True when the receiver accepted every batch.

    False at once when nothing listens at the endpoint; False when a batch is refused (HTTP error)
    or the connection fails midway. Never raises for network reasons.
    """
    url = traces_url(endpoint)
    if not collector_listening(url):
        return False
    headers = {"Content-Type": "application/json", **_configured_headers()}
    for body in to_otlp_json_lines(fetch_spans(store, run_id)):
        request = urllib.request.Request(url, data=body.encode("utf-8"), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
                response.read()
        except (urllib.error.URLError, OSError):
            return False
    return True


def _configured_headers() -> dict[str, str]:
    headers = {}
    for variable in ("OTEL_EXPORTER_OTLP_HEADERS", "OTEL_EXPORTER_OTLP_TRACES_HEADERS"):
        for item in (os.environ.get(variable) or "").split(","):
            key, sep, value = item.partition("=")
            if sep and key.strip():
                headers[urllib.parse.unquote(key.strip())] = urllib.parse.unquote(value.strip())
    return headers
