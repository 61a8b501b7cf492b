"""Secrets in argv or the environment never reach a span file."""

from __future__ import annotations

import sys

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
