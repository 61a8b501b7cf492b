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
        from os import environ

        bundled = False
        if environ.get("SELFOPT_TRACE_DIR"):  # else the agent only reads its settings: no bundle to load
            try:
                bundled = _selfopt_trace_load()
            except Exception:
                pass  # imported as usual below
        import selfopt_trace_agent

        return selfopt_trace_agent.start(entered, _selfopt_trace_run_module, bundled)
    except Exception:
        return False  # fail open: the traced program must behave exactly as untraced


def _selfopt_trace_load():
    """Run the agent's start-up modules from the bundle `selfopt-trace run` compiled them into
    (agent_build.write_bundles): one read and one unmarshal, no importlib search per module and no
    `__future__` import. Each module gets what importlib would give it (spec, loader, file, cached).
    Returns False, having loaded nothing, when the bundle is missing, was made by another
    interpreter or from other sources: the agent is then imported as usual."""
    import marshal
    from _frozen_importlib_external import MAGIC_NUMBER
    from os import stat
    from os.path import dirname

    tag = sys.implementation.cache_tag
    if tag is None:  # (its code is the same for any -O: compiled without docstrings and asserts)
        return False
    here = dirname(__file__)
    try:
        with open(here + "/selfopt_trace_agent/__pycache__/startup." + tag + ".bundle", "rb") as bundle:
            data = bundle.read()
    except (OSError, IOError):
        return False
    if data[:4] != MAGIC_NUMBER:
        return False
    size = int.from_bytes(data[4:8], "little")
    for path, mtime_ns, source_size in marshal.loads(data[8:8 + size]):
        status = stat(here + "/" + path)
        if status.st_mtime_ns != mtime_ns or status.st_size != source_size:
            return False
    modules = marshal.loads(memoryview(data)[8 + size:])
    done = []
    try:
        for name, path, code in modules:
            done.append(name)
            _selfopt_trace_run_module(name, here + "/" + path, code)
    except Exception:
        for name in done:
            sys.modules.pop(name, None)
        return False
    return True


def _selfopt_trace_run_module(name, filename, code, execute=None):
    """Run `code` as module `name` of source `filename` (an absolute path), with the spec, loader,
    file, cached path and package importlib would give it, and as an attribute of its package. Also
    the agent's, for its lazy bundle (importtime.py): raises what the module's code raises, leaving
    it in sys.modules. `execute(code, globals)` runs it instead of exec (the twin's: no audit event)."""
    from _frozen_importlib import ModuleSpec
    from _frozen_importlib_external import SourceFileLoader
    from _imp import _fix_co_filename

    _fix_co_filename(code, filename)
    module = type(sys)(name)
    spec = ModuleSpec(name, SourceFileLoader(name, filename), origin=filename)
    spec.has_location = True
    directory, _, base = filename.rpartition("/")
    spec.cached = module.__cached__ = directory + "/__pycache__/" + base[:-3] + "." + sys.implementation.cache_tag + ".pyc"
    parent, _, child = name.rpartition(".")
    module.__package__ = parent
    if base == "__init__.py":
        spec.submodule_search_locations = module.__path__ = [directory]
        module.__package__ = name
    module.__spec__, module.__loader__, module.__file__ = spec, spec.loader, filename
    sys.modules[name] = module
    if execute is None:
        exec(code, module.__dict__)
    else:
        execute(code, module.__dict__)
    if parent:
        setattr(sys.modules[parent], child, module)


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
    except Exception:  # a signal handler's too: raised on, site would only print it (docs/agent.md, "Failing open")
        pass


_selfopt_trace_traced = _selfopt_trace_start()
try:
    _selfopt_trace_chain(_selfopt_trace_traced)
finally:
    if _selfopt_trace_traced:
        _selfopt_trace_chained()
