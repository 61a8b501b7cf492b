"""`selfopt-trace run` without typer, for the common command lines.

The typer app and what it loads (typer, its click, rich) cost ~60 ms before CMD starts, the
whole budget (docs/benchmarks.md, "Command line"). `parse` reads the options in `FLAGS` and
`VALUES` the way click reads them and nothing else: any other option,
`--help`, a short-option cluster, no command, or a variable that sets one of `run`'s options
(SELFOPT_TRACE_OUT, ...) returns None, and typer parses the command line as always.
tests/cli/test_quick_run.py checks both give the same RunOptions.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from .. import runner
from ..paths import ENV_DB, db_path_from, working_directory
from ..bootstrap.selfopt_trace_agent import config as agent_config
from . import root_help

# `selfopt-trace`'s commands, for the summary's next commands (the typer group lists the same).
COMMANDS = tuple(name for name, _ in root_help.COMMANDS)
# Options read here: flag -> (field, value); option with a value -> field.
FLAGS = {"--quiet": ("quiet", True), "-q": ("quiet", True), "--no-load": ("no_load", True),
         "--replace": ("replace", True), "--cpu-sampling": ("cpu_sampling", True),
         "--no-cpu-sampling": ("cpu_sampling", False)}
VALUES = {"--run-id": "run_id", "--out": "out", "--db": "db", "--service": "service", "--export": "export",
          "--target": "targets", "-t": "targets", "--json": "json_target"}
# Variables that set an option of `run` (click reads them when the option is not given): typer's job.
OPTION_VARIABLES = (runner.ENV_OUT, ENV_DB, runner.ENV_QUIET, runner.ENV_JSON, runner.ENV_NO_LOAD,
                    runner.ENV_EXPORT, agent_config.ENV_SERVICE, agent_config.ENV_IMPORT_THRESHOLD_MS,
                    "SELFOPT_TRACE_PROFILE")


@dataclass
class QuickArgs:
    command: list[str]
    run_id: str | None = None
    out: str | None = None
    db: str | None = None
    service: str | None = None
    export: str = "auto"
    json_target: str | None = None
    targets: list[str] = field(default_factory=list)
    quiet: bool = False
    no_load: bool = False
    replace: bool = False
    cpu_sampling: bool = True


def normalize_json_option(args: list[str], value_options: set[str]) -> list[str]:
    """`--json` takes an optional FILE: rewrite it as `--json=-` (stdout) or `--json=FILE`.

    The word after `--json` is its FILE only when a `--` comes later (the command then follows it);
    without `--` that word is the command itself, so `run --json python x.py` means what it says.
    """
    out: list[str] = []
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--" or not arg.startswith("-"):
            return out + args[i:]  # the command starts here
        if arg == "--json":
            following = args[i + 1] if i + 1 < len(args) else None
            # "-" is a FILE too (stdout, as `--json=-`)
            if following is not None and (following == "-" or not following.startswith("-")) and "--" in args[i + 2:]:
                out.append(f"--json={following}")
                i += 2
            else:
                out.append("--json=-")
                i += 1
            continue
        out.append(arg)
        if arg in value_options and i + 1 < len(args):
            out.append(args[i + 1])
            i += 1
        i += 1
    return out


def parse(args: list[str], environ: dict[str, str] | os._Environ) -> QuickArgs | None:
    """`run`'s arguments (after the word `run`), or None when typer must read them."""
    if any(name in environ for name in OPTION_VARIABLES):
        return None
    args = normalize_json_option(list(args), {*VALUES, "--import-threshold-ms", "--cpu-rate", "--repeat",
                                              "--warmup", "--otlp-endpoint", "--otlp-protocol", "--rate",
                                              "--profile"})
    parsed = QuickArgs(command=[])
    i = 0
    while i < len(args):
        arg = args[i]
        if arg == "--":
            i += 1
            break
        if not arg.startswith("-") or arg == "-":
            break
        name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in FLAGS and not eq:
            setattr(parsed, *FLAGS[name])
        elif name in VALUES:
            if not eq:
                if i + 1 >= len(args):
                    return None
                i += 1
                value = args[i]
            if VALUES[name] == "targets":
                parsed.targets.append(value)
            else:
                setattr(parsed, VALUES[name], value)
        else:
            return None
        i += 1
    parsed.command = args[i:]
    return parsed if parsed.command else None


def run_options(command: list[str], run_id: str | None, out: Path | None, db: Path | None, service: str | None,
                quiet: bool, json_target: str | None, import_threshold_ms: float | None, repeat: int, warmup: int,
                no_load: bool, extra_env: dict[str, str] | None = None, targets: list[str] | None = None,
                cpu_sampling: bool = True, cpu_rate_hz: float | None = None,
                export: str = "auto", otlp_endpoint: str | None = None, otlp_protocol: str | None = None,
                replace: bool = False, profile=None) -> runner.RunOptions:
    """What `run` and `demo` were asked, with the defaults of the output directory and database."""
    return runner.RunOptions(
        command=command, run_id=run_id,
        out_dir=(out or runner.default_out_dir(os.environ)).absolute(),
        db_path=(db or db_path_from(os.environ)).absolute(),
        service=service,
        quiet=quiet, json_target=json_target, import_threshold_ms=import_threshold_ms,
        repeat=repeat, warmup=warmup, load=not no_load, extra_env=extra_env or {}, targets=targets or [],
        cpu_sampling=cpu_sampling, cpu_rate_hz=cpu_rate_hz,
        export=export, otlp_endpoint=otlp_endpoint, otlp_protocol=otlp_protocol, replace=replace, profile=profile,
    )


def options_of(parsed: QuickArgs) -> runner.RunOptions:
    """The RunOptions the typer command makes of the same command line."""
    targets = runner.pyproject_targets(working_directory()) + parsed.targets
    return run_options(parsed.command, parsed.run_id, Path(parsed.out) if parsed.out is not None else None,
                       Path(parsed.db) if parsed.db is not None else None, parsed.service, parsed.quiet,
                       parsed.json_target, None, 1, 0, parsed.no_load, targets=targets,
                       cpu_sampling=parsed.cpu_sampling, export=parsed.export, replace=parsed.replace)


def run(args: list[str]) -> int | None:
    """`selfopt-trace run ARGS` as the typer command runs it; None when typer must parse ARGS."""
    parsed = parse(args, os.environ)
    if parsed is None:
        return None
    from ..errors import SelfoptTraceError

    try:
        try:
            return runner.run(options_of(parsed), available_commands=COMMANDS)
        except runner.CommandNotRunnable as exc:
            print(f"selfopt-trace: {exc}", file=sys.stderr, flush=True)
            return exc.exit_code
    except SelfoptTraceError as exc:
        print(f"selfopt-trace: error: {exc}", file=sys.stderr)
        return 2
    except (EOFError, KeyboardInterrupt):  # as click reports them
        print("\nAborted!", file=sys.stderr)
        return 1


def exit_without_teardown(code: int) -> NoReturn:
    """Exit with `code` as the interpreter's exit would, less freeing every module and object
    (rich's, DuckDB's: ~37 M instructions after each `run`): the atexit callbacks run and
    the output is flushed, then the process ends. A thread that is not a daemon, which the
    interpreter would wait for: the interpreter's own exit. Output that cannot be flushed (stdout
    a pipe nobody reads any more, a full disk) is dropped: the status is `code` all the same."""
    import atexit
    import threading

    runner.flush_output()
    if any(not thread.daemon and thread is not threading.main_thread() for thread in threading.enumerate()):
        sys.exit(code)
    atexit._run_exitfuncs()
    runner.flush_output()
    os._exit(code)
