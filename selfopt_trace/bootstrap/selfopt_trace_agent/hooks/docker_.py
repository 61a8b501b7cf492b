"""Containers: `docker|podman run/create/exec` and the Docker SDK carry the trace inside the container.

A container gets, with no change to its image: TRACEPARENT of the span that starts it (the docker
CLI's subprocess span, or the SDK call's CLIENT span), the selfopt-trace settings, the bootstrap
bind-mounted read-only at /selfopt-trace/bootstrap with PYTHONPATH pointing at it, and the run
directory bind-mounted writable at /selfopt-trace/run, so the container's spans land in this run.

PYTHONPATH is merged, never clobbered: with the user's own `-e PYTHONPATH`/`--env-file` value when
given, else with the image's ENV PYTHONPATH, read from the engine (its unix socket, ~0.5 ms; the
CLI, ~20 ms, where no socket answers) once per image and process. An image the engine does not
know (to be pulled) is left untraced with a diagnostic, rather than risk hiding its PYTHONPATH.

Opt out: SELFOPT_TRACE_DOCKER=0 in the traced process, or `--label selfopt-trace=off` on one command.
Inside the container, ../process.py turns SELFOPT_TRACE_CONTAINER_* into container.* attributes.
"""

from __future__ import annotations

import os
from time import time_ns

from .. import config, process, tracer

CONTAINER_BOOTSTRAP = "/selfopt-trace/bootstrap"
CONTAINER_RUN_DIR = "/selfopt-trace/run"
ENV_DOCKER = "SELFOPT_TRACE_DOCKER"  # "0": leave containers alone
OPT_OUT_LABEL = "selfopt-trace=off"
INJECT_SPAN = "container.inject"
LOOKUP_TIMEOUT_S = 3.0

# Options that take no value (everything else starting with "-" takes one, unless written --opt=value).
_GLOBAL_FLAGS = {"-D", "--debug", "--tls", "--tlsverify", "-r", "--remote", "--syslog", "--noout",
                 "-h", "--help", "-v", "--version"}
_FLAGS = {"--detach", "--disable-content-trust", "--help", "--init", "--interactive", "--no-healthcheck",
          "--oom-kill-disable", "--privileged", "--publish-all", "--quiet", "--read-only", "--rm", "--sig-proxy",
          "--tty", "--use-api-socket", "--env-host", "--http-proxy", "--no-hosts", "--passwd",
          "--read-only-tmpfs", "--replace", "--rmi", "--rootfs", "--tls-verify", "--latest"}
_SHORT_FLAGS = set("ditPql")
_SHORT_NAMES = {"e": "--env", "v": "--volume", "u": "--user", "l": "--label", "d": "--detach"}
_INJECTED_KEYS = (config.ENV_TRACEPARENT, config.ENV_DIR, config.ENV_RUN_ID, config.ENV_SERVICE,
                  config.ENV_IMPORT_THRESHOLD_MS, config.ENV_BOOTSTRAP, config.ENV_CONTAINER_IMAGE,
                  config.ENV_CONTAINER_NAME, "PYTHONPATH")
_UNKNOWN = object()

_image_pythonpath: dict = {}  # (engine args, image) -> PYTHONPATH in the image's ENV ("" if none), or _UNKNOWN
_prepared_run_dirs: set = set()


# ---------------------------------------------------------------- what a container gets (pure)

def container_environ(settings: config.Settings, traceparent: str = "", pythonpath: str = "",
                      image: str = "", name: str = "") -> dict:
    """The environment variables to give a container traced into `settings`' run."""
    env = config.propagated_environ(settings)
    env[config.ENV_DIR] = CONTAINER_RUN_DIR
    env[config.ENV_BOOTSTRAP] = CONTAINER_BOOTSTRAP
    env["PYTHONPATH"] = merged_pythonpath(pythonpath)
    if traceparent:
        env[config.ENV_TRACEPARENT] = traceparent
    if image:
        env[config.ENV_CONTAINER_IMAGE] = image
    if name:
        env[config.ENV_CONTAINER_NAME] = name
    return env


def container_mounts(settings: config.Settings) -> list:
    """(host path, container path, read-only) of the two bind mounts."""
    return [(os.path.abspath(settings.bootstrap_dir), CONTAINER_BOOTSTRAP, True),
            (os.path.abspath(settings.run_dir), CONTAINER_RUN_DIR, False)]


def merged_pythonpath(pythonpath: str, drop: str = "") -> str:
    """The container bootstrap first, then `pythonpath` (without `drop`, the host's bootstrap), no empty entry."""
    entries = [p for p in pythonpath.split(":") if p and p != drop and p != CONTAINER_BOOTSTRAP]
    return ":".join([CONTAINER_BOOTSTRAP] + entries)


def volume_flag(host: str, target: str, read_only: bool) -> list:
    """`-v host:target[:ro]`, or `--mount` for a host path with a colon (which -v cannot express)."""
    if ":" not in host:
        return ["-v", "%s:%s%s" % (host, target, ":ro" if read_only else "")]
    source = '"source=%s"' % host.replace('"', '""') if ("," in host or '"' in host) else "source=" + host
    return ["--mount", "type=bind,%s,target=%s%s" % (source, target, ",readonly" if read_only else "")]


def prepare_run_dir(run_dir: str) -> None:
    """spans/ writable by any uid (a container may run as another user); files stay 0644 (tracer.py)."""
    if run_dir in _prepared_run_dirs:
        return
    spans = os.path.join(run_dir, "spans")
    os.makedirs(spans, exist_ok=True)
    if os.stat(spans).st_mode & 0o777 != 0o777:
        os.chmod(spans, 0o777)
    _prepared_run_dirs.add(run_dir)


# ---------------------------------------------------------------- the docker / podman command line

class _Command:
    """What rewriting needs from a `run`/`create`/`exec` command line."""

    def __init__(self) -> None:
        self.subcommand = ""
        self.insert_at = 0  # right after the subcommand: our flags go before any of the user's
        self.engine_args: list = []  # global options (-H, --context, ...), for an image lookup by the CLI
        self.target = ""  # the image (run, create) or the container (exec)
        self.env: dict = {}  # key -> value, None when `-e KEY` takes it from the CLI's environment
        self.env_args: dict = {}  # key -> (first index, end index, grouped flags before it) of a user's `-e KEY`
        self.env_file: dict = {}
        self.targets: set = set()  # container paths of the user's mounts
        self.read_only_targets: set = set()
        self.user_mounts = 0
        self.name = ""
        self.detached = False
        self.opted_out = False


def parse(args: list) -> _Command | None:
    """The command, or None when it is not one that starts a process in a container."""
    cmd = _Command()
    i = 1
    while i < len(args) and args[i].startswith("-"):
        i += 1 if ("=" in args[i] or args[i] in _GLOBAL_FLAGS) else 2
    cmd.engine_args = args[1:i]
    if i < len(args) and args[i] == "container":
        i += 1
    if i >= len(args) or args[i] not in ("run", "create", "exec"):
        return None
    cmd.subcommand = args[i]
    cmd.insert_at = i = i + 1
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if name in _FLAGS:
                cmd.detached = cmd.detached or (name == "--detach" and value.lower() not in ("false", "0"))
                i += 1
                continue
            if not eq:
                value = args[i + 1] if i + 1 < len(args) else ""
            end = i + (1 if eq else 2)
            _option(cmd, name, value, i, end)
            i = end
            continue
        for j in range(1, len(arg)):  # -dit, -eKEY=v, -e KEY=v
            if arg[j] in _SHORT_FLAGS:
                cmd.detached = cmd.detached or arg[j] == "d"
                continue
            inline = arg[j + 1:]
            value = inline if inline else (args[i + 1] if i + 1 < len(args) else "")
            end = i + (1 if inline else 2)
            _option(cmd, _SHORT_NAMES.get(arg[j], "-" + arg[j]), value, i, end, arg[1:j])
            i = end - 1
            break
        i += 1
    cmd.target = args[i] if i < len(args) else ""
    return cmd


def _option(cmd: _Command, name: str, value: str, start: int, end: int, grouped: str = "") -> None:
    if name == "--env":
        key, eq, val = value.partition("=")
        cmd.env[key] = val if eq else None
        if key in _INJECTED_KEYS:
            cmd.env_args[key] = (start, end, grouped)
    elif name == "--env-file":
        cmd.env_file.update(_read_env_file(value))
    elif name in ("--volume", "--mount"):
        cmd.user_mounts += 1
        target = _mount_target(name, value)
        cmd.targets.add(target)
        options = value.split(":")[2:] if name == "--volume" else value.split(",")
        if "ro" in ",".join(options).split(",") or "readonly" in options or "readonly=true" in options:
            cmd.read_only_targets.add(target)
    elif name == "--name":
        cmd.name = value
    elif name == "--label" and value == OPT_OUT_LABEL:
        cmd.opted_out = True


def _mount_target(option: str, value: str) -> str:
    if option == "--volume":
        parts = value.split(":")
        return parts[1] if len(parts) > 1 else parts[0]
    for item in value.split(","):
        key, _, val = item.strip('"').partition("=")
        if key in ("target", "destination", "dst"):
            return val
    return ""


def _read_env_file(path: str) -> dict:
    """KEY=value lines (a bare KEY takes the CLI's environment), as docker reads them."""
    out: dict = {}
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            for line in handle:
                line = line.lstrip().rstrip("\n")
                if line and not line.startswith("#"):
                    key, eq, value = line.partition("=")
                    out[key.strip()] = value if eq else None
    except OSError as exc:  # docker itself will report the missing file
        tracer.raise_if_programs(exc)
    return out


def rewrite_argv(args: list, span: tracer.Span) -> list:
    """The docker/podman argv with the trace carried into the container (or `args` unchanged). Never raises."""
    t0 = time_ns()
    try:
        return _rewrite(args, span, t0)
    except Exception as exc:
        tracer.exception_diagnostic("docker.rewrite_failed", exc)
        return args
    finally:
        tracer.add_overhead(time_ns() - t0)


def _rewrite(args: list, span: tracer.Span, t0: int) -> list:
    settings = process.settings()
    if settings is None or os.environ.get(ENV_DOCKER, "").strip().lower() in ("0", "false", "no", "off"):
        return args
    argv = [os.fsdecode(a) for a in args]
    cmd = parse(argv)
    if cmd is None or cmd.opted_out or not cmd.target:
        return args
    runtime = os.path.basename(argv[0])
    if not _on_path(argv[0]):
        tracer.diagnostic("docker.cli_missing", "%s: not found; the command runs as given" % argv[0])
        return args
    user_env = dict(cmd.env_file)
    user_env.update(cmd.env)
    if cmd.subcommand == "exec":  # mounts are fixed at create: only a container started traced joins in
        env = {config.ENV_TRACEPARENT: span.traceparent()}
        flags, mounts = [], []
    else:
        try:
            prepare_run_dir(settings.run_dir)
        except OSError as exc:
            tracer.raise_if_programs(exc)
            tracer.diagnostic("docker.run_dir_unwritable", "%s: %s; the container is not traced" % (settings.run_dir, exc))
            return args
        pythonpath = _user_pythonpath(user_env, settings)
        if pythonpath is None:
            pythonpath = image_pythonpath(argv[0], cmd.engine_args, cmd.target)
            if pythonpath is _UNKNOWN:
                tracer.diagnostic("docker.image_unknown", "%s: the engine does not know this image (not pulled yet?);"
                                  " the container is not traced" % cmd.target)
                return args
        env = container_environ(settings, span.traceparent(), pythonpath, cmd.target, cmd.name)
        mounts = [m for m in container_mounts(settings) if m[1] not in cmd.targets]
        flags = []
        for host, target, read_only in mounts:
            flags += volume_flag(host, target, read_only)
    _check_run_dir(cmd, user_env)
    out = list(argv)
    for key in sorted(cmd.env_args, key=lambda k: cmd.env_args[k][0], reverse=True):
        start, end, grouped = cmd.env_args[key]
        if key == "PYTHONPATH" or cmd.env[key] is None:  # merged, or a bare `-e KEY` with the host's value
            if key in env:
                out[start:end] = (["-" + grouped] if grouped else []) + ["-e", "%s=%s" % (key, env[key])]
        env.pop(key, None)
    for key in list(env):
        if key in cmd.env_file and cmd.env_file[key] is not None and key != "PYTHONPATH":
            del env[key]  # the user's env-file says otherwise
    for key, value in env.items():
        flags += ["-e", "%s=%s" % (key, value)]
    out[cmd.insert_at:cmd.insert_at] = flags
    tracer.record_complete(INJECT_SPAN, "container", t0, time_ns(), {
        "container.runtime": runtime,
        "container.image.name": cmd.target if cmd.subcommand != "exec" else "",
        "container.name": cmd.name or (cmd.target if cmd.subcommand == "exec" else ""),
        "selfopt_trace.docker.subcommand": cmd.subcommand,
        "selfopt_trace.docker.detached": cmd.detached,
        "selfopt_trace.docker.user_mounts": cmd.user_mounts,
        "selfopt_trace.docker.mounts_added": len(mounts),
    }, parent=span)
    return out


def _on_path(program: str) -> bool:
    if os.sep in program:
        return os.access(program, os.X_OK)
    return any(os.access(os.path.join(d, program), os.X_OK) for d in os.environ.get("PATH", os.defpath).split(os.pathsep) if d)


def _check_run_dir(cmd: _Command, user_env: dict) -> None:
    """Diagnose a command whose own flags keep the container's spans from reaching the run directory."""
    run_dir = user_env.get(config.ENV_DIR) or CONTAINER_RUN_DIR
    if run_dir in cmd.read_only_targets:
        tracer.diagnostic("docker.run_dir_read_only", "%s mounts %s read-only: its container spans are lost"
                          % (cmd.target, run_dir))
    elif run_dir != CONTAINER_RUN_DIR and run_dir not in cmd.targets:
        tracer.diagnostic("docker.run_dir_not_mounted", "%s: %s=%s is not a mount: its container spans stay"
                          " inside the container" % (cmd.target, config.ENV_DIR, run_dir))


def _user_pythonpath(user_env: dict, settings: config.Settings) -> str | None:
    """The PYTHONPATH the user gives the container (None: they give none, the image's applies)."""
    if "PYTHONPATH" not in user_env:
        return None
    value = user_env["PYTHONPATH"]
    if value is None:  # taken from the CLI's environment, where our host bootstrap was put first
        value = os.environ.get("PYTHONPATH", "")
    return ":".join(p for p in value.split(":") if p and p != settings.bootstrap_dir)


# ---------------------------------------------------------------- the image's own PYTHONPATH

def image_pythonpath(cli: str, engine_args: list, image: str):
    """The PYTHONPATH in the image's ENV ("" if none), or _UNKNOWN. Memoized per process."""
    key = (cli, tuple(engine_args), image)
    found = _image_pythonpath.get(key)
    if found is None:
        env = None
        if not engine_args:
            env = _inspect_by_socket(os.path.basename(cli), image)
        if env is None:
            env = _inspect_by_cli(cli, engine_args, image)
        found = _UNKNOWN if env is None else _pythonpath_of(env)
        _image_pythonpath[key] = found
    return found


def _pythonpath_of(env: list) -> str:
    for item in env:
        if isinstance(item, str) and item.startswith("PYTHONPATH="):
            return item[len("PYTHONPATH="):]
    return ""


def _socket_path(runtime: str) -> str:
    host = os.environ.get("DOCKER_HOST", "")
    if host:
        return host[len("unix://"):] if host.startswith("unix://") else ""
    if os.environ.get("DOCKER_CONTEXT"):
        return ""
    if runtime == "podman":
        runtime_dir = os.environ.get("XDG_RUNTIME_DIR", "")
        if os.getuid() != 0 and runtime_dir:
            return os.path.join(runtime_dir, "podman", "podman.sock")
        return "/run/podman/podman.sock"
    return "/var/run/docker.sock"


def _inspect_by_socket(runtime: str, image: str) -> list | None:
    """Config.Env of the image from the engine API over its unix socket; None if that does not answer.

    `_socket` and a hand-made HTTP/1.0 request: `socket`, `http.client` and `urllib` would cost the
    traced program several milliseconds of imports.
    """
    path = _socket_path(runtime)
    if not path:
        return None
    import _socket

    try:
        sock = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
        try:
            sock.settimeout(LOOKUP_TIMEOUT_S)
            sock.connect(path)
            sock.sendall(b"GET /images/%s/json HTTP/1.0\r\nHost: docker\r\n\r\n" % _quote(image))
            chunks = []
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
        finally:
            sock.close()
    except OSError as exc:  # (its own timeout among them: a TimeoutError)
        tracer.raise_if_programs(exc)
        return None
    head, _, body = b"".join(chunks).partition(b"\r\n\r\n")
    if not head.startswith(b"HTTP/1.") or head[9:12] != b"200":
        return None
    return _config_env(body)


def _quote(image: str) -> bytes:
    """An image reference as a URL path (letters, digits and ._-/:@ stay; the rest is %-encoded)."""
    return b"".join(bytes([c]) if (0x30 <= c <= 0x39 or 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A or c in b"._-/:@")
                    else b"%%%02X" % c for c in image.encode("utf-8"))


def _config_env(body: bytes) -> list | None:
    import json

    try:
        config_ = json.loads(body.decode("utf-8", "replace")).get("Config") or {}
        return list(config_.get("Env") or ())
    except (ValueError, AttributeError) as exc:
        tracer.raise_if_programs(exc)
        return None


def _inspect_by_cli(cli: str, engine_args: list, image: str) -> list | None:
    """`<cli> image inspect`, spawned untraced (the tracer's own work is not the program's subprocess)."""
    argv = [cli] + list(engine_args) + ["image", "inspect", "--format", "{{json .Config}}", image]
    try:
        out = _run_quiet(argv)
    except OSError as exc:
        tracer.raise_if_programs(exc)
        return None
    if out is None:
        return None
    return _config_env(b'{"Config": ' + out.strip() + b"}")


def _run_quiet(argv: list) -> bytes | None:
    """stdout of argv if it exits 0 within LOOKUP_TIMEOUT_S, else None."""
    import select
    import signal

    spawnp = getattr(os.posix_spawnp, "__wrapped__", os.posix_spawnp)
    waitpid = getattr(os.waitpid, "__wrapped__", os.waitpid)
    read_end, write_end = os.pipe()
    try:
        actions = [(os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0), (os.POSIX_SPAWN_DUP2, write_end, 1),
                   (os.POSIX_SPAWN_OPEN, 2, os.devnull, os.O_WRONLY, 0), (os.POSIX_SPAWN_CLOSE, read_end)]
        pid = spawnp(argv[0], argv, dict(os.environ), file_actions=actions)
    except OSError:
        os.close(read_end)
        raise
    finally:
        os.close(write_end)
    chunks, deadline = [], time_ns() + int(LOOKUP_TIMEOUT_S * 1e9)
    try:
        while True:
            remaining = (deadline - time_ns()) / 1e9
            if remaining <= 0 or not select.select([read_end], [], [], remaining)[0]:
                os.kill(pid, signal.SIGKILL)
                break
            chunk = os.read(read_end, 65536)
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(read_end)
        status = waitpid(pid, 0)[1]
    return b"".join(chunks) if os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0 else None


# ---------------------------------------------------------------- the Docker SDK for Python

def install(target: str, module) -> None:
    """docker.models.containers: ContainerCollection.run/create and Container.exec_run."""
    _wrap(module.ContainerCollection, "run", _sdk_start("run"))
    _wrap(module.ContainerCollection, "create", _sdk_start("create"))
    _wrap(module.Container, "exec_run", _sdk_exec)


def _wrap(cls, name: str, make) -> None:
    original = getattr(cls, name)
    if not tracer.is_own_wrapper(original):
        wrapper = tracer.own_wrapper(make(original), original)
        wrapper.__name__, wrapper.__doc__ = original.__name__, original.__doc__
        setattr(cls, name, wrapper)


def _sdk_start(subcommand: str):
    def make(original):
        def start(self, image, command=None, *args, **kwargs):
            try:
                current = tracer.current()
                if current is not None and current.category == "container" and current.kind == tracer.CLIENT:
                    return original(self, image, command, *args, **kwargs)  # run() calling create()
                try:
                    span, token = _sdk_span("docker " + subcommand, image, kwargs)
                except Exception as exc:
                    tracer.exception_diagnostic("docker.sdk_failed", exc)
                    return original(self, image, command, *args, **kwargs)
                try:
                    result = original(self, image, command, *args, **_sdk_kwargs(self, span, image, kwargs))
                    _sdk_end(span, token, None, getattr(result, "id", None))
                except BaseException as exc:  # (the program's, as _sdk_end begins, too: it ends still)
                    _sdk_end(span, token, exc)
                    raise
                return result
            except BaseException as exc:  # as untraced: no frame of ours
                tracer.strip_own_frames(exc)
                raise

        return start

    return make


def _sdk_exec(original):
    def exec_run(self, cmd, *args, **kwargs):
        try:
            span = token = None
            try:
                span, token = _sdk_span("docker exec", "", kwargs, container=getattr(self, "name", "") or "")
                environment = kwargs.get("environment")
                if _env_keys(environment).isdisjoint((config.ENV_TRACEPARENT,)):
                    kwargs["environment"] = _add_env(environment, {config.ENV_TRACEPARENT: span.traceparent()})
            except BaseException as exc:
                if not isinstance(exc, Exception) or tracer.is_programs(exc):  # begun, not handed over: it ends
                    tracer.end_interrupted(span, exc, token)
                    raise
                tracer.exception_diagnostic("docker.sdk_failed", exc)
                if span is not None:  # the container runs as given, untraced: the span ends
                    tracer.end_interrupted(span, exc, token)
                return original(self, cmd, *args, **kwargs)
            try:
                result = original(self, cmd, *args, **kwargs)
                _sdk_end(span, token, None)
            except BaseException as exc:  # (the program's, as _sdk_end begins, too: it ends still)
                _sdk_end(span, token, exc)
                raise
            return result
        except BaseException as exc:  # as untraced: no frame of ours
            tracer.strip_own_frames(exc)
            raise

    return exec_run


def _sdk_span(name: str, image, kwargs: dict, container: str = "") -> tuple:
    attributes = {"container.runtime": "docker", "selfopt_trace.docker.sdk": True}
    if image:
        attributes["container.image.name"] = _image_name(image)
    if kwargs.get("name") or container:
        attributes["container.name"] = kwargs.get("name") or container
    span = tracer.start_span(name, "container", tracer.CLIENT, attributes)
    try:
        tracer.flush()  # the container may outlive us: its parent span must be on disk
        return span, _activate(span)
    except BaseException as exc:  # the program's (a signal handler's): the call ends with it
        tracer.end_interrupted(span, exc)
        raise


_activate = tracer._current.set  # tracer.activate, without its call (no frame an exception could interrupt)


def _sdk_end(span: tracer.Span, token, exc: BaseException | None, container_id: str | None = None) -> None:
    if span.end_ns:  # (ended by an interrupted _sdk_end: its token reset too)
        return
    try:
        tracer.deactivate(token)
        if exc is not None:
            tracer.end_span(span, tracer.ERROR, {"error.type": type(exc).__qualname__})
        else:
            tracer.end_span(span, tracer.UNSET, {"container.id": container_id} if container_id else None)
    except BaseException as error:  # the program's (a signal handler's): the span ends with it
        tracer.end_interrupted(span, error, token)
        raise


def _image_name(image) -> str:
    if isinstance(image, str):
        return image
    tags = getattr(image, "tags", None)
    return tags[0] if tags else getattr(image, "id", "") or ""


def _sdk_kwargs(collection, span: tracer.Span, image, kwargs: dict) -> dict:
    """kwargs of containers.run/create with the trace carried inside (unchanged when that cannot be done)."""
    t0 = time_ns()
    settings = process.settings()
    labels = kwargs.get("labels")
    opted_out = (isinstance(labels, dict) and labels.get("selfopt-trace") == "off") or \
        (isinstance(labels, (list, tuple)) and OPT_OUT_LABEL in labels)
    if settings is None or opted_out or os.environ.get(ENV_DOCKER, "").strip().lower() in ("0", "false", "no", "off"):
        return kwargs
    try:
        name = _image_name(image)
        environment = kwargs.get("environment")
        keys = _env_keys(environment)
        if "PYTHONPATH" in keys:
            pythonpath = _env_value(environment, "PYTHONPATH")
        else:
            pythonpath = image_pythonpath("docker", [], name)
            if pythonpath is _UNKNOWN:
                pythonpath = _pythonpath_of(collection.client.api.inspect_image(name)["Config"].get("Env") or ())
        prepare_run_dir(settings.run_dir)
        env = container_environ(settings, span.traceparent(), pythonpath, name, kwargs.get("name") or "")
        env = {k: v for k, v in env.items() if k not in keys or k == "PYTHONPATH"}
        out = dict(kwargs)
        out["environment"] = _add_env(environment, env)
        targets = _sdk_targets(kwargs)
        mounts = [m for m in container_mounts(settings) if m[1] not in targets]
        out["volumes"] = _add_volumes(kwargs.get("volumes"), mounts)
        tracer.record_complete(INJECT_SPAN, "container", t0, time_ns(), {
            "container.runtime": "docker", "container.image.name": name, "container.name": kwargs.get("name") or "",
            "selfopt_trace.docker.subcommand": "run" if span.name.endswith("run") else "create",
            "selfopt_trace.docker.detached": bool(kwargs.get("detach")),
            "selfopt_trace.docker.user_mounts": len(targets),
            "selfopt_trace.docker.mounts_added": len(mounts),
        }, parent=span)
        return out
    except Exception as exc:
        tracer.exception_diagnostic("docker.sdk_failed", exc)
        return kwargs
    finally:
        tracer.add_overhead(time_ns() - t0)


def _env_keys(environment) -> set:
    if isinstance(environment, dict):
        return set(environment)
    return {str(item).partition("=")[0] for item in environment or ()}


def _env_value(environment, key: str) -> str:
    if isinstance(environment, dict):
        return str(environment.get(key) or "")
    for item in environment or ():
        name, _, value = str(item).partition("=")
        if name == key:
            return value
    return ""


def _add_env(environment, env: dict):
    """`environment` (dict, list of KEY=value, or None) with `env` set in it, in the caller's shape."""
    if isinstance(environment, dict):
        merged = dict(environment)
        merged.update(env)
        return merged
    items = [item for item in environment or () if str(item).partition("=")[0] not in env]
    return items + ["%s=%s" % item for item in env.items()]


def _sdk_targets(kwargs: dict) -> set:
    targets = set()
    volumes = kwargs.get("volumes")
    if isinstance(volumes, dict):
        targets.update(v.get("bind", "") if isinstance(v, dict) else str(v) for v in volumes.values())
    elif volumes:
        targets.update(_mount_target("--volume", str(v)) for v in volumes)
    for mount in kwargs.get("mounts") or ():
        targets.add(mount.get("Target", "") if isinstance(mount, dict) else "")
    targets.discard("")
    return targets


def _add_volumes(volumes, mounts: list):
    if isinstance(volumes, dict):
        merged = dict(volumes)
        for host, target, read_only in mounts:
            merged.setdefault(host, {"bind": target, "mode": "ro" if read_only else "rw"})
        return merged
    return list(volumes or ()) + ["%s:%s:%s" % (h, t, "ro" if ro else "rw") for h, t, ro in mounts]
