"""httpx, sync and async: one span per `Client.send` / `AsyncClient.send` (redirects, auth and body inside;
a streamed body until it is read to its end or the response closed).

Underneath, httpcore (HTTP/1.1) sees each physical request: the traceparent goes into the header
list httpcore builds for the wire (the caller's Request is never touched), and its network
backends time the connection (`connect`, `tls`). httpcore's documented `trace` extension would
tell the same, but costs ~35 us per request; these few wrappers cost a few. A transport used
without a client gets no span.
"""

from __future__ import annotations

from time import time_ns

from . import http_common as common

LIBRARY = "httpx"


def install(target: str, module) -> None:
    if target == "httpx":
        common.install_dns()
        common.wrap(module.Client, "send", _send)
        common.wrap(module.AsyncClient, "send", _send_async)
        common.wrap(module.Response, "close", _close)
        common.wrap(module.Response, "aclose", _aclose)
    elif target == "httpcore._sync.http11":
        common.wrap(module.HTTP11Connection, "_send_request_headers", _send_request_headers)
        common.wrap(module.HTTP11Connection, "_receive_response_headers", _receive_response_headers)
    elif target == "httpcore._async.http11":
        common.wrap(module.AsyncHTTP11Connection, "_send_request_headers", _send_request_headers_async)
        common.wrap(module.AsyncHTTP11Connection, "_receive_response_headers", _receive_response_headers_async)
    elif target == "httpcore._backends.sync":
        common.wrap(module.SyncBackend, "connect_tcp", common.timed_connect)
        common.wrap(module.SyncStream, "start_tls", common.timed_tls)
    else:  # httpcore._backends.anyio
        common.wrap(module.AnyIOBackend, "connect_tcp", _timed_connect_async)
        common.wrap(module.AnyIOStream, "start_tls", _timed_tls_async)


def _send(original):
    def send(self, request, **kwargs):
        try:
            if common.client_active() is not None:
                return original(self, request, **kwargs)
            traced = common.begin_client(LIBRARY, request.method, str(request.url))
            if traced is None:
                return original(self, request, **kwargs)
            try:
                response = original(self, request, **kwargs)
                _finish(traced, response, body_read=not kwargs.get("stream", False))
            except BaseException as exc:  # (an exception of the program's in our bookkeeping too: _finish)
                traced.end(exc)
                raise
            return response
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return send


def _send_async(original):
    async def send(self, request, **kwargs):
        try:
            if common.client_active() is not None:
                return await original(self, request, **kwargs)
            traced = common.begin_client(LIBRARY, request.method, str(request.url))
            if traced is None:
                return await original(self, request, **kwargs)
            try:
                response = await original(self, request, **kwargs)
                _finish(traced, response, body_read=not kwargs.get("stream", False))
            except BaseException as exc:  # (an exception of the program's in our bookkeeping too: _finish)
                traced.end(exc)
                raise
            return response
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return send


def _finish(traced: common.ClientRequest, response, body_read: bool) -> None:
    try:
        traced.got_response(response.status_code, body_read)
        size = common.content_length(response.headers)
        traced.response_size = response.num_bytes_downloaded if size is None and body_read else size
        if common.BODY_CAP:
            traced.record_bodies(getattr(response.request, "_content", None), response.content if body_read else None)
        if not body_read and traced.read_by_program(response):  # ends at the body's end or close (_close)
            return
    except Exception as exc:
        common.hook_failed(LIBRARY, exc)
    traced.end()


def _close(original):
    """Response.close (a streamed body read to its end calls it too): the end of a streamed request's span."""
    def close(self):
        try:
            traced = self.__dict__.pop(common.ATTR, None)
            if traced is None:
                return original(self)
            try:
                return original(self)
            finally:
                traced.end()
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return close


def _aclose(original):
    async def aclose(self):
        try:
            traced = self.__dict__.pop(common.ATTR, None)
            if traced is None:
                return await original(self)
            try:
                return await original(self)
            finally:
                traced.end()
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return aclose


def _inject(headers: list, traced: common.ClientRequest) -> None:
    """httpcore's own header list for this request: our traceparent in place of any other."""
    traced.sends += 1
    for i in range(len(headers) - 1, -1, -1):
        name = headers[i][0].lower()
        if name == b"traceparent":
            del headers[i]
        elif name == b"content-length":
            traced.request_size = int(headers[i][1])
    headers.append((b"traceparent", traced.span.traceparent().encode("ascii")))


def _before_send(request) -> None:
    traced = common.client_active()
    if traced is not None:
        try:
            _inject(request.headers, traced)
        except Exception as exc:
            common.hook_failed(LIBRARY, exc)


def _send_request_headers(original):
    def _send_request_headers(self, request, *args, **kwargs):
        try:
            _before_send(request)
            return original(self, request, *args, **kwargs)
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return _send_request_headers


def _send_request_headers_async(original):
    async def _send_request_headers(self, request, *args, **kwargs):
        try:
            _before_send(request)
            return await original(self, request, *args, **kwargs)
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return _send_request_headers


def _receive_response_headers(original):
    def _receive_response_headers(self, *args, **kwargs):
        try:
            traced = common.client_active()
            if traced is None:
                return original(self, *args, **kwargs)
            traced.wait_ns = time_ns()
            result = original(self, *args, **kwargs)
            traced.headers_in()
            return result
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return _receive_response_headers


def _receive_response_headers_async(original):
    async def _receive_response_headers(self, *args, **kwargs):
        try:
            traced = common.client_active()
            if traced is None:
                return await original(self, *args, **kwargs)
            traced.wait_ns = time_ns()
            result = await original(self, *args, **kwargs)
            traced.headers_in()
            return result
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return _receive_response_headers


def _timed_connect_async(original):
    """common.timed_connect for anyio's coroutine (names resolve in a worker thread: no `dns` span)."""

    async def connect_tcp(self, *args, **kwargs):
        try:
            traced = common.client_active()
            if traced is None:
                return await original(self, *args, **kwargs)
            try:  # (from its start: an exception of the program's there ends it)
                traced.connect_started(time_ns())
                stream = await original(self, *args, **kwargs)
                traced.connect_ended(time_ns())
            except BaseException:
                traced.connect_ended(time_ns(), failed=True)
                raise
            return stream
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return connect_tcp


def _timed_tls_async(original):
    async def start_tls(self, *args, **kwargs):
        try:
            traced = common.client_active()
            if traced is None:
                return await original(self, *args, **kwargs)
            try:
                stream = await original(self, *args, **kwargs)
            except BaseException:
                traced.tls_ended(time_ns(), failed=True)
                raise
            traced.tls_ended(time_ns())
            return stream
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return start_tls
