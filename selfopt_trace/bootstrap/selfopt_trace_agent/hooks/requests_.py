"""requests (and pip's vendored copy): one span per `Session.send`, so per `requests.get/post` call.

`Session.send` covers redirects (followed by nested `send` calls, folded into this span) and the body
download; with `stream=True`, the span goes on after the call until the body is read or closed. urllib3 and http.client underneath add attempts, connections and
the traceparent header.
"""

from __future__ import annotations

from . import http_common as common


def install(target: str, module) -> None:
    library = "pip._vendor.requests" if target.startswith("pip.") else "requests"
    common.wrap(module.sessions.Session, "send", lambda original: _send(original, library))


def _send(original, library: str):
    def send(self, request, **kwargs):
        try:
            if common.client_active() is not None:
                return original(self, request, **kwargs)
            traced = common.begin_client(library, request.method, request.url)
            if traced is None:
                return original(self, request, **kwargs)
            try:
                response = original(self, request, **kwargs)
                try:
                    body_read = not kwargs.get("stream", self.stream)
                    traced.got_response(response.status_code, body_read)
                    if traced.response_size is None:  # no length from http.client (getresponse): chunked, or mocked
                        size = common.content_length(response.headers)
                        if size is None and body_read and hasattr(response.raw, "tell"):  # not with mocked adapters
                            size = response.raw.tell()  # bytes on the wire, before decompression
                        traced.response_size = size
                    if common.BODY_CAP:
                        traced.record_bodies(request.body, response.content if body_read else None)
                    # a streamed body: the span ends as http.client's response under it is read or closed
                    if not body_read and traced.read_by_program(getattr(response.raw, "_fp", None)):
                        return response
                except Exception as exc:
                    common.hook_failed(library, exc)
                traced.end()
            except BaseException as exc:  # (an exception of the program's in our bookkeeping too, or as end() begins)
                traced.end(exc)
                raise
            return response
        except BaseException as exc:  # as untraced: no frame of ours
            common.tracer.strip_own_frames(exc)
            raise

    return send
