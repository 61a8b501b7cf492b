"""The in-process tracer of selfopt-trace (standard library only, Python >= 3.8).

Importing this package has no side effects; `start()` (called by the sitecustomize shim) does the work.
"""

_started = False


def start() -> None:
    """Start tracing this process if the environment asks for it. Never raises; idempotent."""
    global _started
    if _started:
        return
    _started = True
    from . import config

    settings = config.from_environ()
    if settings is None:
        return
    from . import process

    process.start(settings)
