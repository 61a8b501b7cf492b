"""The in-process tracer of selfopt-trace (standard library only, Python >= 3.8).

Importing this package has no side effects; `start()` (called by the sitecustomize shim) does the work.
"""

import sys

_started = False


def __getattr__(name: str):
    """`from . import <module>` of an agent module not loaded yet: importtime.submodule's."""
    importtime = sys.modules.get(__name__ + ".importtime")
    if importtime is None:  # before start-up has loaded it: the statement imports as usual
        raise AttributeError("module %r has no attribute %r" % (__name__, name))
    return importtime.submodule(__name__, name)


def start(shim_entered: int = 0, run_module=None, bundled: bool = True) -> bool:
    """Start tracing this process if the environment asks for it; True when it did. Idempotent.

    `shim_entered`: the clock when the sitecustomize shim began loading the agent (its modules'
    loading is the agent's cost too, counted in selfopt_trace.overhead_ns). `run_module`: the shim's
    function that runs a module's code as importlib would (the lazy bundle's modules run with it).
    `bundled`: the shim ran the start-up modules from the bundle made for this interpreter.
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

    process.start(settings, shim_entered, run_module, bundled)
    return True


def chained() -> None:
    """The shim has run the user's own sitecustomize: from here on, the agent watches for the
    program's first line (process.py). Not before: a profile function over the chain's search of
    the whole sys.path for that sitecustomize cost every process 1.2 M instructions (`python -c pass`:
    53.28 -> 52.10 M, callgrind)."""
    if _started:
        from . import process

        process.watch_for_main()
