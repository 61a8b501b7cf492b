"""SERVER spans continue the caller's trace from the traceparent header, across processes, on every
kind of server we hook; the route template comes from the framework where it knows one."""

from __future__ import annotations

import sys
import textwrap

import pytest

from tests.agent.http.conftest import TracedServer, client_spans, free_port, server_spans

HTTP_SERVER = """
    import http.server, sys
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def log_message(self, *args):
            pass
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", "5")
            self.end_headers()
            self.wfile.write(b"hello")
    http.server.ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
"""

WSGI_APP = """
def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello"]
"""

WSGIREF = WSGI_APP + """
import sys
from wsgiref.simple_server import WSGIRequestHandler, make_server
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
make_server("127.0.0.1", int(sys.argv[1]), app, handler_class=Quiet).serve_forever()
"""

FLASK_APP = """
import flask
app = flask.Flask(__name__)

@app.route("/items/<int:item_id>")
def item(item_id):
    return "hello"
"""

FLASK_DEV = FLASK_APP + """
import logging, sys
from werkzeug.serving import make_server
logging.getLogger("werkzeug").disabled = True
make_server("127.0.0.1", int(sys.argv[1]), app, threaded=True).serve_forever()
"""

DJANGO = """
import sys
from django.conf import settings
from django.http import HttpResponse
from django.urls import path

settings.configure(ROOT_URLCONF=__name__, ALLOWED_HOSTS=["*"], DEBUG=False, SECRET_KEY="test")
urlpatterns = [path("items/<int:item_id>", lambda request, item_id: HttpResponse(b"hello", headers={"Content-Length": "5"}))]

import django
from django.core.wsgi import get_wsgi_application
from wsgiref.simple_server import WSGIRequestHandler, make_server
django.setup()
class Quiet(WSGIRequestHandler):
    def log_message(self, *args):
        pass
make_server("127.0.0.1", int(sys.argv[1]), get_wsgi_application(), handler_class=Quiet).serve_forever()
"""

STARLETTE_APP = """
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

async def item(request):
    return PlainTextResponse("hello")

app = Starlette(routes=[Route("/items/{item_id:int}", item)])
"""

# name -> (module source, command after the interpreter, library, route the span should name)
SERVERS = {
    "http.server": (HTTP_SERVER, ["{script}", "{port}"], "http.server", None),
    "wsgiref": (WSGIREF, ["{script}", "{port}"], "wsgiref", None),
    "flask-dev": (FLASK_DEV, ["{script}", "{port}"], "http.server", "/items/<int:item_id>"),
    "django-wsgiref": (DJANGO, ["{script}", "{port}"], "wsgiref", "/items/<int:item_id>"),
    "gunicorn-flask": (FLASK_APP, ["-m", "gunicorn", "-b", "127.0.0.1:{port}", "-w", "1", "--log-level", "warning",
                                   "served:app"], "gunicorn", "/items/<int:item_id>"),
    "uvicorn-starlette": (STARLETTE_APP, ["-m", "uvicorn", "--port", "{port}", "--log-level", "warning",
                                          "served:app"], "asgi", "/items/{item_id:int}"),
}

CLIENT = """
import requests, sys, time
with requests.Session() as session:
    first = session.get(sys.argv[1] + "/items/7?token=abc")
    time.sleep(0.3)  # idle on a kept-alive connection: not the server's time
    second = session.get(sys.argv[1] + "/items/8")
print(first.status_code, first.text, first.headers.get("Content-Length"), second.status_code)
"""


def _start(traced, name: str) -> TracedServer:
    source, command, _, _ = SERVERS[name]
    script = traced.tmp_path / "served.py"
    script.write_text(textwrap.dedent(source))
    port = free_port()
    args = [sys.executable] + [part.format(script=script, port=port) for part in command]
    return TracedServer(traced, args, port, cwd=traced.tmp_path)


@pytest.mark.parametrize("name", list(SERVERS))
def test_server_span_joins_the_client_trace(traced, name):
    server = _start(traced, name)
    try:
        client_script = traced.tmp_path / "client.py"
        client_script.write_text(CLIENT)
        result = traced.run([sys.executable, str(client_script), server.url])
    finally:
        out, err = server.stop()
    assert (result.returncode, result.stderr) == (0, b""), result.stderr
    assert result.stdout == b"200 hello 5 200\n"
    assert err == ""
    spans = traced.spans()
    assert spans.diagnostics == []
    clients, servers = client_spans(spans), server_spans(spans)
    assert len(clients) == 2 and len(servers) == 2
    _, _, library, route = SERVERS[name]
    for client, served, path in zip(clients, servers, ("/items/7", "/items/8")):
        assert served.parent_span_id == client.span_id
        assert served.trace_id == client.trace_id
        assert served.pid != client.pid
        assert client.start_ns <= served.start_ns <= served.end_ns
        # a WSGI server closes the body after sending its last byte: the client may be done first
        assert served.end_ns <= client.end_ns + 20_000_000
        assert served.name == ("GET %s" % route if route else "GET")
        attributes = served.attributes
        assert attributes["selfopt_trace.http.library"] == library
        assert attributes["http.request.method"] == "GET"
        assert attributes["url.path"] == path  # the query (it may hold secrets) is not kept
        assert attributes["http.response.status_code"] == 200
        assert attributes["server.address"] == "127.0.0.1" and attributes["server.port"] == server.port
        assert attributes["client.address"] == "127.0.0.1"
        assert attributes.get("http.route") == route
        assert served.status == "UNSET"
    # the keep-alive pause before the second request is not in the server's span
    assert servers[1].end_ns - servers[1].start_ns < 200_000_000
    assert len(spans.trace_ids() - {clients[0].trace_id}) == 1  # the server process's own trace, nothing else


def test_importing_http_server_loads_no_hook_until_a_request(traced):
    """pydoc and many tools import http.server and serve nothing; the first request installs the
    hooks (the tests above serve through them)."""
    result = traced.python("import http.server, sys\n"
                           "print([m for m in ('http_server', 'http_common') if 'selfopt_trace_agent.hooks.' + m in sys.modules])\n")
    assert (result.returncode, result.stdout, result.stderr) == (0, b"[]\n", b"")


def test_server_span_without_traceparent_is_under_the_server_process(traced):
    server = _start(traced, "http.server")
    try:
        import urllib.request

        with urllib.request.urlopen(server.url + "/plain") as response:  # from the untraced test process
            assert response.read() == b"hello"
    finally:
        _, err = server.stop()
    assert err == ""
    spans = traced.spans()
    [served] = server_spans(spans)
    handler = spans.parent(served)  # the handler thread's span, under the server's process span
    assert (handler.name, handler.category) == ("thread", "thread")
    assert handler.parent_span_id == spans.processes()[0].span_id


def test_server_error_is_an_error_span(traced):
    server = _start(traced, "flask-dev")
    try:
        result = traced.python("import requests, sys; print(requests.get(sys.argv[1] + '/nothing').status_code)",
                               server.url)
    finally:
        _, err = server.stop()
    assert (result.returncode, result.stdout, result.stderr, err) == (0, b"404\n", b"", "")
    [served] = server_spans(traced.spans())
    assert served.name == "GET" and "http.route" not in served.attributes
    assert served.attributes["http.response.status_code"] == 404
    assert served.status == "UNSET"  # a 4xx is the client's error, not the server's


FAILING_ASGI = """
async def app(scope, receive, send):
    if scope["type"] == "http":
        raise RuntimeError("the app failed")
"""


def test_an_asgi_app_exception_reaches_the_server_and_ends_the_span(traced):
    """The exception goes on to uvicorn, as untraced (it logs it, and answers 500), and the span ends
    with it: the hook once swallowed it (the span ended UNSET, uvicorn saw an app that sent nothing)."""
    script = traced.tmp_path / "served.py"
    script.write_text(FAILING_ASGI)
    port = free_port()
    server = TracedServer(traced, [sys.executable, "-m", "uvicorn", "--port", str(port), "--log-level", "warning",
                                   "served:app"], port, cwd=traced.tmp_path)
    try:
        result = traced.python("import requests, sys; print(requests.get(sys.argv[1] + '/x').status_code)", server.url)
    finally:
        _, err = server.stop()
    assert (result.returncode, result.stdout, result.stderr) == (0, b"500\n", b"")
    assert "Exception in ASGI application" in err and "RuntimeError: the app failed" in err
    [served] = server_spans(traced.spans())
    assert served.status == "ERROR" and served.attributes["error.type"] == "RuntimeError"
