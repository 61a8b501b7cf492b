"""SIGTERM: flush and close the process span, then die of SIGTERM exactly as untraced.

Our handler is installed at start-up only where SIGTERM has its default action. When the program
installs its own handler through `signal.signal`, ours runs first and then calls theirs, and
`signal.getsignal` keeps answering what the program set.
"""

from __future__ import annotations

import os

import _signal

from .. import process, tracer

_program_handler = _signal.SIG_DFL  # what the program believes is installed


def install_sigterm() -> None:
    try:
        if _signal.getsignal(_signal.SIGTERM) == _signal.SIG_DFL:
            _signal.signal(_signal.SIGTERM, _on_sigterm)
    except (ValueError, OSError):  # not the main thread, or an unusual platform
        pass


def _on_sigterm(signum, frame) -> None:
    handler = _program_handler
    if handler == _signal.SIG_IGN:
        return
    if callable(handler):
        tracer.flush(blocking=False)
        handler(signum, frame)
        return
    try:
        process.set_exit(-signum, **{"process.signal": "SIGTERM"})
        process.end(tracer.ERROR, blocking=False)
    except Exception:
        pass
    _signal.signal(signum, _signal.SIG_DFL)
    os.kill(os.getpid(), signum)


def install(target: str, module) -> None:
    original_signal, original_getsignal = module.signal, module.getsignal
    if hasattr(original_signal, "__wrapped__"):
        return

    def signal(signalnum, handler):
        global _program_handler
        if signalnum != _signal.SIGTERM or original_getsignal(signalnum) is not _on_sigterm:
            return original_signal(signalnum, handler)
        previous = getsignal(signalnum)
        if handler not in (_signal.SIG_DFL, _signal.SIG_IGN) and not callable(handler):
            return original_signal(signalnum, handler)  # let the real call raise the real TypeError
        _program_handler = handler
        return previous

    def getsignal(signalnum):
        current = original_getsignal(signalnum)
        if current is _on_sigterm:
            return _as_enum(module, _program_handler)
        return current

    signal.__wrapped__ = original_signal
    getsignal.__wrapped__ = original_getsignal
    signal.__doc__, getsignal.__doc__ = original_signal.__doc__, original_getsignal.__doc__
    module.signal, module.getsignal = signal, getsignal


def _as_enum(module, handler):
    """signal.getsignal returns Handlers members for SIG_DFL/SIG_IGN."""
    try:
        return module.Handlers(handler)
    except (AttributeError, ValueError, TypeError):
        return handler
