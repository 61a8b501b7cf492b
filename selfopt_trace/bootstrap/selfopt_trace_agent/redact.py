"""Keep secrets out of spans: argv, URLs and headers are sanitized before they are recorded.

String operations only (no `re`): this runs inside every traced process.
"""

from __future__ import annotations

REDACTED = "[REDACTED]"
_SECRET_WORDS = ("key", "token", "secret", "password", "passwd", "pwd", "auth", "credential",
                 "cookie", "session", "signature", "bearer", "private")
# Values that are secrets whatever flag they follow (API keys of well-known services).
_SECRET_PREFIXES = ("cf-", "sk-", "ghp_", "gho_", "ghs_", "github_pat_", "xoxb-", "xoxp-", "AKIA", "glpat-")
SECRET_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                            "api-key", "x-auth-token", "x-csrf-token", "x-amz-security-token"))


def is_secret_name(name: str) -> bool:
    lowered = name.lower()
    return any(word in lowered for word in _SECRET_WORDS)


def _looks_like_secret_value(value: str) -> bool:
    return value.startswith(_SECRET_PREFIXES) and len(value) > 6


def text(value: str) -> str:
    """One free-form string: `Authorization: Bearer X`, `KEY=VALUE`, URLs with credentials."""
    lowered = value.lower()
    for marker in ("bearer ", "basic ", "token "):
        at = lowered.find(marker)
        if at >= 0:
            return value[: at + len(marker)] + REDACTED
    head, sep, tail = value.partition("=")
    if sep and " " not in head and is_secret_name(head.lstrip("-")):
        return head + sep + REDACTED
    if ":" in value and is_secret_name(value.split(":", 1)[0]) and " " not in value.split(":", 1)[0].strip():
        return value.split(":", 1)[0] + ": " + REDACTED
    if "://" in value:
        return url(value)
    if _looks_like_secret_value(value):
        return REDACTED
    return value


def argv(args: list) -> list:
    """A command line with the values of secret flags and secret-looking arguments replaced."""
    out = []
    redact_next = False
    for arg in args:
        if isinstance(arg, bytes):
            arg = arg.decode("utf-8", "replace")
        else:
            arg = str(arg)
        if redact_next:
            out.append(REDACTED)
            redact_next = False
            continue
        if arg.startswith("-") and "=" not in arg and is_secret_name(arg.lstrip("-")):
            out.append(arg)
            redact_next = True
            continue
        out.append(text(arg))
    return out


def url(value: str) -> str:
    """A URL without user:password@ and without the values of secret query parameters."""
    scheme, sep, rest = value.partition("://")
    if not sep:
        return value
    authority_end = len(rest)
    for stop in "/?#":
        at = rest.find(stop)
        if 0 <= at < authority_end:
            authority_end = at
    authority, path = rest[:authority_end], rest[authority_end:]
    if "@" in authority:
        authority = REDACTED + "@" + authority.rsplit("@", 1)[1]
    if "?" in path:
        base, _, query = path.partition("?")
        fragment = ""
        if "#" in query:
            query, _, fragment = query.partition("#")
            fragment = "#" + fragment
        params = []
        for item in query.split("&"):
            name, eq, val = item.partition("=")
            params.append(name + eq + REDACTED if eq and (is_secret_name(name) or _looks_like_secret_value(val)) else item)
        path = base + "?" + "&".join(params) + fragment
    return scheme + sep + authority + path
