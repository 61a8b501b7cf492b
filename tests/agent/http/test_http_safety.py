"""Secrets never reach a span file; a failing hook changes nothing for the request and leaves a diagnostic."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from tests.agent.http.conftest import client_spans

SECRETS = ("s3cr3t-BEARER", "s3cr3t-QUERY", "s3cr3t-PASSWORD", "s3cr3t-COOKIE", "s3cr3t-APIKEY", "s3cr3t-BODY",
           "s3cr3t-RESPONSE")

SECRET_REQUESTS = textwrap.dedent("""
    import httpx, requests, sys, urllib.request
    host = sys.argv[1].split("//")[1]
    url = "http://user:s3cr3t-PASSWORD@" + host + "/secret?api_key=s3cr3t-QUERY&page=2"
    headers = {"Authorization": "Bearer s3cr3t-BEARER", "Cookie": "sid=s3cr3t-COOKIE", "X-Api-Key": "s3cr3t-APIKEY"}
    requests.post(url, json={"api_key": "s3cr3t-BODY", "n": 1}, headers=headers)
    httpx.post(url, json={"password": "s3cr3t-BODY"}, headers=headers)
    request = urllib.request.Request(url.replace("user:s3cr3t-PASSWORD@", ""), headers=headers)
    urllib.request.urlopen(request).read()
""")


def _run_secret_requests(traced, server, **kwargs):
    """From a script file: a `-c` command line holding the secrets would be recorded as argv."""
    script = traced.tmp_path / "secret_requests.py"
    script.write_text(SECRET_REQUESTS)
    return traced.run([sys.executable, str(script), server.url], **kwargs)


def _assert_no_secret_in(run_dir) -> None:
    for path in run_dir.rglob("*"):
        if path.is_file():
            text = path.read_text(errors="replace")
            for secret in SECRETS:
                assert secret not in text, f"{secret} in {path}"


def test_secrets_never_stored(traced, server):
    result = _run_secret_requests(traced, server)
    assert (result.returncode, result.stderr) == (0, b"")
    spans = client_spans(traced.spans())
    assert len(spans) == 3
    _assert_no_secret_in(traced.run_dir)
    assert spans[0].attributes["url.full"] == (
        "http://[REDACTED]@%s/secret?api_key=[REDACTED]&page=2" % server.url.split("//")[1])
    assert "selfopt_trace.http.request.body" not in spans[0].attributes  # bodies only when asked for
    # the secrets did reach the server: the test sent them for real
    assert any("s3cr3t-BEARER" in value for request in server.seen for _, value in request["headers"])


def test_bodies_opt_in_are_capped_and_redacted(traced, server):
    result = _run_secret_requests(traced, server, extra_env={"SELFOPT_TRACE_HTTP_BODIES": "30"})
    assert (result.returncode, result.stderr) == (0, b"")
    _assert_no_secret_in(traced.run_dir)
    by_library = {s.attributes["selfopt_trace.http.library"]: s.attributes for s in client_spans(traced.spans())}
    assert by_library["requests"]["selfopt_trace.http.request.body"] == '{"api_key": "[REDACTED]", "n": 1}'[:30]
    assert by_library["requests"]["selfopt_trace.http.response.body"] == '{"token": "[REDACTED]", "ok": true}'[:30]
    assert by_library["httpx"]["selfopt_trace.http.request.body"] == '{"password": "[REDACTED]"}'


BAD_LENGTH = textwrap.dedent("""
    import requests, sys
    r = requests.get(sys.argv[1] + "/bad-length")
    print(r.status_code, r.content)
""")


def test_a_failing_hook_leaves_the_request_alone_and_is_a_diagnostic(traced, server):
    """A response with `Content-Length: abc`: requests reads it (until the connection closes), our
    size reading fails. The program sees the same result as untraced."""
    untraced = subprocess.run([sys.executable, "-c", BAD_LENGTH, server.url], capture_output=True, timeout=60)
    result = traced.python(BAD_LENGTH, server.url)
    assert untraced.returncode == 0 and untraced.stdout == b"200 b'hello'\n"
    assert (result.returncode, result.stdout, result.stderr) == (0, untraced.stdout, b"")
    spans = traced.spans()
    [diagnostic] = spans.diagnostics
    assert diagnostic["code"] == "http_hook_failed:requests"
    assert diagnostic["message"].startswith("ValueError")
    [span] = client_spans(spans)
    assert span.attributes["http.response.status_code"] == 200  # what was known before the failure stays
    assert "http.response.body.size" not in span.attributes
    assert not span.incomplete


def test_exceptions_are_the_same_traced(traced):
    code = textwrap.dedent("""
        import http.client, requests, urllib3
        for call in (lambda: requests.get("http://127.0.0.1:1/"),
                     lambda: urllib3.PoolManager(retries=False).request("GET", "http://127.0.0.1:1/"),
                     lambda: http.client.HTTPConnection("127.0.0.1", 1).request("GET", "/"),
                     lambda: requests.get("nope://x")):
            try:
                call()
            except Exception as exc:
                print(type(exc).__module__, type(exc).__qualname__, exc.__cause__.__class__.__name__)
    """)
    untraced = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    result = traced.python(code)
    assert untraced.stdout.count(b"\n") == 4
    assert (result.returncode, result.stdout, result.stderr) == (untraced.returncode, untraced.stdout, untraced.stderr)
    spans = client_spans(traced.spans())
    assert [s.attributes["error.type"] for s in spans] == ["ConnectionError", "NewConnectionError", "ConnectionRefusedError",
                                                                 "InvalidSchema"]


def test_hooked_methods_look_to_a_program_as_untraced_ones_and_a_spy_on_them_works(traced):
    """The hooks' wrappers are functions, as what they wrap: a program's introspection sees the same
    (pytest-mock's spy patches with autospec only a function or a method: a C callable in a wrapper's
    place, tried for urlopen's pass-through, broke every spy on requests.Session.send). A failure
    inside them has the untraced traceback, frame for frame."""
    code = textwrap.dedent("""
        import functools, http.client, inspect, traceback, requests, urllib3.connectionpool
        from unittest import mock
        pool = urllib3.connectionpool.HTTPConnectionPool
        for call in (lambda: requests.get("http://127.0.0.1:1/", timeout=5),  # the hooks are in place after it
                     lambda: pool("127.0.0.1", 1, retries=False).urlopen("GET", "/"),
                     lambda: pool.urlopen(pool("127.0.0.1", 1), "GET", "/", retries=False)):
            try:
                call()
            except Exception:
                print(traceback.format_exc() + "-- end of one --")
        for owner, name in ((requests.Session, "send"), (pool, "urlopen"), (http.client.HTTPConnection, "getresponse"),
                            (http.client.HTTPResponse, "_close_conn")):
            print(name, inspect.isfunction(getattr(owner, name)), list(inspect.signature(getattr(owner, name)).parameters)[:2])
        method = requests.Session.send  # pytest-mock's spy, as it decides
        autospec = inspect.ismethod(method) or inspect.isfunction(method)
        spied = functools.wraps(method)(lambda *args, **kwargs: method(*args, **kwargs))
        with mock.patch.object(requests.Session, "send", side_effect=spied, autospec=autospec) as spy:
            try:
                requests.get("http://127.0.0.1:1/", timeout=5)
            except Exception as exc:
                print("spy", type(exc).__name__, spy.call_count)
    """)
    untraced = subprocess.run([sys.executable, "-c", code], capture_output=True, timeout=60)
    result = traced.python(code)
    assert untraced.returncode == 0 and untraced.stdout.count(b"-- end of one --") == 3
    assert b"spy ConnectionError 1" in untraced.stdout
    assert (result.returncode, result.stdout, result.stderr) == (untraced.returncode, untraced.stdout, untraced.stderr)


HEADER_LINES = [
    [b"GET / HTTP/1.1", b"Host: h", b"Accept: */*"],
    [b"POST /x HTTP/1.1", b"Host: h", b"Content-Length: 13", b"traceparent: 00-theirs"],
    [b"POST /x HTTP/1.1", b"TraceParent: a", b"X: y", b"TRACEPARENT:b", b" traceparent : c", b"content-length:7"],
    [b"POST /x HTTP/1.1", b"Content-Length:  42 ", b"Content-Length: 9"],
    [b"POST /x HTTP/1.1", b"content-length: 12\r\n\tcontinued", b"X-Traceparent: not ours"],
    [b"POST /x HTTP/1.1", b"traceparent x: y", b"Content-Length: nan"],
    [b"GET /traceparent: HTTP/1.1"],
    [b"GET / HTTP/1.1", bytearray(b"traceparent: in a bytearray"), b"Content-Length: 3"],
]


@pytest.mark.parametrize("lines", HEADER_LINES)
def test_the_twins_traceparent_in_the_header_lines_is_the_python_ones(twin, lines):
    from selfopt_trace.bootstrap.selfopt_trace_agent.hooks import http_client

    assert http_client._put_traceparent is not http_client._python_put_traceparent
    ours, reference = list(lines), list(lines)
    size = http_client._put_traceparent(ours, b"traceparent: 00-ours")
    expected = http_client._python_put_traceparent(reference, b"traceparent: 00-ours")
    assert ours == reference and ours[-1] == b"traceparent: 00-ours"
    assert (None if size is None else size.strip().lower()) == (None if expected is None else expected.strip())


# --- the tester's findings: fragments, multipart bodies, absolute-form targets, odd methods -----------

def _found(traced, secrets) -> list:
    from tests.agent.secret_store import found_secrets

    return found_secrets(traced.run_dir, traced.tmp_path / "store.duckdb", secrets)


FRAGMENTS = textwrap.dedent("""
    import httpx, requests, sys
    print(requests.get(sys.argv[1] + "/echo#access_token=FRAG1S3CR3T&state=x").status_code)
    print(httpx.get(sys.argv[1] + "/echo#access_token=FRAG2S3CR3T").status_code)
    print(requests.get(sys.argv[1] + "/echo?jwt=FRAG3S3CR3T&sid=FRAG4S3CR3T&page=2").status_code)
""")


def test_url_fragments_and_the_smaller_names_are_redacted(traced, server):
    script = traced.tmp_path / "fragments.py"
    script.write_text(FRAGMENTS)
    result = traced.run([sys.executable, str(script), server.url])
    assert (result.returncode, result.stdout, result.stderr) == (0, b"200\n200\n200\n", b"")
    assert _found(traced, ("FRAG1S3CR3T", "FRAG2S3CR3T", "FRAG3S3CR3T", "FRAG4S3CR3T")) == []
    urls = [s.attributes["url.full"] for s in client_spans(traced.spans())]
    assert urls == [server.url + "/echo#access_token=[REDACTED]&state=x", server.url + "/echo#access_token=[REDACTED]",
                    server.url + "/echo?jwt=[REDACTED]&sid=[REDACTED]&page=2"]


MULTIPART = textwrap.dedent("""
    import httpx, requests, sys, urllib3
    requests.post(sys.argv[1] + "/echo", data={"user": "bob", "password": "MULTI1S3CR3T"},
                  files={"notes": ("notes.txt", b"api_key=MULTI2S3CR3T and more")})
    urllib3.request("POST", sys.argv[1] + "/echo", fields={"client_secret": "MULTI3S3CR3T", "f": ("f.bin", b"x")})
    httpx.post(sys.argv[1] + "/echo", data={"password": "MULTI4S3CR3T"}, files={"f": ("f.bin", b"x")})  # a stream: not read
""")


def test_multipart_form_bodies_are_redacted(traced, server):
    script = traced.tmp_path / "multipart.py"
    script.write_text(MULTIPART)
    result = traced.run([sys.executable, str(script), server.url], extra_env={"SELFOPT_TRACE_HTTP_BODIES": "4000"})
    assert (result.returncode, result.stderr) == (0, b"")
    assert any(b"MULTI1S3CR3T" in request["body"] for request in server.seen)  # sent for real
    assert _found(traced, ("MULTI1S3CR3T", "MULTI2S3CR3T", "MULTI3S3CR3T", "MULTI4S3CR3T")) == []
    bodies = [s.attributes.get("selfopt_trace.http.request.body") for s in client_spans(traced.spans())]
    assert 'name="user"\r\n\r\nbob\r\n' in bodies[0]  # the other fields kept
    assert 'name="password"\r\n\r\n[REDACTED]\r\n' in bodies[0]
    assert "api_key=[REDACTED] and more" in bodies[0]
    assert 'name="client_secret"\r\n\r\n[REDACTED]\r\n' in bodies[1]
    assert bodies[2] is None


def test_an_absolute_form_target_keeps_no_credentials(traced):
    """`GET http://user:pw@host/p?q HTTP/1.1` (what a proxy is sent) to a traced http.server: url.path is
    the target's path, server.address its host (OTel's semantic conventions), no userinfo, no query."""
    from tests.agent.http.conftest import TracedServer, free_port, server_spans
    from tests.agent.http.test_http_server import HTTP_SERVER

    script = traced.tmp_path / "served.py"
    script.write_text(textwrap.dedent(HTTP_SERVER))
    port = free_port()
    served = TracedServer(traced, [sys.executable, str(script), str(port)], port)
    try:
        import http.client  # from the untraced test process

        connection = http.client.HTTPConnection("127.0.0.1", port)
        connection.request("GET", "http://u:ABS1S3CR3T@example.com:8080/p?token=ABS2S3CR3T")
        assert connection.getresponse().read() == b"hello"
        connection.close()
    finally:
        _, err = served.stop()
    assert err == ""
    assert _found(traced, ("ABS1S3CR3T", "ABS2S3CR3T")) == []
    [span] = server_spans(traced.spans())
    attributes = span.attributes
    assert (attributes["url.path"], attributes["url.scheme"]) == ("/p", "http")
    assert (attributes["server.address"], attributes["server.port"]) == ("example.com", 8080)


def test_a_method_holding_a_space_is_the_span_name_whole(traced, server):
    """http.client sends any method without a control character (`GE T`): the request line is read
    from its method, not split at its first space."""
    code = textwrap.dedent("""
        import http.client, sys
        host, port = sys.argv[1].split("//")[1].split(":")
        for method, port in (("GE T", int(port)), ("GET", port)):  # the port as a string too: http.client takes it
            connection = http.client.HTTPConnection(host, port)
            connection.request(method, "/fast?x=1")
            response = connection.getresponse()
            response.read()  # the span ends with the body
            print(response.status)
    """)
    result = traced.python(code, server.url)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"400\n200\n", b"")  # the server refuses GE T
    assert traced.spans().diagnostics == []
    spans = client_spans(traced.spans())
    assert [(s.name, s.attributes["http.request.method"]) for s in spans] == [("GE T", "GE T"), ("GET", "GET")]
    assert [s.attributes["url.full"] for s in spans] == [server.url + "/fast?x=1"] * 2
