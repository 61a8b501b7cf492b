"""Work handed to another thread stays under the span that handed it over.

`ThreadPoolExecutor.submit` (so `map`, and asyncio's `run_in_executor`) and `Thread.start` (so
Timer) carry the submitter's current span; the work runs with that span current. Only our span
travels, not the submitter's whole context: the user's own context variables (decimal's context
among them) stay exactly as they would be untraced. When no span is current (or only the process
span, which every thread falls back to anyway) nothing is done.
"""

from __future__ import annotations

from contextvars import Context

from .. import tracer

_PARENT = "_selfopt_trace_parent"


def install(target: str, module) -> None:
    if target == "threading":
        _wrap(module.Thread, "start", _start)
        _wrap(module.Thread, "_bootstrap_inner", _bootstrap_inner)
    else:
        _wrap(module.ThreadPoolExecutor, "submit", _submit)


def _wrap(owner, name: str, make) -> None:
    original = owner.__dict__[name]
    if not hasattr(original, "__wrapped__"):
        wrapper = make(original)
        wrapper.__wrapped__ = original
        setattr(owner, name, wrapper)


def _handed_over() -> tracer.Span | None:
    """The span new work belongs to: the current one, skipping import frames that may never be written."""
    span = tracer.current()
    while span is not None and span.deferred:
        span = span.parent
    return None if span is tracer.root() else span


def _submit(original):
    def submit(self, fn, /, *args, **kwargs):
        span = _handed_over()
        if span is None:
            return original(self, fn, *args, **kwargs)
        context = Context()
        context.run(tracer.activate, span)
        # A worker thread this submit starts must not keep `span` for every later task.
        token = tracer.activate(None)
        try:
            return original(self, context.run, fn, *args, **kwargs)  # Context.run adds no traceback frame
        finally:
            tracer.deactivate(token)

    return submit


def _start(original):
    def start(self, *args, **kwargs):
        span = _handed_over()
        if span is not None:
            self.__dict__[_PARENT] = span
        return original(self, *args, **kwargs)

    return start


def _bootstrap_inner(original):
    def _bootstrap_inner(self, *args, **kwargs):
        span = self.__dict__.pop(_PARENT, None)
        if span is not None:
            tracer.activate(span)  # a new thread starts with an empty context: nothing to restore
        return original(self, *args, **kwargs)

    return _bootstrap_inner
