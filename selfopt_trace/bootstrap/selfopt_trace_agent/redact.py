"""Keep secrets out of spans: argv, URLs and headers are sanitized before they are recorded.

String operations first; `re` is imported only for free text that may hold a secret (this runs
inside every traced process at start-up, where importing `re` costs 5-10 ms).
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


_patterns: list = []


def _compiled() -> list:
    """Patterns for secrets inside free text (a `-c` program, a shell command, a header line).

    Compiled on first need only: most command lines contain no secret-looking word, and `re`
    costs milliseconds to import.
    """
    if not _patterns:
        import re

        words = "|".join(_SECRET_WORDS)
        value = r"(?!\[REDACTED\])([^\s'\",&;)}\]]+)"
        # Each pattern: group 1 is kept, group 2 is the secret.
        _patterns.extend([
            re.compile(r"(://[^/\s:@'\"]+:)(?!\[REDACTED\])([^@\s/'\"]+)(?=@)"),  # URL user:password@
            re.compile(r"(?i)((?:--?|\b)[\w.-]*(?:" + words + r")[\w.-]*(?:\s*[=:]\s*|['\"]?\s*,\s*['\"]?)"
                       r"(?:(?:bearer|basic|token)\s+)?)" + value),
            re.compile(r"(?i)(\b(?:bearer|basic)\s+)" + value),
            re.compile(r"(?i)(--?[\w.-]*(?:" + words + r")[\w.-]*\s+)(?!\[REDACTED\])([^\s'\",&;)-][^\s'\",&;)]*)"),
            re.compile(r"()(\b(?:" + "|".join(re.escape(p) for p in _SECRET_PREFIXES) + r")[A-Za-z0-9_\-]{4,})"),
        ])
    return _patterns


def _might_hold_secret(value: str) -> bool:
    lowered = value.lower()
    return (any(word in lowered for word in _SECRET_WORDS) or ("://" in value and "@" in value)
            or any(p in value for p in _SECRET_PREFIXES))


def text(value: str) -> str:
    """Free text with every secret-looking value replaced: `Authorization: Bearer X`, `--token X`,
    `KEY=VALUE`, URLs with credentials or secret query values, well-known API key formats."""
    if not _might_hold_secret(value):
        return value
    for pattern in _compiled():
        value = pattern.sub(lambda match: match.group(1) + REDACTED, value)
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
        out.append(_argument(arg))
    return out


def _argument(arg: str) -> str:
    """One argument: string operations for the usual shapes (`--flag=value`, `KEY=VALUE`, a URL, a
    bare key), the patterns of `text` only for free text (a `-c` program, a shell command)."""
    if any(c.isspace() or c in "\"'(),;" for c in arg):
        return text(arg)
    if "://" in arg:
        return url(arg)
    separator = "=" if "=" in arg else ":"
    name, sep, value = arg.partition(separator)
    if sep and value and value != REDACTED and (is_secret_name(name.lstrip("-")) or _looks_like_secret_value(value)):
        return name + sep + REDACTED
    if _looks_like_secret_value(arg):
        return REDACTED
    return arg


def url(value: str) -> str:
    """A URL without user:password@ and without the values of secret query parameters."""
    if "@" not in value and "?" not in value:  # nothing to redact (every HTTP request passes here)
        return value
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
        path = base + "?" + query_string(query) + fragment
    return scheme + sep + authority + path


def query_string(value: str) -> str:
    """`a=1&api_key=X` (a URL query or a form body) with the values of secret parameters replaced."""
    params = []
    for item in value.split("&"):
        name, eq, val = item.partition("=")
        params.append(name + eq + REDACTED if eq and (is_secret_name(name) or _looks_like_secret_value(val)) else item)
    return "&".join(params)


def structure(value):
    """Parsed JSON (dicts, lists, strings) with the values of secret keys and secret-looking strings replaced."""
    if isinstance(value, dict):
        return {k: REDACTED if isinstance(k, str) and is_secret_name(k) else structure(v) for k, v in value.items()}
    if isinstance(value, list):
        return [structure(item) for item in value]
    if isinstance(value, str):
        return text(value)
    return value
