"""Keep secrets out of spans: argv, URLs and headers are sanitized before they are recorded.

String operations first; `re` is imported only for free text that may hold a secret (this runs
inside every traced process at start-up, where importing `re` costs 5-10 ms).
"""

from __future__ import annotations

REDACTED = "[REDACTED]"

# Every form of secret this module knows, one line each: (kind, pattern, an example that holds the
# secret S3CR3T). tests/agent/test_secrets.py checks every example in each place its kind applies
# to (argv, URL, header, environment variable, span attribute), so adding a form is one line here.
#   word    a name (flag, variable, query parameter, header, JSON key, attribute key) containing it
#   name    a name that is exactly it (a word too common inside other names: `code`, `sig`)
#   prefix  a value starting with it, whatever its name (API key formats of well-known services)
#   flag    `PROGRAM FLAG`: the value of that flag of that program, next to it or joined (`-pS3CR3T`,
#           `--user=me:S3CR3T`); in `user:secret`, the user is kept
#   joined  the same, joined only (`mysql -p DB` asks for the password: DB is the database)
PATTERNS = (
    ("word", "key", "--api-key S3CR3T"),
    ("word", "token", "--token S3CR3T"),
    ("word", "secret", "CLIENT_SECRET=S3CR3T"),
    ("word", "password", "--password=S3CR3T"),
    ("word", "passwd", "PASSWD=S3CR3T"),
    ("word", "passphrase", "--passphrase S3CR3T"),
    ("word", "pwd", "DB_PWD=S3CR3T"),
    ("word", "auth", "--auth S3CR3T"),
    ("word", "credential", "CREDENTIALS=S3CR3T"),
    ("word", "cookie", "Cookie: S3CR3T"),
    ("word", "session", "SESSION_ID=S3CR3T"),
    ("word", "signature", "X-Amz-Signature=S3CR3T"),
    ("word", "bearer", "BEARER=S3CR3T"),
    ("word", "private", "PRIVATE_KEY_DATA=S3CR3T"),
    ("name", "code", "https://app.example/callback?code=S3CR3T&state=xyz"),
    ("name", "sig", "https://blob.example/c/f?sv=2022&sig=S3CR3T"),
    ("prefix", "cf-", "cf-S3CR3T0123"),
    ("prefix", "sk-", "sk-S3CR3T0123"),
    ("prefix", "ghp_", "ghp_S3CR3T0123"),
    ("prefix", "gho_", "gho_S3CR3T0123"),
    ("prefix", "ghs_", "ghs_S3CR3T0123"),
    ("prefix", "github_pat_", "github_pat_S3CR3T0123"),
    ("prefix", "xoxb-", "xoxb-S3CR3T0123"),
    ("prefix", "xoxp-", "xoxp-S3CR3T0123"),
    ("prefix", "AKIA", "AKIAS3CR3T0123"),
    ("prefix", "glpat-", "glpat-S3CR3T0123"),
    ("flag", "curl -u", "curl -u me:S3CR3T https://example.invalid/"),
    ("flag", "curl --user", "curl --user me:S3CR3T https://example.invalid/"),
    ("flag", "curl -U", "curl -U me:S3CR3T https://example.invalid/"),
    ("flag", "curl --proxy-user", "curl --proxy-user me:S3CR3T https://example.invalid/"),
    ("joined", "mysql -p", "mysql -pS3CR3T shop"),
    ("joined", "mysqldump -p", "mysqldump -pS3CR3T shop"),
    ("joined", "mysqladmin -p", "mysqladmin -pS3CR3T status"),
    ("joined", "mariadb -p", "mariadb -pS3CR3T shop"),
    ("flag", "sshpass -p", "sshpass -p S3CR3T ssh host"),
    ("flag", "redis-cli -a", "redis-cli -a S3CR3T ping"),
)
_SECRET_WORDS = tuple(pattern for kind, pattern, _ in PATTERNS if kind == "word")
_SECRET_NAMES = frozenset(pattern for kind, pattern, _ in PATTERNS if kind == "name")
_SECRET_PREFIXES = tuple(pattern for kind, pattern, _ in PATTERNS if kind == "prefix")
_FLAGS: dict = {}  # program -> {flag: joined only}
for _kind, _pattern, _ in PATTERNS:
    if _kind in ("flag", "joined"):
        _program, _, _flag = _pattern.partition(" ")
        _FLAGS.setdefault(_program, {})[_flag] = _kind == "joined"
SECRET_HEADERS = frozenset(("authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key",
                            "api-key", "x-auth-token", "x-csrf-token", "x-amz-security-token"))


def is_secret_name(name: str) -> bool:
    """A flag, variable, parameter, header or key whose value is a secret."""
    lowered = name.lower()
    return lowered in _SECRET_NAMES or any(word in lowered for word in _SECRET_WORDS)


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
        for program, flags in _FLAGS.items():  # `curl -u me:S3CR3T`, `mysql -pS3CR3T` in a shell command or a -c program
            for flag, joined in flags.items():
                _patterns.append(re.compile(r"(\b" + re.escape(program) + r"\b[^;&|\n]*?[\s'\"]" + re.escape(flag)
                                            + (r"" if joined else r"(?:['\"]?\s*,\s*['\"]?|\s+|=)?")
                                            + r"['\"]?(?:[^\s:'\"]*:)?)" + value))
        _patterns.extend([
            re.compile(r"([?&](?:" + "|".join(_SECRET_NAMES) + r")=)(?!\[REDACTED\])([^&#\s'\"]+)"),
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
            or any(p in value for p in _SECRET_PREFIXES) or any(program in value for program in _FLAGS)
            or any(name + "=" in lowered for name in _SECRET_NAMES))


def text(value: str) -> str:
    """Free text with every secret-looking value replaced: `Authorization: Bearer X`, `--token X`,
    `KEY=VALUE`, URLs with credentials or secret query values, well-known API key formats."""
    if not _might_hold_secret(value):
        return value
    for pattern in _compiled():
        value = pattern.sub(lambda match: match.group(1) + REDACTED, value)
    return value


def argv(args: list) -> list:
    """A command line with the values of secret flags and secret-looking arguments replaced (bytes
    that are not UTF-8 kept, as surrogates: the span file escapes them)."""
    out = []
    redact_next = False
    flags = _FLAGS.get(str(args[0]).rpartition("/")[2], {}) if args else {}
    for arg in args:
        if isinstance(arg, bytes):
            arg = arg.decode("utf-8", "surrogateescape")
        else:
            arg = str(arg)
        if redact_next:
            out.append(_flag_value(arg))
            redact_next = False
            continue
        if flags and arg.startswith("-"):
            flag = _program_flag(arg, flags)
            if flag is not None:
                if flag == arg:
                    out.append(arg)
                    redact_next = True
                else:
                    joined = arg[len(flag):]
                    glue = "=" if joined.startswith("=") else ""
                    out.append(flag + glue + _flag_value(joined[len(glue):]))
                continue
        if arg.startswith("-") and "=" not in arg and is_secret_name(arg.lstrip("-")):
            out.append(arg)
            redact_next = True
            continue
        out.append(_argument(arg))
    return out


def _program_flag(arg: str, flags: dict) -> str | None:
    """The program's secret flag `arg` is, or starts with (joined value), or None."""
    for flag, joined_only in flags.items():
        if arg == flag and not joined_only:
            return flag
        if arg.startswith(flag) and len(arg) > len(flag) and (len(flag) == 2 or arg[len(flag)] == "="):
            return flag
    return None


def _flag_value(value: str) -> str:
    """A secret flag's value: `user:secret` keeps its user."""
    user, colon, _ = value.partition(":")
    return user + colon + REDACTED if colon and "/" not in user else REDACTED


def header(name: str, value: str) -> str:
    """An HTTP header's value as it may be recorded."""
    return REDACTED if name.lower() in SECRET_HEADERS or is_secret_name(name) else text(value)


def attributes(values: dict) -> dict:
    """Span attributes from elsewhere (another instrumentation): secret keys' values and secret-looking
    strings replaced, URLs without credentials and secret query values."""
    out = {}
    for key, value in values.items():
        if isinstance(key, str) and is_secret_name(key.rpartition(".")[2]):
            out[key] = REDACTED
        elif isinstance(value, str):
            out[key] = url(value) if "://" in value else text(value)
        elif isinstance(value, (list, tuple)):
            out[key] = [text(item) if isinstance(item, str) else item for item in value]
        else:
            out[key] = value
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
