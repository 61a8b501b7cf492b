"""What the HTTP hooks share: one CLIENT span per request, SERVER spans joined to the caller's trace.

Clients nest (requests -> urllib3 -> http.client, httpx -> httpcore): the outermost layer opens the
span and puts its `ClientRequest` in a context variable; inner layers see it and only add what they
alone know (connection set-up, time to first byte, the traceparent header on the wire), like OTel's
suppress_http_instrumentation. Attribute names follow the OTel HTTP semantic conventions; ours are
under `selfopt_trace.http.`. Everything here catches its own errors: a request never fails because
of the tracer.
"""

from __future__ import annotations

import os
from _thread import get_ident
from time import time_ns

from .. import config, lazy, process, redact, tracer

# contextvars' class without importing it: loaded at a program's first request, an import here would
# be the program's import span (`import contextvars`, ~1 ms, in the middle of its own work)
ContextVar = type(tracer._current)

CATEGORY = "http"
METHOD = "http.request.method"
URL_FULL = "url.full"
URL_PATH = "url.path"
URL_SCHEME = "url.scheme"
ROUTE = "http.route"
SERVER_ADDRESS = "server.address"
SERVER_PORT = "server.port"
CLIENT_ADDRESS = "client.address"
STATUS_CODE = "http.response.status_code"
ERROR_TYPE = "error.type"
REQUEST_SIZE = "http.request.body.size"
RESPONSE_SIZE = "http.response.body.size"
RESEND_COUNT = "http.request.resend_count"
LIBRARY = "selfopt_trace.http.library"
REUSED = "selfopt_trace.http.connection.reused"
RETRY_SLEEP = "selfopt_trace.http.retry.sleep_ns"
TTFB = "selfopt_trace.http.ttfb_ns"
DNS = "selfopt_trace.http.dns_ns"
DNS_SPAN_NS = 1_000_000  # name lookups at least this long are `dns` spans too (loopback ones take ~20 us)
DOWNLOAD = "selfopt_trace.http.download_ns"
READ_AFTER = "selfopt_trace.http.body_read_after_ns"
# A body the program reads after the call, for longer than this, with its thread on the CPU more than
# a quarter of that time: the program's work between reads, not the download (see ClientRequest.end).
READ_WORK_MIN_NS = 5_000_000
REQUEST_BODY = "selfopt_trace.http.request.body"
RESPONSE_BODY = "selfopt_trace.http.response.body"
TRACEPARENT = "traceparent"
ENV_BODIES = "SELFOPT_TRACE_HTTP_BODIES"
_DEFAULT_PORTS = {"http": 80, "https": 443}
ATTR = "_selfopt_trace_http"  # the ClientRequest on a connection or response object between calls (http.client's)

_client: ContextVar = ContextVar("selfopt_trace_http_client", default=None)
_server: ContextVar = ContextVar("selfopt_trace_http_server", default=None)


def _body_cap() -> int:
    try:
        return max(0, int(os.environ.get(ENV_BODIES) or 0))
    except ValueError as exc:  # (loaded by the program's first HTTP call or import)
        tracer.raise_if_programs(exc)
        return 0


BODY_CAP = _body_cap()  # bytes of each body recorded (redacted); 0: bodies are never read


def hook_failed(where: str, exc: BaseException) -> None:
    tracer.exception_diagnostic("http_hook_failed:" + where, exc)


class ClientRequest:
    """One logical request: every attempt, redirect and connection it needed, under one span."""

    __slots__ = ("span", "library", "tokens", "sends", "connects", "connecting", "connect_end_ns", "dns_ns",
                 "wait_ns", "headers_ns", "headers_cpu", "headers_thread", "sleep_ns", "status_code",
                 "request_size", "response_size", "body_read", "program_reads", "bodies")

    def __init__(self, span: tracer.Span, library: str, tokens: tuple | None):
        self.span = span
        self.library = library
        self.tokens = tokens  # None: not in the context (http.client's own span lives across calls)
        self.sends = 0
        self.connects = 0
        self.connecting: tracer.Span | None = None
        self.connect_end_ns = 0
        self.dns_ns = 0  # time in name lookups during the connection being made
        self.wait_ns = 0
        self.headers_ns = 0
        self.headers_cpu = 0  # the thread's CPU clock when the headers were in, and that thread
        self.headers_thread = 0
        self.sleep_ns = 0
        self.status_code: int | None = None
        self.request_size: int | None = None
        self.response_size: int | None = None
        self.body_read = False
        self.program_reads = False  # the program reads the body after the call (end: its work between reads)
        self.bodies: tuple | None = None

    def headers_in(self) -> None:
        """The response's headers are read (the end of the time to first byte)."""
        self.headers_ns = time_ns()
        self.headers_cpu = tracer.thread_cpu_ns()
        self.headers_thread = get_ident()

    def read_by_program(self, response) -> bool:
        """A response the call returns before its body is read (requests' and httpx's `stream=True`,
        urllib3's `preload_content=False`): the span leaves the context now and goes on until
        `response` (whose close or end of body calls end(): http.client's HTTPResponse, httpx's
        Response) is read to its end or closed. False, nothing done, where it cannot (no such
        response, or one already done): the caller ends the span. Ended at the call's return, a
        streamed body's download (a model's tokens as they come) was untraced waits."""
        if response is None or getattr(response, "fp", True) is None or getattr(response, "length", None) == 0 \
                or getattr(response, "is_closed", False):
            return False
        setattr(response, ATTR, self)
        self.body_read = self.program_reads = True
        if not _unread_registered:
            _register_unread()
        _unread[self] = None  # (by the object: id() is an audit event the program would see)
        self._leave_context()
        return True

    def _leave_context(self) -> None:
        """The request is no longer the current one (its span may go on: a streamed body)."""
        tokens = self.tokens
        if tokens is not None:
            tracer.deactivate(tokens[1])
            try:
                _client.reset(tokens[0])
            except (ValueError, RuntimeError) as error:  # ended in another context than it began: nothing there
                tracer.raise_if_programs(error)
            self.tokens = None  # after both: a program's exception in between still finds them (interrupted)

    def _worked_between_reads(self, read_ns: int) -> bool:
        """The program read the body with its thread on the CPU more than a quarter of the time: it
        parsed, wrote or computed between reads (a download keeps a reader off the CPU), so that time
        is its own, not the request's. Ended at the body's end, a loop working 50 ms on each of six
        bytes of a body sent at once was 253 ms of http client overhead."""
        return (read_ns >= READ_WORK_MIN_NS and self.headers_cpu > 0 and self.headers_thread == get_ident()
                and (tracer.thread_cpu_ns() - self.headers_cpu) * 4 > read_ns)

    def got_response(self, status_code: int, body_read: bool) -> None:
        """The response's status, and whether its body is read inside the span. Its size each layer
        sets where it knows it (http.client at its headers: getresponse)."""
        self.status_code = status_code
        self.body_read = body_read

    def record_bodies(self, request_body, response_body) -> None:
        """Only with SELFOPT_TRACE_HTTP_BODIES set: both bodies, redacted and cut to the cap."""
        self.bodies = (_body_text(request_body), _body_text(response_body))

    def connect_started(self, now: int) -> None:
        self.connects += 1
        self.dns_ns = 0
        self.connecting = tracer.start_span("connect", CATEGORY, parent=self.span, start_ns=now)

    def connect_ended(self, now: int, failed: bool = False) -> None:
        connecting = self.connecting
        if connecting is None:
            return
        self.connect_end_ns = 0 if failed else now
        tracer.end_span(connecting, tracer.ERROR if failed else tracer.UNSET,
                        {DNS: self.dns_ns} if self.dns_ns else None, end_ns=now)
        self.connecting = None  # after its end: an exception of the program's before that ends it still (timed_connect)

    def tls_ended(self, now: int, failed: bool = False) -> None:
        start, self.connect_end_ns = self.connect_end_ns, 0
        if start:
            tracer.record_complete("tls", CATEGORY, start, now, None, parent=self.span,
                                   status=tracer.ERROR if failed else tracer.UNSET)

    def end(self, exc: BaseException | None = None, unread: bool = False) -> None:
        """Close the span (once): response attributes, or the exception the caller will see. An
        exception of the program's (a signal handler's) that lands in it ends it still (interrupted).
        `unread`: a streamed body the program never read nor closed, at the process's end: the span
        ends at its headers."""
        try:
            now = time_ns()
            self._leave_context()
            span = self.span
            if span.end_ns:
                return
            _unread.pop(self, None)
            attributes: dict = {REUSED: self.connects == 0}
            status = tracer.UNSET
            end_ns = now
            try:
                if self.status_code is not None:
                    attributes[STATUS_CODE] = self.status_code
                    if self.status_code >= 400:
                        attributes[ERROR_TYPE] = str(self.status_code)
                        status = tracer.ERROR
                if exc is not None:
                    attributes[ERROR_TYPE] = type(exc).__qualname__
                    status = tracer.ERROR
                if self.sends > 1:
                    attributes[RESEND_COUNT] = self.sends - 1
                if self.sleep_ns:
                    attributes[RETRY_SLEEP] = self.sleep_ns
                if self.request_size is not None:
                    attributes[REQUEST_SIZE] = self.request_size
                if self.response_size is not None:
                    attributes[RESPONSE_SIZE] = self.response_size
                if self.headers_ns:
                    if self.wait_ns:
                        attributes[TTFB] = self.headers_ns - self.wait_ns
                    if self.body_read:
                        if unread:
                            end_ns = self.headers_ns
                        elif exc is None and self.program_reads and self._worked_between_reads(now - self.headers_ns):
                            attributes[READ_AFTER], end_ns = now - self.headers_ns, self.headers_ns
                        else:
                            attributes[DOWNLOAD] = now - self.headers_ns
                if self.bodies is not None:
                    attributes[REQUEST_BODY], attributes[RESPONSE_BODY] = self.bodies
            except Exception as error:
                hook_failed(self.library, error)
            # The flush merges these into the start's attributes (one X record). If an S record was
            # written, the E record carries them all: what was added after the S (an OTel
            # instrumentation's span merged into this one, hooks/otel_.py) would be lost otherwise.
            if span.written:
                attributes = {**span.attributes, **attributes}
            tracer.end_span(span, status, attributes, end_ns=end_ns)
            tracer.add_overhead(time_ns() - now)
        except BaseException as error:
            self.interrupted(error)
            raise

    def interrupted(self, exc: BaseException) -> None:
        """An exception (the program's: a signal handler's) interrupted the request's bookkeeping, from
        its begin to its end: the context it set is undone (what of it the interrupted code had not),
        and its span ends with the error, as the request it interrupted (open, it ran to the process's
        end, and the requests after it in this context were an inner layer's, untraced)."""
        tokens, self.tokens = self.tokens, None
        if tokens is not None:
            tracer.reset_quietly(tracer._current.reset, tokens[1])
            tracer.reset_quietly(_client.reset, tokens[0])
        span = self.span
        if not span.end_ns:
            attributes = {ERROR_TYPE: type(exc).__qualname__}
            tracer.end_span(span, tracer.ERROR, {**span.attributes, **attributes} if span.written else attributes)


# Streamed requests whose body is not read yet (read_by_program): at the process's end, one the
# program never read nor closed ends at its headers (the body was never waited for), not as an
# incomplete span lasting to the end.
_unread: dict = {}


def _end_unread() -> None:
    for request in list(_unread):
        request.end(unread=True)
    _unread.clear()


_unread_registered = False


def _register_unread() -> None:
    global _unread_registered
    _unread_registered = True
    process.on_end(_end_unread)
    os.register_at_fork(after_in_child=_unread.clear)  # a forked child's are its parent's spans


_activate = tracer._current.set  # tracer.activate, without its call (no frame an exception could interrupt)
client_active = _client.get  # the ClientRequest of the request in progress here, or None (no frame: hot)

# URL -> (its redacted form, host, port): a program calls the same few URLs again and again, and
# working them out was a tenth of a request's cost in the hooks.
_urls: dict = {}
URLS_KEPT = 512


def begin_client(library: str, method: str, url: str, host: str | None = None, port: int | None = None,
                 in_context: bool = True, start_ns: int = 0) -> ClientRequest | None:
    """Open the CLIENT span of a request (None if that failed: the request then goes on untraced),
    from `start_ns` when the hook's work before this call is part of the request."""
    t0 = start_ns or time_ns()
    span = request = client_token = None
    try:
        known = _urls.get(url)
        if known is None:
            if len(_urls) >= URLS_KEPT:
                _urls.clear()
            known = _urls[url] = (redact.url(url), *split_url(url))
        if host is None:
            host, port = known[1], known[2]
        attributes = {METHOD: method, URL_FULL: known[0], SERVER_ADDRESS: host, SERVER_PORT: port, LIBRARY: library}
        # Not flushed here (that write doubled our cost): the flusher thread writes a request still
        # waiting after 100 ms, so the server's spans find their parent even if we are killed then.
        span = tracer.start_span(method, CATEGORY, tracer.CLIENT, attributes, start_ns=t0)
        request = ClientRequest(span, library, None)
        if in_context:
            client_token = _client.set(request)
            request.tokens = (client_token, _activate(span))
        tracer.add_overhead(time_ns() - t0)
    except BaseException as exc:
        # Begun, not handed over: the span ends, its context undone (the program's exception, a signal
        # handler's, that interrupted this goes on; after the agent's own failure the request is untraced).
        if span is not None:
            if request is None:
                request = ClientRequest(span, library, None)
            if request.tokens is None and client_token is not None:
                request.tokens = (client_token, None)
            request.interrupted(exc)
        if not isinstance(exc, Exception):
            raise
        hook_failed(library, exc)
        return None
    return request


def split_url(url: str) -> tuple:
    """(host, port) of an absolute URL, without urllib.parse (this runs on every request)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return "", None
    rest = rest.partition("/")[0]
    if "?" in rest or "#" in rest or "@" in rest:
        rest = rest.partition("?")[0].partition("#")[0].rpartition("@")[2]
    if rest.startswith("["):
        host, _, tail = rest[1:].partition("]")
        port = tail[1:]
    else:
        host, _, port = rest.partition(":")
    return host, int(port) if port.isdigit() else _DEFAULT_PORTS.get(scheme.lower())


def join_url(scheme: str, host: str, port: int | None, target: str) -> str:
    if ":" in host:
        host = "[" + host + "]"
    if port is None or port == _DEFAULT_PORTS.get(scheme):
        return "%s://%s%s" % (scheme, host, target)
    return "%s://%s:%d%s" % (scheme, host, port, target)


def split_host(value: str | None) -> tuple | None:
    """A Host header as (host, port), or None."""
    if not value:
        return None
    host, port = split_url("http://" + value)
    return host, port


def content_length(headers) -> int | None:
    value = headers.get("content-length")
    return None if value is None else int(value)


def timed_connect(original):
    """Wrap a method that opens a TCP connection: a `connect` child span (DNS nested inside)."""

    def connect(self, *args, **kwargs):
        try:
            request = _client.get()
            token = None
            if request is None:
                request = getattr(self, ATTR, None)
                if request is None:
                    return original(self, *args, **kwargs)
                token = _client.set(request)  # http.client's own requests are not in the context: DNS needs it
            try:  # (from its start: an exception of the program's there ends it, and resets the token)
                request.connect_started(time_ns())
                result = original(self, *args, **kwargs)
                request.connect_ended(time_ns())
            except BaseException:
                request.connect_ended(time_ns(), failed=True)
                raise
            finally:
                if token is not None:
                    _client.reset(token)
            return result
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return connect


def timed_tls(original):
    """Wrap an HTTPS connect that calls a `timed_connect` first: the rest of it is the `tls` span."""

    def connect(self, *args, **kwargs):
        try:
            request = _client.get() or getattr(self, ATTR, None)
            if request is None:
                return original(self, *args, **kwargs)
            try:
                result = original(self, *args, **kwargs)
            except BaseException:
                request.tls_ended(time_ns(), failed=True)
                raise
            request.tls_ended(time_ns())
            return result
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return connect


def install_dns() -> None:
    """socket.getaddrinfo during a traced request: its time on the `connect` span, a `dns` span inside
    it when the lookup took long enough to matter."""
    import socket

    original = socket.getaddrinfo
    if tracer.is_own_wrapper(original):
        return

    def getaddrinfo(host, *args, **kwargs):
        try:
            request = _client.get()
            if request is None:
                return original(host, *args, **kwargs)
            t0 = time_ns()
            status = tracer.ERROR
            try:
                result = original(host, *args, **kwargs)
                status = tracer.UNSET
                return result
            finally:
                t1 = time_ns()
                request.dns_ns += t1 - t0
                if t1 - t0 >= DNS_SPAN_NS or status is tracer.ERROR:
                    tracer.record_complete("dns", CATEGORY, t0, t1, {SERVER_ADDRESS: _text(host)},
                                           parent=request.connecting or request.span, status=status)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    socket.getaddrinfo = tracer.own_wrapper(getaddrinfo, original)


def _text(value) -> str:
    return value.decode("ascii", "replace") if isinstance(value, bytes) else str(value)


def wrap(owner, name: str, make) -> None:
    """owner.name = make(original), once (a second install sees the agent's mark). A function, as the
    original is: a program's introspection of it (inspect.isfunction, pytest-mock's spy) sees what it
    sees untraced."""
    original = lazy.original(owner.__dict__[name])  # what stands in until the first call wraps it
    if not tracer.is_own_wrapper(original):
        setattr(owner, name, tracer.unbound(tracer.own_wrapper(make(original), original), original))


# --- bodies (opt-in) ----------------------------------------------------------------------------

def _body_text(body) -> str | None:
    if body is None:
        return None
    if isinstance(body, (bytes, bytearray, memoryview)):
        text = bytes(body).decode("utf-8", "replace")
    elif isinstance(body, str):
        text = body
    else:
        return None  # a stream or file: reading it would consume it
    return _redact_body(text)[:BODY_CAP]


def _redact_body(text: str) -> str:
    """JSON bodies with secret keys replaced, form bodies like query strings, multipart forms field by
    field, anything else as text."""
    stripped = text.lstrip()
    if stripped.startswith("--"):
        multipart = _redact_multipart(text)
        if multipart is not None:
            return multipart
    if stripped[:1] in ("{", "["):
        import json

        try:
            return json.dumps(redact.structure(json.loads(text)))
        except ValueError as exc:
            tracer.raise_if_programs(exc)
            return redact.REDACTED  # JSON we cannot parse may hide a secret we cannot find
    if "=" in text and " " not in text.strip() and "\n" not in text.strip():
        return redact.query_string(text)
    return redact.text(text)


def _redact_multipart(text: str) -> str | None:
    """A multipart/form-data body (`--BOUNDARY`, then each part's headers, a blank line, its content)
    with the content of each part whose field is a secret's (`name="password"`) replaced, the others'
    as free text; None if the text is not one (its first line no boundary that comes again)."""
    newline = "\r\n" if "\r\n" in text else "\n"
    boundary = text.lstrip().partition(newline)[0].rstrip()
    if len(boundary) < 3 or text.count(boundary) < 2:
        return None
    parts = text.split(boundary)
    for index, part in enumerate(parts):
        headers, blank, content = part.partition(newline + newline)
        if not blank:  # before the first boundary, or `--` after the last
            continue
        end = len(content) - len(newline) if content.endswith(newline) else len(content)  # the boundary's own line break
        secret = False
        for line in headers.split(newline):
            name, colon, value = line.partition(":")
            if colon and name.strip().lower() == "content-disposition":
                for param in value.split(";"):
                    key, eq, field = param.strip().partition("=")
                    if eq and key.lower() == "name" and redact.is_secret_name(field.strip().strip('"')):
                        secret = True
        parts[index] = headers + blank + (redact.REDACTED if secret else redact.text(content[:end])) + content[end:]
    return boundary.join(parts)


# --- server side --------------------------------------------------------------------------------

class ServerRequest:
    __slots__ = ("span", "library", "tokens", "status_code", "route", "written")

    def __init__(self, span: tracer.Span, library: str):
        self.span = span
        self.library = library
        self.tokens: tuple | None = (_server.set(self), _activate(span))  # C calls: no frame to be interrupted in
        self.status_code: int | None = None
        self.route: str | None = None
        self.written = False  # its record went out: whole (end_server), or its S record at the process's end

    def deactivate(self) -> None:
        """No longer current (the span may still be open: a WSGI body is sent after the app returned)."""
        tokens = self.tokens
        if tokens is None:
            return
        tracer.deactivate(tokens[1])
        try:
            _server.reset(tokens[0])
        except (ValueError, RuntimeError) as exc:  # ended in another context than it began: nothing to undo there
            tracer.raise_if_programs(exc)
        self.tokens = None  # after both: an exception of the program's in between still finds them (end_server)


server_active = _server.get  # the ServerRequest being answered here, or None


def begin_server(library: str, method: str, target: str, traceparent: str | None, server, client,
                 scheme: str = "http", start_ns: int = 0) -> ServerRequest | None:
    """A SERVER span, current until `end_server`: its parent is the caller's span from `traceparent`.

    Written as one record at the end, so its name can carry the route the framework found meanwhile.
    """
    t0 = time_ns()
    request = None
    try:
        parent = _remote_parent(traceparent) if traceparent else None
        if parent is None:
            parent = tracer.current() or tracer.root()
        absolute = _absolute_target(target) if "://" in target else None
        if absolute is not None:  # the target's scheme and host come first (OTel's semantic conventions)
            scheme, host, port, path = absolute
            server = (host, port)
        else:
            path = target.partition("?")[0].partition("#")[0]
        attributes = {METHOD: method, URL_PATH: path, URL_SCHEME: scheme, LIBRARY: library}
        if server:
            attributes[SERVER_ADDRESS], attributes[SERVER_PORT] = server[0], server[1]
        if client:
            attributes[CLIENT_ADDRESS] = client
        span = tracer.Span(tracer.new_span_id(), parent, parent.span_id, parent.trace_id, method, tracer.SERVER,
                           CATEGORY, start_ns or t0, attributes)
        request = ServerRequest(span, library)
        _open_servers[span.span_id] = request
        tracer.add_overhead(time_ns() - t0)
    except BaseException as exc:
        if request is not None:  # begun, not handed over: it ends, its context undone (end_server)
            end_server(request, exc)
        if not isinstance(exc, Exception):
            raise
        hook_failed(library, exc)
        return None
    return request


# The requests being answered, by span id: a SERVER span is written whole at its end (its name
# carries the route found meanwhile), so one still open when the process ends would never be written.
# That is a server's last request as a rule: its client reads the response before the handler has
# returned (http.server ends the span when handle_one_request returns, after the last write), and
# may stop the server at once (`p.terminate()`: the SIGTERM handler ends the process while the
# handler thread, or the main thread under the signal handler, has yet to end the span; 4 runs in
# 6 lost it, read as an untraced server's time). At the process's end (exit, SIGTERM, os._exit,
# exec: process.end's closers) each is written as its S record, with what is known of it by then:
# incomplete, ended by the loader at the file's last time known (the process's end), as any span
# open when a process ends. One dict entry a request, no work at a flush.
_open_servers: dict = {}


def _write_open_servers() -> None:
    """process.end's closer: the S record of each request still open (see _open_servers)."""
    for request in list(_open_servers.values()):
        span = request.span
        if request.written:  # its record went out (end_server), or its S record did
            continue
        try:
            name, attributes, status = _server_outcome(request, None)
            tracer._buffer.append(tracer.Span(span.span_id, span.parent, span.parent_id, span.trace_id, name,
                                              tracer.SERVER, CATEGORY, span.start_ns, attributes))
            request.written = True
        except Exception as exc:
            hook_failed(request.library, exc)


def _forget_open_servers() -> None:
    _open_servers.clear()  # a forked child's: the parent's requests, written in the parent's file


os.register_at_fork(after_in_child=_forget_open_servers)
process.on_end(_write_open_servers)


def _absolute_target(target: str) -> tuple | None:
    """An absolute-form request target (`GET http://user:pw@host/p?q HTTP/1.1`, a request to a proxy) as
    (scheme, host, port, path): its userinfo, query and fragment never recorded. None for any other
    (`/p?next=http://x` is origin-form)."""
    scheme, _, rest = target.partition("://")
    if not scheme or not scheme.replace("+", "").replace("-", "").replace(".", "").isalnum():
        return None
    authority, slash, path = rest.partition("#")[0].partition("?")[0].partition("/")
    host, port = split_url("%s://%s" % (scheme.lower(), authority))
    return scheme.lower(), host, port, slash + path if slash else "/"


def _remote_parent(traceparent) -> tracer.Span | None:
    ids = config.traceparent_ids(_text(traceparent))
    if ids is None:
        return None
    trace_id, span_id = ids
    return tracer.Span(span_id, None, "", trace_id, "", tracer.SERVER, CATEGORY, 0, None)


def _server_outcome(request: ServerRequest, exc: BaseException | None) -> tuple:
    """(name, attributes, status) of a SERVER span, from what its request learnt."""
    span = request.span
    attributes = dict(span.attributes or ())
    status = tracer.UNSET
    name = span.name
    if request.route:
        attributes[ROUTE] = request.route
        name = "%s %s" % (name, request.route)
    if request.status_code is not None:
        attributes[STATUS_CODE] = request.status_code
        if request.status_code >= 500:
            attributes[ERROR_TYPE] = str(request.status_code)
            status = tracer.ERROR
    if exc is not None:
        attributes[ERROR_TYPE] = type(exc).__qualname__
        status = tracer.ERROR
    return name, attributes, status


def end_server(request: ServerRequest | None, exc: BaseException | None = None) -> None:
    """End the SERVER span of `request` (once), with the exception the server sees, if any. An
    exception of the program's (a signal handler's) that lands in it ends it still, with that one."""
    if request is None or request.span.end_ns:
        return
    try:
        now = time_ns()
        request.deactivate()
        try:
            # Left in _open_servers until its record is in the buffer: a SIGTERM whose handler ends the
            # process in between (a plain HTTPServer answers in the main thread) still writes it.
            _write_end(request, now, exc)
            _open_servers.pop(request.span.span_id, None)
            if not tracer._flusher_started:  # a server, young or not: it waits for its next request where
                tracer.before_block()  # no hook sees, and what it recorded must reach the disk meanwhile
        except Exception as error:
            hook_failed(request.library, error)
        tracer.add_overhead(time_ns() - now)
    except BaseException as error:
        _end_interrupted(request, error)
        raise


def _end_interrupted(request: ServerRequest, exc: BaseException) -> None:
    """end_server's where an exception (the program's: a signal handler's) interrupted it: the context
    undone (what of it was not), the record written with the error if it was not (left in _open_servers,
    it was written at the process's end, open to it; and the spans after it in this context hung under it)."""
    tokens, request.tokens = request.tokens, None
    if tokens is not None:
        tracer.reset_quietly(tracer._current.reset, tokens[1])
        tracer.reset_quietly(_server.reset, tokens[0])
    span = request.span
    if not request.written or not span.end_ns:  # (an S record out, _write_open_servers: its E)
        _write_end(request, span.end_ns or time_ns(), exc)
    _open_servers.pop(span.span_id, None)


def _write_end(request: ServerRequest, now: int, exc: BaseException | None) -> None:
    """The SERVER span's record, ended at `now`: whole, or the E record where its S is out (the process
    went on after its end: an exec that failed; _write_open_servers)."""
    span = request.span
    name, attributes, status = _server_outcome(request, exc)
    span.end_ns = now
    if request.written:
        tracer._buffer.append(tracer.spanfile.end_line(span.span_id, now, status, tracer.encode(attributes)))
    else:
        tracer.record_complete(name, CATEGORY, span.start_ns, now, attributes, parent=span.parent,
                               kind=tracer.SERVER, status=status, span_id=span.span_id)
        request.written = True
