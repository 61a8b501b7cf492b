# selfopt-trace bootstrap shim. This directory is prepended to PYTHONPATH of every traced process.
# It must parse and stay silent on any Python (even 2.x), never raise, and always chain to the
# sitecustomize the environment already had, so the user's own still runs.
import sys


def _selfopt_trace_start():
    if sys.version_info < (3, 8) or sys.flags.ignore_environment:
        return False
    try:
        from time import time_ns

        entered = time_ns()  # loading the agent's modules is the agent's cost too
        import selfopt_trace_agent

        return selfopt_trace_agent.start(entered)
    except Exception:
        return False  # fail open: the traced program must behave exactly as untraced


def _selfopt_trace_chain(traced):
    """Import the next sitecustomize on sys.path (the one ours shadows).

    Once the agent runs, this directory leaves sys.path (the agent's modules load through its
    package): as untraced, no import of the program searches it (a stat a top-level import).
    """
    import os

    here = os.path.dirname(os.path.abspath(__file__))
    me = sys.modules.pop("sitecustomize", None)
    saved = sys.path[:]
    try:
        sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
        try:
            import sitecustomize  # noqa: F401  (the user's own)
        except ImportError as exc:
            if getattr(exc, "name", "sitecustomize") != "sitecustomize":
                raise
            if me is not None:
                sys.modules["sitecustomize"] = me
    finally:
        if not traced:  # traced: the path stays as the user's sitecustomize left it, without us
            sys.path[:] = saved


def _selfopt_trace_chained():
    try:
        import selfopt_trace_agent

        selfopt_trace_agent.chained()
    except Exception:
        pass


_selfopt_trace_traced = _selfopt_trace_start()
try:
    _selfopt_trace_chain(_selfopt_trace_traced)
finally:
    if _selfopt_trace_traced:
        _selfopt_trace_chained()
