"""Every client gives exactly one CLIENT span per request, with the semantic-convention attributes,
its connection set-up as children, and a traceparent on the wire that names that span."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from tests.agent.http.conftest import children_named, client_spans

BODY = 100  # bytes each client POSTs

CLIENTS = {
    "requests": """
        import requests, sys
        r = requests.post(sys.argv[1] + "/echo", data=b"x" * 100)
        print(r.status_code, r.json()["body_size"])
    """,
    "httpx": """
        import httpx, sys
        r = httpx.post(sys.argv[1] + "/echo", content=b"x" * 100)
        print(r.status_code, r.json()["body_size"])
    """,
    "httpx-async": """
        import asyncio, httpx, sys
        async def main():
            async with httpx.AsyncClient() as client:
                r = await client.post(sys.argv[1] + "/echo", content=b"x" * 100)
            print(r.status_code, r.json()["body_size"])
        asyncio.run(main())
    """,
    "urllib3": """
        import json, sys, urllib3
        r = urllib3.request("POST", sys.argv[1] + "/echo", body=b"x" * 100)
        print(r.status, json.loads(r.data)["body_size"])
    """,
    "urllib.request": """
        import json, sys, urllib.request
        with urllib.request.urlopen(urllib.request.Request(sys.argv[1] + "/echo", data=b"x" * 100)) as r:
            print(r.status, json.loads(r.read())["body_size"])
    """,
    "http.client": """
        import http.client, json, sys
        connection = http.client.HTTPConnection(sys.argv[1].split("//")[1])
        connection.request("POST", "/echo", body=b"x" * 100)
        r = connection.getresponse()
        print(r.status, json.loads(r.read())["body_size"])
    """,
}
LIBRARY = {"httpx-async": "httpx", "urllib.request": "http.client"}


@pytest.mark.parametrize("client", list(CLIENTS))
def test_one_span_per_request_with_attributes(traced, server, client):
    result = traced.python(textwrap.dedent(CLIENTS[client]), server.url)
    assert result.returncode == 0, result.stderr
    assert result.stdout == b"200 100\n"
    assert result.stderr == b""
    spans = traced.spans()
    assert spans.diagnostics == []
    [span] = client_spans(spans)
    process = spans.processes()[0]
    assert span.parent_span_id == process.span_id
    assert span.name == "POST"
    assert span.status == "UNSET"
    attributes = span.attributes
    assert attributes["selfopt_trace.http.library"] == LIBRARY.get(client, client)
    assert attributes["http.request.method"] == "POST"
    assert attributes["url.full"] == server.url + "/echo"
    assert attributes["server.address"] == "127.0.0.1"
    assert attributes["server.port"] == int(server.url.rsplit(":", 1)[1])
    assert attributes["http.response.status_code"] == 200
    assert attributes["http.request.body.size"] == BODY
    assert attributes["http.response.body.size"] == len(json.dumps({"method": "POST", "body_size": BODY}))
    assert attributes["selfopt_trace.http.connection.reused"] is False
    assert 0 < attributes["selfopt_trace.http.ttfb_ns"] < span.end_ns - span.start_ns
    assert 0 <= attributes["selfopt_trace.http.download_ns"] < span.end_ns - span.start_ns
    assert "http.request.resend_count" not in attributes and "error.type" not in attributes
    [connect] = children_named(spans, span, "connect")
    assert span.start_ns <= connect.start_ns <= connect.end_ns <= span.end_ns
    if client != "httpx-async":  # anyio resolves names in a worker thread of its own
        # lookup time is on the connect span; a lookup of 1 ms or more (the first one in a process
        # may be, loading the resolver's libraries) is a span of its own too
        dns_ns = connect.attributes["selfopt_trace.http.dns_ns"]
        assert 0 < dns_ns < connect.end_ns - connect.start_ns
        for dns in children_named(spans, connect, "dns"):
            assert connect.start_ns <= dns.start_ns <= dns.end_ns <= connect.end_ns
            assert dns.end_ns - dns.start_ns >= 1_000_000
        assert len(children_named(spans, connect, "dns")) == (dns_ns >= 1_000_000)
    # the server got exactly one traceparent header, naming this span
    assert server.traceparents() == [["00-%s-%s-01" % (span.trace_id, span.span_id)]]


def test_session_reuses_the_connection_module_calls_do_not(traced, server):
    code = textwrap.dedent("""
        import requests, sys
        with requests.Session() as session:
            session.get(sys.argv[1] + "/echo"); session.get(sys.argv[1] + "/echo")
        requests.post(sys.argv[1] + "/echo", json={}); requests.post(sys.argv[1] + "/echo", json={})
    """)
    result = traced.python(code, server.url)
    assert (result.returncode, result.stderr) == (0, b"")
    spans = traced.spans()
    reused = [s.attributes["selfopt_trace.http.connection.reused"] for s in client_spans(spans)]
    assert reused == [False, True, False, False]
    assert [len(children_named(spans, s, "connect")) for s in client_spans(spans)] == [1, 0, 1, 1]


def test_httpx_client_reuses_the_connection(traced, server):
    code = textwrap.dedent("""
        import httpx, sys
        with httpx.Client() as client:
            for _ in range(3):
                client.get(sys.argv[1] + "/echo")
    """)
    result = traced.python(code, server.url)
    assert (result.returncode, result.stderr) == (0, b"")
    reused = [s.attributes["selfopt_trace.http.connection.reused"] for s in client_spans(traced.spans())]
    assert reused == [False, True, True]


@pytest.mark.parametrize("client", ["urllib3", "requests"])
def test_retries_are_attempts_of_one_span_with_backoff(traced, server, client):
    code = {
        "urllib3": """
            import sys, urllib3
            retry = urllib3.Retry(total=3, backoff_factor=0.02, status_forcelist=[503])
            r = urllib3.PoolManager(retries=retry).request("GET", sys.argv[1] + "/flaky/a/2")
            print(r.status)
        """,
        "requests": """
            import requests, sys, urllib3
            session = requests.Session()
            retry = urllib3.Retry(total=3, backoff_factor=0.02, status_forcelist=[503])
            session.mount("http://", requests.adapters.HTTPAdapter(max_retries=retry))
            print(session.get(sys.argv[1] + "/flaky/a/2").status_code)
        """,
    }[client]
    result = traced.python(textwrap.dedent(code), server.url)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"200\n", b"")
    [span] = client_spans(traced.spans())
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["http.request.resend_count"] == 2
    # urllib3 sleeps backoff_factor * 2 ** (n - 1) from the second retry on: at least 40 ms here
    assert span.attributes["selfopt_trace.http.retry.sleep_ns"] >= 40_000_000
    assert len(server.traceparents()) == 3 and len({tuple(t) for t in server.traceparents()}) == 1


def test_redirect_is_one_span(traced, server):
    result = traced.python("import requests, sys; print(requests.get(sys.argv[1] + '/redirect').status_code)",
                           server.url)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"200\n", b"")
    [span] = client_spans(traced.spans())
    assert span.attributes["url.full"] == server.url + "/redirect"
    assert span.attributes["http.response.status_code"] == 200
    assert span.attributes["http.request.resend_count"] == 1


def test_error_status_and_refused_connection(traced, server):
    code = textwrap.dedent("""
        import httpx, requests, sys
        print(requests.get(sys.argv[1] + "/status/404").status_code)
        try:
            httpx.get(sys.argv[2])
        except Exception as exc:
            print(type(exc).__name__)
    """)
    from tests.agent.http.conftest import free_port

    refused = "http://127.0.0.1:%d/" % free_port()
    result = traced.python(code, server.url, refused)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"404\nConnectError\n", b"")
    spans = traced.spans()
    not_found, failed = client_spans(spans)
    assert not_found.status == "ERROR" and not_found.attributes["error.type"] == "404"
    assert failed.status == "ERROR" and failed.attributes["error.type"] == "ConnectError"
    assert "http.response.status_code" not in failed.attributes
    [connect] = children_named(spans, failed, "connect")
    assert connect.status == "ERROR"


def test_user_traceparent_is_replaced_by_ours(traced, server):
    code = textwrap.dedent("""
        import httpx, requests, sys
        theirs = "00-" + "a" * 32 + "-" + "b" * 16 + "-01"
        request = httpx.Request("GET", sys.argv[1] + "/echo", headers={"traceparent": theirs})
        with httpx.Client() as client:
            client.send(request)
        print(request.headers["traceparent"] == theirs)
        requests.get(sys.argv[1] + "/echo", headers={"TraceParent": theirs})
    """)
    result = traced.python(code, server.url)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"True\n", b"")
    expected = [["00-%s-%s-01" % (s.trace_id, s.span_id)] for s in client_spans(traced.spans())]
    assert server.traceparents() == expected


HOOKS_LOADED_LATE = textwrap.dedent("""
    import inspect, sys, requests
    hooks = ("http_common", "http_client", "urllib3_", "requests_")
    print([name for name in hooks if "selfopt_trace_agent.hooks." + name in sys.modules])
    send = requests.Session.send  # taken before the first request: what stands in for the hook
    with requests.Session() as session:
        response = send(session, session.prepare_request(requests.Request("GET", sys.argv[1] + "/echo")))
    print(response.status_code, send.__name__, inspect.signature(send))
""")


def test_http_hooks_load_at_the_first_request_not_at_import(traced, server):
    """Importing requests loads none of the HTTP hooks (rich, pip and pytest plugins import it and
    send nothing); the first request installs them and is one span, whatever reference it came by."""
    result = traced.python(HOOKS_LOADED_LATE, server.url)
    assert (result.returncode, result.stderr) == (0, b"")
    untraced = subprocess.run([traced.executable, "-c", HOOKS_LOADED_LATE, server.url], capture_output=True)
    assert result.stdout == untraced.stdout
    assert result.stdout.startswith(b"[]\n200 send (self, request")
    [span] = client_spans(traced.spans())
    assert span.attributes["selfopt_trace.http.library"] == "requests"
    assert server.traceparents()[0] == ["00-%s-%s-01" % (span.trace_id, span.span_id)]  # then the untraced run's


def test_pip_vendored_requests_is_one_span(traced, server):
    result = traced.python("from pip._vendor import requests; import sys; print(requests.get(sys.argv[1] + '/echo').status_code)",
                           server.url)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"200\n", b"")
    [span] = client_spans(traced.spans())
    assert span.attributes["selfopt_trace.http.library"] == "pip._vendor.requests"
    assert span.attributes["selfopt_trace.http.connection.reused"] is False


def test_raw_http_client_span_ends_when_the_body_is_read(traced, server):
    code = textwrap.dedent("""
        import http.client, sys, time
        connection = http.client.HTTPConnection(sys.argv[1].split("//")[1])
        connection.request("GET", "/echo")
        response = connection.getresponse()
        time.sleep(0.2)  # the body is still unread: the span is still open
        response.read()
        time.sleep(0.2)
        connection.request("HEAD", "/echo")
        connection.getresponse()  # nothing to read: ends at once
    """)
    result = traced.python(code, server.url)
    assert (result.returncode, result.stderr) == (0, b"")
    get, head = client_spans(traced.spans())
    assert get.end_ns - get.start_ns >= 200_000_000
    assert get.attributes["selfopt_trace.http.download_ns"] >= 200_000_000
    assert head.end_ns - head.start_ns < 100_000_000
    assert head.attributes["selfopt_trace.http.connection.reused"] is True


def test_failed_name_lookup_is_a_dns_span(traced):
    code = textwrap.dedent("""
        import requests
        try:
            requests.get("http://does-not-exist.invalid/")
        except requests.ConnectionError as exc:
            print(type(exc).__name__)
    """)
    result = traced.python(code)
    assert (result.returncode, result.stdout, result.stderr) == (0, b"ConnectionError\n", b"")
    spans = traced.spans()
    [span] = client_spans(spans)
    assert span.attributes["error.type"] == "ConnectionError"
    [connect] = children_named(spans, span, "connect")
    [dns] = children_named(spans, connect, "dns")
    assert connect.status == dns.status == "ERROR"
    assert dns.attributes["server.address"] == "does-not-exist.invalid"


TLS_CLIENTS = {
    "requests": "import requests, sys; requests.get(sys.argv[1] + '/echo', verify=sys.argv[2])",
    "httpx": "import httpx, ssl, sys; httpx.get(sys.argv[1] + '/echo', verify=ssl.create_default_context(cafile=sys.argv[2]))",
    "httpx-async": """
        import asyncio, httpx, ssl, sys
        async def main():
            async with httpx.AsyncClient(verify=ssl.create_default_context(cafile=sys.argv[2])) as client:
                await client.get(sys.argv[1] + "/echo")
        asyncio.run(main())
    """,
    "urllib3": "import sys, urllib3; urllib3.PoolManager(ca_certs=sys.argv[2]).request('GET', sys.argv[1] + '/echo')",
    "urllib.request": """
        import ssl, sys, urllib.request
        urllib.request.urlopen(sys.argv[1] + "/echo", context=ssl.create_default_context(cafile=sys.argv[2])).read()
    """,
}


@pytest.mark.parametrize("client", list(TLS_CLIENTS))
def test_https_has_connect_then_tls(traced, tls_server, client):
    result = traced.python(textwrap.dedent(TLS_CLIENTS[client]), tls_server.url, str(tls_server.ca_path))
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    spans = traced.spans()
    assert spans.diagnostics == []
    [span] = client_spans(spans)
    assert span.attributes["url.full"] == tls_server.url + "/echo"
    assert span.attributes["server.port"] == tls_server.server_address[1]
    assert span.attributes["http.response.status_code"] == 200
    [connect] = children_named(spans, span, "connect")
    [tls] = children_named(spans, span, "tls")
    assert span.start_ns <= connect.start_ns <= connect.end_ns == tls.start_ns <= tls.end_ns <= span.end_ns
    assert tls_server.traceparents() == [["00-%s-%s-01" % (span.trace_id, span.span_id)]]


def test_a_head_response_has_no_body_whatever_its_content_length_says(traced, server):
    """The body's size is what http.client reads from the response's headers (0 for a HEAD, a 204 or
    a 304 whatever Content-Length says), through every client that runs on it."""
    code = textwrap.dedent("""
        import http.client, requests, sys, urllib3
        requests.head(sys.argv[1] + "/echo")
        urllib3.request("HEAD", sys.argv[1] + "/echo")
        connection = http.client.HTTPConnection(sys.argv[1].split("//")[1])
        connection.request("HEAD", "/echo")
        print(connection.getresponse().getheader("Content-Length"))
    """)
    result = traced.python(code, server.url)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout) > 0  # the server says how long the GET's body would be
    spans = client_spans(traced.spans())
    assert [(s.attributes["selfopt_trace.http.library"], s.attributes["http.response.body.size"]) for s in spans] == [
        ("requests", 0), ("urllib3", 0), ("http.client", 0)]


STREAMED = {
    "requests": """
        import requests, sys
        with requests.get(sys.argv[1], stream=True) as r:
            body = b"".join(r.iter_content(1))
    """,
    "urllib3": """
        import sys, urllib3
        r = urllib3.request("GET", sys.argv[1], preload_content=False)
        body = b"".join(r.stream(1))
    """,
    "httpx": """
        import httpx, sys
        with httpx.stream("GET", sys.argv[1]) as r:
            body = b"".join(r.iter_bytes())
    """,
    "httpx-async": """
        import asyncio, httpx, sys
        async def main():
            async with httpx.AsyncClient() as client:
                async with client.stream("GET", sys.argv[1]) as r:
                    return b"".join([chunk async for chunk in r.aiter_bytes()])
        body = asyncio.run(main())
    """,
    "urllib.request": """
        import sys, urllib.request
        r = urllib.request.urlopen(sys.argv[1])
        body = b"".join(iter(lambda: r.read(1), b""))
    """,
}


@pytest.mark.parametrize("client", list(STREAMED))
def test_a_streamed_body_is_the_request_s_time_until_it_is_read(traced, server, client):
    """A body the program reads after the call (`stream=True`, `preload_content=False`, urllib's
    read): the span goes on until its end, the server sending one byte every 40 ms. It ended at the
    headers before (requests, urllib3, httpx), and the download was untraced waits."""
    program = textwrap.dedent(STREAMED[client]) + "print(body)\n"
    result = traced.python(program, server.url + "/drip/5/40")
    assert (result.returncode, result.stderr, result.stdout) == (0, b"", b"b'xxxxx'\n"), result.stderr
    spans = traced.spans()
    [span] = client_spans(spans)
    assert span.status == "UNSET" and span.attributes["http.response.status_code"] == 200
    assert span.end_ns - span.start_ns >= 195_000_000, (span.end_ns - span.start_ns) / 1e6
    assert span.attributes["selfopt_trace.http.download_ns"] >= 150_000_000
    assert "selfopt_trace.http.body_read_after_ns" not in span.attributes


WORKING_READER = {
    "urllib.request": """
        import sys, time, urllib.request
        r = urllib.request.urlopen(sys.argv[1])
        while r.read(1):
            start = time.thread_time()
            while time.thread_time() - start < 0.04: pass
    """,
    "requests": """
        import requests, sys, time
        with requests.get(sys.argv[1], stream=True) as r:
            for _ in r.iter_content(1):
                start = time.thread_time()
                while time.thread_time() - start < 0.04: pass
    """,
}


@pytest.mark.parametrize("client", list(WORKING_READER))
def test_a_body_read_by_a_program_working_between_reads_ends_the_span_at_its_headers(traced, server, client):
    """The body comes at once; the program works 40 ms on the CPU after each byte it reads: that is
    its own work, not the request's. Ended at the body's end, it was 253 ms of http client overhead."""
    result = traced.python(textwrap.dedent(WORKING_READER[client]), server.url + "/drip/5/0")
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    [span] = client_spans(traced.spans())
    assert span.end_ns - span.start_ns < 100_000_000, (span.end_ns - span.start_ns) / 1e6
    assert span.attributes["selfopt_trace.http.body_read_after_ns"] >= 150_000_000
    assert "selfopt_trace.http.download_ns" not in span.attributes


def test_a_streamed_body_closed_unread_ends_the_span_at_its_close(traced, server):
    result = traced.python(textwrap.dedent("""
        import requests, sys, time
        with requests.get(sys.argv[1], stream=True) as r:
            time.sleep(0.1)
        time.sleep(0.1)
    """), server.url + "/drip/5/0")
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    [span] = client_spans(traced.spans())
    assert 95_000_000 <= span.end_ns - span.start_ns < 190_000_000, (span.end_ns - span.start_ns) / 1e6


def test_a_streamed_body_never_read_nor_closed_ends_the_span_at_its_headers(traced, server):
    """Kept to the process's end unread: the span ends at the headers, not incomplete at the end."""
    result = traced.python(textwrap.dedent("""
        import requests, sys, time
        kept = requests.get(sys.argv[1], stream=True)
        time.sleep(0.15)
    """), server.url + "/drip/5/0")
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    [span] = client_spans(traced.spans())
    assert not span.incomplete and span.end_ns - span.start_ns < 100_000_000, (span.end_ns - span.start_ns) / 1e6
    assert "selfopt_trace.http.download_ns" not in span.attributes
