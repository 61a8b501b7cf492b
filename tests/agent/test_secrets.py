"""Secrets in argv or the environment never reach a span file."""

from __future__ import annotations

import json
import sys

import pytest

from selfopt_trace.bootstrap.selfopt_trace_agent import redact
from tests.agent.secret_store import found_secrets

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
    # an assignment as a flag's value (docker's --env=K=V, --build-arg=K=V, helm's --set=a.token=V)
    assert redact.argv(["docker", "run", "--env=DB_PASSWORD=abc", "--build-arg=NPM_TOKEN=abc", "--set=api.token=abc",
                        "--env=PATH=/usr/bin:/bin"]) == [
        "docker", "run", "--env=DB_PASSWORD=[REDACTED]", "--build-arg=NPM_TOKEN=[REDACTED]", "--set=api.token=[REDACTED]",
        "--env=PATH=/usr/bin:/bin"]


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
    if kind == "path":
        return {"argv": " ".join(redact.argv(["curl", "-X", "POST", example])), "url": redact.url(example),
                "shell": redact.text(f"sh -c 'curl -d x {example}'"),
                "attribute": str(redact.attributes({"url.full": example, "app.args": ["curl", example]}))}
    return {"argv": " ".join(redact.argv(example.split(" "))), "shell": redact.text(f"sh -c '{example}'")}


@pytest.mark.parametrize("kind, pattern, example", redact.PATTERNS, ids=[p for _, p, _ in redact.PATTERNS])
def test_every_form_of_the_table_is_redacted_wherever_it_applies(kind, pattern, example):
    assert NEW in example
    assert NEW not in redact.text(example), "free text"
    for where, text in _contexts(kind, pattern, example).items():
        assert NEW not in text and redact.REDACTED in text, (where, text)


# --- the tester's findings: OpenTelemetry spans, quoted values, whole header values, fragments --------

OTEL_SECRETS = tuple(f"OT{n}S3CR3T" for n in range(1, 12))
OTEL_SDK = """
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
"""
OTEL_PROGRAM = """
import json, time
from opentelemetry import trace
t = trace.get_tracer("app")
with t.start_as_current_span("GET /reset?token=OT1S3CR3T") as s:
    s.set_attribute("http.request.header.authorization", "Bearer OT2S3CR3T")
    s.set_attribute("url.full", "http://u:OT3S3CR3T@h/p?token=OT4S3CR3T#access_token=OT5S3CR3T&state=x")
    s.set_attribute("app.api_key", "OT6S3CR3T")
    s.set_attribute("db.statement", "UPDATE users SET password='OT7S3CR3T' WHERE id=1")
    s.set_attribute("app.args", ["--password", "OT8S3CR3T"])
    s.set_attribute("app.kind", "widget")
    try:
        raise ValueError("bad credentials token=OT9S3CR3T")
    except ValueError as e:
        s.record_exception(e)
for i in range(300):  # a whole block of clean spans around the ones with secrets
    with t.start_as_current_span("work", attributes={"item.index": i, "item.kind": "widget"}):
        pass
opened = t.start_span("open at a flush?sid=OT10S3CR3T")
time.sleep(0.4)  # the flusher writes its S record
opened.set_attribute("app.secret", "OT11S3CR3T")
opened.end()
print(json.dumps([dict(s.attributes, name=s.name) for s in exporter.get_finished_spans()] if "exporter" in globals() else []))
"""


@pytest.mark.parametrize("setup", ["sdk", "api"])
def test_opentelemetry_spans_are_redacted(traced, setup):
    """The bridge's spans (hooks/otel_.py) as the agent's: names, attribute keys and values, a recorded
    exception, a span written open at a flush. The program's own exporter still sees its values."""
    result = traced.python((OTEL_SDK if setup == "sdk" else "") + OTEL_PROGRAM)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert found_secrets(traced.run_dir, traced.tmp_path / "store.duckdb", OTEL_SECRETS) == []
    spans = traced.spans()
    assert spans.diagnostics == []
    [span] = spans.named("GET /reset?token=[REDACTED]")
    attributes = span.attributes
    assert attributes["http.request.header.authorization"] == "[REDACTED]"
    assert attributes["url.full"] == "http://[REDACTED]@h/p?token=[REDACTED]#access_token=[REDACTED]&state=x"
    assert attributes["app.api_key"] == "[REDACTED]"
    assert attributes["db.statement"] == "UPDATE users SET password=[REDACTED] WHERE id=1"
    assert attributes["app.args"] == ["--password", "[REDACTED]"]
    assert attributes["app.kind"] == "widget"
    assert attributes["exception.message"] == "bad credentials token=[REDACTED]"
    work = spans.named("work")
    assert len(work) == 300 and work[-1].attributes["item.kind"] == "widget"
    [opened] = spans.named("open at a flush?sid=[REDACTED]")
    assert opened.attributes["app.secret"] == "[REDACTED]"
    if setup == "sdk":  # the program's spans are its own: the bridge redacts copies
        exported = {span.pop("name"): span for span in json.loads(result.stdout)}
        assert exported["GET /reset?token=OT1S3CR3T"]["app.api_key"] == "OT6S3CR3T"


REUSED = """
from opentelemetry import trace
t = trace.get_tracer("app")
attributes = {"app.kind": "widget", "app.n": 1}
for _ in range(3):  # one dict for every span, known clean after the first
    with t.start_as_current_span("a", attributes=attributes):
        pass
attributes["app.note"] = "Bearer RE1S3CR3T"  # the same dict, changed
with t.start_as_current_span("b", attributes=attributes):
    pass
with t.start_as_current_span("c") as span:
    span.set_attribute("app.kind", "token=RE2S3CR3T")  # a key known clean, a value not
with t.start_as_current_span("d") as span:
    span.set_attribute("app.kind", "widget")
    span.set_attributes({"app.secret": "RE3S3CR3T"})
with t.start_as_current_span("e") as span:
    span.set_status(trace.StatusCode.ERROR, "failed: password=RE4S3CR3T")
"""


@pytest.mark.parametrize("setup", ["sdk", "api"])
def test_opentelemetry_attributes_known_clean_are_looked_at_again_once_changed(traced, setup):
    """The API path redacts at a span's end only what was not known clean as it was set (a start's
    dict remembered with a copy of it): a dict changed, a known key's new value, set_attributes, a
    status description are looked at."""
    result = traced.python((OTEL_SDK if setup == "sdk" else "") + REUSED)
    assert result.returncode == 0 and result.stderr == b"", result.stderr
    assert found_secrets(traced.run_dir, traced.tmp_path / "store.duckdb",
                         ("RE1S3CR3T", "RE2S3CR3T", "RE3S3CR3T", "RE4S3CR3T")) == []
    spans = traced.spans()
    assert [s.attributes["app.kind"] for s in spans.named("a")] == ["widget"] * 3
    [b] = spans.named("b")
    assert b.attributes["app.note"] == "Bearer [REDACTED]"
    assert spans.named("c")[0].attributes["app.kind"] == "token=[REDACTED]"
    assert spans.named("d")[0].attributes["app.secret"] == "[REDACTED]"
    assert spans.named("e")[0].attributes["otel.status_description"] == "failed: password=[REDACTED]"


def test_resource_attributes_are_redacted(traced):
    result = traced.python("pass", extra_env={"OTEL_RESOURCE_ATTRIBUTES": "app.token=RES1S3CR3T,db.password=RES2S3CR3T,"
                                                                          "deployment.environment=test"})
    assert result.returncode == 0, result.stderr
    assert found_secrets(traced.run_dir, traced.tmp_path / "store.duckdb", ("RES1S3CR3T", "RES2S3CR3T")) == []


QUOTED_SECRETS = tuple(f"Q{n}S3CR3T" for n in range(1, 17))
QUOTED = r'''
import shutil, subprocess, sys
true = shutil.which("true")
subprocess.run([sys.executable, "-c", "TOKEN='Q1S3CR3T'; password = \"Q2S3CR3T\"; x={'api_key': 'Q3S3CR3T'}"])
subprocess.run([sys.executable, "-c", "import os; os.environ['API_KEY']='Q4S3CR3T'\ndef login(password): pass\nlogin(password=\"Q5S3CR3T\")"])
subprocess.run('export API_KEY="Q6S3CR3T"; sh -c "TOKEN=\\"Q7S3CR3T\\" true"', shell=True)
subprocess.run([true, "-H", "Cookie: a=b; sid=Q8S3CR3T; csrf=Q9S3CR3T"])
subprocess.run([true, "-H", 'Authorization: Digest username="u", response="Q10S3CR3T"'])
subprocess.run("curl -H 'Cookie: a=b; sid=Q11S3CR3T' https://h/x > /dev/null 2>&1 || true", shell=True)
subprocess.run([true, "https://h/cb#access_token=Q12S3CR3T&state=1", "https://h/p?jwt=Q13S3CR3T&sid=Q14S3CR3T"])
subprocess.run([true, "-u", "admin:Q15S3CR3T", "https://h/p?user=me&pass=Q16S3CR3T"])
'''


def test_quoted_values_whole_header_values_and_fragments_never_reach_a_span(traced):
    """Quoted secrets in `-c` programs and shell commands (the service name of a `-c` process is made
    from it too), header values holding spaces and semicolons, URL fragments, the smaller names."""
    script = traced.tmp_path / "quoted.py"  # a file: its own command line holds no secret
    script.write_text(QUOTED)
    result = traced.run([sys.executable, str(script)])
    assert result.returncode == 0, result.stderr
    assert found_secrets(traced.run_dir, traced.tmp_path / "store.duckdb", QUOTED_SECRETS) == []
    args = [" ".join(s.attributes.get("process.command_args", ())) for s in traced.spans().spans]
    assert any("Cookie: [REDACTED]" in a for a in args) and any("Digest [REDACTED]" in a for a in args)
    assert any("#access_token=[REDACTED]&state=1" in a for a in args)
    assert any("-u admin:[REDACTED]" in a for a in args)


@pytest.mark.parametrize("quoted, redacted", [
    ("TOKEN='S3CR3T'", "TOKEN=[REDACTED]"),
    ('password = "S3CR3T"', "password = [REDACTED]"),
    ("x={'api_key': 'S3CR3T'}", "x={'api_key': [REDACTED]}"),
    ("os.environ['API_KEY']='S3CR3T'", "os.environ['API_KEY']=[REDACTED]"),
    ('login(password="S3CR3T")', "login(password=[REDACTED])"),
    ('export API_KEY="S3CR3T"', "export API_KEY=[REDACTED]"),
    ('TOKEN=\\"S3CR3T\\"', "TOKEN=[REDACTED]"),
    ("TOKEN=\\'S3CR3T\\'", "TOKEN=[REDACTED]"),
    ("TOKEN='S3CR3T", "TOKEN=[REDACTED]"),  # a quote left open (a command line cut)
    ('password = "my S3CR3T phrase" ok', "password = [REDACTED] ok"),
    ("login('password', 'S3CR3T')", "login('password', [REDACTED])"),
    ("--password 'S3CR3T S3CR3T' -v", "--password [REDACTED] -v"),
])
def test_quoted_values_are_redacted_whole(quoted, redacted):
    assert redact.text(quoted) == redacted
    assert redact.text(redacted) == redacted  # a second pass changes nothing


def test_header_values_are_redacted_whole():
    assert redact.argv(["curl", "-H", "Cookie: a=b; sid=S2; csrf=S3"]) == ["curl", "-H", "Cookie: [REDACTED]"]
    assert redact.argv(["curl", "-H", 'Authorization: Digest username="u", response="S"']) == \
        ["curl", "-H", "Authorization: Digest [REDACTED]"]
    assert redact.argv(["curl", "--header=X-Vault-Token: a b"]) == ["curl", "--header=X-Vault-Token: [REDACTED]"]
    assert redact.text("curl -H 'Cookie: a=b; sid=S' -H \"Private-Token: x y\" https://h/") == \
        "curl -H 'Cookie: [REDACTED]' -H \"Private-Token: [REDACTED]\" https://h/"
    assert redact.text("GET / HTTP/1.1\r\nHost: h\r\nCookie: a=b; sid=S\r\nAccept: */*") == \
        "GET / HTTP/1.1\r\nHost: h\r\nCookie: [REDACTED]\r\nAccept: */*"
    assert redact.text("Authorization: Bearer [REDACTED]") == "Authorization: Bearer [REDACTED]"


def test_fragments_and_the_smaller_names():
    assert redact.url("https://h/cb#access_token=S&state=x") == "https://h/cb#access_token=[REDACTED]&state=x"
    assert redact.url("https://h/#/cb?id_token=S&x=1") == "https://h/#/cb?id_token=[REDACTED]&x=1"
    assert redact.url("https://h/p#section-2") == "https://h/p#section-2"
    assert redact.url("https://h/p?a=1;token=S") == "https://h/p?a=1;token=[REDACTED]"
    assert redact.url("https://h/p?api%5Fkey=S") == "https://h/p?api%5Fkey=[REDACTED]"
    assert redact.query_string("jwt=S&sid=S&pass=S&pw=S&bypass=1&passenger=2&sidebar=3") == \
        "jwt=[REDACTED]&sid=[REDACTED]&pass=[REDACTED]&pw=[REDACTED]&bypass=1&passenger=2&sidebar=3"


@pytest.mark.parametrize("args, expected", [
    (["tool", "-u", "admin:S"], ["tool", "-u", "admin:[REDACTED]"]),
    (["tool", "--user=admin:S"], ["tool", "--user=admin:[REDACTED]"]),
    (["python", "-u", "app.py"], ["python", "-u", "app.py"]),  # no value: the next argument is not user:secret
    (["docker", "run", "-u", "app:app", "img"], ["docker", "run", "-u", "app:app", "img"]),  # user:group
    (["tool", "-u", "1000:1000"], ["tool", "-u", "1000:1000"]),  # uid:gid
    (["tool", "-u", "localhost:8080"], ["tool", "-u", "localhost:8080"]),  # host:port
    (["rsync", "-u", "host:dir", "."], ["rsync", "-u", "host:dir", "."]),  # -u takes no value: host:path
    (["tool", "-u", "host:/srv"], ["tool", "-u", "host:/srv"]),
    (["git", "push", "-u", "origin", "main:main"], ["git", "push", "-u", "origin", "main:main"]),
    (["tool", "--user-agent", "a:b"], ["tool", "--user-agent", "a:b"]),
])
def test_a_user_flag_of_any_program(args, expected):
    assert redact.argv(args) == expected


@pytest.mark.parametrize("args", [
    ["pytest", "-k", "test_sorting", "--passenger", "x", "--sidebar", "--bypass", "y", "--pass-through"],
    ["ls", "--color=auto", "--sort=size", "--keep-going"],
    ["cmake", "--define=CMAKE_BUILD_TYPE=Release", "-DX=1"],
    ["pip", "install", "-U", "requests==2.32.3", "--index-url", "https://pypi.org/simple/"],
    ["git", "log", "--format=%h %s", "-n", "5"],
    ["curl", "-H", "Accept: application/json", "-H", "User-Agent: x/1.0", "https://h/p?page=2#top"],
    ["ls", "-k"],  # `-p`, `-k`, `-U` are secrets only for the programs that use them so
    ["ssh", "-p", "2222", "host"],
    ["docker", "run", "-p", "8080:80", "image"],
    ["docker", "run", "--name", "login", "-p", "8080:80", "image"],  # `login` as a value: no `docker login`
    ["mysql", "-h", "host", "-P", "3306"],
    ["openssl", "enc", "-pass", "env:VAR", "-passin", "file:/run/pass", "-passout", "stdin"],
    ["smbclient", "-U", "me", "-L", "host"],  # asks for the password
    ["htpasswd", "-c", "site.htpasswd", "me"],
    ["aws", "configure", "set", "region", "eu-west-1"],
    ["git", "config", "--global", "credential.helper", "store"],
    ["gsettings", "set", "org.gnome.desktop.session", "idle-delay", "300"],
    ["gh", "issue", "create", "-b", "body text"],
    ["curl", "https://discord.com/channels/1/2", "https://hooks.slack.com/", "https://api.telegram.org/"],
])
def test_ordinary_command_lines_are_kept(args):
    assert redact.argv(args) == args


@pytest.mark.parametrize("text", [
    "KeyError: 'nope'",  # an exception's class holding a word, then its message
    "Traceback (most recent call last):\n  File \"x.py\", line 1, in <module>\nKeyError: 'item'\n",
    "jwt.exceptions.InvalidTokenError: Signature has expired",
    "curl --user-agent 'Mozilla/5.0 (X11; Linux x86_64)' -H 'Accept: application/json' https://h/p#top",
    "sort -u names.txt | docker run -u 1000:1000 img",
    "GET /api/v1/items?page=2&sidebar=1 HTTP/1.1",
    "ls -k && ssh -p 2222 host && docker run -p 8080:80 image && mysql -h host -P 3306",
    "could not set password for user bob",
    "echo 50% done; net stat",
])
def test_ordinary_text_is_kept(text):
    assert redact.text(text) == text


# --- the tester's findings: program flags, `set NAME VALUE`, samba's user%pass, secrets in a URL's path --

PROGRAM_SECRETS = tuple(f"D{n}S3CR3T" for n in range(1, 32))
FAKE_PROGRAMS = ("docker", "aws", "openssl", "htpasswd", "smbclient", "rpcclient", "net", "curl", "mysql", "psql",
                 "sshpass", "git", "tool", "ssh")
PROGRAMS = r'''
import os, subprocess, sys
env = dict(os.environ, PATH=sys.argv[1] + os.pathsep + os.environ["PATH"])
for command in [
    ["docker", "login", "-u", "me", "-p", "D1S3CR3T", "registry.example"],
    ["docker", "login", "-u", "me", "--password", "D2S3CR3T", "registry.example"],
    ["docker", "login", "-u", "me", "--password=D3S3CR3T", "registry.example"],
    "docker login -u me -p D4S3CR3T registry.example",
    ["sh", "-c", "docker login -u me -pD5S3CR3T registry.example && true"],
    ["aws", "configure", "set", "aws_secret_access_key", "D6S3CR3T"],
    ["aws", "configure", "set", "aws_session_token", "D7S3CR3T"],
    ["openssl", "enc", "-aes-256-cbc", "-k", "D8S3CR3T", "-in", "/dev/null"],
    ["openssl", "enc", "-d", "-pass", "pass:D9S3CR3T"],
    ["openssl", "rsa", "-passin", "pass:D10S3CR3T"],
    ["openssl", "genrsa", "-passout", "pass:D11S3CR3T", "2048"],
    ["htpasswd", "-b", "site.htpasswd", "me", "D12S3CR3T"],
    ["smbclient", "-U", "me%D13S3CR3T", "//host/share"],
    ["rpcclient", "--user=me%D14S3CR3T", "host"],
    ["net", "rpc", "info", "-U", "DOM\\me%D15S3CR3T"],
    ["curl", "-d", "{}", "https://hooks.slack.com/services/T000/B000/D16S3CR3T"],
    ["curl", "https://api.telegram.org/bot123456:D17S3CR3T/sendMessage"],
    ["curl", "https://discord.com/api/webhooks/123/D18S3CR3T"],
    ["mysql", "-pD19S3CR3T", "shop"],
    ["mysql", "--password=D20S3CR3T", "shop"],
    ["psql", "postgresql://u:D21S3CR3T@h/db"],
    ["sshpass", "-p", "D22S3CR3T", "ssh", "h"],
    ["curl", "-u", "user:D23S3CR3T", "https://h/"],
    ["git", "clone", "https://user:D24S3CR3T@host/r"],
    ["tool", "--token", "D25S3CR3T"],
    ["tool", "--api-key", "D26S3CR3T"],
    ["sh", "-c", "openssl enc -k D27S3CR3T; htpasswd -b f me D28S3CR3T; smbclient -U me%D29S3CR3T //h/s; "
                 "aws configure set aws_secret_access_key D30S3CR3T; curl https://hooks.slack.com/services/T/B/D31S3CR3T"],
    ["docker", "run", "-p", "8080:80", "image"],  # ordinary: kept as they are
    ["ssh", "-p", "2222", "host"],
    ["mysql", "-h", "host", "-P", "3306"],
]:
    subprocess.run(command, env=env, shell=isinstance(command, str), check=True)
'''


def assert_kept_everywhere(args: list[str]) -> None:
    """`args` kept whole as argv, as free text, in a Python call and in a shell's command."""
    assert redact.argv(args) == args
    assert redact.text(" ".join(args)) == " ".join(args)
    assert redact.text(f"subprocess.run({args!r})") == f"subprocess.run({args!r})"
    assert redact.text(f"sh -c '{' '.join(args)}'") == f"sh -c '{' '.join(args)}'"


def check_command_lines(traced, programs: tuple, source: str, secrets: tuple, redacted: tuple,
                        kept: tuple = ()) -> None:
    """`source` run traced from a file (its own command line holds no secret) with stand-ins of
    `programs` on PATH: none of `secrets` in a run file or the store, each of `redacted` inside a
    recorded command line, each of `kept` one whole."""
    bin_dir = traced.tmp_path / "bin"
    bin_dir.mkdir()
    for name in programs:
        (bin_dir / name).write_text("#!/bin/sh\nexit 0\n")
        (bin_dir / name).chmod(0o755)
    script = traced.tmp_path / "programs.py"
    script.write_text(source)
    result = traced.run([sys.executable, str(script), str(bin_dir)])
    assert result.returncode == 0, result.stderr
    assert found_secrets(traced.run_dir, traced.tmp_path / "store.duckdb", secrets) == []
    args = [" ".join(s.attributes["process.command_args"]) for s in traced.spans().spans
            if "process.command_args" in s.attributes]
    for part in redacted:
        assert any(part in a for a in args), (part, args)
    for whole in kept:
        assert whole in args, (whole, args)


def test_program_flags_settings_and_url_paths_never_reach_a_span(traced):
    """The commands a tester found stored in clear text, spawned by their real names (stand-ins on
    PATH): a password flag of one program or one subcommand (`docker login -p`), `set NAME VALUE`,
    openssl's `-k`/`-pass*`, htpasswd's last word, samba's `user%pass`, webhook and bot tokens in a
    URL's path; in argv, in a shell command, and none of it in a run file or the store."""
    check_command_lines(traced, FAKE_PROGRAMS, PROGRAMS, PROGRAM_SECRETS,
                        ("docker login -u me -p [REDACTED] registry.example", "set aws_session_token [REDACTED]",
                         "-k [REDACTED] -in", "-passin pass:[REDACTED]", "site.htpasswd me [REDACTED]",
                         "-U me%[REDACTED]", "https://hooks.slack.com/services/T000/B000/[REDACTED]",
                         "https://api.telegram.org/bot123456:[REDACTED]/sendMessage",
                         "https://discord.com/api/webhooks/123/[REDACTED]"),
                        kept=("docker run -p 8080:80 image", "ssh -p 2222 host", "mysql -h host -P 3306"))


@pytest.mark.parametrize("args, expected", [
    (["docker", "login", "-u", "me", "-p", "S", "r.example"], ["docker", "login", "-u", "me", "-p", "[REDACTED]", "r.example"]),
    (["/usr/bin/docker", "--context", "prod", "login", "-pS"], ["/usr/bin/docker", "--context", "prod", "login", "-p[REDACTED]"]),
    (["podman", "login", "-p=S", "r"], ["podman", "login", "-p=[REDACTED]", "r"]),
    (["aws", "configure", "set", "aws_secret_access_key", "S"], ["aws", "configure", "set", "aws_secret_access_key", "[REDACTED]"]),
    (["aws", "configure", "set", "profile.dev.aws_session_token", "S", "--profile", "dev"],
     ["aws", "configure", "set", "profile.dev.aws_session_token", "[REDACTED]", "--profile", "dev"]),
    (["npm", "config", "set", "//registry.npmjs.org/:_authToken", "S"],
     ["npm", "config", "set", "//registry.npmjs.org/:_authToken", "[REDACTED]"]),
    (["gh", "secret", "set", "API_TOKEN", "-b", "S"], ["gh", "secret", "set", "API_TOKEN", "-b", "[REDACTED]"]),
    (["openssl", "enc", "-k", "S"], ["openssl", "enc", "-k", "[REDACTED]"]),
    (["openssl", "rsa", "-passin", "pass:S", "-passout", "env:PASSPHRASE_VAR"],
     ["openssl", "rsa", "-passin", "pass:[REDACTED]", "-passout", "env:PASSPHRASE_VAR"]),  # env:VAR says where it is
    (["htpasswd", "-cbB", "f", "me", "S"], ["htpasswd", "-cbB", "f", "me", "[REDACTED]"]),
    (["htpasswd", "-nb", "me", "S"], ["htpasswd", "-nb", "me", "[REDACTED]"]),
    (["smbclient", "-Ume%S", "//h/s"], ["smbclient", "-Ume%[REDACTED]", "//h/s"]),
    (["net", "ads", "join", "--user", "DOM\\me%S"], ["net", "ads", "join", "--user", "DOM\\me%[REDACTED]"]),
    (["curl", "https://hooks.slack.com/services/T0/B0/S?x=1"], ["curl", "https://hooks.slack.com/services/T0/B0/[REDACTED]?x=1"]),
    (["curl", "https://ptb.discord.com/api/v10/webhooks/1/S/slack"],
     ["curl", "https://ptb.discord.com/api/v10/webhooks/1/[REDACTED]/slack"]),
    (["curl", "https://api.telegram.org/file/bot1:S/f.jpg"], ["curl", "https://api.telegram.org/file/bot1:[REDACTED]/f.jpg"]),
    # the second round: helm and smbtar -p, Teams webhooks, htpasswd's quoted password, openssl's key files
    (["helm", "registry", "login", "r.example", "-u", "me", "-p", "S"],
     ["helm", "registry", "login", "r.example", "-u", "me", "-p", "[REDACTED]"]),
    (["helm", "--debug", "registry", "login", "r.example", "-pS"], ["helm", "--debug", "registry", "login", "r.example", "-p[REDACTED]"]),
    (["helm", "registry", "login", "r.example", "--password", "S"], ["helm", "registry", "login", "r.example", "--password", "[REDACTED]"]),
    (["helm", "registry", "login", "r.example", "--password=S"], ["helm", "registry", "login", "r.example", "--password=[REDACTED]"]),
    (["helm", "repo", "add", "charts", "https://charts.example", "--username", "me", "--password", "S"],
     ["helm", "repo", "add", "charts", "https://charts.example", "--username", "me", "--password", "[REDACTED]"]),
    (["smbtar", "-s", "host", "-x", "share", "-u", "me", "-p", "S", "-t", "backup.tar"],
     ["smbtar", "-s", "host", "-x", "share", "-u", "me", "-p", "[REDACTED]", "-t", "backup.tar"]),
    (["smbtar", "-pS", "-s", "host"], ["smbtar", "-p[REDACTED]", "-s", "host"]),
    (["openssl", "enc", "-aes-256-cbc", "-K", "S", "-iv", "0a1b"], ["openssl", "enc", "-aes-256-cbc", "-K", "[REDACTED]", "-iv", "0a1b"]),
    (["openssl", "ca", "-key", "S", "-keyfile", "ca.key", "-passin", "env:VAR"],  # the program's flags too: env:VAR kept
     ["openssl", "ca", "-key", "[REDACTED]", "-keyfile", "ca.key", "-passin", "env:VAR"]),
    (["openssl", "dgst", "-sha256", "-hmac", "S", "f"], ["openssl", "dgst", "-sha256", "-hmac", "[REDACTED]", "f"]),
    (["openssl", "s_client", "-psk", "S", "-connect", "h:443"], ["openssl", "s_client", "-psk", "[REDACTED]", "-connect", "h:443"]),
    (["openssl", "pkcs12", "-export", "-password", "pass:S", "-inkey", "key.pem"],  # its pass phrases: `pass` in the flag
     ["openssl", "pkcs12", "-export", "-password", "pass:[REDACTED]", "-inkey", "key.pem"]),
    (["openssl", "s_client", "-srppass", "S", "-key", "key.pem"], ["openssl", "s_client", "-srppass", "[REDACTED]", "-key", "key.pem"]),
    (["openssl", "cmp", "-srv_secret", "pass:S"], ["openssl", "cmp", "-srv_secret", "pass:[REDACTED]"]),
    (["curl", "https://org.webhook.office.com/webhookb2/G@T/IncomingWebhook/S/C"],
     ["curl", "https://org.webhook.office.com/webhookb2/G@T/IncomingWebhook/[REDACTED]/C"]),
    (["curl", "https://org.webhook.office.com/webhookb2/G@T/IncomingWebhook/S/C/V2S"],  # the 2025 URLs' signature too
     ["curl", "https://org.webhook.office.com/webhookb2/G@T/IncomingWebhook/[REDACTED]/C/[REDACTED]"]),
    (["curl", "https://webhook.office.com/webhookb2/G%40T/IncomingWebhook/S/C"],  # no `@`: found by the host's mark
     ["curl", "https://webhook.office.com/webhookb2/G%40T/IncomingWebhook/[REDACTED]/C"]),
    (["curl", "https://prod-12.westus.logic.azure.com:443/workflows/W/triggers/manual/paths/invoke"
              "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=S"],  # Teams' workflows: an Azure `sig=`
     ["curl", "https://prod-12.westus.logic.azure.com:443/workflows/W/triggers/manual/paths/invoke"
              "?api-version=2016-06-01&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0&sig=[REDACTED]"]),
    (["sh", "-c", "htpasswd -b site.htpasswd me 'my S pass'"], ["sh", "-c", "htpasswd -b site.htpasswd me [REDACTED]"]),
])
def test_program_flags_settings_and_url_paths_in_argv(args, expected):
    assert redact.argv(args) == expected
    assert redact.argv(expected) == expected  # a second pass changes nothing


@pytest.mark.parametrize("text, redacted", [
    ("docker login -u me -p S r.example && docker run -p 80:80 img",
     "docker login -u me -p [REDACTED] r.example && docker run -p 80:80 img"),
    ("import subprocess; subprocess.run(['openssl', 'enc', '-k', 'S'])",
     "import subprocess; subprocess.run(['openssl', 'enc', '-k', '[REDACTED]'])"),
    ("curl -u me:S https://h/", "curl -u me:[REDACTED] https://h/"),
    ("openssl rsa -passin pass:S -passout env:VAR", "openssl rsa -passin pass:[REDACTED] -passout env:VAR"),
    ("x=$(htpasswd -nb me S)", "x=$(htpasswd -nb me [REDACTED])"),
    ("smbclient //h/s -U 'me%S' -c ls", "smbclient //h/s -U 'me%[REDACTED]' -c ls"),
    ("aws configure set aws_secret_access_key S --profile p", "aws configure set aws_secret_access_key [REDACTED] --profile p"),
    ("curl -X POST https://discord.com/api/webhooks/1/S -d x", "curl -X POST https://discord.com/api/webhooks/1/[REDACTED] -d x"),
    # the second round: helm and smbtar -p, Teams webhooks, htpasswd's quoted password, openssl's key files
    ("helm registry login r.example -u me -p S && helm install app ./chart",
     "helm registry login r.example -u me -p [REDACTED] && helm install app ./chart"),
    ("smbtar -s host -x share -u me -p S -t backup.tar", "smbtar -s host -x share -u me -p [REDACTED] -t backup.tar"),
    ("openssl enc -aes-256-cbc -K S -iv 0a1b -in f", "openssl enc -aes-256-cbc -K [REDACTED] -iv 0a1b -in f"),
    ("printf x | openssl dgst -sha256 -hmac S", "printf x | openssl dgst -sha256 -hmac [REDACTED]"),
    ("htpasswd -b site.htpasswd me 'my S pass'", "htpasswd -b site.htpasswd me [REDACTED]"),
    ('sh -c "htpasswd -b site.htpasswd me \'my S pass\'"', 'sh -c "htpasswd -b site.htpasswd me [REDACTED]"'),
    ('htpasswd -nb me "my S pass" > f 2>&1 && echo ok', "htpasswd -nb me [REDACTED] > f 2>&1 && echo ok"),
    ("htpasswd -nbB me S >>.htpasswd", "htpasswd -nbB me [REDACTED] >>.htpasswd"),  # not the redirection's file
    ("""os.system("htpasswd -b f me 'my S pass'")""", 'os.system("htpasswd -b f me [REDACTED]")'),
    ("curl -d x https://org.webhook.office.com/webhookb2/G@T/IncomingWebhook/S/C/V2S",
     "curl -d x https://org.webhook.office.com/webhookb2/G@T/IncomingWebhook/[REDACTED]/C/[REDACTED]"),
    # openssl's flags holding no `pass` or `secret` are kept in its command only
    ("openssl req -newkey rsa:2048 -keyout key.pem -passout pass:S && tool -api-key S",
     "openssl req -newkey rsa:2048 -keyout key.pem -passout pass:[REDACTED] && tool -api-key [REDACTED]"),
    ("openssl pkcs12 -export -inkey key.pem -password pass:S -keypass S",
     "openssl pkcs12 -export -inkey key.pem -password pass:[REDACTED] -keypass [REDACTED]"),
])
def test_program_flags_settings_and_url_paths_in_free_text(text, redacted):
    assert redact.text(text) == redacted
    assert redact.text(redacted) == redacted


# --- openssl's key files and key specs, kept; what a second round of the tester's found, end to end ---

OPENSSL_KEPT = [  # its flags naming files and key specs, not secrets
    ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "key.pem", "-out", "cert.pem"],
    ["openssl", "req", "-new", "-key", "key.pem", "-keyform", "PEM", "-out", "req.csr"],
    ["openssl", "x509", "-req", "-in", "req.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-out", "cert.pem"],
    ["openssl", "x509", "-in", "cert.pem", "-pubkey", "-noout"],
    ["openssl", "dgst", "-sha256", "-verify", "pub.pem", "-signature", "sig.bin", "f"],
    ["openssl", "s_client", "-connect", "h:443", "-keylogfile", "keys.log", "-psk_session", "s.pem"],
    ["openssl", "enc", "-d", "-aes-256-cbc", "-kfile", "pass.txt", "-iv", "0a1b", "-in", "f"],
    ["openssl", "speed", "-hmac", "sha256"],  # a digest: `dgst -hmac` takes the key
]


@pytest.mark.parametrize("args", OPENSSL_KEPT)
def test_openssl_keeps_its_key_files_and_key_specs(args):
    assert redact.argv(args) == args
    assert redact.text(" ".join(args)) == " ".join(args)
    assert redact.text(f"subprocess.run({args!r})") == f"subprocess.run({args!r})"


TEAMS = "https://org.webhook.office.com/webhookb2/G@T/IncomingWebhook/E6S3CR3T/C/V2E7S3CR3T"
NEW_SECRETS = tuple(f"E{n}S3CR3T" for n in range(1, 9))
NEW_FAKE_PROGRAMS = ("helm", "smbtar", "openssl", "curl")
NEW_FORMS = r'''
import os, subprocess, sys
env = dict(os.environ, PATH=sys.argv[1] + os.pathsep + os.environ["PATH"])
for command in [
    ["helm", "registry", "login", "r.example", "-u", "me", "-p", "E1S3CR3T"],
    ["smbtar", "-s", "host", "-x", "share", "-u", "me", "-p", "E2S3CR3T"],
    ["openssl", "enc", "-aes-256-cbc", "-K", "E3S3CR3T", "-iv", "0a1b"],
    ["sh", "-c", "htpasswd -b site.htpasswd me 'E4S3CR3T E5S3CR3T' || true"],
    ["curl", "TEAMS"],
    "helm repo add charts https://charts.example --username me --password E8S3CR3T",
    ["openssl", "req", "-newkey", "rsa:2048", "-keyout", "key.pem"],  # ordinary: kept as it is
]:
    subprocess.run(command, env=env, shell=isinstance(command, str), check=True)
'''.replace("TEAMS", TEAMS)


def test_more_program_flags_and_url_paths_never_reach_a_span(traced):
    """The forms a tester found stored in clear text, spawned by their real names (stand-ins on PATH), and
    an openssl key file and key spec kept."""
    check_command_lines(traced, NEW_FAKE_PROGRAMS, NEW_FORMS, NEW_SECRETS,
                        ("-u me -p [REDACTED]", "-K [REDACTED] -iv 0a1b", "site.htpasswd me [REDACTED] ||",
                         "IncomingWebhook/[REDACTED]/C/[REDACTED]", "--password [REDACTED]"),
                        kept=("openssl req -newkey rsa:2048 -keyout key.pem",))


# --- the tester's findings: openssl's `-flag=value` and `pass` flags in free text, keytool's passwords, flags
# saying where a secret is, options in a list, a subcommand's name inside a file's, argv's output redacted again --

@pytest.mark.parametrize("args, expected", [
    (["openssl", "enc", "-k=S", "-in", "f"], ["openssl", "enc", "-k=[REDACTED]", "-in", "f"]),  # openssl 3's `-flag=value`
    (["openssl", "rsa", "-passin=pass:S", "-passout=pass:S"],
     ["openssl", "rsa", "-passin=pass:[REDACTED]", "-passout=pass:[REDACTED]"]),
    (["openssl", "enc", "-d", "-pass=pass:S", "-K=S"], ["openssl", "enc", "-d", "-pass=pass:[REDACTED]", "-K=[REDACTED]"]),
    (["openssl", "ca", "-key=S", "-passin=env:VAR"], ["openssl", "ca", "-key=[REDACTED]", "-passin=env:VAR"]),
    (["openssl", "s_client", "-srppass=S", "-proxy_pass=pass:S"],
     ["openssl", "s_client", "-srppass=[REDACTED]", "-proxy_pass=pass:[REDACTED]"]),
    (["keytool", "-list", "-keystore", "k.jks", "-storepass", "S"],
     ["keytool", "-list", "-keystore", "k.jks", "-storepass", "[REDACTED]"]),
    (["keytool", "-importkeystore", "-srcstorepass", "S", "-deststorepass", "S", "-srckeypass", "S", "-destkeypass", "S"],
     ["keytool", "-importkeystore", "-srcstorepass", "[REDACTED]", "-deststorepass", "[REDACTED]", "-srckeypass",
      "[REDACTED]", "-destkeypass", "[REDACTED]"]),
    (["keytool", "-storepasswd", "-new", "S", "-storepass", "S"],
     ["keytool", "-storepasswd", "-new", "[REDACTED]", "-storepass", "[REDACTED]"]),
    (["keytool", "-genkeypair", "-keyalg", "RSA", "-keypass", "S", "-signer", "ca", "-signerkeypass", "S"],
     ["keytool", "-genkeypair", "-keyalg", "RSA", "-keypass", "[REDACTED]", "-signer", "ca", "-signerkeypass", "[REDACTED]"]),
    (["keytool", "-list", "-J-Djavax.net.ssl.trustStorePassword=S"],  # the JVM's option: no flag of keytool's
     ["keytool", "-list", "-J-Djavax.net.ssl.trustStorePassword=[REDACTED]"]),
])
def test_openssl_joined_values_and_keytool_in_argv(args, expected):
    assert redact.argv(args) == expected
    assert redact.argv(expected) == expected  # a second pass changes nothing


@pytest.mark.parametrize("text, redacted", [
    ('sh -c "openssl enc -k=S -in f"', 'sh -c "openssl enc -k=[REDACTED] -in f"'),
    ("openssl rsa -passin=pass:S -passout=pass:S", "openssl rsa -passin=pass:[REDACTED] -passout=pass:[REDACTED]"),
    ("openssl enc -d -pass=pass:S -in f", "openssl enc -d -pass=pass:[REDACTED] -in f"),
    ("openssl s_client -srppass S -proxy_pass pass:S -connect h:443",
     "openssl s_client -srppass [REDACTED] -proxy_pass pass:[REDACTED] -connect h:443"),
    ("openssl s_server -dpass pass:S -key2 k2.pem", "openssl s_server -dpass pass:[REDACTED] -key2 k2.pem"),
    ("openssl pkcs12 -export -passcerts=pass:S -in c.pem", "openssl pkcs12 -export -passcerts=pass:[REDACTED] -in c.pem"),
    ("subprocess.run(['openssl', 's_client', '-srppass', 'S'])",
     "subprocess.run(['openssl', 's_client', '-srppass', '[REDACTED]'])"),
    ("keytool -list -keystore k.jks -storepass S", "keytool -list -keystore k.jks -storepass [REDACTED]"),
    ("keytool -importkeystore -srcstorepass S -deststorepass S -srckeypass S -destkeypass S",
     "keytool -importkeystore -srcstorepass [REDACTED] -deststorepass [REDACTED] -srckeypass [REDACTED] "
     "-destkeypass [REDACTED]"),
    ("keytool -storepasswd -new S -storepass:env VAR", "keytool -storepasswd -new [REDACTED] -storepass:env VAR"),
    ("keytool -list -J-Djavax.net.ssl.trustStorePassword=S", "keytool -list -J-Djavax.net.ssl.trustStorePassword=[REDACTED]"),
    ("subprocess.run(['keytool', '-keypass', 'S', '-keystore', 'k.jks'])",
     "subprocess.run(['keytool', '-keypass', '[REDACTED]', '-keystore', 'k.jks'])"),
    ("subprocess.run(['htpasswd', '-b', 'f', 'me', 'S'])", "subprocess.run(['htpasswd', '-b', 'f', 'me', '[REDACTED]'])"),
    ("print('password:', 'S')", "print('password:', [REDACTED])"),  # not `'password:[REDACTED]S'`
    ('print("Token:", "S", flush=True)', 'print("Token:", [REDACTED], flush=True)'),
])
def test_openssl_keytool_and_lists_in_free_text(text, redacted):
    assert redact.text(text) == redacted
    assert redact.text(redacted) == redacted


@pytest.mark.parametrize("args", [
    ["docker", "login", "--password-stdin", "-u", "me", "registry.example"],  # takes no value
    ["docker", "login", "-u", "me", "--password-stdin", "registry.example"],
    ["tool", "--password-file", "/run/secrets/pw", "--token-file=/run/secrets/t"],  # where the secret is
    ["gpg", "--batch", "--passphrase-fd", "0", "--passphrase-file", "pw.txt", "-d", "f.gpg"],
    ["env", "POSTGRES_PASSWORD_FILE=/run/secrets/db", "postgres"],
    ["openssl", "rsa", "-passin=env:VAR", "-passout=file:/run/pw"],
    ["openssl", "s_client", "-proxy_pass", "env:VAR", "-connect", "h:443"],
    ["openssl", "req", "-newkey=rsa:2048", "-keyout=key.pem"],
    ["openssl", "x509", "-req", "-in", "r.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-key", "k.pem"],  # no `ca` subcommand
    ["mysql", "-p", "shop"],  # asks for the password: in a list too, `'shop'` is the database
    ["keytool", "-genkeypair", "-alias", "a", "-keyalg", "RSA", "-keysize", "2048", "-keystore", "k.jks",
     "-storepass:env", "VAR", "-keypass:file", "pw.txt"],  # where its passwords are
    ["keytool", "-importkeystore", "-srckeystore", "a.p12", "-destkeystore", "b.jks"],
])
def test_flags_naming_no_secret_are_kept(args):
    assert redact.argv(args) == args
    assert redact.text(" ".join(args)) == " ".join(args)
    assert redact.text(f"subprocess.run({args!r})") == f"subprocess.run({args!r})"


@pytest.mark.parametrize("args", [
    ["openssl", "rsa", "-passin", "pass:S"],
    ["openssl", "rsa", "-passin=pass:S"],
    ["openssl", "pkcs12", "-password", "pass:S"],
    ["openssl", "cmp", "-srv_secret", "pass:S"],
    ["curl", "-u", "me:S", "https://h/"],
    ["docker", "login", "-u", "me", "-p", "S", "r.example"],  # a short flag's value in a list: not `-p', '`
    ["podman", "login", "-p=S", "r"],
    ["tool", "--token", "me:S"],
    ["keytool", "-storepass", "me:S"],
    ["smbclient", "-U", "me%S", "//h/s"],
])
def test_argv_redacted_stays_as_it_is_in_free_text(args):
    """argv's output as a shell command, or a list in a -c program: redacting it again changes nothing."""
    redacted = redact.argv(args)
    assert "S" not in "".join(redacted).replace("[REDACTED]", "")
    for text in (" ".join(redacted), str(redacted), "sh -c '" + " ".join(redacted) + "'"):
        assert redact.text(text) == text


FOUND_SECRETS = tuple(f"F{n}S3CR3T" for n in range(1, 8))
FOUND_FAKE_PROGRAMS = ("openssl", "keytool", "docker")
FOUND_FORMS = r'''
import os, subprocess, sys
env = dict(os.environ, PATH=sys.argv[1] + os.pathsep + os.environ["PATH"])
for command in [
    ["openssl", "enc", "-k=F1S3CR3T"],
    ["openssl", "rsa", "-passin=pass:F2S3CR3T"],
    ["sh", "-c", "openssl s_client -srppass F3S3CR3T -proxy_pass pass:F4S3CR3T"],
    ["keytool", "-importkeystore", "-srcstorepass", "F5S3CR3T", "-deststorepass", "F6S3CR3T"],
    "keytool -storepasswd -new F7S3CR3T -storepass:env VAR",
    ["docker", "login", "--password-stdin", "-u", "me", "registry.example"],  # ordinary: kept as it is
]:
    subprocess.run(command, env=env, shell=isinstance(command, str), check=True)
'''


def test_openssl_joined_values_and_keytool_never_reach_a_span(traced):
    """The forms a tester found stored in clear text, spawned by their real names (stand-ins on PATH), and
    docker's `--password-stdin` with what follows it kept."""
    check_command_lines(traced, FOUND_FAKE_PROGRAMS, FOUND_FORMS, FOUND_SECRETS,
                        ("-k=[REDACTED]", "-passin=pass:[REDACTED]", "-srppass [REDACTED] -proxy_pass pass:[REDACTED]",
                         "-srcstorepass [REDACTED] -deststorepass [REDACTED]", "-new [REDACTED] -storepass:env VAR"),
                        kept=("docker login --password-stdin -u me registry.example",))


# --- a third round: a flag given twice in one command, openssl passwd's passwords, getenv's default, `'NAME:'` keys;
# a negation's next word, a list's words, docker's user:group and openssl's -twopass kept --

@pytest.mark.parametrize("text, redacted", [
    # one flag twice in one command: each value (a match starts at the program's name)
    ("mysql -u root -pS shop -pS", "mysql -u root -p[REDACTED] shop -p[REDACTED]"),
    ('sh -c "mysql -u root -pS -pS shop; mysql -pS shop"', 'sh -c "mysql -u root -p[REDACTED] -p[REDACTED] shop; mysql -p[REDACTED] shop"'),
    ("curl -U me:S -U me:S https://h/", "curl -U me:[REDACTED] -U me:[REDACTED] https://h/"),
    ("curl -ume:S -ume:S https://h/", "curl -ume:[REDACTED] -ume:[REDACTED] https://h/"),
    ("docker login -p S -p S r.example", "docker login -p [REDACTED] -p [REDACTED] r.example"),
    ("openssl enc -k S -in f -k S", "openssl enc -k [REDACTED] -in f -k [REDACTED]"),
    ("smbclient -U me%S -U me%S //h/s", "smbclient -U me%[REDACTED] -U me%[REDACTED] //h/s"),
    ("subprocess.run(['mysql', '-pS', '-pS'])", "subprocess.run(['mysql', '-p[REDACTED]', '-p[REDACTED]'])"),
    # openssl passwd's passwords: its words no option nor `-salt`'s (`-in`'s, ...) value, any number, quoted whole
    ("openssl passwd -6 -salt ab S", "openssl passwd -6 -salt ab [REDACTED]"),
    ("openssl passwd -1 S 'my S' > out.txt", "openssl passwd -1 [REDACTED] [REDACTED] > out.txt"),
    ("openssl passwd -salt=ab -apr1 S | tee f", "openssl passwd -salt=ab -apr1 [REDACTED] | tee f"),
    ("subprocess.run(['openssl', 'passwd', '-6', '-salt', 'ab', 'S'])",
     "subprocess.run(['openssl', 'passwd', '-6', '-salt', 'ab', [REDACTED]])"),
    # a getenv's default, its quotes escaped (a -c program in a shell's "...") or by keyword
    ('python -c "import os; k = os.getenv(\\"API_KEY\\", \\"S\\")"', 'python -c "import os; k = os.getenv(\\"API_KEY\\", [REDACTED])"'),
    ("python -c 'import os; k = os.environ.get(\\'TOKEN\\', \\'S\\')'", "python -c 'import os; k = os.environ.get(\\'TOKEN\\', [REDACTED])'"),
    ("os.getenv('API_KEY', default='S')", "os.getenv('API_KEY', default=[REDACTED])"),
    # a key ending with its colon inside the quotes
    ("x = {'token:': 'S'}", "x = {'token:': [REDACTED]}"),
    ('{"api_key:": "S", "n": 1}', '{"api_key:": [REDACTED], "n": 1}'),
    # secrets a user flag still finds beside a docker command, and pairs in a call or a tuple
    ("docker run -u app:app img && tool -u me:S", "docker run -u app:app img && tool -u me:[REDACTED]"),
    ("pairs = [('password', 'S')]", "pairs = [('password', [REDACTED])]"),
    ("subprocess.run(['tool', '--no-password-check', 'build', '--token', 'S'])",
     "subprocess.run(['tool', '--no-password-check', 'build', '--token', [REDACTED]])"),
])
def test_third_round_secrets_in_free_text(text, redacted):
    assert redact.text(text) == redacted
    assert redact.text(redacted) == redacted


@pytest.mark.parametrize("args, expected", [
    (["openssl", "passwd", "-6", "-salt", "ab", "S"], ["openssl", "passwd", "-6", "-salt", "ab", "[REDACTED]"]),
    (["openssl", "passwd", "-1", "S", "my S"], ["openssl", "passwd", "-1", "[REDACTED]", "[REDACTED]"]),
    (["/usr/bin/openssl", "passwd", "-salt=ab", "-apr1", "S"], ["/usr/bin/openssl", "passwd", "-salt=ab", "-apr1", "[REDACTED]"]),
    (["sh", "-c", "curl -U me:S -U me:S https://h/"], ["sh", "-c", "curl -U me:[REDACTED] -U me:[REDACTED] https://h/"]),
    (["tool", "--no-password-check", "build", "--token", "S"], ["tool", "--no-password-check", "build", "--token", "[REDACTED]"]),
])
def test_third_round_secrets_in_argv(args, expected):
    assert redact.argv(args) == expected
    assert redact.argv(expected) == expected


@pytest.mark.parametrize("args", [
    ["tool", "--no-password-check", "build"],  # a negation takes no value
    ["docker", "run", "-u", "app:app", "image"],  # user:group
    ["podman", "run", "--user=app:app", "image"],
    ["openssl", "pkcs12", "-twopass", "-in", "f.p12", "-out", "f.pem"],  # asks for two passwords: no value
    ["openssl", "passwd", "-6", "-salt", "ab"],  # asks for the password
    ["openssl", "passwd", "-in", "pw.txt"],
    ["make", "test-auth", "build"],  # a list's words, as argv keeps them
    ["pip", "install", "authlib", "requests"],
    ["pytest", "tests/test_auth.py", "tests/test_b.py"],
])
def test_third_round_kept(args):
    assert_kept_everywhere(args)


@pytest.mark.parametrize("text", [
    'fields = ["username", "password", "email"]',  # a list of names: none is another's value
    '["password", "build"]',
    "for name in ['secret_a', 'b']: pass",
])
def test_third_round_lists_of_names_kept(text):
    assert redact.text(text) == text


THIRD_SECRETS = tuple(f"T{n}S3CR3T" for n in range(1, 7))
THIRD_FAKE_PROGRAMS = ("openssl", "mysql", "curl", "docker")
THIRD_FORMS = r'''
import os, subprocess, sys
env = dict(os.environ, PATH=sys.argv[1] + os.pathsep + os.environ["PATH"])
for command in [
    ["openssl", "passwd", "-6", "-salt", "ab", "T1S3CR3T"],
    ["sh", "-c", "mysql -u root -pT2S3CR3T shop -pT3S3CR3T"],
    "curl -U me:T4S3CR3T -U me:T5S3CR3T https://h/",
    sys.executable + ' -c "import os; k = os.getenv(\\"API_KEY\\", \\"T6S3CR3T\\")"',  # quotes escaped in "..."
    "docker run -u app:app image",  # ordinary: kept as they are
    ["openssl", "pkcs12", "-twopass", "-in", "f.p12"],
]:
    subprocess.run(command, env=env, shell=isinstance(command, str), check=True)
'''


def test_third_round_never_reaches_a_span(traced):
    """The third round's forms, spawned by their real names (stand-ins on PATH); docker's user:group and openssl's
    -twopass kept."""
    check_command_lines(traced, THIRD_FAKE_PROGRAMS, THIRD_FORMS, THIRD_SECRETS,
                        ("-salt ab [REDACTED]", "-p[REDACTED] shop -p[REDACTED]", "-U me:[REDACTED] -U me:[REDACTED]"),
                        kept=("docker run -u app:app image", "openssl pkcs12 -twopass -in f.p12"))


# --- a fourth round: a call's last argument after a secret's name (configparser's set), a getenv's `or` default,
# mysqladmin's password, pairs in a list, a negation given a value; string prefixes, bracketed values, comparisons,
# setters and authentication objects, a URL's userinfo anywhere, a proxy's user:secret@ --

@pytest.mark.parametrize("text, redacted", [
    # the string argument before a call's last one names a secret: the last one is its value, not that name `'auth'`'s
    ("config.set('auth', 'token', 'S')", "config.set('auth', 'token', [REDACTED])"),
    ('parser.set("auth", "password", "S")', 'parser.set("auth", "password", [REDACTED])'),
    ("config.set(\\'auth\\', \\'token\\', \\'S\\')", "config.set(\\'auth\\', \\'token\\', [REDACTED])"),
    ("cfg.set('auth', 'token', value='S')", "cfg.set('auth', 'token', value=[REDACTED])"),
    ("config.set(section='auth', option='token', value='S')", "config.set(section='auth', option='token', value=[REDACTED])"),
    # a default given by `or` (`||`, `??`) after a secret's getenv, or after any value of a secret's name
    ('os.environ.get("TOKEN") or "S"', 'os.environ.get("TOKEN") or [REDACTED]'),
    ("print(os.getenv('API_KEY', '') or 'S')", "print(os.getenv('API_KEY', [REDACTED]) or [REDACTED])"),
    ('python -c "import os; k = os.environ.get(\\"TOKEN\\") or \\"S\\""',
     'python -c "import os; k = os.environ.get(\\"TOKEN\\") or [REDACTED]"'),
    ('const t = process.env.API_TOKEN || "S"', 'const t = process.env.API_TOKEN || [REDACTED]'),
    ("const t = process.env['API_TOKEN'] ?? 'S'", "const t = process.env['API_TOKEN'] ?? [REDACTED]"),
    ('token = os.getenv("TOKEN") or "S"', 'token = [REDACTED]'),
    ('password = args.password or f"S"', 'password = [REDACTED]'),
    # mysqladmin's `password` (and `old-password`) command: its next word, not the commands after it
    ("mysqladmin -u root password S", "mysqladmin -u root password [REDACTED]"),
    ("mysqladmin -u root -p password 'S S' && echo ok", "mysqladmin -u root -p password [REDACTED] && echo ok"),
    ('sh -c "mysqladmin -uroot -pS password S; mysqladmin status"',
     'sh -c "mysqladmin -uroot -p[REDACTED] password [REDACTED]; mysqladmin status"'),
    ("subprocess.run(['mysqladmin', '-u', 'root', 'password', 'S'])",
     "subprocess.run(['mysqladmin', '-u', 'root', 'password', [REDACTED]])"),
    ("mysqladmin -h db old-password S flush-hosts", "mysqladmin -h db old-password [REDACTED] flush-hosts"),
    # after other commands: mysqladmin takes several a line
    ("mysqladmin -u root status password S", "mysqladmin -u root status password [REDACTED]"),
    ("sh -c \"mysqladmin status extended-status -h db password 'S S' flush-hosts\"",
     "sh -c \"mysqladmin status extended-status -h db password [REDACTED] flush-hosts\""),
    ("subprocess.run(['mysqladmin', 'status', 'password', 'S'])", "subprocess.run(['mysqladmin', 'status', 'password', [REDACTED]])"),
    # a pair: a list of a secret's name and its value, itself an item of a list or of a call's arguments
    ('[["password", "S"]]', '[["password", [REDACTED]]]'),
    ("pairs = [['user', 'me'], ['password', 'S'], ['host', 'h']]", "pairs = [['user', 'me'], ['password', [REDACTED]], ['host', 'h']]"),
    ('json.dumps([[ "api_key" , "S" ]])', 'json.dumps([[ "api_key" , [REDACTED] ]])'),
    ("requests.post(u, data=[['token', 'S']])", "requests.post(u, data=[['token', [REDACTED]]])"),
    # a name-value object of a secret (Kubernetes' env, AWS's tags and parameters), in JSON, YAML or a call
    ('{"name": "DB_PASSWORD", "value": "S"}', '{"name": "DB_PASSWORD", "value": [REDACTED]}'),
    ("kubectl run x --overrides='{\"spec\":{\"containers\":[{\"env\":[{\"name\":\"API_TOKEN\",\"value\":\"S\"}]}]}}'",
     "kubectl run x --overrides='{\"spec\":{\"containers\":[{\"env\":[{\"name\":\"API_TOKEN\",\"value\":[REDACTED]}]}]}}'"),
    ("- name: DB_PASSWORD\n  value: S\n- name: HOME\n  value: /root", "- name: DB_PASSWORD\n  value: [REDACTED]\n- name: HOME\n  value: /root"),
    ('Tag(Key="password", Value="S")', "Tag(Key=[REDACTED], Value=[REDACTED])"),
    ("ParameterKey=DbPassword,ParameterValue=S", "ParameterKey=[REDACTED],ParameterValue=[REDACTED]"),
    # a negation given a value has one, as argv reads it
    ("tool --no-x-token=S build", "tool --no-x-token=[REDACTED] build"),
    ("sh -c 'tool --no-api-token=\"S S\" -v'", "sh -c 'tool --no-api-token=[REDACTED] -v'"),
    ("['tool', '--no-x-token=S']", "['tool', '--no-x-token=[REDACTED]']"),
    # a string's prefix; a tuple, list, dict, call or shell expansion whole
    ('password = f"S{x}"', "password = [REDACTED]"),
    ("token = b'S'", "token = [REDACTED]"),
    ('API_KEY = r"S"', "API_KEY = [REDACTED]"),
    ("login(password=rb'S')", "login(password=[REDACTED])"),
    ("requests.get(u, auth=('me', 'S'))", "requests.get(u, auth=[REDACTED])"),
    ("s.auth = HTTPBasicAuth('me', 'S')", "s.auth = [REDACTED]"),
    ("credentials = {'u': 'me', 'p': 'S'}", "credentials = [REDACTED]"),
    ("auth=['me', 'S']", "auth=[REDACTED]"),
    ("TOKEN=${TOKEN:-S} cmd", "TOKEN=[REDACTED] cmd"),
    ("TOKEN=$(echo S) cmd", "TOKEN=[REDACTED] cmd"),
    # comparisons and an assignment expression
    ("if token == 'S': pass", "if token == [REDACTED]: pass"),
    ('assert password != "S"', "assert password != [REDACTED]"),
    ("(token := 'S')", "(token := [REDACTED])"),
    ('x = token === "S"', "x = token === [REDACTED]"),
    # a secret's setter, an authentication object: their last argument
    ("user.set_password('S')", "user.set_password([REDACTED])"),
    ('keyring.set_password("svc", "me", "S")', 'keyring.set_password("svc", "me", [REDACTED])'),
    ("client.setToken('S')", "client.setToken([REDACTED])"),
    ('httpx.BasicAuth("me", "S")', 'httpx.BasicAuth("me", [REDACTED])'),
    ("OAuth1('client', 'S')", "OAuth1('client', [REDACTED])"),
    ("requests.get(u, auth=HTTPDigestAuth('me', 'S'))", "requests.get(u, auth=[REDACTED])"),
    # a URL's userinfo: no user, no password (a token as the user), an `@` in the password, percent-encoded
    ("redis-cli -u redis://:S@h:6379/0 ping", "redis-cli -u redis://:[REDACTED]@h:6379/0 ping"),
    ("git clone https://S@github.com/o/r", "git clone https://[REDACTED]@github.com/o/r"),
    ("curl https://me:p@S@h/", "curl https://me:[REDACTED]@h/"),
    ("curl 'https://h/cb?next=https%3A%2F%2Fme%3AS%40evil%2F'", "curl 'https://h/cb?next=https%3A%2F%2Fme%3A[REDACTED]%40evil%2F'"),
])
def test_fourth_round_secrets_in_free_text(text, redacted):
    assert redact.text(text) == redacted
    assert redact.text(redacted) == redacted


@pytest.mark.parametrize("args, expected", [
    (["mysqladmin", "-u", "root", "password", "S"], ["mysqladmin", "-u", "root", "password", "[REDACTED]"]),
    (["/usr/bin/mysqladmin", "-uroot", "-pS", "password", "S", "flush-hosts"],
     ["/usr/bin/mysqladmin", "-uroot", "-p[REDACTED]", "password", "[REDACTED]", "flush-hosts"]),
    (["mysqladmin", "password", "-u", "root", "S"], ["mysqladmin", "password", "-u", "root", "[REDACTED]"]),
    (["mysqladmin", "-h", "db", "old-password", "S"], ["mysqladmin", "-h", "db", "old-password", "[REDACTED]"]),
    (["mysqladmin", "-u", "root", "status", "password", "S", "flush-hosts"],  # after other commands
     ["mysqladmin", "-u", "root", "status", "password", "[REDACTED]", "flush-hosts"]),
    (["mysqladmin", "status", "-h", "db", "old-password", "S"], ["mysqladmin", "status", "-h", "db", "old-password", "[REDACTED]"]),
    (["tool", "--no-x-token=S", "--no-password-check", "build"],  # as free text reads them
     ["tool", "--no-x-token=[REDACTED]", "--no-password-check", "build"]),
    (["pip", "install", "--proxy", "me:S@proxy.example:3128", "pkg"], ["pip", "install", "--proxy", "me:[REDACTED]", "pkg"]),
    (["pip", "install", "--proxy=me:S@proxy.example:3128", "pkg"], ["pip", "install", "--proxy=me:[REDACTED]", "pkg"]),
    (["python", "-c", "import configparser; c = configparser.ConfigParser(); c.set('auth', 'token', 'S')"],
     ["python", "-c", "import configparser; c = configparser.ConfigParser(); c.set('auth', 'token', [REDACTED])"]),
    # a URL with userinfo as a parameter's value, percent-encoded too (then the value whole)
    (["curl", "https://h/login?next=https://me:S@evil.example/&x=1"],
     ["curl", "https://h/login?next=https://[REDACTED]@evil.example/&x=1"]),
    (["curl", "https://h/login?next=https%3A%2F%2Fme%3AS%40evil.example%2F"], ["curl", "https://h/login?next=[REDACTED]"]),
    (["curl", "https://h/#/cb?next=https://me:S@evil.example"], ["curl", "https://h/#/cb?next=https://[REDACTED]@evil.example"]),
])
def test_fourth_round_secrets_in_argv(args, expected):
    assert redact.argv(args) == expected
    assert redact.argv(expected) == expected


@pytest.mark.parametrize("args", [
    ["mysqladmin", "-u", "root", "status"],  # no `password` command
    ["mysqladmin", "-u", "root", "-p", "create", "shop"],
    ["mysqladmin", "status", "extended-status", "flush-hosts"],  # commands, none of them `password`
    ["pip", "install", "--proxy", "http://proxy.example:3128", "pkg"],  # no user:secret@
    ["pip", "install", "--proxy=proxy.example:3128", "pkg"],
    ["tool", "--no-verify-token"],
    ["curl", "https://h/p?email=me@example.com&next=https://example.com/"],  # an `@`, a URL without userinfo
])
def test_fourth_round_kept(args):
    assert_kept_everywhere(args)


@pytest.mark.parametrize("args", [  # the neighbours of the fifth round's table lines
    ["ssh-keygen", "-t", "ed25519", "-f", "key"],
    ["zip", "-r", "a.zip", "dir"],
    ["unzip", "-l", "a.zip"],
    ["7z", "x", "a.7z", "-ooutdir"],
    ["az", "group", "list", "-p", "x"],  # not `az login`
    ["vault", "read", "secret/foo"],
    ["mongosh", "--port", "27017"],
    ["ldapsearch", "-x", "-b", "dc=example", "uid=me"],
])
def test_fifth_round_kept(args):
    assert_kept_everywhere(args)


@pytest.mark.parametrize("text", [
    "config.set('main', 'level', 'debug')",  # no secret's name
    'os.environ.get("HOME") or "/tmp"',
    "os.getenv('TOKEN_FILE') or '/run/secrets/token'",  # where the secret is
    '[["user", "me"], ["name", "x"]]',
    "user.set_password(new_password)",  # no literal
    "HTTPBasicAuth(user, pw)",
    "settings.set_level('debug')",
    "git clone git@github.com:owner/repo.git",
    'print(f"{name}: ok")',
    "echo ${HOME:-/tmp}",
    "if n == 3: pass",
    "{'type': 'password', 'n': 1}",  # a dict's next key is no value
    '[{"name": "HOME", "value": "/root"}]',
])
def test_fourth_round_texts_kept(text):
    assert redact.text(text) == text


def test_fourth_round_json_bodies():
    """A JSON body's pairs as free text reads them: a name-value object's value, a pair among a list's items."""
    body = {"env": [{"name": "DB_PASSWORD", "value": "S"}, {"name": "HOME", "value": "/root"}],
            "tags": [{"Key": "api_key", "Value": "S"}], "pairs": [["password", "S"], ["user", "me"]],
            "fields": ["password", "build"]}
    assert redact.structure(body) == {
        "env": [{"name": "DB_PASSWORD", "value": "[REDACTED]"}, {"name": "HOME", "value": "/root"}],
        "tags": [{"Key": "[REDACTED]", "Value": "[REDACTED]"}], "pairs": [["password", "[REDACTED]"], ["user", "me"]],
        "fields": ["password", "build"]}


FOURTH_SECRETS = tuple(f"G{n}S3CR3T" for n in range(1, 11))
FOURTH_FAKE_PROGRAMS = ("mysqladmin", "pip", "curl", "tool", "kubectl")
FOURTH_FORMS = r'''
import os, subprocess, sys
env = dict(os.environ, PATH=sys.argv[1] + os.pathsep + os.environ["PATH"])
for command in [
    ["mysqladmin", "-u", "root", "password", "G1S3CR3T", "flush-hosts"],
    [sys.executable, "-c", "import configparser; c = configparser.ConfigParser(); c.add_section('auth'); "
                           "c.set('auth', 'token', 'G2S3CR3T')"],
    [sys.executable, "-c", "import os; t = os.environ.get('TOKEN') or 'G3S3CR3T'; p = [['password', 'G4S3CR3T']]"],
    "pip install --proxy me:G5S3CR3T@proxy.example:3128 pkg",
    ["sh", "-c", "tool --no-x-token=G6S3CR3T"],
    ["curl", "https://h/login?next=https://me:G7S3CR3T@evil.example/"],
    [sys.executable, "-c", "password = f'G8S3CR3T'; auth = ('me', 'G9S3CR3T')"],
    ["kubectl", "run", "x", '--overrides={"env": [{"name": "DB_PASSWORD", "value": "G10S3CR3T"}]}'],
    ["mysqladmin", "-u", "root", "status"],  # ordinary: kept as they are
    ["tool", "--no-password-check", "build"],
]:
    subprocess.run(command, env=env, shell=isinstance(command, str), check=True)
'''


def test_fourth_round_never_reaches_a_span(traced):
    """The fourth round's forms, spawned by their real names (stand-ins on PATH), and -c programs; mysqladmin's
    other commands and a negation's next word kept."""
    check_command_lines(traced, FOURTH_FAKE_PROGRAMS, FOURTH_FORMS, FOURTH_SECRETS,
                        ("password [REDACTED] flush-hosts", "c.set('auth', 'token', [REDACTED])",
                         "or [REDACTED]; p = [['password', [REDACTED]]]", "--proxy me:[REDACTED] pkg",
                         "--no-x-token=[REDACTED]", "next=https://[REDACTED]@evil.example/",
                         '"name": "DB_PASSWORD", "value": [REDACTED]'),
                        kept=("mysqladmin -u root status", "tool --no-password-check build"))


# --- a literal fed to a command that reads its secret from stdin --

@pytest.mark.parametrize("text, redacted", [
    ("echo S | docker login -u me --password-stdin registry.example", "echo [REDACTED] | docker login -u me --password-stdin registry.example"),
    ('echo "S S" | podman login --password-stdin', "echo [REDACTED] | podman login --password-stdin"),
    ("printf '%s' S | gh auth login --with-token", "printf '%s' [REDACTED] | gh auth login --with-token"),
    ("printf 'S\\n' | sudo -S apt-get install -y x", "printf [REDACTED] | sudo -S apt-get install -y x"),
    ("echo -n S|sudo -kS true", "echo -n [REDACTED]|sudo -kS true"),
    ("echo S | sudo --stdin -u bob id", "echo [REDACTED] | sudo --stdin -u bob id"),
    ("echo me:S | chpasswd", "echo [REDACTED] | chpasswd"),
    ("echo S | passwd --stdin me", "echo [REDACTED] | passwd --stdin me"),
    ("docker login -u me --password-stdin <<< 'S S'", "docker login -u me --password-stdin <<< [REDACTED]"),
    ("sh -c 'echo S | docker login --password-stdin'", "sh -c 'echo [REDACTED] | docker login --password-stdin'"),
    ("subprocess.run('echo S | sudo -S reboot', shell=True)", "subprocess.run('echo [REDACTED] | sudo -S reboot', shell=True)"),
])
def test_a_literal_fed_to_a_command_reading_its_secret_from_stdin(text, redacted):
    assert redact.text(text) == redacted
    assert redact.text(redacted) == redacted
    assert redact.argv(["/bin/sh", "-c", text]) == ["/bin/sh", "-c", redacted]


@pytest.mark.parametrize("text", [
    'echo "$TOKEN" | docker login --password-stdin',  # a variable: no secret in the text
    "echo $GH_TOKEN | gh auth login --with-token",
    "echo hello | git hash-object --stdin",  # not a secret's reader
    "echo hi | sudo tee /etc/motd",  # sudo asks on the terminal without -S
    "echo done; docker login --password-stdin",  # not fed to it
])
def test_what_is_fed_to_stdin_otherwise_is_kept(text):
    assert redact.text(text) == text
