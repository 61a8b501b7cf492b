"""Manual injection: what to add to a `docker run` or a compose service to trace its container.

The same environment and bind mounts that the agent adds by itself to a `docker run` in a traced
process (selfopt_trace_agent/hooks/docker_.py, whose pure functions this module reuses), for the
scripts, Dockerfiles and compose files of a program that does not run under `selfopt-trace run`.
"""

from __future__ import annotations

import os
import shlex
from dataclasses import dataclass
from pathlib import Path

from .bootstrap.selfopt_trace_agent import config as agent_config
from .bootstrap.selfopt_trace_agent.hooks import docker_
from .errors import SelfoptTraceError
from .paths import default_runs_dir

BOOTSTRAP_DIR = Path(__file__).resolve().parent / "bootstrap"
FORMATS = ("flags", "env-file", "compose")


class DockerEnvError(SelfoptTraceError):
    """The injection cannot be computed (an image the engine does not know, an unwritable run dir)."""


@dataclass(frozen=True)
class Injection:
    run_dir: Path
    env: dict[str, str]
    mounts: list[tuple[str, str, bool]]  # (host path, container path, read-only)


def injection(run_dir: Path | None = None, image: str = "", name: str = "", service: str = "",
              environ: dict[str, str] | None = None) -> Injection:
    """The environment and mounts for a container traced into `run_dir`.

    Default run dir: the current run when called inside a traced process ($SELFOPT_TRACE_DIR), else
    a new one under the default runs folder. `image` merges the image's own ENV PYTHONPATH (asked
    from the local engine) and names the image on the container's spans.
    """
    environ = dict(os.environ if environ is None else environ)
    if run_dir is None:
        current = environ.get(agent_config.ENV_DIR)
        run_dir = Path(current) if current else default_runs_dir() / _new_run_id()
    run_dir = run_dir.absolute()
    try:
        docker_.prepare_run_dir(str(run_dir))
    except OSError as exc:
        raise DockerEnvError(f"run directory {run_dir} is not writable: {exc.strerror or exc}") from exc
    settings = agent_config.Settings(
        run_dir=str(run_dir),
        run_id=environ.get(agent_config.ENV_RUN_ID) if environ.get(agent_config.ENV_DIR) == str(run_dir) else run_dir.name,
        service=service or environ.get(agent_config.ENV_SERVICE) or None,
        import_threshold_ns=1_000_000,
        bootstrap_dir=str(BOOTSTRAP_DIR),
    )
    pythonpath = ""
    if image:
        found = docker_.image_pythonpath("docker", [], image)
        if not isinstance(found, str):
            raise DockerEnvError(f"the Docker engine does not know the image {image!r} (build or pull it first)")
        pythonpath = found
    env = docker_.container_environ(settings, environ.get(agent_config.ENV_TRACEPARENT, ""), pythonpath, image, name)
    return Injection(run_dir, env, docker_.container_mounts(settings))


def _new_run_id() -> str:
    from .runner import new_run_id

    return new_run_id()


def render(inj: Injection, fmt: str) -> str:
    """The injection as `docker run` flags, an --env-file, or a compose service fragment."""
    if fmt == "flags":
        words = []
        for key, value in inj.env.items():
            words += ["-e", f"{key}={value}"]
        for host, target, read_only in inj.mounts:
            words += docker_.volume_flag(host, target, read_only)
        return shlex.join(words) + "\n"
    if fmt == "env-file":
        lines = [f"{key}={value}" for key, value in inj.env.items()]
        mounts = shlex.join(w for m in inj.mounts for w in docker_.volume_flag(*m))
        return f"# docker run --env-file THIS_FILE {mounts} IMAGE ...\n" + "\n".join(lines) + "\n"
    if fmt == "compose":
        lines = ["# add to the service in your compose file", "environment:"]
        lines += [f"  {key}: {_yaml_string(value)}" for key, value in inj.env.items()]
        lines.append("volumes:")
        for host, target, read_only in inj.mounts:
            lines += ["  - type: bind", f"    source: {_yaml_string(host)}", f"    target: {target}",
                      f"    read_only: {'true' if read_only else 'false'}"]
        return "\n".join(lines) + "\n"
    raise DockerEnvError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")


def _yaml_string(value: str) -> str:
    """A double-quoted YAML scalar (JSON's escaping is valid YAML); `$` doubled for compose interpolation."""
    import json

    return json.dumps(value).replace("$", "$$")
