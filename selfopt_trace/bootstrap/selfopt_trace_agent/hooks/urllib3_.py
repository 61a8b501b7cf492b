"""urllib3 (1.26 and 2.x, and pip's vendored copy): one span per `urlopen`, retries and redirects inside it.

urllib3 overrides http.client's connect, so its connections are timed here (`_new_conn` is the TCP
connection, the rest of an HTTPS `connect` is TLS); `Retry.sleep` adds the back-off time. The
physical requests (attempts) are counted by the http.client layer underneath.
"""

from __future__ import annotations

from time import time_ns

from . import http_common as common


def install(target: str, module) -> None:
    library = "pip._vendor.urllib3" if target.startswith("pip.") else "urllib3"
    common.install_dns()
    common.wrap(module.connectionpool.HTTPConnectionPool, "urlopen", lambda original: _urlopen(original, library, False))
    common.wrap(module.poolmanager.PoolManager, "urlopen", lambda original: _urlopen(original, library, True))
    connection = module.connection
    common.wrap(connection.HTTPConnection, "_new_conn", common.timed_connect)
    common.wrap(connection.HTTPSConnection, "connect", common.timed_tls)
    common.wrap(module.util.retry.Retry, "sleep", _sleep)


def _urlopen(original, library: str, absolute: bool):
    def urlopen(self, method, url, *args, **kwargs):
        try:
            if common.client_active() is not None:
                return original(self, method, url, *args, **kwargs)
            if absolute or "://" in url:
                request = common.begin_client(library, method, url)
            else:  # a pool is given the path only
                full = common.join_url(self.scheme, self.host, self.port, url)
                request = common.begin_client(library, method, full, self.host, self.port)
            if request is None:
                return original(self, method, url, *args, **kwargs)
            try:
                response = original(self, method, url, *args, **kwargs)
                try:
                    preloaded = kwargs.get("preload_content", True)
                    request.got_response(response.status, preloaded)
                    if request.response_size is None:  # no length from http.client (getresponse): chunked, or mocked
                        size = common.content_length(response.headers)
                        request.response_size = response.tell() if size is None and preloaded else size
                    if common.BODY_CAP:
                        request.record_bodies(kwargs.get("body"), response.data if preloaded else None)
                    # a body read later: the span ends as http.client's response under it is read or closed
                    if not preloaded and request.read_by_program(getattr(response, "_fp", None)):
                        return response
                except Exception as exc:
                    common.hook_failed(library, exc)
                request.end()
            except BaseException as exc:  # (an exception of the program's in our bookkeeping too, or as end() begins)
                request.end(exc)
                raise
            return response
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return urlopen


def _sleep(original):
    def sleep(self, *args, **kwargs):
        try:
            request = common.client_active()
            if request is None:
                return original(self, *args, **kwargs)
            t0 = time_ns()
            try:
                return original(self, *args, **kwargs)
            finally:
                request.sleep_ns += time_ns() - t0
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return sleep
