"""Parsing spans, "AST analysis" (category "parse"): ast, compile, libcst, jedi, tree-sitter.

Patched when each library is first imported (lazy.BUILTIN_HOOKS); small calls are sums, slow
ones spans (hooks/timed.py). `compile` is the builtin, wrapped when `ast` is first imported: the
import system's own compile of a module being imported is left alone (its import span covers
it); the program's compile calls (pytest's assertion rewriting, exec of generated code) are
measured, all but typing.ForwardRef's of string annotations (below). jedi's calls run under a
deferred span, because inference may start jedi's compiled-module subprocess, which then sits
under the call that needed it.
"""

from __future__ import annotations

import builtins
import sys
from _thread import get_ident
from time import time_ns

from .. import lazy, tracer
from . import timed
from .timed import PARSE, TEXT, Call, is_wrapped, measured, wrap_attribute

CATEGORY = "parse"
_NO_DATA = -1  # calls that take no source (inference, metadata resolution)


def install(target: str, module) -> None:
    if target == "ast":
        _install_ast(module)
    elif target == "libcst":
        for name in ("parse_module", "parse_expression", "parse_statement"):
            wrap_attribute(module, name, Call("libcst." + name, CATEGORY, "libcst", name, PARSE, 0, "source"))
    elif target == "libcst.metadata.wrapper":
        wrapper = module.MetadataWrapper
        for name in ("__init__", "resolve", "resolve_many"):
            label = "libcst.MetadataWrapper" + ("" if name == "__init__" else "." + name)
            wrap_attribute(wrapper, name, Call(label, CATEGORY, "libcst", name, PARSE, _NO_DATA))
    elif target == "jedi":
        _install_jedi(module)
    elif target == "tree_sitter":
        wrap_attribute(module.Parser, "parse",
                       Call("tree_sitter.Parser.parse", CATEGORY, "tree_sitter", "parse", PARSE, 1, "source"))


def _filename(args: tuple, kwargs: dict):
    return args[1] if len(args) > 1 else kwargs.get("filename")


def _install_ast(module) -> None:
    wrap_attribute(module, "parse", Call("ast.parse", CATEGORY, "ast", "parse", PARSE, 0, "source", _filename))
    original = builtins.compile
    if is_wrapped(original):
        return
    # The import system compiles each module it loads (its import span covers that): its modules
    # get the original as a global, which shadows the builtin, so only the program's calls are measured.
    for loader in ("_frozen_importlib_external", "zipimport"):
        if loader in sys.modules:
            sys.modules[loader].compile = original
    call = Call("compile", CATEGORY, "builtins", "compile", PARSE, 0, "source", _filename, leaf=True)
    builtins.compile = _measured_compile(original, call)
    lazy.when_imported("typing", _unmeasured_in_typing)


# typing.ForwardRef compiles each string annotation it meets (pydantic, rich: 811 calls of 14 bytes
# on average, 4.75 ms in all, importing the 649 modules of docs/benchmarks.md's `imports` case; 836
# in a pytest run), nearly all while a module is imported: their time is in that import's span.
# Measured, each cost ~8,000 instructions over the call's own ~38,000; even passed straight on by
# the wrapper (a frame with its argument tuple and a look at the caller's code), ~0.4 us. So typing
# gets the original as a global, as the import system's modules do: its calls never reach the
# wrapper (typing has no `from __future__` feature to inherit, and calls compile nowhere else).
def _unmeasured_in_typing(typing) -> None:
    if "compile" not in vars(typing):
        typing.compile = getattr(builtins.compile, "__wrapped__", builtins.compile)


# The `from __future__` features a compile() inherits from the code calling it (CPython's PyCF_MASK:
# division ... annotations). Called from our wrapper, it would inherit this module's (annotations).
_FUTURE_FLAGS = 0x1FE0000
_frame_at, _code_of = tracer.frame_at, tracer.code_of


def _measured_compile(original, call: Call):
    """compile(), measured as timed.measured does and run as its caller would (_as_caller).

    The common call, compile(source, filename, mode), is measured in this one frame, measured's
    fast path inline: through measured(_as_caller(...)) it cost 15,400 instructions over the call's
    own ~38,000, one frame and its argument tuples more, and through a function of timed's for the
    sum ~1,500 more. Every other form goes that way.
    """
    general = measured(_as_caller(original), call)
    busy = timed._busy
    small = timed.small_ns()
    key = call.name
    current = tracer._current
    counted = timed._fast_path
    sample_mask = timed._SAMPLE_MASK

    def compile(*args, **kwargs):
        try:
            if len(args) != 3 or kwargs:
                return general(*args, **kwargs)
            source, filename, mode = args
            inherited = _code_of(_frame_at(1)).co_flags & _FUTURE_FLAGS
            thread = get_ident()
            if thread in busy:  # inside another measured call: part of it
                return original(source, filename, mode, inherited, True)
            t0 = time_ns()
            try:
                result = original(source, filename, mode, inherited, True)
            except BaseException as exc:
                timed.finish(call, args, kwargs, None, exc, t0, time_ns(), small)
                raise
            t1 = time_ns()
            spent = t1 - t0
            if spent >= small:
                timed.finish(call, args, kwargs, result, None, t0, t1, small)
                return result
            try:  # timed.measured's fast path (keep the two the same)
                span = current.get() or tracer._root
                if span is not None:
                    if span.deferred or span.end_ns:  # where sums go: the last call's, if under the same frame
                        last, target = timed._last_target
                        span = target if span is last and not target.end_ns else timed._sum_target() or span
                    sums = span.sums
                    if sums is None:
                        span.sums = sums = {}
                    size = len(source) if type(source) in TEXT else 0
                    entry = sums.get(key)
                    if entry is None:
                        sums[key] = [1, spent, size]
                    else:
                        entry[0] += 1
                        entry[1] += spent
                        entry[2] += size
                if counted[0] & sample_mask:  # 0 while calibrating and on a sampled call: timed
                    counted[0] += 1  # tracer overhead, counted: the hot path
                else:
                    timed._calibrate(time_ns() - t1)
            except Exception as exc:  # never into the program
                tracer.exception_diagnostic("measure_failed:" + key, exc)
            return result
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return timed.identity(compile, original, ("builtins", "compile"))


def _as_caller(original):
    """compile() as the program's caller would run it: the future features of the program's frame,
    not of ours (`from __future__ import annotations` here turned a program's `def f(x: int)`
    compiled through the wrapper into string annotations). Passed on as explicit flags, with
    dont_inherit, which is what compile() does with an inherited feature; positional arguments only
    on the common path (a builtin's keyword parsing costs more than the rest of the wrapper)."""
    def compile(*args, **kwargs):
        try:
            caller = _frame_at(3)  # called by timed's wrapper, called by _measured_compile's
            inherited = _code_of(caller).co_flags & _FUTURE_FLAGS
            if len(args) == 3 and not kwargs:  # compile(source, filename, mode)
                return original(args[0], args[1], args[2], inherited, True)
            dont_inherit = args[4] if len(args) > 4 else kwargs.get("dont_inherit", False)
            flags = args[3] if len(args) > 3 else kwargs.get("flags", 0)
            if dont_inherit or type(flags) is not int:
                return original(*args, **kwargs)
            if len(args) > 3:
                args = args[:3] + (flags | inherited,) + ((True,) + args[5:] if len(args) > 4 else ())
            else:
                kwargs["flags"] = flags | inherited
            if len(args) <= 4:
                kwargs["dont_inherit"] = True
            return original(*args, **kwargs)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    compile.__wrapped__ = original
    return compile


def _script_path(args: tuple, kwargs: dict):
    return kwargs.get("path") or getattr(args[0], "path", None)


def _name_path(args: tuple, kwargs: dict):
    return getattr(args[0], "module_path", None)


_SCRIPT_METHODS = ("infer", "goto", "get_names", "get_references", "get_signatures", "get_context", "complete",
                   "complete_search", "search", "help")
_NAME_METHODS = ("goto", "infer", "get_signatures", "parent", "full_name")


def _install_jedi(module) -> None:
    script = module.Script
    wrap_attribute(script, "__init__", Call("jedi.Script", CATEGORY, "jedi", "Script", PARSE, 1, "code", _script_path),
                   frame=True)
    for name in _SCRIPT_METHODS:
        wrap_attribute(script, name, Call("jedi.Script." + name, CATEGORY, "jedi", name, PARSE, _NO_DATA, "",
                                          _script_path), frame=True)
    base_name = module.api.classes.BaseName
    for name in _NAME_METHODS:
        wrap_attribute(base_name, name, Call("jedi.Name." + name, CATEGORY, "jedi", name, PARSE, _NO_DATA, "",
                                             _name_path), frame=True)
