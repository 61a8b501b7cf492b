"""The in-process tracer of selfopt-trace (standard library only, Python >= 3.8).

Importing this package has no side effects; `start()` (called by the sitecustomize shim) does the work.
"""

_started = False


def start(shim_entered: int = 0) -> bool:
    """Start tracing this process if the environment asks for it; True when it did. Idempotent.

    `shim_entered`: the clock when the sitecustomize shim began loading the agent (its modules'
    loading is the agent's cost too, counted in selfopt_trace.overhead_ns).
    """
    global _started
    if _started:
        return False
    _started = True
    from . import config

    settings = config.from_environ()
    if settings is None:
        return False
    from . import process

    process.start(settings, shim_entered)
    return True
