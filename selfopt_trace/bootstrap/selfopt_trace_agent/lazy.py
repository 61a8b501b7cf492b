"""Post-import hooks: a library is patched when it is first imported, never at start-up.

The import wrapper in importtime.py calls `fire` after every first import, so a pending hook
costs one dict lookup per import and nothing else. A hook registered after its module was
imported runs at once. A failing hook is a diagnostic; the import itself always succeeds.
"""

from __future__ import annotations

import os
import sys
from _thread import RLock, get_ident
from time import time_ns

from . import config, tracer
from .tracer import thread_cpu_ns

# module name -> hook module under hooks/ (each has `install(module)`); extended by the integrations.
BUILTIN_HOOKS = {
    "subprocess": "subprocess_",
    "multiprocessing.process": "multiprocessing_",
    "multiprocessing.spawn": "multiprocessing_",
    "multiprocessing.popen_forkserver": "multiprocessing_",
    "multiprocessing.util": "multiprocessing_",
    "signal": "signal_",
    "freezegun.config": "freezegun_",
    "time_machine": "time_machine_",
    "docker.models.containers": "docker_",
    "json": "serialization",
    "pickle": "serialization",
    "dill": "serialization",
    "pydantic.main": "serialization",
    "pydantic.type_adapter": "serialization",
    "ast": "parsing",
    "libcst": "parsing",
    "libcst.metadata.wrapper": "parsing",
    "jedi": "parsing",
    "tree_sitter": "parsing",
    "codeflash": "codeflash_",
    "http.client": "http_client",
    "urllib3": "urllib3_",
    "pip._vendor.urllib3": "urllib3_",
    "requests": "requests_",
    "pip._vendor.requests": "requests_",
    "httpx": "httpx_",
    "httpcore._sync.http11": "httpx_",
    "httpcore._async.http11": "httpx_",
    "httpcore._backends.sync": "httpx_",
    "httpcore._backends.anyio": "httpx_",
    "http.server": "http_server",
    "socketserver": "socketserver_",
    "wsgiref.handlers": "http_server",
    "gunicorn.workers.base": "http_server",
    "uvicorn.config": "http_server",
    "django.core.handlers.base": "http_server",
    "flask.ctx": "http_server",
    "threading": "threads",
    "concurrent.futures.thread": "threads",
    "concurrent.futures._base": "waits",
    "concurrent.futures.process": "waits",
    "multiprocessing.pool": "waits",
    "asyncio.subprocess": "waits",
    "asyncio.tasks": "time_",
    "asyncio.futures": "waits",
    "uvloop": "subprocess_",
    "opentelemetry.trace": "otel_",
    "opentelemetry.sdk.trace": "otel_",
}

# Hooks whose module loads at the first call of something they wrap, not when their target is
# imported: rich, pip and pytest's plugins import requests and send nothing, most libraries import
# subprocess and spawn nothing, and each hook module costs ~0.6-0.9 M instructions to load (the
# HTTP hooks are four). target -> the functions (paths from the target module) that stand in until
# then: every way into what the hook wraps.
_URLLIB3 = ("connectionpool.HTTPConnectionPool.urlopen", "poolmanager.PoolManager.urlopen",
            "connection.HTTPConnection._new_conn", "connection.HTTPSConnection.connect", "util.retry.Retry.sleep")
_REQUESTS = ("sessions.Session.send",)
_SERIALIZERS = ("dumps", "dump", "loads", "load")
ON_FIRST_CALL = {
    "http.client": ("HTTPConnection.connect", "HTTPConnection.endheaders", "HTTPConnection.getresponse",
                    "HTTPSConnection.connect", "HTTPResponse._close_conn"),
    "urllib3": _URLLIB3,
    "pip._vendor.urllib3": _URLLIB3,
    "requests": _REQUESTS,
    "pip._vendor.requests": _REQUESTS,
    "subprocess": ("Popen._execute_child",),  # every Popen, so every wait or reap after it
    # Every Thread runs through start (a join before it fails); threads.py wraps threading._shutdown
    # then, which only waits for threads so started. Most importers of threading start none.
    "threading": ("Thread.start", "Thread.join"),
    "signal": ("signal", "getsignal"),  # what the program sets, and what it asks
    # pytest's plugins import multiprocessing and start no Process: multiprocessing_ brings os_,
    # spawn and waits (~0.45 ms of a pytest run). Every Process runs through start (join before it
    # fails); spawn's data is prepared in start, and a forkserver Popen launches (its wait on the
    # server) in start and is polled after it.
    "multiprocessing.process": ("BaseProcess.start", "BaseProcess.join"),
    "multiprocessing.spawn": ("get_preparation_data", "prepare"),
    "multiprocessing.popen_forkserver": ("Popen._launch", "Popen.poll"),
    "multiprocessing.util": ("spawnv_passfds",),
    # pydoc, pip and many tools import http.server and serve nothing: http_server brings
    # http_common (~0.5 ms). Every request goes through handle_one_request (a handler that
    # overrides it still parses and answers through the other two).
    "http.server": ("BaseHTTPRequestHandler.handle_one_request", "BaseHTTPRequestHandler.parse_request",
                    "BaseHTTPRequestHandler.send_response_only"),
    # http.server imports socketserver; every server loop selects through one of these
    "socketserver": ("BaseServer.serve_forever", "BaseServer.handle_request"),
    # pytest imports concurrent.futures and asyncio.subprocess (its plugins: asyncio) and waits on no
    # future and no asyncio child: waits.py loaded at those imports (~0.2 ms of a pytest run). Every
    # wait on them goes through these.
    "concurrent.futures._base": ("Future.result", "Future.exception", "wait", "as_completed"),
    "asyncio.subprocess": ("Process.wait", "Process.communicate"),
    "asyncio.tasks": ("sleep",),  # pytest's plugins import asyncio; few programs sleep in it
    "asyncio.futures": ("wrap_future",),  # every run_in_executor, to_thread
    # Most programs import json and pickle (pytest's plugins do) and call neither: serialization brings
    # timed (~1.5 M instructions of a pytest run, docs/benchmarks.md). Every call goes through these.
    "json": _SERIALIZERS,
    "pickle": _SERIALIZERS,
    "dill": _SERIALIZERS,
    # codeflash's pytest plugin imports pydantic in every pytest child, which validates nothing
    "pydantic.main": ("BaseModel.model_dump", "BaseModel.model_dump_json", "BaseModel.model_validate",
                      "BaseModel.model_validate_json"),
    "pydantic.type_adapter": ("TypeAdapter.dump_python", "TypeAdapter.dump_json", "TypeAdapter.validate_python",
                              "TypeAdapter.validate_json"),
    # time-machine's pytest plugin loads it in every pytest process; every travel starts in start
    # (its context manager, decorator and fixture), and the agent's clock must be kept out of it
    # before the first one patches the time module
    "time_machine": ("travel.start",),
}

# module name -> what to run when it is imported: a BUILTIN_HOOKS hook module's name (a str: its
# installer is made when it runs, _builtin_installer), or a list of hooks (callables or such names).
# Names, not closures: one installer (a function, its cells, a list) for each of the ~45 targets cost
# every process ~240 objects more for the garbage collector to scan, nearly all never run.
_pending: dict = {}


def when_imported(name: str, hook) -> None:
    """Call `hook(module)` once `name` is imported (now, if it already is). `hook`: a callable, or the
    name of a hook module under hooks/ (BUILTIN_HOOKS)."""
    module = sys.modules.get(name)
    if module is not None and not _initializing(module):
        _run(name, hook, module)
        return
    hooks = _pending.get(name)
    if hooks is None:
        _pending[name] = hook if type(hook) is str else [hook]
    elif type(hooks) is str:
        _pending[name] = [hooks, hook]
    else:
        hooks.append(hook)


def install_builtin_hooks() -> None:
    for name, hook_module in BUILTIN_HOOKS.items():
        when_imported(name, hook_module)
    if config.ENV_TARGETS in os.environ:  # `run --target`: loaded only when given
        from .hooks import targets

        targets.install_user_targets()


def _builtin_installer(target: str, hook_module: str):
    # only the target's built-in hook waits for a first call: another (hooks/targets.py's, waiting
    # by name on any module) installs at the import
    paths = ON_FIRST_CALL.get(target) if BUILTIN_HOOKS.get(target) == hook_module else None
    if paths is None:
        return _hook_installer(hook_module, target)

    def install(module) -> None:
        _place(target, hook_module, module, paths)

    return install


def on_first_call(target: str, hook_module: str, paths: tuple) -> None:
    """Stand-ins at `paths` of module `target` once it is imported (now, if it is), whose first call
    loads hook module `hook_module` (its install(target, module)), as ON_FIRST_CALL's do."""
    when_imported(target, lambda module: _place(target, hook_module, module, paths))


def _hook_installer(hook_module: str, target: str):
    def install(module) -> None:
        from . import importtime

        importtime.agent_module(__package__ + ".hooks." + hook_module).install(target, module)

    return install


# A first-call hook's state: [target, hook module, target module, places (owner, name, function,
# stand-in ... flat), calls, lock], one list, its stand-ins' only state beside their own. As closures
# (the installer, a `resolve`, their cells and lists) it was ~14 objects a target more for the garbage
# collector to scan in every process that imports the target and never calls it; as a class, its
# creation cost every process's start-up 0.3 M instructions (docs/benchmarks.md). `calls`: None until
# the hook is installed, then what each stand-in goes on into, by the function it stands in for.
_TARGET, _HOOK_MODULE, _MODULE, _PLACES, _CALLS, _LOCK = range(6)


def _place(target: str, hook_module: str, module, paths: tuple) -> None:
    """Stand-ins at `paths` of `module` (target's); the first call of any of them loads the hook
    module (which wraps what `original` finds behind each stand-in) and goes on into what it
    installed. The stand-ins stay in place until the wrappers replace them: a thread calling
    meanwhile waits for the hook (the lock is reentrant: a signal handler may call one while this
    thread installs), it never finds the bare original."""
    state = [target, hook_module, module, [], None, RLock()]
    places = state[_PLACES]
    for path in paths:
        *owners, name = path.split(".")
        owner = module
        for part in owners:
            owner = getattr(owner, part, None)
        raw = getattr(owner, "__dict__", {}).get(name)
        function = _function(raw)
        # a function with a __wrapped__ of its own gets one too (Python 3.8's signal.signal, a
        # library's decorator): the hook decides what it wraps
        if callable(function) and not hasattr(function, _STANDS_IN_FOR):
            stand_in = _stand_in(name, function, state, _home(owner, name, function))
            # a classmethod's or staticmethod's function stands in inside one of its kind
            placed = stand_in if function is raw else type(raw)(stand_in)
            places += (owner, name, raw, placed)
            setattr(owner, name, placed)


# A fork while another thread resolved a stand-in (held its lock: it installs the hook) left the
# child that lock held by a thread it does not have, and the child's first call of that stand-in
# waited for ever: a Pool(2, maxtasksperchild=1) forking a replacement worker in its thread as its
# result thread first unpickled a result (pickle's stand-in) hung 1 run in 6. So a resolution holds
# one lock more, which a fork takes first (waiting at most FORK_WAIT_S: a fork inside a hook's
# installation of another thread waits no longer), and the child gets a fresh one. (Every stand-in's
# state kept for the fork instead held them all alive: +4 M instructions an import-heavy process.)
_resolving = RLock()
_held_for_fork = False
FORK_WAIT_S = 1.0


def before_fork() -> None:
    global _held_for_fork
    try:
        _held_for_fork = _resolving.acquire(True, FORK_WAIT_S)
    except Exception:  # (an at-fork handler: Python would only print its exception)
        _held_for_fork = False


def after_fork_in_parent() -> None:
    global _held_for_fork
    if _held_for_fork:
        _held_for_fork = False
        _resolving.release()


def after_fork_in_child() -> None:
    global _resolving, _held_for_fork
    _held_for_fork = False
    _resolving = RLock()


def _resolve(state: list) -> bool:
    """Install the hook unless it is; whether this call did.

    A program may have put its own function where a stand-in was, keeping the stand-in as the
    original to call (sentry-sdk wraps HTTPConnection.getresponse and Thread.start so). The hook
    then wraps the original all the same, the program's function stays where the program put it,
    and the stand-in goes on into the hook's wrapper: each call recorded once, and never the
    program's function calling itself through ours."""
    if state[_CALLS] is not None:
        return False
    with _resolving, state[_LOCK]:
        if state[_CALLS] is not None:
            return False
        places = state[_PLACES]
        theirs = []
        for i in range(0, len(places), 4):
            owner, name, function, stand_in = places[i:i + 4]
            current = owner.__dict__.get(name)
            if current is not stand_in:
                theirs.append((owner, name, current))
                setattr(owner, name, stand_in)  # for the hook to find, while it installs
        target = state[_TARGET]
        _run(target, _hook_installer(state[_HOOK_MODULE], target), state[_MODULE])
        calls = {}
        for i in range(0, len(places), 4):
            owner, name, raw, stand_in = places[i:i + 4]
            current = owner.__dict__.get(name)
            wrapper = raw if current is stand_in else current  # not wrapped: the original
            setattr(owner, name, wrapper)
            # the stand-in goes on into a function: a classmethod's or staticmethod's own
            function = _function(raw)
            calls[function] = _function(wrapper)
            # pickle finds a function where its module and qualified name say, and must find it there
            # (tracer.at_home): the hook's wrapper is named as the original, and a package that
            # re-exports the function (asyncio.sleep, concurrent.futures.wait) has the wrapper too
            if wrapper is not raw and tracer.is_own_wrapper(calls[function]):
                tracer.at_home(calls[function], *_home(owner, name, function))
            package = sys.modules.get(getattr(owner, "__name__", "").rpartition(".")[0]) if type(owner) is type(sys) \
                else None
            if package is not None and package.__dict__.get(name) is stand_in:
                setattr(package, name, wrapper)
        for owner, name, current in theirs:
            if current is None:
                delattr(owner, name)
            else:
                setattr(owner, name, current)
        state[_CALLS] = calls
        return True


def _home(owner, name: str, function) -> tuple:
    """(module, qualified name) where pickle must find what stands at `owner.name`: a module's, for a
    function of a module (pickle's `dumps` is `_pickle.dumps`: ours must be found in pickle), else
    the function's own."""
    if type(owner) is type(sys):
        return owner.__name__, name
    return function.__module__, function.__qualname__


def _function(raw):
    """The function of a classmethod or staticmethod, else `raw`."""
    return raw.__func__ if isinstance(raw, (classmethod, staticmethod)) else raw


def original(function):
    """What a hook wraps: the function behind a stand-in (in a classmethod or staticmethod as the
    stand-in is), else the function itself."""
    if isinstance(function, (classmethod, staticmethod)):
        behind = getattr(function.__func__, _STANDS_IN_FOR, None)
        return function if behind is None else type(function)(behind)
    return getattr(function, _STANDS_IN_FOR, function)


_STANDS_IN_FOR = "__selfopt_trace_stands_in_for__"


_CO_COROUTINE = 0x80


def _stand_in(name: str, function, state: list, home: tuple):
    code = tracer.code_of(function)
    if code is not None and code.co_flags & _CO_COROUTINE:
        return _async_stand_in(name, function, state, home)

    def call(*args, **kwargs):
        began = time_ns()
        loaded = _resolve(state)
        if loaded:  # the span this call starts starts here (tracer.first_call)
            tracer.first_call = (get_ident(), began)
        try:
            return state[_CALLS][function](*args, **kwargs)  # the hook's wrapper, or the original
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise
        finally:
            if loaded:
                tracer.first_call = None

    return _named(call, name, function, home)


def _async_stand_in(name: str, function, state: list, home: tuple):
    """A coroutine function's stand-in is one too (inspect and asyncio tell them apart). The hook
    loads when the coroutine first runs, as the original's body would; no tracer.first_call: other
    tasks run in this thread while it awaits."""
    async def call(*args, **kwargs):
        _resolve(state)
        try:
            return await state[_CALLS][function](*args, **kwargs)
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return _named(call, name, function, home)


def _named(call, name: str, function, home: tuple):
    setattr(call, _STANDS_IN_FOR, function)
    call.__wrapped__ = function
    call.__name__, call.__doc__ = name, function.__doc__
    # a built-in's (pickle.dumps) binds on no class, as the built-in does not (tracer.Builtin)
    return tracer.unbound(tracer.at_home(call, *home), function)


def fire(name: str, module) -> None:
    hooks = _pending.pop(name, ())
    for hook in (hooks,) if type(hooks) is str else hooks:
        _run(name, hook, module)


def _run(name: str, hook, module) -> None:
    counted = tracer.overhead_ns()  # what nested import wrappers count must not count twice
    # On the thread's CPU clock: loading a hook reads its module (giving up the GIL), and taking the
    # GIL back beside computing threads waits their turns, which is not the hook's cost (5 ms a time)
    t0 = thread_cpu_ns()
    try:
        if type(hook) is str:
            hook = _builtin_installer(name, hook)
        hook(module)
    except Exception as exc:
        tracer.exception_diagnostic("hook_failed:" + name, exc)
    tracer.add_overhead(max(0, thread_cpu_ns() - t0 - (tracer.overhead_ns() - counted)))


def _initializing(module) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))
