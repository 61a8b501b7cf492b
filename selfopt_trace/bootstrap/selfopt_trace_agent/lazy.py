"""Post-import hooks: a library is patched when it is first imported, never at start-up.

The import wrapper in importtime.py calls `fire` after every first import, so a pending hook
costs one dict lookup per import and nothing else. A hook registered after its module was
imported runs at once. A failing hook is a diagnostic; the import itself always succeeds.
"""

from __future__ import annotations

import os
import sys
from time import time_ns

from . import config, tracer

# module name -> hook module under hooks/ (each has `install(module)`); extended by the integrations.
BUILTIN_HOOKS = {
    "subprocess": "subprocess_",
    "multiprocessing.process": "multiprocessing_",
    "multiprocessing.spawn": "multiprocessing_",
    "multiprocessing.popen_forkserver": "multiprocessing_",
    "multiprocessing.util": "multiprocessing_",
    "signal": "signal_",
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
    "codeflash": "targets",
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
    "opentelemetry.trace": "otel_",
    "opentelemetry.sdk.trace": "otel_",
}

_pending: dict = {}


def when_imported(name: str, hook) -> None:
    """Call `hook(module)` once `name` is imported (now, if it already is)."""
    module = sys.modules.get(name)
    if module is not None and not _initializing(module):
        _run(name, hook, module)
    else:
        _pending.setdefault(name, []).append(hook)


def install_builtin_hooks() -> None:
    for name, hook_module in BUILTIN_HOOKS.items():
        when_imported(name, _hook_installer(hook_module, name))
    if config.ENV_TARGETS in os.environ:  # `run --target`: loaded only when given
        __import__(__package__ + ".hooks.targets", fromlist=["install_user_targets"]).install_user_targets()


def _hook_installer(hook_module: str, target: str):
    def install(module) -> None:
        hooks = __import__(__package__ + ".hooks." + hook_module, fromlist=["install"])
        hooks.install(target, module)

    return install


def fire(name: str, module) -> None:
    for hook in _pending.pop(name, ()):
        _run(name, hook, module)


def _run(name: str, hook, module) -> None:
    counted = tracer.overhead_ns()  # what nested import wrappers count must not count twice
    t0 = time_ns()
    try:
        hook(module)
    except Exception as exc:
        tracer.exception_diagnostic("hook_failed:" + name, exc)
    tracer.add_overhead(time_ns() - t0 - (tracer.overhead_ns() - counted))


def _initializing(module) -> bool:
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))
