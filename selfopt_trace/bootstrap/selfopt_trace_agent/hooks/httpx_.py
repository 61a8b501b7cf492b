"""httpx, sync and async: one span per `Client.send` / `AsyncClient.send` (redirects, auth and body inside).

The transports (`HTTPTransport.handle_request`, `AsyncHTTPTransport.handle_async_request`) see each
physical request: they put the traceparent header on it (and take it off again afterwards, so the
caller's Request is left as it was) and listen to httpcore's documented `trace` extension for the
connection (`connect`, `tls`) and the time to the response headers. A transport used without a
client gets its own span, which ends with the response headers.
"""

from __future__ import annotations

from time import time_ns

from . import http_common as common

LIBRARY = "httpx"


def install(target: str, module) -> None:
    common.install_dns()
    common.wrap(module.Client, "send", _send)
    common.wrap(module.AsyncClient, "send", _send_async)
    common.wrap(module.HTTPTransport, "handle_request", _handle_request)
    common.wrap(module.AsyncHTTPTransport, "handle_async_request", _handle_async_request)


def _send(original):
    def send(self, request, **kwargs):
        if common.client_active() is not None:
            return original(self, request, **kwargs)
        traced = common.begin_client(LIBRARY, request.method, str(request.url))
        if traced is None:
            return original(self, request, **kwargs)
        try:
            response = original(self, request, **kwargs)
        except BaseException as exc:
            traced.end(exc)
            raise
        _finish(traced, response, body_read=not kwargs.get("stream", False))
        return response

    return send


def _send_async(original):
    async def send(self, request, **kwargs):
        if common.client_active() is not None:
            return await original(self, request, **kwargs)
        traced = common.begin_client(LIBRARY, request.method, str(request.url))
        if traced is None:
            return await original(self, request, **kwargs)
        try:
            response = await original(self, request, **kwargs)
        except BaseException as exc:
            traced.end(exc)
            raise
        _finish(traced, response, body_read=not kwargs.get("stream", False))
        return response

    return send


def _handle_request(original):
    def handle_request(self, request):
        traced = common.client_active()
        owned = traced is None
        if owned:
            traced = common.begin_client(LIBRARY, request.method, str(request.url))
            if traced is None:
                return original(self, request)
        saved = _prepare(request, traced, _events)
        try:
            response = original(self, request)
        except BaseException as exc:
            if owned:
                traced.end(exc)
            raise
        finally:
            _restore(request, saved)
        if owned:
            _finish(traced, response, body_read=False)
        return response

    return handle_request


def _handle_async_request(original):
    async def handle_async_request(self, request):
        traced = common.client_active()
        owned = traced is None
        if owned:
            traced = common.begin_client(LIBRARY, request.method, str(request.url))
            if traced is None:
                return await original(self, request)
        saved = _prepare(request, traced, _async_events)
        try:
            response = await original(self, request)
        except BaseException as exc:
            if owned:
                traced.end(exc)
            raise
        finally:
            _restore(request, saved)
        if owned:
            _finish(traced, response, body_read=False)
        return response

    return handle_async_request


def _prepare(request, traced: common.ClientRequest, make_events) -> tuple | None:
    """Our traceparent and trace extension on the request; returns what `_restore` puts back."""
    t0 = time_ns()
    try:
        traced.sends += 1
        headers = request.headers
        previous = headers.get(common.TRACEPARENT)
        headers[common.TRACEPARENT] = traced.span.traceparent()
        if traced.request_size is None:
            traced.request_size = common.content_length(headers)
        extensions = request.extensions
        # httpcore keeps this new dict, so the events of the body read later still reach us
        request.extensions = dict(extensions, trace=make_events(traced, extensions.get("trace")))
        saved = (previous, extensions)
    except Exception as exc:
        common.hook_failed(LIBRARY, exc)
        saved = None
    common.tracer.add_overhead(time_ns() - t0)
    return saved


def _restore(request, saved: tuple | None) -> None:
    if saved is None:
        return
    previous, request.extensions = saved
    try:
        if previous is None:
            del request.headers[common.TRACEPARENT]
        else:
            request.headers[common.TRACEPARENT] = previous
    except Exception as exc:
        common.hook_failed(LIBRARY, exc)


def _finish(traced: common.ClientRequest, response, body_read: bool) -> None:
    try:
        traced.got_response(response.status_code, None, body_read)
        size = common.content_length(response.headers)
        traced.response_size = response.num_bytes_downloaded if size is None and body_read else size
        if common.BODY_CAP:
            traced.record_bodies(getattr(response.request, "_content", None), response.content if body_read else None)
    except Exception as exc:
        common.hook_failed(LIBRARY, exc)
    traced.end()


def _events(traced: common.ClientRequest, chained):
    def trace(name, info):
        _event(traced, name)
        if chained is not None:
            chained(name, info)

    return trace


def _async_events(traced: common.ClientRequest, chained):
    async def trace(name, info):
        _event(traced, name)
        if chained is not None:
            await chained(name, info)

    return trace


def _event(traced: common.ClientRequest, name: str) -> None:
    """One httpcore trace event, e.g. `connection.connect_tcp.started`, `http11.receive_response_headers.complete`."""
    now = time_ns()
    try:
        step = name.partition(".")[2]
        if step == "receive_response_headers.started":
            traced.wait_ns = now
        elif step == "receive_response_headers.complete":
            traced.headers_ns = now
        elif step == "connect_tcp.started":
            traced.connect_started(now)
        elif step in ("connect_tcp.complete", "connect_tcp.failed"):
            traced.connect_ended(now, failed=step.endswith("failed"))
        elif step in ("start_tls.complete", "start_tls.failed"):
            traced.tls_ended(now, failed=step.endswith("failed"))
    except Exception as exc:
        common.hook_failed(LIBRARY, exc)
    common.tracer.add_overhead(time_ns() - now)
