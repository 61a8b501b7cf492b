"""Declarative targets: functions named `module:qualname` become spans (category "phase").

Two sources:
- the built-in codeflash list (hooks/codeflash_.py), each wrapped at the first call of a target of
  its module (codeflash_ puts stand-ins in their place as their modules are imported);
- the user's, from SELFOPT_TRACE_TARGETS: `module:qualname` entries separated by `,` or `;`
  (set by `selfopt-trace run --target` and `[tool.selfopt-trace] targets` in pyproject.toml),
  wrapped when the target's module is first imported (lazy.when_imported).

A wrapper is a plain function that keeps the original's name, qualname and `__wrapped__` (so
inspect.signature sees the real parameters). A target that does not exist in the imported
module is a diagnostic (`target_missing`); the program runs on unchanged.
"""

from __future__ import annotations

import os
import sys

from .. import config, lazy, redact, tracer

CATEGORY = "phase"
MARK = "__selfopt_trace_target__"  # not timed.MARK: a target may wrap a function a hook already measures
_CO_COROUTINE, _CO_GENERATOR, _CO_ASYNC_GENERATOR = 0x80, 0x20, 0x200


# module name -> its targets not yet applied. A user's module waits with this hook module's name
# (lazy.BUILTIN_HOOKS' way: install(module name, module)), not a closure of its entries.
_waiting: dict = {}
# codeflash module -> its targets not yet applied (the built-in list, read at the first call of any)
_codeflash: dict | None = None


def install(target: str, module) -> None:
    """A module with a user's targets was imported: wrap them."""
    _apply(_waiting.pop(target, ()), module, False)


def install_codeflash(target: str, module) -> None:
    """A stand-in of a codeflash target in module `target` was called (hooks/codeflash_.py): wrap
    that module's targets, the originals behind their stand-ins. `codeflash.main`: then check the
    list against this version."""
    global _codeflash
    if _codeflash is None:
        _codeflash = {}
        for entry in _codeflash_targets():
            _codeflash.setdefault(entry[0], []).append(entry)
    _apply(_codeflash.pop(target, ()), module, True)
    package = sys.modules.get("codeflash")
    if target == "codeflash.main" and package is not None:
        check_modules(package, _codeflash_targets())


def _apply(entries, module, behind_stand_ins: bool) -> None:
    for module_name, qualname, span_name, attribute_paths in entries:
        try:
            wrap(module, module_name, qualname, span_name, attribute_paths, behind_stand_ins)
        except Exception as exc:
            tracer.exception_diagnostic("target_failed:%s:%s" % (module_name, qualname), exc)


def _codeflash_targets() -> tuple:
    from . import codeflash_

    return codeflash_.TARGETS


def install_user_targets() -> None:
    """At start-up, only when SELFOPT_TRACE_TARGETS is set."""
    register([(module, qualname, qualname, None) for module, qualname in parse(os.environ.get(config.ENV_TARGETS, ""))])


def parse(text: str) -> list:
    """[(module, qualname)] from `a.b:C.f, d:g; ...`; malformed entries are diagnostics."""
    out = []
    for item in config.target_items(text):
        module, sep, qualname = item.partition(":")
        if not sep or not module.strip() or not qualname.strip():
            tracer.diagnostic("target_invalid", "%r is not module:qualname" % item)
            continue
        out.append((module.strip(), qualname.strip()))
    return out


def register(targets) -> None:
    new = []
    for entry in targets:
        entries = _waiting.get(entry[0])
        if entries is None:
            _waiting[entry[0]] = [entry]
            new.append(entry[0])
        else:
            entries.append(entry)
    for module_name in new:  # after the loop: a module imported already is wrapped at once
        lazy.when_imported(module_name, __name__.rpartition(".")[2])


def check_modules(package, targets) -> None:
    """Modules of the list missing in the installed codeflash (renamed in another version)."""
    roots = list(getattr(package, "__path__", ()))
    for module_name in sorted({entry[0] for entry in targets}):
        parts = module_name.split(".")[1:]
        base = [os.path.join(root, *parts) for root in roots]
        if not any(os.path.exists(path + ".py") or os.path.exists(os.path.join(path, "__init__.py")) for path in base):
            tracer.diagnostic("target_missing", "%s: no such module in this codeflash" % module_name)


def wrap(module, module_name: str, qualname: str, span_name: str, attribute_paths: dict | None,
         behind_stand_in: bool = False) -> bool:
    """Replace `module.qualname` by a span-recording wrapper. False (and a diagnostic) if it is missing.
    `behind_stand_in`: what is there is a stand-in of ours for this very wrapper: wrap its original
    (a user's target wraps what it finds, another hook's stand-in included, which then still loads
    its hook at the first call)."""
    *owners, attribute = qualname.split(".")
    owner = module
    for name in owners:
        owner = getattr(owner, name, None)
        if owner is None:
            break
    raw = None
    if owner is not None:
        raw = owner.__dict__.get(attribute) if isinstance(owner, type) else None
        if raw is None:
            raw = getattr(owner, attribute, None)
    if raw is None:
        tracer.diagnostic("target_missing", "%s:%s not found (a target is a function of a module the program imports)"
                          % (module_name, qualname))
        return False
    if behind_stand_in:
        raw = lazy.original(raw)
    descriptor = type(raw) if isinstance(raw, (classmethod, staticmethod)) else None
    function = raw.__func__ if descriptor else raw
    if getattr(function, MARK, False):
        return False
    unwrapped = _unwrapped(function)
    code = tracer.code_of(unwrapped) or getattr(unwrapped, "__code__", None)  # a compiled function's too
    if code is None or code.co_flags & (_CO_GENERATOR | _CO_ASYNC_GENERATOR):
        tracer.diagnostic("target_unsupported", "%s:%s is not a plain or async function" % (module_name, qualname))
        return False
    attributes = {"code.namespace": module_name, "code.function": qualname}
    extract = _extractor(code, attribute_paths) if attribute_paths else None
    # a callable that binds on no class (an object with __call__) gets a wrapper that does not either
    wrapper = tracer.unbound(_wrapper(function, span_name, attributes, extract, bool(code.co_flags & _CO_COROUTINE)),
                             function)
    setattr(owner, attribute, descriptor(wrapper) if descriptor else wrapper)
    return True


def _unwrapped(function):
    for _ in range(20):  # decorated functions: their parameters are the innermost function's
        inner = getattr(function, "__wrapped__", None)
        if inner is None:
            break
        function = inner
    return function


def _wrapper(original, span_name: str, attributes: dict, extract, is_async: bool):
    if is_async:
        async def wrapper(*args, **kwargs):
            try:
                span, token = _begin(span_name, attributes, extract, args, kwargs)
                try:
                    result = await original(*args, **kwargs)
                    _finish(span, token, None)
                except BaseException as exc:  # (the program's, as _finish begins, too: it ends still)
                    _finish(span, token, exc)
                    raise
                return result
            except BaseException as exc:  # as untraced: no frame of ours
                tracer.strip_own_frames(exc)
                raise
    else:
        def wrapper(*args, **kwargs):
            try:
                span, token = _begin(span_name, attributes, extract, args, kwargs)
                try:
                    result = original(*args, **kwargs)
                    _finish(span, token, None)
                except BaseException as exc:  # (the program's, as _finish begins, too: it ends still)
                    _finish(span, token, exc)
                    raise
                return result
            except BaseException as exc:  # as untraced: no frame of ours
                tracer.strip_own_frames(exc)
                raise

    for name in ("__module__", "__name__", "__qualname__", "__doc__"):
        setattr(wrapper, name, getattr(original, name, None))
    wrapper.__wrapped__ = original
    setattr(wrapper, MARK, True)
    return wrapper


def _begin(span_name: str, attributes: dict, extract, args: tuple, kwargs: dict):
    span = None
    try:
        if extract is not None:
            attributes = dict(attributes)
            attributes.update(extract(args, kwargs))
        span = tracer.start_span(span_name, CATEGORY, tracer.INTERNAL, attributes)
        return span, _activate(span)
    except BaseException as exc:  # begun, not handed over: it ends (the program's exception goes on)
        tracer.end_interrupted(span, exc)
        if not isinstance(exc, Exception):
            raise
        tracer.exception_diagnostic("target_failed:" + span_name, exc)
        return None, None


_activate = tracer._current.set  # tracer.activate, without its call (no frame an exception could interrupt)


def _finish(span, token, exc: BaseException | None) -> None:
    if span is None or span.end_ns:  # (ended by an interrupted _finish: its token reset too)
        return
    try:
        tracer.deactivate(token)
        if exc is None:
            tracer.end_span(span)
        else:
            tracer.end_span(span, tracer.ERROR, {"error.type": type(exc).__qualname__})
    except BaseException as error:  # the program's (a signal handler's) too: the span ends with it
        tracer.end_interrupted(span, error, token)
        if not isinstance(error, Exception):
            raise
        tracer.exception_diagnostic("target_failed", error)


def _extractor(code, attribute_paths: dict):
    """A function (args, kwargs) -> attributes, reading each `parameter.attr.attr` path."""
    parameters = code.co_varnames[:code.co_argcount + code.co_kwonlyargcount]
    plan = []
    for key, path in attribute_paths.items():
        name, *chain = path.split(".")
        position = parameters.index(name) if name in parameters[:code.co_argcount] else -1
        plan.append((key, name, position, chain))

    def extract(args: tuple, kwargs: dict) -> dict:
        out = {}
        for key, name, position, chain in plan:
            value = args[position] if 0 <= position < len(args) else kwargs.get(name)
            for attribute in chain:
                value = getattr(value, attribute, None)
            if value is not None:
                out[key] = _attribute_value(value)
        return out

    return extract


def _attribute_value(value):
    if isinstance(value, (bool, int, float)):
        return value
    members = getattr(type(value), "_member_map_", None)  # an Enum: its name, not its repr
    if members is not None and getattr(value, "name", None) in members:
        return value.name
    return redact.text(str(value))[:200]
