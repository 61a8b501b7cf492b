"""Secrets in argv or the environment never reach a span file."""

from __future__ import annotations

import sys

import pytest

from selfopt_trace.bootstrap.selfopt_trace_agent import redact

SECRET = "XYZsecret123"


def test_secrets_in_argv_and_env_never_reach_a_span_file(traced):
    child_args = [f"--api-key={SECRET}", "--token", SECRET, f"Authorization: Bearer {SECRET}",
                  f"CODEFLASH_API_KEY={SECRET}", f"https://user:{SECRET}@example.invalid/x?api_key={SECRET}&q=1",
                  f"cf-{SECRET}"]
    code = ("import subprocess, sys, os\n"
            f"subprocess.run([sys.executable, '-c', 'import sys; print(len(sys.argv))', *{child_args!r}], check=True)\n"
            f"os.system('true --password {SECRET}')\n")
    result = traced.run([sys.executable, "-c", code, "--secret", SECRET],
                        extra_env={"CODEFLASH_API_KEY": f"cf-{SECRET}", "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test"})
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"8\n"
    files = list((traced.run_dir / "spans").glob("*.spans"))
    assert len(files) == 2
    for path in files:
        assert SECRET not in path.read_text(), path.read_text()
    args = [p.attributes["process.command_args"] for p in traced.spans().processes()]
    assert any(redact.REDACTED in " ".join(a) for a in args)


def test_redact_argv():
    assert redact.argv(["prog", "--api-key=abc", "--token", "abc", "--verbose", "x"]) == \
        ["prog", "--api-key=[REDACTED]", "--token", "[REDACTED]", "--verbose", "x"]
    assert redact.argv(["curl", "-H", "Authorization: Bearer abc"]) == ["curl", "-H", "Authorization: Bearer [REDACTED]"]
    assert redact.argv(["env", "MY_SECRET=abc", "PATH=/bin"]) == ["env", "MY_SECRET=[REDACTED]", "PATH=/bin"]
    assert redact.argv(["x", "cf-0123456789"]) == ["x", "[REDACTED]"]
    assert redact.argv([b"bytes", b"--password=abc"]) == ["bytes", "--password=[REDACTED]"]


def test_redact_url():
    assert redact.url("https://u:p@host:8000/a?api_key=1&x=2#f") == "https://[REDACTED]@host:8000/a?api_key=[REDACTED]&x=2#f"
    assert redact.url("http://localhost:8000/ai/optimize") == "http://localhost:8000/ai/optimize"
    assert redact.url("http://h/?token=abc") == "http://h/?token=[REDACTED]"


def test_redact_text_keeps_ordinary_values():
    for value in ("hello", "--verbose", "a=b", "/usr/bin/python3", "x:y"):
        assert redact.text(value) == value
    assert redact.text("X-Api-Key: abc") == "X-Api-Key: [REDACTED]"


# --- issue 15: the forms that got through, and the one table of patterns --------------------------

NEW = "S3CR3T"


def test_curl_user_password_in_argv_and_in_a_shell_command():
    assert redact.argv(["curl", "-u", f"me:{NEW}", "https://h/"]) == ["curl", "-u", "me:[REDACTED]", "https://h/"]
    assert redact.argv(["/usr/bin/curl", f"--user=me:{NEW}"]) == ["/usr/bin/curl", "--user=me:[REDACTED]"]
    assert redact.argv(["curl", f"-ume:{NEW}"]) == ["curl", "-ume:[REDACTED]"]
    assert NEW not in redact.text(f"set -e; curl -sS -u 'me:{NEW}' https://h/ | jq .")
    assert redact.argv(["python", "-u", "app.py"]) == ["python", "-u", "app.py"]  # -u is curl's, not everyone's


def test_mysql_joined_password():
    assert redact.argv(["mysql", f"-p{NEW}", "shop"]) == ["mysql", "-p[REDACTED]", "shop"]
    assert redact.argv(["mysql", "-p", "shop"]) == ["mysql", "-p", "shop"]  # asks for it: shop is the database
    assert NEW not in redact.text(f"mysqldump -h db -p{NEW} shop > dump.sql")


def test_passphrase_flag():
    assert redact.argv(["gpg", "--passphrase", NEW, "-d", "f.gpg"]) == ["gpg", "--passphrase", "[REDACTED]", "-d", "f.gpg"]
    assert redact.argv(["tool", f"--passphrase={NEW}"]) == ["tool", "--passphrase=[REDACTED]"]


def test_oauth_code_in_a_url():
    url = f"https://app.example/callback?code={NEW}&state=xyz"
    assert redact.url(url) == "https://app.example/callback?code=[REDACTED]&state=xyz"
    assert redact.argv(["curl", url]) == ["curl", "https://app.example/callback?code=[REDACTED]&state=xyz"]
    assert NEW not in redact.text(f"GET {url} HTTP/1.1")
    assert redact.url("https://h/?unicode=1&codec=2") == "https://h/?unicode=1&codec=2"  # whole names only


def test_the_four_forms_never_reach_a_span_file(traced):
    children = [["curl", "-u", f"me:{NEW}"], ["mysql", f"-p{NEW}"], ["gpg", "--passphrase", NEW],
                ["curl", f"https://h/cb?code={NEW}"]]
    code = "import subprocess\n" + "".join(f"try:\n    subprocess.run({c!r})\nexcept OSError:\n    pass\n" for c in children)
    result = traced.python(code, f"https://h/cb?code={NEW}", "--passphrase", NEW)
    assert result.returncode == 0, result.stderr
    for path in (traced.run_dir / "spans").glob("*.spans"):
        assert NEW not in path.read_text()


def _contexts(kind: str, pattern: str, example: str) -> dict:
    """Where a form of secret is looked for, each with the text that holds it, redacted."""
    if kind == "word":
        return {"argv": " ".join(redact.argv(["prog", f"--{pattern}", NEW, f"--x-{pattern}={NEW}"])),
                "url": redact.url(f"https://h/p?x_{pattern}={NEW}&a=1"),
                "header": redact.header(f"X-{pattern}", NEW) + redact.text(f"X-{pattern}: {NEW}"),
                "environment": " ".join(redact.argv(["env", f"MY_{pattern.upper()}={NEW}", "cmd"])),
                "attribute": str(redact.attributes({f"app.{pattern}": NEW}))}
    if kind == "name":
        url = f"https://h/p?{pattern}={NEW}&a=1"
        return {"argv": " ".join(redact.argv(["curl", url])), "url": redact.url(url),
                "header": redact.header(pattern, NEW) + redact.text(f"GET {url}"),
                "environment": " ".join(redact.argv(["env", f"{pattern.upper()}={NEW}", "cmd"])),
                "attribute": str(redact.attributes({"url.full": url, pattern: NEW}))}
    if kind == "prefix":
        return {"argv": " ".join(redact.argv(["prog", example, f"--x={example}"])),
                "url": redact.url(f"https://h/p?x={example}"),
                "header": redact.header("X-Thing", example) + redact.text(f"X-Thing: {example}"),
                "environment": " ".join(redact.argv(["env", f"THING={example}", "cmd"])),
                "attribute": str(redact.attributes({"app.thing": example}))}
    return {"argv": " ".join(redact.argv(example.split(" "))), "shell": redact.text(f"sh -c '{example}'")}


@pytest.mark.parametrize("kind, pattern, example", redact.PATTERNS, ids=[p for _, p, _ in redact.PATTERNS])
def test_every_form_of_the_table_is_redacted_wherever_it_applies(kind, pattern, example):
    assert NEW in example
    assert NEW not in redact.text(example), "free text"
    for where, text in _contexts(kind, pattern, example).items():
        assert NEW not in text and redact.REDACTED in text, (where, text)
