"""The OpenTelemetry bridge: a program's own OTel spans join the run and its trace, parents both ways.

Armed when the program imports `opentelemetry.trace` (and `opentelemetry.sdk.trace`): the agent never
imports OpenTelemetry itself, and the classes used here are the program's own.

- Context, both ways. `opentelemetry.context`'s runtime context is wrapped: `attach` of a context
  holding a span makes that span current for the agent too (a span the agent starts inside it is
  its child), and `get_current` shows OTel the agent's current span when that one is the innermost
  (an OTel span started inside an agent span is its child, in the run's trace; with no span current
  at all, the process span is the parent, as for the agent's own spans).
- With the SDK: every `opentelemetry.sdk.trace.TracerProvider`'s SynchronousMultiSpanProcessor gets
  the bridge's on_start and on_end (one more span processor where the program gave it a
  multi-processor of another kind), which call its processors as its own do and record each span
  the provider starts in the span file. The SDK span holds all its record needs: no record of the
  agent's is made at its start (it is kept as it is, by span id, until its end), and its end keeps
  the ended span the SDK gives its processors, whose raw fields (ids as ints) the next flush writes
  with the others' in M records of up to 256 spans (marshal blocks, spanblock.py: no text made for
  it here); a flush while it is still open writes its S record from its fields (tracer.open_records),
  and its end an E. Made current, it is the agent's current span: attached alone in its context over
  a context with no other value (start_as_current_span, use_span), as a `Held`, which holds that
  context for get_current to give back (OTel's own context variable is not set: one ContextVar set
  and reset less a span); attached with other values (baggage), as its `Attached` (its ids only),
  OTel's variable set too.
  The program's own processors and exporters see the same spans as without the agent.
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

import os
import sys
from itertools import chain
from marshal import dumps
from _operator import attrgetter  # the C module: operator.py only re-exports it
from time import time_ns

from .. import redact, spanblock, tracer
from . import http_common as common

ATTR = "_selfopt_trace_span"  # on an SDK span: the agent's Span recording it (or the one it was merged into)
SCOPE_NAME = "otel.scope.name"
SCOPE_VERSION = "otel.scope.version"
STATUS_DESCRIPTION = "otel.status_description"
KINDS, STATUSES = spanblock.KINDS, spanblock.STATUSES  # SpanKind's and StatusCode's names, by value
_EXCEPTION_KEYS = ("exception.type", "exception.message", "exception.stacktrace")
_new = object.__new__


class Bridged:
    """An OTel span as the agent records it: the fields of a tracer.Span, and `otel`, the span OTel
    code holds (a remote parent's NonRecordingSpan for a stub, which is never written).

    Not a tracer.Span: the fields only tracer.end_span and import frames change, on spans of their
    own, are this class's constants, 6 stores less a span (assigning one raises AttributeError)."""

    __slots__ = ("span_id", "parent_id", "parent", "trace_id", "name", "kind", "category", "start_ns",
                 "attributes", "sums", "written", "otel")
    end_ns = 0  # it ends in its X or E record, never through tracer.end_span
    deferred = keep = False
    child_ns = 0
    status = tracer.UNSET
    end_attributes = None
    traceparent = tracer.Span.traceparent


class Attached:
    """An SDK span made current (OTel's attach), as the agent's current span: what the agent's own
    spans started inside it read of their parent (ids, not deferred, not ended). Made when first
    needed (an attach of a context holding other values too, a parent read from an explicit context,
    the small calls summed onto its Held), kept on the SDK span (ATTR); its ids are formatted only
    when asked for (an agent span started inside it), and `sums` gathers the small calls summed onto
    it (hooks/timed.py), which its end adds to its attributes. Its record is the SDK span's own
    (on_end): nothing here is written. It holds the span's SpanContext, not the span: no cycle
    (span <-> record) for the collector.

    `parent` is never followed: the agent walks up only from deferred or ended spans, which this is not."""

    __slots__ = ("context", "sums")
    parent = None
    name = ""
    kind = tracer.INTERNAL
    category = "other"
    attributes = end_attributes = None
    start_ns = end_ns = child_ns = 0
    deferred = keep = written = False
    status = tracer.UNSET
    traceparent = tracer.Span.traceparent

    @property
    def span_id(self) -> str:
        return "%016x" % self.context[1]

    @property
    def trace_id(self) -> str:
        return "%032x" % self.context[0]


class Held(Attached):
    """An SDK span made current by the attach of a context holding only it, over a context holding
    no other value (start_as_current_span, use_span): the agent's current span, as an Attached is,
    and `otel_context`, the context attached, which get_current gives OTel while this is current.
    OTel's own context variable is not set for it: what it holds then differs from the context
    attached by that span only, which every reader of it replaces (get_current's show, the API
    path's _Current), so one ContextVar set and reset a span are saved. Made at each such attach
    (the same span may be current in two contexts at once); the summed calls go to the span's own
    Attached (made for them), which its end reads. It is its attach's token too, holding the agent's
    variable's (`token`): detach knows it by its type, no Token's `var` read (a C getter, which the
    interpreter does not specialize)."""

    __slots__ = ("span", "otel_context", "token", "deferred")  # deferred: False, read by on_start as a slot

    @property
    def context(self) -> tuple:  # the span's SpanContext (a tuple)
        return self.span._context

    @property
    def sums(self) -> dict | None:
        record = self.span._selfopt_trace_span
        return record.sums if record is not None else None

    @sums.setter
    def sums(self, value: dict | None) -> None:
        record = self.span._selfopt_trace_span
        if record is None:
            record = _attached(self.span)
        record.sums = value


def _attached(otel) -> Attached:
    """The agent's record of an SDK span (made and kept on it the first time it is asked for)."""
    ours = _new(Attached)
    ours.context = otel._context
    ours.sums = None
    otel._selfopt_trace_span = ours  # ATTR
    return ours


_state: dict = {}  # "api", "context", "key", "runtime", "classes": filled as the modules arm
_INTERNAL = _SERVER = None  # SpanKind.INTERNAL and .SERVER, once armed
_SDK_SPAN = None  # opentelemetry.sdk.trace's span class, once armed
_current = tracer.current
_root = tracer.root
_activate = tracer._current.set  # tracer.activate, without its call
_reset = tracer._current.reset
_buffer, _unwritten, _encode = tracer._buffer, tracer.unwritten, tracer.encode
_late_values = tracer.late_records
# An ended SDK span's fields its row holds (Enum's _value_: its .value is a Python property; the
# attributes' dict and the events' deque: BoundedAttributes' and BoundedList's own, frozen by the end)
_end_fields = attrgetter("_context", "_parent", "_name", "_kind._value_", "_start_time", "_end_time",
                         "_status._status_code._value_", "_attributes._dict", "_events._dq", "_instrumentation_scope")
_other_fields = attrgetter("_context", "_parent", "_name", "_kind._value_", "_start_time", "_end_time",
                           "_status._status_code._value_", "_instrumentation_scope")
_late = _late_values.append
# A flush by the program's thread once this many ended SDK spans wait (two whole M records): waiting
# for the flusher's turn (100 ms, ~4,000 spans), they and their block's text held megabytes that the
# allocator took from fresh pages at every turn, kernel time callgrind's counts never show
# (bench_otel_bridge.py's page faults). 512, not 256: beside a BatchSpanProcessor (its worker wakes
# at 512 spans and waits for the GIL, which each flush's writes let go), ~0.3-0.5 us a span less in
# the benchmark; the same with a SimpleSpanProcessor; 1,024 no less than 512.
_LATE_FLUSH = 2 * spanblock.BLOCK_SPANS


def _name(text: str) -> str:
    """A span name as the span file can hold it: its secrets redacted (`GET /reset?token=X`; a name
    seen clean before is one set lookup), and a program's own may hold a tab or a line break
    (isprintable is one C pass, False for each of them and for rarer text that clean leaves alone)."""
    if text not in _clean:
        text = _redacted_value(text)
    return text if text.isprintable() else tracer.spanfile.clean(text)


# ---------------------------------------------------------------- secrets (docs/agent.md, "Secrets")
#
# The program's span names, attribute keys and values are redacted as redact.attributes does, where
# it costs the program least: an SDK span's at the flush that writes its M record (_redact_rows: a
# few C calls over the whole block; the SDK's own dicts are never changed, a span holding a secret
# gets a redacted copy); the API path's at its end, only where an attribute was not known clean as
# it was set (BridgeSpan.clean: a loop over the attributes at every end cost ~3,900 instructions a
# span, more than the rest of the API path's record); the rarer records where they are made. What
# redaction leaves as it is is remembered (names and values are mostly the same few texts), so a
# span holding nothing new costs set lookups, no pattern: a name or string value (or a tuple of
# them) in _clean, a key in _clean_keys. Numbers (and None) hold no secret.
_clean: set = set()
_clean_keys: set = set()
CLEAN_KEPT = 4096  # each set is emptied when it holds this many (unique texts: ids, SQL with literals)
_PLAIN = frozenset((int, float, bool, type(None)))


def _remember(found: set, item) -> None:
    if len(found) >= CLEAN_KEPT:
        found.clear()
    found.add(item)


def _redacted_value(value):
    """A name or attribute value as recorded (redact.attribute), remembered in _clean if redaction
    leaves it as it is."""
    out = redact.attribute(value)
    if (type(value) is str or type(value) is tuple) and type(out) is type(value) and out == value:
        try:
            _remember(_clean, value)
        except TypeError as exc:  # a tuple holding a list (the API path's values are the program's own)
            tracer.raise_if_programs(exc)
    return out


def _redacted(attributes: dict) -> dict:
    """A span's attributes as recorded: the same dict when its keys and values are all known clean
    (the common case), else a copy with its secrets redacted."""
    try:
        if _clean_keys.issuperset(attributes):
            for value in attributes.values():
                if value.__class__ in _PLAIN or value in _clean:  # (another type is never in _clean)
                    continue
                break
            else:
                return attributes
    except Exception as exc:  # an unhashable value (a program's own, on the API path): looked at below
        tracer.raise_if_programs(exc)
    out = {}
    for key, value in attributes.items():
        if key not in _clean_keys:
            if isinstance(key, str) and redact.is_secret_name(key.rpartition(".")[2]):
                out[key] = redact.REDACTED
                continue
            if type(key) is str:
                _remember(_clean_keys, key)
        kind = type(value)
        if kind in _PLAIN:
            out[key] = value
            continue
        try:
            known = value in _clean
        except Exception as exc:
            tracer.raise_if_programs(exc)
            known = False
        out[key] = value if known else _redacted_value(value)
    return out


_last_start: tuple = (None, None)  # the last start attributes found clean: the program's dict, and a copy


def _clean_start(attributes) -> bool:
    """Whether an API-path span's start attributes are known to hold no secret. A program mostly
    gives its spans one dict, a constant: remembered, with a copy, a dict equal to its copy is
    unchanged (the only values _redacted finds clean are immutable: str, tuples of them, numbers)."""
    global _last_start
    try:
        last, copy = _last_start
        if attributes is last and attributes == copy:
            return True
        if type(attributes) is dict and _redacted(attributes) is attributes:
            _last_start = (attributes, dict(attributes))
            return True
    except Exception as exc:  # a value whose == raises: looked at again at the end
        tracer.raise_if_programs(exc)
    return False


def _redact_rows(values: list) -> None:
    """The M rows of a block (ROW_FIELDS values a span, flat) with the secrets of their names and
    attributes redacted, in place. Known clean, the common case, by C calls over the whole block:
    every name in _clean, every key in _clean_keys, every value of the block's attributes not in
    _clean a number (~2,300 instructions a span of the benchmark's, against ~4,500 for the block's
    marshal and hex); else span by span (_redacted: the dicts holding a secret replaced by copies)."""
    width = spanblock.ROW_FIELDS
    dicts = values[10::width]
    try:
        # (set().union(*dicts): the keys by the dicts' own hashes, no iterator a dict; `-` looks up
        # the block's values in _clean, where difference_update would walk all of _clean)
        if _clean.issuperset(values[3::width]) and set().union(*dicts) <= _clean_keys:
            unknown = set(chain.from_iterable(map(dict.values, dicts))) - _clean
            if _PLAIN.issuperset(map(type, unknown)):
                return
    except TypeError as exc:  # an unhashable name or value (not an SDK's): span by span
        tracer.raise_if_programs(exc)
    for index in range(3, len(values), width):
        name = values[index]
        try:
            known = name in _clean
        except TypeError as exc:
            tracer.raise_if_programs(exc)
            known = False
        if not known:
            values[index] = _redacted_value(name)
        values[index + 7] = _redacted(values[index + 7])


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
    span = _new(Bridged)
    span.span_id, span.parent, span.parent_id = "%016x" % context.span_id, None, ""
    span.trace_id, span.name, span.kind, span.category = _trace_hex(context.trace_id), "", "INTERNAL", "other"
    span.start_ns, span.attributes, span.sums, span.written, span.otel = 0, None, None, False, otel
    return span


def _start(otel, name: str, kind: str, attributes: dict | None, scope: ScopeAttributes, start_ns: int,
           span_id: str, trace_id: str, parent) -> Bridged:
    """Record the start of an OTel span under `parent` (an agent Span, or None: a root). Its record
    carries the scope's attributes (a span open at a flush: its S record); `attributes`, the span's
    own, give its category and come with its end (_end)."""
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
    span.name = _name(name)
    span.kind = kind
    span.category = "other" if kind == "INTERNAL" else category(kind, attributes)
    span.start_ns = start_ns
    span.attributes = scope
    span.sums = None
    span.written = False
    span.otel = otel
    _unwritten[span_id] = span  # not in the buffer: _end writes the X record, a flush before it the S
    if not tracer._flusher_started:
        tracer._start_flusher()
    return span


def _end(ours: Bridged, name: str, status: str, attributes: dict, end_ns: int, clean: bool = False) -> None:
    """Record the end of a span of the API path: the whole span as one X record if no flush wrote
    it open (taken out of tracer.unwritten here, so a flush no more can), else its E. Its
    attributes, the program's own values (anything: a str() that fails is a diagnostic in the
    program's thread), are redacted (unless `clean`: each known to hold no secret as it was set,
    BridgeSpan) and encoded here; an SDK span's end is on_end's (_span_hooks)."""
    if not clean:
        attributes = _redacted(attributes)
    if ours.sums:  # small calls summed onto it (hooks/timed.py)
        attributes = {**attributes, **tracer.sum_attributes(ours.sums)}
    kind = ours.kind
    category_ = ours.category if kind == "INTERNAL" else category(kind, attributes)
    text = _attributes_json(ours.attributes, attributes)
    if name is not ours.name:  # renamed since its start
        ours.name = name = _name(name)
    if _unwritten.pop(ours.span_id, None) is not None:
        _buffer.append(f"X\t{ours.span_id}\t{ours.parent_id}\t{ours.trace_id}\t{name}\t{kind}\t{category_}\t"
                       f"{ours.start_ns}\t{end_ns}\t{status}\t{text}\t.\n")
    else:
        _buffer.append(tracer.spanfile.end_line(ours.span_id, end_ns, status, text))
    if len(_buffer) > tracer.FLUSH_RECORDS:  # as the agent's own spans' ends: not a flusher's turn of records
        tracer.flush(False)


def _attributes_json(scope: ScopeAttributes, attributes: dict) -> str:
    """A record's attributes: the scope's JSON (encoded once per scope) and the span's joined, where
    no key of the span is the scope's."""
    head = scope.head
    if head is None or SCOPE_NAME in attributes or SCOPE_VERSION in attributes:
        return _encode({**scope, **attributes})
    if not attributes:
        return head + "}"
    return tracer.joined_json(head, attributes)


category = spanblock.category


def _merge_target(kind: str, parent, parent_id: str):
    """The agent's own span of the same HTTP request, for an OTel CLIENT/SERVER span under `parent`
    (the agent's record of it, if it has one) of id `parent_id` ("": a root)."""
    if kind == "CLIENT":
        request = common.client_active()
        if request is not None and request.span is parent and not request.span.end_ns:
            return request.span
    elif kind == "SERVER":
        request = common.server_active()
        if request is not None and not request.span.end_ns and (
                not parent_id or parent is request.span or parent_id == request.span.parent_id):
            return request.span
    return None


def _merge_attributes(target, attributes) -> None:
    """The OTel span's attributes onto the agent's span of the same request, where it has none.
    A new dict: the flusher may be encoding the old one."""
    if attributes:
        attributes = _redacted(attributes)
        target.attributes = {**{k: v for k, v in attributes.items() if k != SCOPE_NAME and k != SCOPE_VERSION},
                             **(target.attributes or {})}


def _ours(otel):
    """The agent's Span for an OTel span (recording it, merged into, an SDK span's Attached, or a
    stub), None for an invalid one."""
    kind = type(otel)
    classes = _state.get("classes")
    if classes is not None and (kind is classes[0] or kind is classes[1]):  # a _View or a BridgeSpan
        return otel.native
    ours = getattr(otel, ATTR, None)
    if ours is not None:
        return ours
    if kind is _SDK_SPAN:
        return _attached(otel)
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

class Runtime:
    """Wraps opentelemetry.context's runtime context (ContextVarsRuntimeContext).

    Its get_current, attach and detach are plain functions (closures, no `self`), and _arm_api makes
    them opentelemetry.context's module functions of the same names too: OTel's get_value, set_value
    and use_span, which call those by the module's name, then reach them with one Python call less
    (the module's function calling the runtime's method) than the program pays untraced."""

    def __init__(self, original, key: str, context_class, log):
        self.original = original
        # ContextVarsRuntimeContext's own variable's get, set and reset, when it has one: C calls
        variable = getattr(original, "_current_context", None)
        get = self._get = variable.get if variable is not None else original.get_current
        set_ = self._set = variable.set if variable is not None else original.attach
        reset = self._reset = variable.reset if variable is not None else original.detach
        # get_current's memo, one tuple (a thread reads it whole): the OTel context and the agent's
        # current span (not None: the process span stands for None, and a forked child has another)
        # last seen, and the context shown for them.
        last = (None, None, None)

        def get_current():
            try:
                # An SDK span's Held: the context attached, as it was. Else, asked again with nothing
                # attached since (the SDK asks 4 times a span): the memo's answer.
                ours = _current()
                if type(ours) is Held:
                    return ours.otel_context
                context, last_ours, shown = last
                if get() is context and ours is last_ours:
                    return shown
                return show(get(), ours)
            except BaseException as exc:  # as untraced: no frame of ours
                tracer.strip_own_frames(exc)
                raise

        def show(context, ours):
            """What get_current shows OTel for its `context` and the agent's current span `ours`."""
            nonlocal last
            try:
                if ours is None:
                    ours = tracer._root
                    if ours is None:
                        return context
                    remember = False
                else:
                    remember = True
                otel = context.get(key)
                if otel is not None and _represents(otel, ours):
                    shown = context
                else:
                    shown = context_class(context)
                    otel = ours.otel if type(ours) is Bridged else None  # None too for a span ended already
                    dict.__setitem__(shown, key, otel if otel is not None else view(ours))
                if remember:
                    last = (context, ours, shown)
                return shown
            except Exception as exc:
                failed("get_current", exc)
                return context

        def attach(context):
            try:
                try:
                    # A context holding only an SDK span, attached over one holding no other value (what
                    # start_as_current_span and use_span attach): the agent's current span is its Held,
                    # which get_current gives OTel as it is, and OTel's variable is left as it was (one
                    # ContextVar set and reset less a span). Anything else: both set, as below.
                    otel = context.get(key)
                    if type(otel) is _SDK_SPAN and len(context) == 1:
                        ours = otel._selfopt_trace_span  # ATTR: None, or its Attached (a merged span's is not)
                        if ours is None or type(ours) is Attached:
                            base = get()
                            if not base or (len(base) == 1 and key in base):
                                held = _new(Held)
                                held.span = otel
                                held.otel_context = context
                                held.deferred = False
                                held.token = _activate(held)
                                return held
                except Exception as exc:
                    failed("attach", exc)
                token = set_(context)
                try:
                    otel = context.get(key)
                    if otel is None:
                        return unheld(token)
                    try:
                        ours = otel._selfopt_trace_span  # ATTR: an SDK span made current before, no call
                    except AttributeError as exc:  # (SDK spans and the bridge's own have it: None at first)
                        tracer.raise_if_programs(exc)
                        ours = None
                    if ours is None:
                        if type(otel) is _SDK_SPAN:  # its first attach: the agent's record of it (_attached)
                            ours = _new(Attached)
                            ours.context = otel._context
                            ours.sums = None
                            otel._selfopt_trace_span = ours
                        else:
                            ours = _ours(otel)
                            if ours is None:
                                return unheld(token)
                    return (token, _activate(ours))
                except Exception as exc:
                    failed("attach", exc)
                    return token
            except BaseException as exc:  # as untraced: no frame of ours
                tracer.strip_own_frames(exc)
                raise

        def unheld(token):
            """The token of an attach that leaves the agent's current span as it was: where that is a
            Held, OTel's variable now holds other values than its context, so the span's Attached
            stands for it (get_current shows OTel that span over the context attached)."""
            held = _current()
            if type(held) is not Held:
                return token
            ours = held.span._selfopt_trace_span
            if ours is None:
                ours = _attached(held.span)
            return (token, _activate(ours))

        def detach(token) -> None:
            """Never raises: a token that cannot be reset is logged, as opentelemetry.context.detach does."""
            try:
                try:
                    if type(token) is Held:  # OTel's variable was not set
                        _reset(token.token)
                        return
                    if type(token) is tuple:
                        try:
                            _reset(token[1])
                        except ValueError as exc:  # a token of another context (a generator resumed elsewhere)
                            tracer.raise_if_programs(exc)
                        token = token[0]
                    reset(token)
                except Exception:
                    if log is None:
                        raise
                    log.exception("Failed to detach context")
            except BaseException as exc:  # as untraced: no frame of ours
                tracer.strip_own_frames(exc)
                raise

        self.get_current, self.attach, self.detach = get_current, attach, detach


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
    global _INTERNAL, _SERVER
    _INTERNAL, _SERVER = trace.SpanKind.INTERNAL, trace.SpanKind.SERVER
    _state["key"] = key = propagation._SPAN_KEY
    _state["classes"] = _api_classes(trace, context_module, key)
    original = context_module._RUNTIME_CONTEXT
    if not isinstance(original, Runtime):
        runtime = Runtime(original, key, sys.modules["opentelemetry.context.context"].Context,
                          getattr(context_module, "logger", None))
        context_module._RUNTIME_CONTEXT = runtime
        _state["runtime"] = runtime
        for name in ("get_current", "attach", "detach"):  # each the runtime's method, called through the module
            function = getattr(runtime, name)
            function.__wrapped__ = getattr(context_module, name)
            setattr(context_module, name, function)
    proxy = trace.ProxyTracer
    init = proxy.__dict__["__init__"]
    if hasattr(init, "__wrapped__"):
        return
    bridge_tracer = _state["classes"][2]

    def __init__(self, instrumenting_module_name, instrumenting_library_version=None, *args, **kwargs):
        try:
            init(self, instrumenting_module_name, instrumenting_library_version, *args, **kwargs)
            try:
                self._noop_tracer = bridge_tracer(instrumenting_module_name, instrumenting_library_version)
            except Exception as exc:
                failed("ProxyTracer", exc)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

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

        _selfopt_trace_span = None  # ATTR: attach reads it, and finds `native` (_ours)

        def __init__(self, native):
            super().__init__(SpanContext(int(native.trace_id, 16), int(native.span_id, 16), is_remote=False,
                                         trace_flags=sampled))
            self.native = native

    class BridgeSpan(trace.Span):
        """A recording OTel span that is an agent span (API only: no SDK provider)."""

        _selfopt_trace_span = None  # ATTR: attach reads it, and finds `native` (_ours)

        def __init__(self, native, merged: bool):
            self.native = native
            self.merged = merged
            self.added: dict = {}
            # Every attribute added known to hold no secret as it was set (a key seen clean, a number
            # or a string seen clean: set lookups, no pattern), so the end redacts nothing; else the
            # end looks at them all (_redacted). Whatever adds to `added` keeps it.
            self.clean = True
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
                kind = value.__class__
                if key not in _clean_keys or (kind not in _PLAIN and (kind is not str or value not in _clean)):
                    self.clean = False

        def set_attributes(self, attributes) -> None:
            if not self.ended:
                self.added.update(attributes)
                self.clean = False

        def add_event(self, name, attributes=None, timestamp=None) -> None:
            pass

        def add_link(self, context, attributes=None) -> None:
            pass

        def update_name(self, name) -> None:
            if not self.ended and not self.merged:
                self.native.name = _name(name)

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

                self.clean = False
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
                clean = self.clean
                if self.description:
                    added[STATUS_DESCRIPTION] = self.description
                    clean = False
                native.otel = None  # no cycle (span <-> record) for the garbage collector to find
                _end(native, native.name, self.status or tracer.UNSET, added, end_time or time_ns(), clean)
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
            otel_token = None
            try:
                runtime = _state.get("runtime")
                native = getattr(span, "native", None)
                if runtime is None or native is None:
                    self.token = context_module.attach(context_module.set_value(key, span))
                    return span
                # What attach(set_value(key, span)) does through the runtime, without its calls: the
                # OTel context with this span, and the agent's current span its record.
                current = runtime._get()
                shown = Context(current)
                dict.__setitem__(shown, key, span)
                otel_token = runtime._set(shown)
                self.token = (otel_token, _activate(native))
                return span
            except BaseException as exc:
                # The program's (a signal handler's): its `with` never runs, nor ends the span, begun
                # for it: OTel's context as it was, the span ended with the exception (it stayed open
                # to the process's end).
                tracer.reset_quietly(runtime._reset, otel_token)
                if type(span) is BridgeSpan and not span.ended and not span.merged:
                    span.ended = True
                    native = span.native
                    native.otel = None
                    _end(native, native.name, tracer.ERROR, {"error.type": type(exc).__qualname__}, time_ns(), True)
                raise

        def __exit__(self, kind, exc, traceback):
            token = self.token
            runtime = _state.get("runtime")
            if runtime is not None and type(token) is tuple:
                try:
                    _reset(token[1])
                except ValueError as exc:
                    tracer.raise_if_programs(exc)
                try:
                    runtime._reset(token[0])
                except ValueError as exc:  # OTel's detach logs this; the program goes on
                    tracer.raise_if_programs(exc)
            else:
                context_module.detach(token)
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
            self.scope = _scope_record(str(name), str(version) if version else None)

        def start_span(self, name, context=None, kind=None, attributes=None, links=None, start_time=None,
                       record_exception=True, set_status_on_exception=True):
            try:
                native = None
                try:
                    if context is None:  # what get_current() shows OTel: the agent's current span
                        parent = _current() or _root()
                    else:
                        parent = _ours(get_current_span(context))
                    kind_name = "INTERNAL" if kind is None or kind is _INTERNAL else KINDS[kind.value]
                    if kind_name != "INTERNAL":
                        target = _merge_target(kind_name, parent, parent.span_id if parent is not None else "")
                        if target is not None:
                            span = BridgeSpan(target, True)
                            if attributes:
                                span.added.update(attributes)
                            return span
                    if parent is None:
                        trace_id = tracer.new_trace_id()
                    else:
                        trace_id = parent.trace_id
                    native = _start(None, name, kind_name, attributes, self.scope, start_time or time_ns(),
                                    tracer.new_span_id(), trace_id, parent)
                    span = BridgeSpan(native, False)
                    if attributes:
                        span.added.update(attributes)
                        if not _clean_start(attributes):
                            span.clean = False
                    native.otel = span
                    return span
                except BaseException as exc:
                    if native is not None:  # begun, not handed over: it ends (else open to the process's end)
                        _end(native, native.name, tracer.ERROR, {"error.type": type(exc).__qualname__}, time_ns(), True)
                    if not isinstance(exc, Exception):
                        raise
                    failed("start_span", exc)
                    return trace.INVALID_SPAN
            except BaseException as exc:  # as untraced: no frame of ours
                tracer.strip_own_frames(exc)
                raise

        def start_as_current_span(self, name, context=None, kind=None, attributes=None, links=None,
                                  start_time=None, record_exception=True, set_status_on_exception=True,
                                  end_on_exit=True):
            span = self.start_span(name, context, kind, attributes, links, start_time, record_exception,
                                   set_status_on_exception)
            return _Current(span, end_on_exit, record_exception, set_status_on_exception)

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
    hooks = _span_hooks()
    if hooks is None:
        tracer.diagnostic("otel_bridge_unsupported", "this OpenTelemetry's SpanContext is not a tuple: the SDK's "
                                                     "spans are not recorded")
        return
    global _SDK_SPAN
    _SDK_SPAN = getattr(sdk, "_Span", sdk.Span)
    sdk.Span._selfopt_trace_span = None  # ATTR: what attach reads first, without a call (set once made current)
    tracer.late_block = _block  # the writer of the SDK spans' rows (tracer's LATE records)
    tracer.open_records = _open_records  # their S records, for a flush while they are open

    def __init__(self, *args, **kwargs):
        try:
            init(self, *args, **kwargs)
            try:
                multi = self._active_span_processor
                if type(multi) is not sdk.SynchronousMultiSpanProcessor:  # the program's own kind: one processor more
                    multi = sdk.SpanProcessor()
                    multi._span_processors = ()
                    self.add_span_processor(multi)
                multi.on_start, multi.on_end = hooks(multi)
            except Exception as exc:
                failed("TracerProvider", exc)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    __init__.__wrapped__ = init
    provider.__init__ = __init__


def _span_hooks():
    """What records the spans of every SDK TracerProvider: a function giving the on_start and on_end
    of a provider's SynchronousMultiSpanProcessor (instead of one processor more in it: Python calls
    less a span; its own _on_ending is all a span's ending needs); None if this OTel's SpanContext is
    not the (trace id, span id, ...) tuple it has always been (the hot path indexes it: its
    properties would be two Python calls a span)."""
    api = _state["api"]
    get_current_span = api.get_current_span
    probe = api.SpanContext(1, 2, False)
    if not (isinstance(probe, tuple) and probe[0] == 1 and probe[1] == 2):
        return None

    def hooks(multi) -> tuple:
        """`multi`'s two methods: each calls its processors (`_span_processors`, read at every
        call: the program may add one), as SynchronousMultiSpanProcessor's own do, and then records
        the span in the span file (the hot path: the program pays it for every span, so it is written
        out, with as few calls as it can). A provider with a processor of another kind has a
        SpanProcessor with none of its own added, and these as its methods."""

        def on_start(span, parent_context=None) -> None:
            for processor in multi._span_processors:
                processor.on_start(span, parent_context=parent_context)
            try:
                # The span's own ATTR (the class's None otherwise): attach's and on_end's reads of it
                # are then the interpreter's specialized ones, not a lookup through the class.
                span._selfopt_trace_span = None
                # No record made: the span holds every field its end needs. What must happen now: a
                # deferred agent parent (an import's frame, shown to OTel as the current span) kept,
                # and a CLIENT/SERVER span merged into the agent's span of its request.
                if parent_context is None:  # the SDK asked get_current(): the agent's current span, if innermost
                    parent = _current()
                    if parent is not None and parent.deferred:
                        tracer._mark_kept(parent)
                    if (span._kind is not _INTERNAL or _merged) and _start_apart(span, None):
                        return
                elif _start_apart(span, parent_context):
                    return
                _open[span._context[1]] = span  # written by its end (or its S by a flush before: _open_records)
                if not tracer._flusher_started:
                    if span._kind is _SERVER:  # a server's, at any age (http_common.end_server)
                        tracer.before_block()
                    else:
                        tracer._start_flusher()
            except Exception as exc:
                failed("on_start", exc)

        def _start_apart(span, parent_context) -> bool:
            """The rarer starts: an explicit parent context (a deferred agent span in it kept), a
            parent merged into the agent's span (the span's parent is that span: _reparented), a
            CLIENT/SERVER span merged (True: not recorded)."""
            parent_ids = span._parent
            parent_id = "%016x" % parent_ids[1] if parent_ids is not None else ""
            if parent_ids is None:
                parent = None
            elif parent_context is None:
                parent = _current() or tracer.root()
            else:
                parent = _ours(get_current_span(parent_context))
                if parent is not None and parent.deferred:
                    tracer._mark_kept(parent)
            if parent is not None and parent.span_id != parent_id:  # another's span (a remote parent's stub)
                parent = None
            if parent_ids is not None and _merged:
                target = _merged.get(parent_ids[1])
                if target is not None:  # its parent was merged into the agent's span: that span is its parent
                    parent = target
                    parent_id = _reparented[span._context[1]] = target.span_id
            kind = span._kind
            if kind is _INTERNAL:
                return False
            target = _merge_target(KINDS[kind.value], parent, parent_id)  # Enum's .value: a Python property
            if target is None:
                return False
            span_id = span._context[1]
            _reparented.pop(span_id, None)
            span._selfopt_trace_span = target  # ATTR: current for the agent, it is the agent's span
            _merged[span_id] = target
            _cost[0] += 1
            return True

        def on_end(span) -> None:
            for processor in multi._span_processors:
                processor.on_end(span)
            try:
                span_id = span._context[1]
                live = _open_pop(span_id, None)  # taken: no flush writes its S now
                if live is None:  # merged, written open by a flush (its E), or not the bridge's
                    _end_apart(span, span_id)
                    return
                # Its row is made by the flush (_rows), from the span the SDK gave (its ReadableSpan:
                # frozen, and kept by a BatchSpanProcessor's queue anyway): nothing read here but what
                # the span cannot tell (small calls summed onto it, a parent merged), in the rare
                # spans that have it.
                ours = live._selfopt_trace_span
                if ours is not None and ours.sums or _reparented:
                    _note(span_id, ours)
                _late(span)
                if len(_late_values) >= _LATE_FLUSH:  # whole M records (at 513, it made three: 256, 256 and 1)
                    tracer.flush(False)  # (skipped while the flusher thread is flushing)
            except Exception as exc:
                failed("on_end", exc)

        return on_start, on_end

    return hooks


def _ended(span, live) -> tuple:
    """An ended SDK span's attributes as its record has them, and its status's name (on_end's, for
    the rarer ends). Frozen now that the span ended: BoundedAttributes' dict is read as it is (copied
    only to add to it), and BoundedList's deque tested (its __len__ is a Python call); their fields
    read, not getattr: no call where they are there, as they always are."""
    attributes = span._attributes
    try:
        attributes = attributes._dict
    except AttributeError as exc:  # another SDK's mapping
        tracer.raise_if_programs(exc)
    if not attributes:
        attributes = {}
    events = span._events
    try:
        any_event = events._dq
    except AttributeError as exc:
        tracer.raise_if_programs(exc)
        any_event = events
    if any_event:
        attributes = _with_exception(attributes, events)
    status = span._status
    code = STATUSES[status._status_code._value_]
    if code == "ERROR" and status.description:
        attributes = {**attributes, STATUS_DESCRIPTION: status.description}
    ours = live._selfopt_trace_span if live is not None else None
    if ours is not None and ours.sums:  # made current, small calls summed onto it (hooks/timed.py)
        attributes = {**attributes, **tracer.sum_attributes(ours.sums)}
    return attributes, code


def _end_apart(span, span_id: int) -> None:
    """The rarer ends: a span merged into the agent's span of its request (its attributes added there),
    a span a flush wrote open (its S record: now its E), or a span the bridge did not record."""
    _reparented.pop(span_id, None)
    target = _merged.pop(span_id, None)
    if target is not None:
        _merge_attributes(target, _ended(span, None)[0])
        return
    live = _written.pop(span_id, None)
    if live is None:
        return
    attributes, code = _ended(span, live)
    attributes = _redacted(attributes)
    _cost[0] += 1
    _buffer.append(tracer.spanfile.end_line("%016x" % span_id, span._end_time or time_ns(), code,
                                            _attributes_json(_scope_of(span._instrumentation_scope)[1], attributes)))


def _open_records(lines: list) -> None:
    """The S records of the SDK spans still open, added to the flush's `lines` (tracer.open_records):
    each taken out of _open (its end then writes an E), after it is put in _written (an end between
    the two finds it in one or the other: never neither, never both). Never raises but the program's
    own exceptions (the lines added before one stay the flush's)."""
    for span_id in list(_open):
        live = _open.get(span_id)
        if live is None:
            continue
        _written[span_id] = live
        if _open_pop(span_id, None) is None:  # its end took it meanwhile: its X
            _written.pop(span_id, None)
            continue
        try:
            lines.append(_start_line(live, span_id))
        except Exception as exc:  # the span is lost, said so
            tracer.raise_if_programs(exc)
            lines.append(tracer.spanfile.diagnostic_line(time_ns(), "otel_bridge_failed:flush",
                                                         "%s: %s" % (type(exc).__name__, exc)))


def _start_line(live, span_id: int) -> str:
    """An open SDK span's S record, from its fields (its attributes come with its E)."""
    parent = _reparented.get(span_id)
    if parent is None:
        parent_ids = live._parent
        parent = "%016x" % parent_ids[1] if parent_ids is not None else ""
    kind = live._kind
    kind = "INTERNAL" if kind is _INTERNAL else KINDS[kind.value]
    keys = list(live._attributes) if kind != "INTERNAL" else ()  # (consumed in C: the program may be adding)
    return tracer.spanfile.start_line("%016x" % span_id, parent, "%032x" % live._context[0], _name(live._name), kind,
                                      category(kind, keys), live._start_time,
                                      _encode(_scope_of(live._instrumentation_scope)[1]))


def _block(spans: list, n: int) -> list:
    """The flush's text for the first `n` ended SDK spans (tracer.late_block): M records of
    spanblock.BLOCK_SPANS spans at most, each a piece of its own for the flush to write; where marshal
    cannot write a value (a subclass of int or str the SDK let through), those spans as X records, the
    others of their block still in one M record. Never raises (the flush would stop tracing) but the
    program's own exceptions."""
    _cost[0] += n  # the spans' cost, counted here rather than by each (see _cost)
    pieces = []
    step = spanblock.BLOCK_SPANS
    for first in range(0, n, step):
        try:
            values = _rows(spans[first:min(first + step, n)])
            _redact_rows(values)  # here, in the flush: nothing of it in the program's span (its secrets never written)
        except Exception as exc:  # a span of fields no SDK has: the block is lost, said so
            tracer.raise_if_programs(exc)
            pieces.append(tracer.spanfile.diagnostic_line(time_ns(), "otel_bridge_failed:flush",
                                                          "%s: %s" % (type(exc).__name__, exc)))
            continue
        try:
            pieces.append(spanblock.block_line(values))
        except ValueError as exc:
            tracer.raise_if_programs(exc)
            pieces.append(_rows_apart(values))
    return pieces


def _rows(spans: list) -> list:
    """The M rows of ended SDK spans, spanblock.ROW_FIELDS values each, flat: ids, kind and status as
    ints, the category left to the reader, no text made. A span of the common kind (a parent, no
    event, not an ERROR, a scope seen before, nothing noted at its end) is read field by field here
    (the interpreter's specialized attribute reads: ~200 ns a span, against ~450 for attrgetter, zip
    and chain in C), the others by _row."""
    if _extra:
        return [value for span in spans for value in _row(span)]
    values: list = []
    add = values.extend
    last_scope = plain = None  # a block's spans are mostly of one scope: its plain dict looked up once
    for span in spans:
        try:
            parent = span._parent
            code = span._status._status_code._value_  # Enum's field (its .value is a Python property)
            end_ns = span._end_time
            scope = span._instrumentation_scope
            if scope is not last_scope:
                last_scope, plain = scope, _plains_get(id(scope))
            if span._events._dq or parent is None or code == 2 or plain is None or end_ns is None:
                add(_row(span))
                continue
            context = span._context
            add((context[1], parent[1], context[0], span._name, span._kind._value_, "", span._start_time, end_ns,
                 code, plain, span._attributes._dict))
        except AttributeError as exc:  # another SDK's fields: _row reads them as it can
            tracer.raise_if_programs(exc)
            add(_row(span))
    return values


def _row(span) -> tuple:
    """An ended SDK span's M row, field by field (_rows' way for a block with a rarer span)."""
    try:
        context, parent, name, kind, start_ns, end_ns, code, attributes, events, scope = _end_fields(span)
    except AttributeError as exc:  # another SDK's attributes or events (not BoundedAttributes', BoundedList's)
        tracer.raise_if_programs(exc)
        context, parent, name, kind, start_ns, end_ns, code, scope = _other_fields(span)
        attributes, events = dict(span._attributes or {}), span._events
    if events:
        attributes = _with_exception(attributes, events)
    if code == 2 and span._status.description:  # ERROR
        attributes = {**attributes, STATUS_DESCRIPTION: span._status.description}
    span_id = context[1]
    parent = "" if parent is None else parent[1]
    extra = _extra.pop(span_id, None) if _extra else None
    if extra is not None:  # what its end noted
        if extra[0] is not None:
            parent = extra[0]
        if extra[1]:
            attributes = {**attributes, **extra[1]}
    return (span_id, parent, context[0], name, kind, "", start_ns, end_ns or time_ns(), code,
            _scope_of(scope)[1].plain, attributes)


def _note(span_id: int, ours) -> None:
    """What an ended SDK span's row needs that the span cannot tell, for the flush (_row): the agent's
    span its parent was merged into, the small calls summed onto it while it was current."""
    parent = _reparented.pop(span_id, None)
    summed = tracer.sum_attributes(ours.sums) if ours is not None and ours.sums else None
    if parent is not None or summed:
        _extra[span_id] = (parent, summed)


def _rows_apart(values: list) -> str:
    """A block marshal cannot write: its spans that it can in one M record, the others as X records."""
    good = []
    text = []
    width = spanblock.ROW_FIELDS
    for start in range(0, len(values), width):
        row = values[start:start + width]
        try:
            dumps(row, spanblock.MARSHAL_VERSION)
            good += row
        except ValueError as exc:
            tracer.raise_if_programs(exc)
            try:
                text.append(spanblock.x_line(row))
            except Exception as exc:  # a value whose str() fails: the span is lost, said so
                tracer.raise_if_programs(exc)
                text.append(tracer.spanfile.diagnostic_line(time_ns(), "otel_bridge_failed:flush",
                                                            "%s: %s" % (type(exc).__name__, exc)))
    return (spanblock.block_line(good) if good else "") + "".join(text)


def _with_exception(attributes, events):
    """The first exception event's attributes added (a new dict), where the span has none of them."""
    for event in events:
        if event.name == "exception" and "exception.type" not in attributes:
            attributes = dict(attributes)
            for key in _EXCEPTION_KEYS:
                value = (event.attributes or {}).get(key)
                if value is not None:
                    attributes[key] = value
            break
    return attributes


# The agent's time in an SDK span, counted by span (too short to time): about this many ns each
# (benchmarks/bench_otel_bridge.py: the bridge's ~14,000 instructions a span in the program's
# thread at this machine's ~11 a ns; the flush, timed, writes its M record). A span is counted when
# a flush takes its values (_block: no count in its hot path, 10 bytecodes), when merged, or when
# its E is written; one that never ends is not.
_cost = tracer.counted_overhead()
_cost[1] = 1300

# The SDK spans the bridge records, by span id (an int), each in one of these from its start to its end:
_open: dict = {}  # started, not ended, no S record written: the span itself (on_end gets a ReadableSpan copy)
_open_pop = _open.pop
_written: dict = {}  # open, its S record written by a flush (_open_records): the span itself
_merged: dict = {}  # open, merged into the agent's span of its request (_merge_target): that span
_reparented: dict = {}  # a span whose parent was merged: the id of the agent's span it was merged into
_extra: dict = {}  # an ended span's id: what its row needs that it cannot tell (_note)
# id(InstrumentationScope): (it, its attributes), and its attributes' plain dict (the rows'). Kept
# together, each entry holding its scope: no other object has that id while the entry is there.
_scopes: dict = {}
_plains: dict = {}
_plains_get = _plains.get


def _scope_of(scope) -> tuple:
    """The item of _scopes for an SDK span's InstrumentationScope (or None)."""
    found = _scopes.get(id(scope))
    if found is None:
        found = _scope_attributes(scope)
    return found


def _forget_open() -> None:
    """In a forked child: the parent's open spans are the parent's to write."""
    _open.clear()
    _written.clear()
    _merged.clear()
    _reparented.clear()
    _extra.clear()


os.register_at_fork(after_in_child=_forget_open)


class ScopeAttributes(dict):
    """A scope's attributes, the start record's, with `head`: their JSON object without its closing
    brace, for the end to join the span's attributes to (None where joining cannot be done:
    no scope, or text written escaped), and `plain`, the same as a dict (an M record's rows: marshal
    writes no subclass)."""

    __slots__ = ("head", "plain")


def _scope_attributes(scope) -> tuple:
    """An SDK span's InstrumentationScope (or None) and its attributes, kept in _scopes."""
    attributes = _scope_record(scope.name, scope.version) if scope is not None else _scope_record(None, None)
    if len(_scopes) > 1000:
        _plains.clear()
        _scopes.clear()
    found = _scopes[id(scope)] = (scope, attributes)
    _plains[id(scope)] = attributes.plain
    return found


def _scope_record(name: str | None, version: str | None) -> ScopeAttributes:
    attributes = ScopeAttributes()
    if name is not None:  # (a tracer's name and version: redacted too, once a scope)
        name = redact.attribute(name)
        version = redact.attribute(version)
        attributes[SCOPE_NAME] = name
        if version:
            attributes[SCOPE_VERSION] = version
    encoded = _encode(attributes)
    attributes.head = encoded[:-1] if attributes and tracer.spanfile.ESCAPED not in encoded else None
    attributes.plain = dict(attributes)
    return attributes
