"""http.client, so urllib.request and every client built on it (urllib3, requests, pip's vendored copies).

Under another client's span this layer only adds what it alone sees: the connection (`connect`,
`dns`, `tls` spans), the time to the response headers, and the `traceparent` header, put on the
wire (in the connection's header buffer) so the caller's objects stay as they were. A request made
with http.client directly (urllib.request does) gets its own span here: it opens at `endheaders`
(which sends the request, connecting first if needed; method and target come from the request line
already buffered) and closes when the response body has been read to its end or the response is
closed (also when it is garbage-collected), so body download is inside it.
"""

from __future__ import annotations

from time import time_ns

from . import http_common as common
from .http_common import ATTR

LIBRARY = "http.client"


def install(target: str, module) -> None:
    common.install_dns()
    connection = module.HTTPConnection
    # The request a connection or response carries between calls: on the class, None, so reading it
    # on an instance neither raises nor makes Python build the instance's __dict__ (which a look into
    # `__dict__` did for every connection and response, slowing every later attribute read of theirs).
    for owner in (connection, module.HTTPResponse):
        if ATTR not in owner.__dict__:
            setattr(owner, ATTR, None)
    common.wrap(connection, "endheaders", _endheaders)
    common.wrap(connection, "getresponse", _getresponse)
    common.wrap(connection, "connect", common.timed_connect)
    https = getattr(module, "HTTPSConnection", None)  # absent without the ssl module
    if https is not None:
        common.wrap(https, "connect", common.timed_tls)
    common.wrap(module.HTTPResponse, "_close_conn", _close_conn)


def _full_url(connection, target: str) -> tuple:
    """(url, host, port) of a request line's target on this connection."""
    host = getattr(connection, "_tunnel_host", None) or connection.host
    port = getattr(connection, "_tunnel_port", None) or connection.port
    if isinstance(port, str) and port.isdigit():  # HTTPConnection("h", "8080") connects as with 8080
        port = int(port)
    if "://" in target:  # a request to a proxy names the whole URL
        return target, None, None
    scheme = "https" if connection.default_port == 443 else "http"
    return common.join_url(scheme, host, port, target), host, port


def _own_request(connection, began: int) -> common.ClientRequest | None:
    """A request made with http.client directly: its span, from the request line in the buffer,
    starting where endheaders was called (`began`): reading the request line is time in the call."""
    if not connection._buffer:  # no putrequest: endheaders itself raises
        return None
    try:
        line = connection._buffer[0].decode("ascii", "replace")
        # `METHOD TARGET HTTP/1.1`: the method is putrequest's own (it may hold a space, which http.client
        # lets through: "GE T"), the target what follows it up to the version (it holds none).
        method = getattr(connection, "_method", None)
        if isinstance(method, str) and line.startswith(method + " "):
            rest = line[len(method) + 1:]
        else:
            method, _, rest = line.partition(" ")
        full, host, port = _full_url(connection, rest.rpartition(" ")[0])
    except Exception as exc:
        common.hook_failed(LIBRARY, exc)
        return None
    return common.begin_client(LIBRARY, method, full, host, port, in_context=False, start_ns=began)


def _endheaders(original):
    def endheaders(self, *args, **kwargs):
        try:
            request = common.client_active()
            if request is None:
                request = _own_request(self, time_ns())
            if request is not None:
                self._selfopt_trace_http = request  # ATTR, first: a program's exception from here ends ours (_abandon)
            try:
                if request is not None:
                    t0 = time_ns()
                    request.sends += 1
                    try:
                        _inject(self._buffer, request)
                    except Exception as exc:
                        common.hook_failed(request.library, exc)
                    common.tracer.add_overhead(time_ns() - t0)
                return original(self, *args, **kwargs)
            except BaseException as exc:
                _abandon(self, exc)
                raise
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return endheaders


def _inject(lines: list, request: common.ClientRequest) -> None:
    """Our traceparent among the buffered header lines (any other replaced); the Content-Length."""
    size = _put_traceparent(lines, b"traceparent: " + request.span.traceparent().encode("ascii"))
    if size is not None:  # last: a Content-Length that is not a number fails here, after the traceparent
        request.request_size = int(size)


def _python_put_traceparent(lines: list, header: bytes) -> bytes | None:
    """Replace any traceparent among the buffered header lines with `header`; the Content-Length's
    value, or None. The C twin's put_traceparent where it loaded (each line's name compared in
    place), this one for lines it leaves: the reference.

    One lower-cased copy of the headers is searched (a loop over the lines cost a tenth of the
    whole HTTP hook): putheader writes each as `Name: value`, so names start after a newline.
    """
    headers = b"\n".join(lines).lower()  # line 0, the request line, has no line break: it matches nothing
    if b"\ntraceparent:" in headers:
        lines[1:] = [line for line in lines[1:] if line.partition(b":")[0].strip().lower() != b"traceparent"]
    lines.append(header)
    at = headers.find(b"\ncontent-length:")
    if at < 0:
        return None
    end = headers.find(b"\n", at + 1)
    return headers[at + 16:end if end > 0 else None]


_put_traceparent = (common.tracer.twin.header_putter(_python_put_traceparent) if common.tracer.twin is not None
                    else _python_put_traceparent)


def _getresponse(original):
    def getresponse(self, *args, **kwargs):
        try:
            request = self._selfopt_trace_http  # ATTR
            if request is None:
                return original(self, *args, **kwargs)
            self._selfopt_trace_http = None
            request.wait_ns = time_ns()
            try:
                response = original(self, *args, **kwargs)
                request.headers_in()
                request.response_size = response.length  # the body's length as http.client read the headers
                if request.tokens is None:  # our own span: it ends with the body
                    _owned_response(request, response)
            except BaseException as exc:  # (an exception of the program's in our bookkeeping too)
                if request.tokens is None:
                    request.end(exc)
                raise
            return response
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return getresponse


def _owned_response(request: common.ClientRequest, response) -> None:
    try:
        request.got_response(response.status, body_read=True)
        request.program_reads = True  # (urllib.request's read(), or the program's own)
        if response.length == 0 or response.isclosed():
            request.end()
            return
    except Exception as exc:
        common.hook_failed(LIBRARY, exc)
    response._selfopt_trace_http = request  # ATTR


def _abandon(connection, exc: BaseException) -> None:
    """A send failed: our own span ends with the error; an outer layer's ends in that layer."""
    request = connection._selfopt_trace_http  # ATTR
    connection._selfopt_trace_http = None
    if request is not None and request.tokens is None:
        request.end(exc)


def _close_conn(original):
    def _close_conn(self, *args, **kwargs):
        try:
            request = self._selfopt_trace_http  # ATTR
            if request is None:
                return original(self, *args, **kwargs)
            self._selfopt_trace_http = None
            try:
                return original(self, *args, **kwargs)
            finally:
                try:
                    request.end()
                except BaseException as exc:  # the program's, as end() begins: it ends still
                    request.interrupted(exc)
                    raise
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return _close_conn
