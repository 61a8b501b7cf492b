"""Links to a run's trace in the Jaeger UI: `{base}/trace/{trace id}`.

The base is `--url`, else `$SELFOPT_TRACE_JAEGER_URL`, else http://localhost:16686 (the port
docker/compose.yaml publishes). The summary links only to a run some of whose spans were sent
(`was_sent`). Whether a Jaeger answers there is asked cheaply: a TCP connect
(refused at once when nothing listens on a local port, and then nothing more is tried), then one
GET of `/api/services`, the query API the UI itself uses.
"""

from __future__ import annotations

import json
import socket
import urllib.parse
from typing import Any, Mapping

from .errors import SelfoptTraceError

ENV_URL = "SELFOPT_TRACE_JAEGER_URL"
DEFAULT_URL = "http://localhost:16686"
PROBE_TIMEOUT_S = 0.3

# A run's traces, the one with the most spans first (a run joining an incoming TRACEPARENT, or
# containers started apart, can hold several).
_TRACES_SQL = """
SELECT trace_id, count(*) AS spans FROM spans WHERE run_id = $run_id AND trace_id IS NOT NULL
GROUP BY trace_id ORDER BY spans DESC, min(start_ns)
"""


class JaegerUrlError(SelfoptTraceError):
    """A Jaeger UI URL that is not http(s)://HOST[:PORT][/PATH]."""


def base_url(environ: Mapping[str, str], url: str | None = None) -> str:
    """The Jaeger UI's base URL, checked, without a trailing slash."""
    chosen = (url or environ.get(ENV_URL) or DEFAULT_URL).strip()
    parts = urllib.parse.urlsplit(chosen)
    try:
        parts.port
    except ValueError:
        parts = parts._replace(netloc="")
    if parts.scheme not in ("http", "https") or not parts.hostname:
        source = "--url" if url else (ENV_URL if environ.get(ENV_URL) else "the default")
        raise JaegerUrlError(f"invalid Jaeger UI URL {chosen!r} from {source}: expected http://HOST:PORT")
    return chosen.rstrip("/")


def trace_url(base: str, trace_id: str) -> str:
    return f"{base}/trace/{trace_id}"


def trace_urls(store: Any, run_id: str, base: str) -> list[str]:
    """The run's trace URLs, the main trace first."""
    _, rows = store.sql(_TRACES_SQL, {"run_id": run_id})
    return [trace_url(base, trace_id) for trace_id, _ in rows]


def was_sent(store: Any, run_id: str) -> bool:
    """Whether any of the run's spans went to a collector (a live export or a push: table `exports`).
    A run nothing sent is not in Jaeger: a link to its trace would find nothing."""
    _, rows = store.sql("SELECT count(*) FROM exports WHERE run_id = $run_id AND spans_sent > 0", {"run_id": run_id})
    return bool(rows[0][0])


def answers(base: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether a Jaeger query service answers at `base`."""
    parts = urllib.parse.urlsplit(base)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout_s):
            pass
    except OSError:
        return False
    from urllib.error import URLError  # only when something listens: ~10 ms of every run's summary otherwise
    from urllib.request import ProxyHandler, build_opener

    opener = build_opener(ProxyHandler({}))  # the UI is asked directly
    try:
        with opener.open(f"{base}/api/services", timeout=timeout_s) as response:
            return "data" in json.loads(response.read())  # a list of services, or null before the first
    except (OSError, ValueError, AttributeError, URLError):
        return False


def answering_base(environ: Mapping[str, str]) -> str | None:
    """The base URL when a Jaeger answers there (for the summary's next commands), else None."""
    try:
        base = base_url(environ)
    except JaegerUrlError:
        return None
    return base if answers(base) else None
