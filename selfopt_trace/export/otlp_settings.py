"""Where and how OTLP goes: the `OTEL_EXPORTER_OTLP_*` settings, resolved and checked up front.

Standard library only and cheap to import: `run` resolves these before CMD starts (a bad protocol,
URL or header is a usage error then, not a surprise later), and a run with nothing to export must
not pay for the OpenTelemetry SDK (export/otlp_sdk.py imports it, only when spans are sent).

Resolution follows the OpenTelemetry specification (Protocol Exporter): the `..._TRACES_...`
variable wins over the generic one; an HTTP endpoint from `OTEL_EXPORTER_OTLP_ENDPOINT` gets
`/v1/traces` appended while `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` is used as it is; the timeouts are
milliseconds (the Python SDK's exporters read them as seconds, so we pass the value ourselves);
headers are `key=value,...` with percent-encoded values. The SDK's exporters read most of these
variables by themselves, but skip the protocol, warn and go on where the specification says a
value is invalid, and cannot be asked what they resolved; so everything is resolved here and
handed to them explicitly.
"""

from __future__ import annotations

import re
import socket
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Mapping

from ..errors import SelfoptTraceError

GRPC = "grpc"
HTTP_PROTOBUF = "http/protobuf"
PROTOCOLS = (GRPC, HTTP_PROTOBUF)
DEFAULT_PROTOCOL = HTTP_PROTOBUF  # the specification's default
DEFAULT_ENDPOINTS = {GRPC: "http://localhost:4317", HTTP_PROTOBUF: "http://localhost:4318"}
TRACES_PATH = "/v1/traces"
DEFAULT_TIMEOUT_MS = 10_000
COMPRESSIONS = ("none", "gzip")
PROBE_TIMEOUT_S = 0.2

# RFC 9110 token: what a header name may be made of.
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


class OtlpSettingsError(SelfoptTraceError):
    """An OTLP setting that cannot work (unknown protocol, malformed URL or header): a usage error."""


@dataclass(frozen=True)
class OtlpSettings:
    """Everything an exporter needs. `headers` may hold secrets: never print them (see `display`)."""

    protocol: str
    endpoint: str  # HTTP: the full URL spans are POSTed to; gRPC: the URL (or host:port) of the receiver
    headers: dict[str, str] = field(default_factory=dict, repr=False)
    timeout_s: float = DEFAULT_TIMEOUT_MS / 1000
    compression: str = "none"
    certificate: str | None = None  # CA file for TLS
    client_key: str | None = None
    client_certificate: str | None = None
    insecure: bool = False  # gRPC without a scheme: plain text instead of TLS

    @property
    def host_port(self) -> tuple[str, int]:
        parts = _split(self.endpoint)
        tls = parts.scheme == "https" or (not parts.scheme and not self.insecure)
        return parts.hostname or "localhost", parts.port or (443 if tls else 80)

    @property
    def tls(self) -> bool:
        scheme = _split(self.endpoint).scheme
        return scheme == "https" or (not scheme and not self.insecure)

    def display(self) -> str:
        """The endpoint without credentials or query (what may be printed)."""
        parts = _split(self.endpoint)
        host, port = parts.hostname or "", parts.port
        netloc = f"[{host}]" if ":" in host else host
        if port:
            netloc += f":{port}"
        return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", "")) if parts.scheme else netloc


def resolve(environ: Mapping[str, str], endpoint: str | None = None, protocol: str | None = None,
            headers: Iterable[str] = ()) -> OtlpSettings:
    """The settings from the environment, overridden by `endpoint`, `protocol` and `headers` (K=V) when
    given. Raises OtlpSettingsError naming the bad value (never a header's value)."""

    def setting(name: str) -> tuple[str | None, str]:
        for variable in (f"OTEL_EXPORTER_OTLP_TRACES_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
            value = (environ.get(variable) or "").strip()
            if value:
                return value, variable
        return None, ""

    env_protocol, protocol_source = setting("PROTOCOL")
    chosen = protocol or env_protocol or DEFAULT_PROTOCOL
    if chosen not in PROTOCOLS:
        source = protocol_source if protocol is None else "the protocol option"
        hint = " (HTTP/JSON is not sent by the OpenTelemetry Python exporters)" if chosen == "http/json" else ""
        raise OtlpSettingsError(f"unsupported OTLP protocol {chosen!r} from {source}{hint}: use grpc or http/protobuf")

    insecure_text, _ = setting("INSECURE")
    insecure = (insecure_text or "").lower() == "true"
    traces_endpoint = (environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or "").strip()
    base_endpoint = (environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or "").strip()
    if endpoint is not None:
        url, source, full = endpoint.strip(), "the endpoint option", _split_safe(endpoint).path.rstrip("/").endswith(TRACES_PATH)
    elif traces_endpoint:
        url, source, full = traces_endpoint, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", True
    elif base_endpoint:
        url, source, full = base_endpoint, "OTEL_EXPORTER_OTLP_ENDPOINT", False
    else:
        url, source, full = DEFAULT_ENDPOINTS[chosen], "the default", False
    check_url(url, source, allow_bare=chosen == GRPC)
    if chosen == HTTP_PROTOBUF and not full:
        parts = urllib.parse.urlsplit(url)
        url = urllib.parse.urlunsplit(parts._replace(path=parts.path.rstrip("/") + TRACES_PATH))

    timeout_text, timeout_source = setting("TIMEOUT")
    try:
        timeout_ms = float(timeout_text) if timeout_text else DEFAULT_TIMEOUT_MS
        if not timeout_ms > 0:
            raise ValueError
    except ValueError:
        raise OtlpSettingsError(f"{timeout_source} must be a positive number of milliseconds, not {timeout_text!r}") from None
    compression, compression_source = setting("COMPRESSION")
    compression = (compression or "none").lower()
    if compression not in COMPRESSIONS:
        raise OtlpSettingsError(f"{compression_source} must be gzip or none, not {compression!r}")

    files = {}
    for name in ("CERTIFICATE", "CLIENT_KEY", "CLIENT_CERTIFICATE"):
        path, variable = setting(name)
        if path is not None and not Path(path).is_file():
            raise OtlpSettingsError(f"{variable}: no such file: {path}")
        files[name] = path

    headers_text, headers_variable = setting("HEADERS")
    all_headers = parse_headers_variable(headers_text, headers_variable)
    for item in headers:
        key, value = parse_header_option(item)
        all_headers[key] = value
    return OtlpSettings(protocol=chosen, endpoint=url, headers=all_headers, timeout_s=timeout_ms / 1000,
                        compression=compression, certificate=files["CERTIFICATE"], client_key=files["CLIENT_KEY"],
                        client_certificate=files["CLIENT_CERTIFICATE"], insecure=insecure)


def check_url(url: str, source: str, allow_bare: bool = False) -> None:
    """An http(s) URL with a host (gRPC also takes a bare host:port), or OtlpSettingsError."""
    problem = None
    parts = _split_safe(url)
    if any(c.isspace() for c in url):
        problem = "it contains white space"
    elif not parts.scheme and not (allow_bare and parts.hostname):
        problem = "expected http://HOST:PORT or https://HOST:PORT"
    elif parts.scheme not in ("", "http", "https"):
        problem = f"the scheme must be http or https, not {parts.scheme!r}"
    elif not parts.hostname:
        problem = "it names no host"
    else:
        try:
            parts.port
        except ValueError:
            problem = "its port is not a number from 0 to 65535"
    if problem:
        raise OtlpSettingsError(f"invalid OTLP endpoint {_without_userinfo(url)!r} from {source}: {problem}")


def parse_headers_variable(text: str | None, variable: str = "OTEL_EXPORTER_OTLP_HEADERS") -> dict[str, str]:
    """`key=value,...` with percent-encoded values (the specification's format); names lower-cased
    (gRPC metadata requires it, HTTP ignores case)."""
    headers: dict[str, str] = {}
    for item in (text or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        key = urllib.parse.unquote(key.strip())
        if not sep or not _HEADER_NAME.fullmatch(key):
            raise OtlpSettingsError(f"{variable}: malformed header {key[:40]!r}: expected key=value,... with a token as key")
        headers[key.lower()] = _checked_value(urllib.parse.unquote(value.strip()), key, variable)
    return headers


def parse_header_option(item: str) -> tuple[str, str]:
    """One `--header K=V` (the value as written, not percent-encoded)."""
    key, sep, value = item.partition("=")
    key = key.strip()
    if not sep or not _HEADER_NAME.fullmatch(key):
        raise OtlpSettingsError(f"--header {key[:40]!r}: expected KEY=VALUE with a token as KEY")
    return key.lower(), _checked_value(value.strip(), key, "--header")


def _checked_value(value: str, key: str, source: str) -> str:
    if any(ord(c) < 32 and c != "\t" or ord(c) == 127 for c in value):
        raise OtlpSettingsError(f"{source}: the value of header {key!r} holds control characters")
    return value


def listening(settings: OtlpSettings, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether something accepts TCP connections at the endpoint (immediate on a closed local port)."""
    try:
        with socket.create_connection(settings.host_port, timeout=timeout_s):
            return True
    except OSError:
        return False


def _split(url: str) -> urllib.parse.SplitResult:
    # A bare host:port (gRPC) has no scheme: parse it as a network location.
    return urllib.parse.urlsplit(url if "://" in url else "//" + url)


def _split_safe(url: str) -> urllib.parse.SplitResult:
    try:
        return _split(url.strip())
    except ValueError:  # e.g. an unbalanced IPv6 bracket
        return urllib.parse.SplitResult("", "", "", "", "")


def _without_userinfo(url: str) -> str:
    """A URL to print in an error: no user:password, no query (either may hold a token)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    authority, slash, tail = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return (scheme + sep if sep else "") + authority + slash + tail.partition("?")[0]
