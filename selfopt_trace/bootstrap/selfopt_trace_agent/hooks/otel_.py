"""The OpenTelemetry bridge: a program's own OTel spans join the run and its trace, parents both ways.

Armed when the program imports `opentelemetry.trace` (and `opentelemetry.sdk.trace`): the agent never
imports OpenTelemetry itself, and the classes used here are the program's own.

- Context, both ways. `opentelemetry.context`'s runtime context is wrapped: `attach` of a context
  holding a span makes that span current for the agent too (a span the agent starts inside it is
  its child), and `get_current` shows OTel the agent's current span when that one is the innermost
  (an OTel span started inside an agent span is its child, in the run's trace; with no span current
  at all, the process span is the parent, as for the agent's own spans).
- With the SDK: every `opentelemetry.sdk.trace.TracerProvider` gets one more span processor, which
  records each span the provider starts in the span file, as the agent records its own (an S
  record if it is still open at a flush, else one X record). The program's own processors and
  exporters see the same spans as without the agent.
- API only (no SDK provider set): the no-op tracer inside the API's `ProxyTracer` is replaced by a
  recording one, so the spans still reach the run; once the program sets a provider, the proxy
  uses it, as it would untraced. A `NoOpTracerProvider` the program sets itself stays a no-op.
- One span per request: an OTel CLIENT span starting directly inside the agent's own span of an
  HTTP request (opentelemetry-instrumentation-httpx works inside `Client.send`), and an OTel SERVER
  span starting inside the agent's SERVER span of the same request, are merged into the agent's
  span (its attributes added where the agent has none). The SDK still exports the OTel span; the
  run holds one span for the request.

An OTel span's record: its ids, parent, name, kind and times; its attributes, with
`otel.scope.name`/`otel.scope.version` (the instrumentation scope) and, for an ERROR status with a
description, `otel.status_description`; the first recorded exception's `exception.type`,
`exception.message`, `exception.stacktrace`. Other events and links are not recorded. Category
`http` for a CLIENT or SERVER span with `http.*`/`url.*` attributes, else `other` (what `load` and
the OTLP receiver give a foreign span). Every failure here is a diagnostic, never an exception in
the program.
"""

from __future__ import annotations

import sys
from time import time_ns

from .. import tracer
from . import http_common as common

ATTR = "_selfopt_trace_span"  # on an SDK span: the agent's Span recording it (or the one it was merged into)
SCOPE_NAME = "otel.scope.name"
SCOPE_VERSION = "otel.scope.version"
STATUS_DESCRIPTION = "otel.status_description"
KINDS = ("INTERNAL", "SERVER", "CLIENT", "PRODUCER", "CONSUMER")  # SpanKind's values 0..4
STATUSES = ("UNSET", "OK", "ERROR")  # StatusCode's values 0..2
_EXCEPTION_KEYS = ("exception.type", "exception.message", "exception.stacktrace")
_new = object.__new__


class Bridged(tracer.Span):
    """An OTel span as the agent records it; `otel` is the span OTel code holds (a remote parent's
    NonRecordingSpan for a stub, which is never written)."""

    __slots__ = ("otel",)


_state: dict = {}  # "api", "context", "key", "runtime", "classes": filled as the modules arm


def install(target: str, module) -> None:
    if target == "opentelemetry.trace":
        _arm_api(module)
    elif target == "opentelemetry.sdk.trace":
        _arm_sdk(module)


def failed(where: str, exc: BaseException) -> None:
    tracer.exception_diagnostic("otel_bridge_failed:" + where, exc)


# ---------------------------------------------------------------- recording

_last_trace = [0, ""]  # the last trace id seen, as an int and as hex: a program is mostly one trace


def _trace_hex(trace_id: int) -> str:
    last = _last_trace
    if last[0] == trace_id:
        return last[1]
    text = "%032x" % trace_id
    _last_trace[:] = [trace_id, text]
    return text


def _stub(context, otel) -> Bridged:
    """A parent the agent did not record (remote, or another tracer's): ids only, never written."""
    span = Bridged("%016x" % context.span_id, None, "", _trace_hex(context.trace_id), "", "INTERNAL",
                   "other", 0, None)
    span.otel = otel
    return span


def _start(otel, name: str, kind: str, attributes: dict, start_ns: int, span_id: str, trace_id: str,
           parent) -> Bridged:
    """Record the start of an OTel span under `parent` (an agent Span, or None: a root)."""
    span = _new(Bridged)
    span.span_id = span_id
    span.parent = parent
    if parent is None:
        span.parent_id = ""
    else:
        if parent.deferred:
            tracer._mark_kept(parent)
        span.parent_id = parent.span_id
    span.trace_id = trace_id
    span.name = name
    span.kind = kind
    span.category = category(kind, attributes)
    span.start_ns = start_ns
    span.end_ns = 0
    span.attributes = attributes
    span.deferred = False
    span.keep = False
    span.sums = None
    span.child_ns = 0
    span.status = tracer.UNSET
    span.end_attributes = None
    span.written = False
    span.otel = otel
    tracer.add_started(span)
    return span


def category(kind: str, attributes) -> str:
    if (kind == "CLIENT" or kind == "SERVER") and attributes:
        for key in attributes:
            if key.startswith(("http.", "url.")):
                return "http"
    return "other"


def _merge_target(kind: str, parent):
    """The agent's own span of the same HTTP request, for an OTel CLIENT/SERVER span under `parent`."""
    if kind == "CLIENT":
        request = common.client_active()
        if request is not None and request.span is parent and not request.span.end_ns:
            return request.span
    elif kind == "SERVER":
        request = common.server_active()
        if request is not None and not request.span.end_ns and (
                parent is None or parent is request.span or parent.span_id == request.span.parent_id):
            return request.span
    return None


def _merge_attributes(target, attributes) -> None:
    """The OTel span's attributes onto the agent's span of the same request, where it has none.
    A new dict: the flusher may be encoding the old one."""
    if attributes:
        target.attributes = {**{k: v for k, v in attributes.items() if k != SCOPE_NAME and k != SCOPE_VERSION},
                             **(target.attributes or {})}


def _ours(otel):
    """The agent's Span for an OTel span (recording it, merged into, or a stub), None for an invalid one."""
    kind = type(otel)
    classes = _state.get("classes")
    if classes is not None and (kind is classes[0] or kind is classes[1]):  # a _View or a BridgeSpan
        return otel.native
    ours = getattr(otel, ATTR, None)
    if ours is not None:
        return ours
    context = otel.get_span_context()
    if context is not None and context.is_valid:
        return _stub(context, otel)
    return None


def _represents(otel, ours) -> bool:
    """`otel`, the span in an OTel context, stands for the agent's current span `ours`."""
    if type(ours) is Bridged and ours.otel is otel:
        return True
    classes = _state.get("classes")
    if classes is not None and (type(otel) is classes[0] or type(otel) is classes[1]):
        return otel.native is ours
    return getattr(otel, ATTR, None) is ours


# ---------------------------------------------------------------- the context, both ways

class _Token:
    __slots__ = ("otel", "ours")

    def __init__(self, otel, ours):
        self.otel = otel
        self.ours = ours


class Runtime:
    """Wraps opentelemetry.context's runtime context (ContextVarsRuntimeContext)."""

    def __init__(self, original, key: str, context_class):
        self.original = original
        self.key = key
        self.context_class = context_class
        self.last = (None, None, None)  # (OTel context, agent span, the context shown): get_current's memo

    def attach(self, context):
        token = self.original.attach(context)
        try:
            otel = context.get(self.key)
            ours = None if otel is None else _ours(otel)
        except Exception as exc:
            failed("attach", exc)
            return token
        if ours is None:
            return token
        return _Token(token, tracer.activate(ours))

    def get_current(self):
        context = self.original.get_current()
        try:
            ours = tracer.current() or tracer.root()
            if ours is None:
                return context
            last = self.last
            if last[0] is context and last[1] is ours:
                return last[2]
            otel = context.get(self.key)
            if otel is not None and _represents(otel, ours):
                return context
            shown = self.context_class(context)
            dict.__setitem__(shown, self.key, ours.otel if type(ours) is Bridged else view(ours))
            self.last = (context, ours, shown)
            return shown
        except Exception as exc:
            failed("get_current", exc)
            return context

    def detach(self, token) -> None:
        if type(token) is _Token:
            tracer.deactivate(token.ours)
            token = token.otel
        self.original.detach(token)


_views: dict = {}


def view(ours):
    """An agent span as OTel sees it: a NonRecordingSpan with its ids (kept while it is reused)."""
    found = _views.get(id(ours))
    if found is not None and found.native is ours:
        return found
    if len(_views) > 256:
        _views.clear()
    found = _views[id(ours)] = _state["classes"][0](ours)
    return found


def _arm_api(trace) -> None:
    context_module = sys.modules.get("opentelemetry.context")
    propagation = sys.modules.get("opentelemetry.trace.propagation")
    if context_module is None or propagation is None or "api" in _state:
        return
    _state["api"] = trace
    _state["key"] = key = propagation._SPAN_KEY
    _state["classes"] = _api_classes(trace, context_module, key)
    original = context_module._RUNTIME_CONTEXT
    if not isinstance(original, Runtime):
        runtime = Runtime(original, key, sys.modules["opentelemetry.context.context"].Context)
        context_module._RUNTIME_CONTEXT = runtime
        _state["runtime"] = runtime
    proxy = trace.ProxyTracer
    init = proxy.__dict__["__init__"]
    if hasattr(init, "__wrapped__"):
        return
    bridge_tracer = _state["classes"][2]

    def __init__(self, instrumenting_module_name, instrumenting_library_version=None, *args, **kwargs):
        init(self, instrumenting_module_name, instrumenting_library_version, *args, **kwargs)
        try:
            self._noop_tracer = bridge_tracer(instrumenting_module_name, instrumenting_library_version)
        except Exception as exc:
            failed("ProxyTracer", exc)

    __init__.__wrapped__ = init
    proxy.__init__ = __init__


# ---------------------------------------------------------------- the API's classes, for API-only programs

def _api_classes(trace, context_module, key: str) -> tuple:
    """(_View, BridgeSpan, BridgeTracer), built on the program's own opentelemetry.trace."""
    SpanContext, TraceFlags, NonRecordingSpan = trace.SpanContext, trace.TraceFlags, trace.NonRecordingSpan
    StatusCode = trace.StatusCode
    sampled = TraceFlags(TraceFlags.SAMPLED)
    get_current_span = trace.get_current_span
    Context = sys.modules["opentelemetry.context.context"].Context

    class _View(NonRecordingSpan):
        """An agent span where OTel looks for the current span."""

        def __init__(self, native):
            super().__init__(SpanContext(int(native.trace_id, 16), int(native.span_id, 16), is_remote=False,
                                         trace_flags=sampled))
            self.native = native

    class BridgeSpan(trace.Span):
        """A recording OTel span that is an agent span (API only: no SDK provider)."""

        def __init__(self, native, merged: bool):
            self.native = native
            self.merged = merged
            self.added: dict = {}
            self.status = None
            self.description = None
            self.context = None
            self.ended = False

        def get_span_context(self):
            context = self.context
            if context is None:
                native = self.native
                context = self.context = SpanContext(int(native.trace_id, 16), int(native.span_id, 16),
                                                     is_remote=False, trace_flags=sampled)
            return context

        def is_recording(self) -> bool:
            return not self.ended

        def set_attribute(self, key, value) -> None:
            if not self.ended:
                self.added[key] = value

        def set_attributes(self, attributes) -> None:
            if not self.ended:
                self.added.update(attributes)

        def add_event(self, name, attributes=None, timestamp=None) -> None:
            pass

        def add_link(self, context, attributes=None) -> None:
            pass

        def update_name(self, name) -> None:
            if not self.ended and not self.merged:
                self.native.name = name

        def set_status(self, status, description=None) -> None:
            if self.ended or self.status == "OK":
                return
            try:
                if isinstance(status, StatusCode):
                    code = status
                else:
                    code, description = status.status_code, description or status.description
                if code is StatusCode.UNSET:
                    return
                self.status = STATUSES[code.value]
                self.description = description if code is StatusCode.ERROR else None
            except Exception as exc:
                failed("set_status", exc)

        def record_exception(self, exception, attributes=None, timestamp=None, escaped=False) -> None:
            if self.ended or "exception.type" in self.added:
                return
            try:
                import traceback

                self.added["exception.type"] = type(exception).__name__
                self.added["exception.message"] = str(exception)
                self.added["exception.stacktrace"] = "".join(
                    traceback.format_exception(type(exception), exception, exception.__traceback__))
            except Exception as exc:
                failed("record_exception", exc)

        def end(self, end_time=None) -> None:
            if self.ended:
                return
            self.ended = True
            try:
                added = self.added
                native = self.native
                if self.merged:
                    _merge_attributes(native, added)
                    return
                if self.description:
                    added[STATUS_DESCRIPTION] = self.description
                if added and not native.written:
                    native.category = category(native.kind, {**(native.attributes or {}), **added})
                tracer.end_span(native, self.status or tracer.UNSET, added or None, end_ns=end_time or 0)
            except Exception as exc:
                failed("end", exc)

        def __enter__(self):
            return self

        def __exit__(self, kind, exc, traceback):
            self.end()

    class _Current:
        """start_as_current_span's context manager: the span current while the block runs."""

        __slots__ = ("span", "token", "end_on_exit", "record_exception", "set_status_on_exception")

        def __init__(self, span, end_on_exit, record_exception, set_status_on_exception):
            self.span = span
            self.end_on_exit = end_on_exit
            self.record_exception = record_exception
            self.set_status_on_exception = set_status_on_exception

        def __enter__(self):
            span = self.span
            self.token = context_module.attach(context_module.set_value(key, span))
            return span

        def __exit__(self, kind, exc, traceback):
            context_module.detach(self.token)
            span = self.span
            if exc is not None and isinstance(exc, Exception) and span.is_recording():
                if self.record_exception:
                    span.record_exception(exc)
                if self.set_status_on_exception:
                    span.set_status(StatusCode.ERROR, "%s: %s" % (type(exc).__name__, exc))
            if self.end_on_exit:
                span.end()
            return False

    class BridgeTracer(trace.Tracer):
        """What ProxyTracer uses while no provider is set: spans recorded by the agent."""

        def __init__(self, name, version=None):
            self.scope = {SCOPE_NAME: str(name)}
            if version:
                self.scope[SCOPE_VERSION] = str(version)

        def start_span(self, name, context=None, kind=None, attributes=None, links=None, start_time=None,
                       record_exception=True, set_status_on_exception=True):
            try:
                parent = _ours(get_current_span(context))
                kind_name = KINDS[kind.value] if kind is not None else "INTERNAL"
                if kind_name != "INTERNAL":
                    target = _merge_target(kind_name, parent)
                    if target is not None:
                        span = BridgeSpan(target, True)
                        if attributes:
                            span.added.update(attributes)
                        return span
                recorded = dict(self.scope)
                if attributes:
                    recorded.update(attributes)
                if parent is None:
                    trace_id = tracer.new_trace_id()
                else:
                    trace_id = parent.trace_id
                native = _start(None, name, kind_name, recorded, start_time or time_ns(), tracer.new_span_id(),
                                trace_id, parent)
                span = BridgeSpan(native, False)
                native.otel = span
                return span
            except Exception as exc:
                failed("start_span", exc)
                return trace.INVALID_SPAN

        def start_as_current_span(self, name, context=None, kind=None, attributes=None, links=None,
                                  start_time=None, record_exception=True, set_status_on_exception=True,
                                  end_on_exit=True):
            span = self.start_span(name, context, kind, attributes, links, start_time, record_exception,
                                   set_status_on_exception)
            return _Current(span, end_on_exit, record_exception, set_status_on_exception)

    del Context
    return _View, BridgeSpan, BridgeTracer


# ---------------------------------------------------------------- the SDK

def _arm_sdk(sdk) -> None:
    if "api" not in _state:  # opentelemetry.trace armed first (the SDK imports it)
        _arm_api(sys.modules.get("opentelemetry.trace"))
        if "api" not in _state:
            return
    provider = sdk.TracerProvider
    init = provider.__dict__["__init__"]
    if hasattr(init, "__wrapped__"):
        return
    processor_class = _processor_class(sdk.SpanProcessor)

    def __init__(self, *args, **kwargs):
        init(self, *args, **kwargs)
        try:
            self.add_span_processor(processor_class())
        except Exception as exc:
            failed("TracerProvider", exc)

    __init__.__wrapped__ = init
    provider.__init__ = __init__


def _processor_class(base):
    get_current_span = _state["api"].get_current_span

    class Processor(base):
        """Records every span of the provider it was added to in the span file."""

        def on_start(self, span, parent_context=None) -> None:
            t0 = time_ns()
            try:
                _sdk_started(span, parent_context, get_current_span)
            except Exception as exc:
                failed("on_start", exc)
            tracer.add_overhead(time_ns() - t0)

        def _on_ending(self, span) -> None:
            pass

        def on_end(self, span) -> None:
            t0 = time_ns()
            try:
                _sdk_ended(span)
            except Exception as exc:
                failed("on_end", exc)
            tracer.add_overhead(time_ns() - t0)

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 30000) -> bool:
            return True

    return Processor


def _sdk_started(span, parent_context, get_current_span) -> None:
    context = span._context
    parent_context_ids = span._parent
    parent = None
    if parent_context_ids is not None:
        parent = _open.get(parent_context_ids.span_id)  # an SDK span still open: recorded, or merged into ours
        if parent is None:
            if parent_context is None:  # the SDK asked get_current(): what it saw is the agent's current span
                parent = tracer.current() or tracer.root()
            else:
                parent = _ours(get_current_span(parent_context))
            if parent is None or parent.span_id != "%016x" % parent_context_ids.span_id:
                parent = _stub(parent_context_ids, None)
    kind = KINDS[span._kind.value]
    if kind != "INTERNAL":
        target = _merge_target(kind, parent)
        if target is not None:
            setattr(span, ATTR, target)
            _open[context.span_id] = target
            return
    attributes = dict(span._attributes) if span._attributes else {}
    scope = span._instrumentation_scope
    if scope is not None:
        attributes[SCOPE_NAME] = scope.name
        if scope.version:
            attributes[SCOPE_VERSION] = scope.version
    ours = _start(span, span._name, kind, attributes, span._start_time, "%016x" % context.span_id,
                  _trace_hex(context.trace_id), parent)
    setattr(span, ATTR, ours)
    _open[context.span_id] = ours


# SDK spans started and not ended yet, by span id: on_end gets a ReadableSpan copy, not the span.
_open: dict = {}


def _sdk_ended(span) -> None:
    ours = _open.pop(span._context.span_id, None)
    if ours is None:
        return
    attributes = dict(span._attributes) if span._attributes else {}
    for event in span._events or ():
        if event.name == "exception" and "exception.type" not in attributes:
            for key in _EXCEPTION_KEYS:
                value = (event.attributes or {}).get(key)
                if value is not None:
                    attributes[key] = value
            break
    if type(ours) is not Bridged:  # merged into the agent's own span
        _merge_attributes(ours, attributes)
        return
    status = span._status
    code = STATUSES[status.status_code.value]
    if code == "ERROR" and status.description:
        attributes[STATUS_DESCRIPTION] = status.description
    if ours.name != span._name:
        ours.name = span._name
    if not ours.written:
        ours.category = category(ours.kind, attributes)
    tracer.end_span(ours, code, attributes or None, end_ns=span._end_time or 0)
