"""SERVER spans for the servers a traced program may run, and the route template where a framework knows it.

- http.server handlers (and werkzeug's, so Flask's dev server): the span opens when the request
  line has been read (`parse_request`, so idle keep-alive time is not in it) and closes when
  `handle_one_request` returns;
- WSGI apps as wsgiref (and so Django's runserver) and gunicorn's sync/threaded workers call them:
  the span opens at the app call and closes when the server closes the response body;
- ASGI apps as uvicorn calls them.
A server span nested in another (werkzeug's WSGI call inside its http.server handler) is not made
twice. Route templates come from Django's resolver, Flask's url_rule and Starlette's (and FastAPI's)
`scope["route"]`.
"""

from __future__ import annotations

from time import time_ns

from . import http_common as common
from .http_common import ATTR


def install(target: str, module) -> None:
    _INSTALLERS[target](module)


# --- http.server ---------------------------------------------------------------------------------

def _http_server(module) -> None:
    handler = module.BaseHTTPRequestHandler
    common.wrap(handler, "handle_one_request", _handle_one_request)
    common.wrap(handler, "parse_request", _parse_request)
    common.wrap(handler, "send_response_only", _send_response_only)


def _handle_one_request(original):
    def handle_one_request(self):
        try:
            self.__dict__[ATTR] = None  # parse_request opens the span only under this method
            try:
                result = original(self)
                common.end_server(self.__dict__.get(ATTR))  # (left there until it ended: see below)
            except BaseException as exc:  # (an exception of the program's as it ends too)
                common.end_server(self.__dict__.pop(ATTR, None), exc)
                raise
            self.__dict__.pop(ATTR, None)
            return result
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return handle_one_request


def _parse_request(original):
    def parse_request(self):
        try:
            t0 = time_ns()
            parsed = original(self)
            if parsed and ATTR in self.__dict__ and self.__dict__[ATTR] is None:
                self.__dict__[ATTR] = _begin_handler(self, t0)
            return parsed
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return parse_request


def _begin_handler(handler, start_ns: int) -> common.ServerRequest | None:
    try:
        headers = handler.headers
        address = handler.server.server_address
        server = common.split_host(headers.get("Host")) or (address[:2] if isinstance(address, tuple) else None)
        client = handler.client_address[0] if isinstance(handler.client_address, tuple) else None
    except Exception as exc:
        common.hook_failed("http.server", exc)
        return None
    return common.begin_server("http.server", handler.command, handler.path, headers.get(common.TRACEPARENT),
                               server, client, start_ns=start_ns)


def _send_response_only(original):
    def send_response_only(self, code, *args, **kwargs):
        try:
            request = self.__dict__.get(ATTR)
            if request is not None:
                try:
                    request.status_code = int(code)
                except Exception as exc:
                    common.hook_failed("http.server", exc)
            return original(self, code, *args, **kwargs)
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return send_response_only


# --- WSGI ----------------------------------------------------------------------------------------

def traced_wsgi(app, library: str):
    def wsgi_app(environ, start_response):
        try:
            if common.server_active() is not None:
                return app(environ, start_response)
            request = _begin_wsgi(environ, library)
            if request is None:
                return app(environ, start_response)

            def traced_start_response(status, headers, *exc_info):
                try:
                    try:
                        request.status_code = int(status[:3])
                    except Exception as exc:
                        common.hook_failed(library, exc)
                    return start_response(status, headers, *exc_info)
                except BaseException as exc:  # as untraced: no frame of ours
                    common.tracer.strip_own_frames(exc)
                    raise

            try:
                body = app(environ, traced_start_response)
                request.deactivate()
                file_wrapper = environ.get("wsgi.file_wrapper")
                if isinstance(file_wrapper, type) and isinstance(body, file_wrapper):
                    common.end_server(request)  # the server may sendfile() it: leave its type alone
                    return body
                return _Body(body, request)
            except BaseException as exc:  # (an exception of the program's in our bookkeeping too)
                common.end_server(request, exc)
                raise
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    wsgi_app.__wrapped__ = app
    return wsgi_app


def _begin_wsgi(environ: dict, library: str) -> common.ServerRequest | None:
    try:
        port = environ.get("SERVER_PORT", "")
        server = common.split_host(environ.get("HTTP_HOST")) or (
            environ.get("SERVER_NAME"), int(port) if port.isdigit() else None)
        target = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
    except Exception as exc:
        common.hook_failed(library, exc)
        return None
    return common.begin_server(library, environ.get("REQUEST_METHOD", ""), target, environ.get("HTTP_TRACEPARENT"),
                               server, environ.get("REMOTE_ADDR"), environ.get("wsgi.url_scheme", "http"))


class _Body:
    """The app's response body; the span ends when the server closes it, as WSGI servers must."""

    __slots__ = ("_body", "_request")

    def __init__(self, body, request: common.ServerRequest):
        self._body = body
        self._request = request

    def __iter__(self):
        return iter(self._body)

    def __len__(self) -> int:  # wsgiref sets Content-Length for a one-item list: keep that
        return len(self._body)

    def close(self) -> None:
        try:
            close = getattr(self._body, "close", None)
            if close is not None:
                close()
            common.end_server(self._request)
        except BaseException as exc:  # (the program's as end_server begins too: it ends still)
            common.end_server(self._request, exc)
            raise


def _wsgiref(module) -> None:
    def make(original):
        def run(self, application):
            try:
                return original(self, traced_wsgi(application, "wsgiref"))
            except BaseException as exc:  # as untraced: no frame of ours
                common.tracer.strip_own_frames(exc)
                raise

        return run

    common.wrap(module.BaseHandler, "run", make)


def _gunicorn(module) -> None:
    def make(original):
        def load_wsgi(self):
            try:
                original(self)
                self.wsgi = traced_wsgi(self.wsgi, "gunicorn")
            except BaseException as exc:  # as untraced: no frame of ours
                common.tracer.strip_own_frames(exc)
                raise

        return load_wsgi

    common.wrap(module.Worker, "load_wsgi", make)


# --- ASGI ----------------------------------------------------------------------------------------

def traced_asgi(app):
    async def asgi_app(scope, receive, send):
        try:
            if scope.get("type") != "http" or common.server_active() is not None:
                return await app(scope, receive, send)
            request = _begin_asgi(scope)
            if request is None:
                return await app(scope, receive, send)

            async def traced_send(message):
                try:
                    if message.get("type") == "http.response.start":
                        request.status_code = message.get("status")
                    await send(message)
                except BaseException as exc:  # as untraced: no frame of ours
                    common.tracer.strip_own_frames(exc)
                    raise

            try:
                await app(scope, receive, traced_send)
                request.route = _asgi_route(scope)
                common.end_server(request)
            except BaseException as exc:  # the app's own (or the program's in our bookkeeping): its span ends with it
                request.route = _asgi_route(scope)
                common.end_server(request, exc)
                raise
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    asgi_app.__wrapped__ = app
    return asgi_app


def _begin_asgi(scope: dict) -> common.ServerRequest | None:
    try:
        traceparent = host = None
        for name, value in scope.get("headers") or ():
            if name == b"traceparent":
                traceparent = value.decode("latin-1")
            elif name == b"host":
                host = value.decode("latin-1")
        server = common.split_host(host) or scope.get("server")
        client = scope.get("client")
    except Exception as exc:
        common.hook_failed("asgi", exc)
        return None
    return common.begin_server("asgi", scope.get("method", ""), scope.get("path", ""), traceparent, server,
                               client[0] if client else None, scope.get("scheme", "http"))


def _asgi_route(scope: dict) -> str | None:
    """Starlette's router (and FastAPI's) leaves the matched route in the scope."""
    path = getattr(scope.get("route"), "path", None)
    return path if isinstance(path, str) else None


def _uvicorn(module) -> None:
    def make(original):
        def load(self):
            try:
                original(self)
                self.loaded_app = traced_asgi(self.loaded_app)
            except BaseException as exc:  # as untraced: no frame of ours
                common.tracer.strip_own_frames(exc)
                raise

        return load

    common.wrap(module.Config, "load", make)


# --- route templates -----------------------------------------------------------------------------

def _django(module) -> None:
    def make(original):
        def resolve_request(self, request):
            try:
                match = original(self, request)
                traced = common.server_active()
                route = getattr(match, "route", None)
                if traced is not None and isinstance(route, str):
                    traced.route = route if route.startswith("/") else "/" + route
                return match
            except BaseException as exc:  # as untraced: no frame of ours
                common.tracer.strip_own_frames(exc)
                raise

        return resolve_request

    common.wrap(module.BaseHandler, "resolve_request", make)


def _flask(module) -> None:
    def make(original):
        def match_request(self):
            try:
                result = original(self)
                traced = common.server_active()
                rule = getattr(getattr(self.request, "url_rule", None), "rule", None)
                if traced is not None and isinstance(rule, str):
                    traced.route = rule
                return result
            except BaseException as exc:  # as untraced: no frame of ours
                common.tracer.strip_own_frames(exc)
                raise

        return match_request

    common.wrap(module.RequestContext, "match_request", make)


_INSTALLERS = {
    "http.server": _http_server,
    "wsgiref.handlers": _wsgiref,
    "gunicorn.workers.base": _gunicorn,
    "uvicorn.config": _uvicorn,
    "django.core.handlers.base": _django,
    "flask.ctx": _flask,
}
