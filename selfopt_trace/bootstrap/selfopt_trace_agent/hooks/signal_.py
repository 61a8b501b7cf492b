"""signal.signal / signal.getsignal: keep the tracer's SIGTERM handler (process.on_sigterm) first.

When the program installs its own SIGTERM handler, ours stays installed and calls theirs after
flushing; `signal.getsignal` keeps answering what the program set.
"""

from __future__ import annotations

import _signal

from .. import lazy, process, tracer


def install(target: str, module) -> None:
    # what stands in until the program's first call of either wraps them
    original_signal, original_getsignal = lazy.original(module.signal), lazy.original(module.getsignal)
    if tracer.is_own_wrapper(original_signal):
        return

    def signal(signalnum, handler):
        try:
            if signalnum != _signal.SIGTERM or original_getsignal(signalnum) is not process.on_sigterm:
                return original_signal(signalnum, handler)
            if handler not in (_signal.SIG_DFL, _signal.SIG_IGN) and not callable(handler):
                return original_signal(signalnum, handler)  # let the real call raise the real TypeError
            previous = getsignal(signalnum)
            process.program_sigterm_handler = handler
            process.sigterm_grace(handler == _signal.SIG_DFL)
            return previous
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    def getsignal(signalnum):
        try:
            current = original_getsignal(signalnum)
            if current is process.on_sigterm:
                return _as_enum(module, process.program_sigterm_handler)
            return current
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    tracer.own_wrapper(signal, original_signal)  # named after the originals by lazy._resolve (pickle)
    tracer.own_wrapper(getsignal, original_getsignal)
    signal.__doc__, getsignal.__doc__ = original_signal.__doc__, original_getsignal.__doc__
    module.signal, module.getsignal = signal, getsignal


def _as_enum(module, handler):
    """signal.getsignal returns Handlers members for SIG_DFL/SIG_IGN."""
    try:
        return module.Handlers(handler)
    except (AttributeError, ValueError, TypeError) as exc:
        tracer.raise_if_programs(exc)
        return handler
