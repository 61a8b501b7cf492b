# selfopt-trace bootstrap shim. This directory is prepended to PYTHONPATH of every traced process.
# It must parse and stay silent on any Python (even 2.x), never raise, and always chain to the
# sitecustomize the environment already had, so the user's own still runs.
import sys


def _selfopt_trace_start():
    if sys.version_info < (3, 8) or sys.flags.ignore_environment:
        return
    try:
        import selfopt_trace_agent

        selfopt_trace_agent.start()
    except Exception:
        pass  # fail open: the traced program must behave exactly as untraced


def _selfopt_trace_chain():
    """Import the next sitecustomize on sys.path (the one ours shadows)."""
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
        sys.path[:] = saved


_selfopt_trace_start()
_selfopt_trace_chain()
