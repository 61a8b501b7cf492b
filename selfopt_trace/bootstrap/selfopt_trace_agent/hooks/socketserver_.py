"""socketserver: a server loop's select that timed out is a sleep, at the loop's line.

`serve_forever(poll_interval=0.5)` selects on its socket for up to half a second at a time, and
`shutdown()` waits until the loop sees its request: up to 0.5 s after the last select began, the
server's thread asleep in that select where no hook saw it. A program that starts an in-process
server (a test's fixture) and shuts it down read that as untraced waits: three requests of 100 ms,
then `shutdown()`, left 411 ms of 779 untraced. A select that returned nothing after its timeout is
a sleep the program asked for (nobody came), as a Condition wait that timed out is: a `sleep` span
named after the loop (`BaseServer.serve_forever`, `BaseServer.handle_request`) at its line, which
the breakdown's `sleeps` and the summary's note show. Installed at the first call of either loop
(lazy.ON_FIRST_CALL): http.server imports socketserver in programs that serve nothing.
"""

from __future__ import annotations

from time import time_ns

from .. import config, tracer
from . import time_


def install(target: str, module) -> None:
    base = module.__dict__.get("_ServerSelector")
    if not isinstance(base, type) or getattr(base, "_selfopt_trace_timed", False):
        return
    threshold = config.WAIT_THRESHOLD_NS
    heads: dict = {}  # the loop's qualified name -> its sleep record's head

    select_ready = base.select

    def select(self, timeout=None):
        t0 = time_ns()
        try:
            ready = select_ready(self, timeout)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise
        if not ready and timeout is not None and time_ns() - t0 >= threshold:
            _timed_out(t0, timeout, heads)
        return ready

    # named as the original in its making (a name set afterwards is an audit event the program sees);
    # the loops make theirs by this module global, at each call
    _ServerSelector = type(base.__name__, (base,), {
        "select": select, "_selfopt_trace_timed": True, "__qualname__": base.__qualname__,
        "__module__": base.__module__, "__doc__": base.__doc__})
    module._ServerSelector = _ServerSelector


def _timed_out(t0: int, timeout, heads: dict) -> None:
    try:
        code = tracer.code_of(tracer.frame_at(2))  # the loop that selected
        name = getattr(code, "co_qualname", None) or code.co_name
        head = heads.get(name)
        if head is None:
            head = heads[name] = "\t%s\t%s\t%s\t" % (name, tracer.INTERNAL, time_.CATEGORY)
        time_.record(t0, time_ns(), timeout, head=head, depth=3)
    except Exception as exc:
        tracer.exception_diagnostic("wait_failed:socketserver", exc)
