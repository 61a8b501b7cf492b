"""`selfopt-trace run -- CMD` and `selfopt-trace demo`: thin shells over selfopt_trace.runner."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import List, Optional

import typer
from typer.core import TyperCommand

from .. import runner
from ..paths import ENV_DB, working_directory
from ..bootstrap.selfopt_trace_agent import config as agent_config
from ..watchers.cpu_sampler import DEFAULT_RATE_HZ, YOUNG_RATE_HZ
from ..watchers.profiler import DEFAULT_RATE_HZ as PROFILE_RATE_HZ
from ..watchers.profiler import ENV_NONBLOCKING, ENV_SPAWN, NONBLOCKING_DEFAULT, ProfileSettings
from .commands import ALL_COMMANDS, app
from .quick_run import normalize_json_option, run_options

_SETTINGS = "Where things go"
_TRACING = "Tracing"
_OUTPUT = "Output"
_REPEAT = "Repeat (before/after comparisons)"
_EXPORT = "Live export (OTLP)"
_PROFILE = "Profiling (py-spy)"


def normalize_profile_option(args: list[str]) -> list[str]:
    """`--profile` alone means `--profile=on` (it never takes the next word: that is CMD's)."""
    end = args.index("--") if "--" in args else len(args)
    return [("--profile=on" if arg == "--profile" and i < end else arg) for i, arg in enumerate(args)]


class RunCommand(TyperCommand):
    """`run`'s parser: options stop at the first word that is not one (the command), and `--json`
    and `--profile` take an optional value (see normalize_json_option, normalize_profile_option)."""

    def parse_args(self, ctx, args: list[str]) -> list[str]:  # type: ignore[no-untyped-def]
        value_options = {opt for param in self.params if getattr(param, "opts", None)
                         and not getattr(param, "is_flag", False) and not getattr(param, "count", False)
                         for opt in param.opts}
        args = normalize_json_option(list(args), value_options)
        return super().parse_args(ctx, normalize_profile_option(args))


def _execute(options: runner.RunOptions) -> None:
    try:
        code = runner.run(options, available_commands=ALL_COMMANDS)
    except runner.CommandNotRunnable as exc:
        print(f"selfopt-trace: {exc}", file=sys.stderr, flush=True)
        code = exc.exit_code
    raise typer.Exit(code)


# Options shared by `run` and `demo`.
OUT = typer.Option(None, "--out", envvar=runner.ENV_OUT, rich_help_panel=_SETTINGS, show_default=False,
                   help="Parent of the run directory (span files, run.json). (default: $SELFOPT_TRACE_HOME/runs, else ./.selfopt-trace/runs)")
DB = typer.Option(None, "--db", envvar=ENV_DB, rich_help_panel=_SETTINGS, show_default=False,
                  help="DuckDB trace database to load the run into. (default: $SELFOPT_TRACE_HOME/traces.duckdb, else ./.selfopt-trace/traces.duckdb)")
QUIET = typer.Option(False, "--quiet", "-q", envvar=runner.ENV_QUIET, rich_help_panel=_OUTPUT,
                     help="No summary on stderr.")
JSON = typer.Option(None, "--json", envvar=runner.ENV_JSON, metavar="[FILE]", rich_help_panel=_OUTPUT, show_default=False,
                    help="Also give the summary as JSON: on stdout after CMD's own output, or in FILE "
                         "(write `--json FILE -- CMD`, or `--json=FILE`).")
RUN_ID = typer.Option(None, "--run-id", rich_help_panel=_SETTINGS, show_default=False,
                      help="Run id (letters, digits, . _ -). (default: UTC time + random, sortable)")
EXPORT = typer.Option("auto", "--export", envvar=runner.ENV_EXPORT, metavar="auto|always|never", rich_help_panel=_EXPORT,
                      help="Send the spans to an OTLP collector while CMD runs: when one answers at the "
                           "endpoint (auto), always, or never.")


@app.command(
    cls=RunCommand,
    context_settings={"allow_interspersed_args": False},
    epilog="Everything after `--` (or from the first word that is not an option) is the command, run "
           "exactly as the shell would. Settings also come from SELFOPT_TRACE_* variables: see docs/cli.md.",
)
def run(
    command: Optional[List[str]] = typer.Argument(None, metavar="CMD ARGS", show_default=False,
                                                  help="The command to run, traced."),
    run_id: Optional[str] = RUN_ID,
    replace: bool = typer.Option(False, "--replace", rich_help_panel=_SETTINGS,
                                 help="Replace a stored run of the same --run-id (without it, `run` stops before CMD)."),
    out: Optional[Path] = OUT,
    db: Optional[Path] = DB,
    service: Optional[str] = typer.Option(None, "--service", envvar=agent_config.ENV_SERVICE, rich_help_panel=_TRACING,
                                          show_default=False,
                                          help="service.name of every process. (default: $OTEL_SERVICE_NAME, else the program's name)"),
    import_threshold_ms: Optional[float] = typer.Option(None, "--import-threshold-ms", envvar=agent_config.ENV_IMPORT_THRESHOLD_MS,
                                                        rich_help_panel=_TRACING, show_default=False,
                                                        help="Imports faster than this (cumulative) are not spans. (default: 1)"),
    target: Optional[List[str]] = typer.Option(None, "--target", "-t", metavar="MODULE:QUALNAME", rich_help_panel=_TRACING,
                                               show_default=False,
                                               help="Also make every call of this function (of a module the program imports, not the script's __main__) a span (repeatable); "
                                                    "adds to `targets` of \\[tool.selfopt-trace] in pyproject.toml."),
    cpu_sampling: bool = typer.Option(True, "--cpu-sampling/--no-cpu-sampling", rich_help_panel=_TRACING,
                                      help="Sample every traced thread's CPU time from /proc (table cpu_samples)."),
    cpu_rate: Optional[float] = typer.Option(None, "--cpu-rate", metavar="HZ", min=1, max=1000, rich_help_panel=_TRACING,
                                             show_default=False,
                                             help=f"CPU samples per second of a thread past its first second, 1-1000; a younger thread is read at "
                                                  f"max({YOUNG_RATE_HZ:g}, HZ). (default: {DEFAULT_RATE_HZ:g})"),
    quiet: bool = QUIET,
    json_target: Optional[str] = JSON,
    no_load: bool = typer.Option(False, "--no-load", envvar=runner.ENV_NO_LOAD, rich_help_panel=_OUTPUT,
                                 help="Keep the span files only: do not load them into the database."),
    repeat: int = typer.Option(1, "--repeat", rich_help_panel=_REPEAT,
                               help="Run CMD N times as one group of runs (they share a group id)."),
    warmup: int = typer.Option(0, "--warmup", rich_help_panel=_REPEAT,
                               help="Untimed runs before the N measured ones (traced, then discarded)."),
    export: str = EXPORT,
    otlp_endpoint: Optional[str] = typer.Option(None, "--otlp-endpoint", metavar="URL", rich_help_panel=_EXPORT,
                                                show_default=False,
                                                help="The collector. (default: $OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, "
                                                     "$OTEL_EXPORTER_OTLP_ENDPOINT, else localhost:4318, gRPC 4317)"),
    otlp_protocol: Optional[str] = typer.Option(None, "--otlp-protocol", metavar="grpc|http/protobuf",
                                                rich_help_panel=_EXPORT, show_default=False,
                                                help="OTLP protocol. (default: $OTEL_EXPORTER_OTLP_PROTOCOL, else http/protobuf)"),
    profile: str = typer.Option("off", "--profile", envvar="SELFOPT_TRACE_PROFILE", metavar="[=auto]",
                                rich_help_panel=_PROFILE, show_default=False,
                                help="Sample every traced process with py-spy (table samples, `selfopt-trace flame`). "
                                     "--profile=auto: trace without samples, and say so, where py-spy cannot run."),
    rate: int = typer.Option(PROFILE_RATE_HZ, "--rate", metavar="HZ", min=1, max=10000, rich_help_panel=_PROFILE,
                             help="py-spy samples per second."),
    native: bool = typer.Option(False, "--native", rich_help_panel=_PROFILE,
                                help="Also C, C++ and Cython frames (py-spy --native; it pauses each process "
                                     "to read them: see docs/profiling.md, \"Blocking\")."),
    idle: bool = typer.Option(False, "--idle", rich_help_panel=_PROFILE,
                              help="Keep the samples of idle threads too (flagged `idle`)."),
) -> None:
    """Run CMD with every Python process of its tree traced into one trace; print where the time went."""
    targets = runner.pyproject_targets(working_directory()) + list(target or [])
    _execute(run_options(command or [], run_id, out, db, service, quiet, json_target, import_threshold_ms,
                         repeat, warmup, no_load, targets=targets, cpu_sampling=cpu_sampling, cpu_rate_hz=cpu_rate,
                         export=export, otlp_endpoint=otlp_endpoint, otlp_protocol=otlp_protocol,
                         replace=replace, profile=_profile_settings(profile, rate, native, idle)))


def _profile_settings(profile: str, rate: int, native: bool, idle: bool) -> ProfileSettings | None:
    mode = profile.strip().lower()
    if mode in ("off", "never", "false", "0", "no", ""):
        return None
    if mode in ("1", "true", "yes"):
        mode = "on"
    if mode not in ("on", "auto"):
        raise typer.BadParameter(f"{profile!r}: write --profile or --profile=auto", param_hint="--profile")
    nonblocking = os.environ.get(ENV_NONBLOCKING, "").strip().lower()
    return ProfileSettings(mode=mode, rate_hz=rate, native=native, idle=idle,
                           # py-spy reads native stacks only from a paused process
                           nonblocking=nonblocking in ("1", "true", "yes", "on") if nonblocking
                           else NONBLOCKING_DEFAULT and not native,
                           spawn=os.environ.get(ENV_SPAWN, "each"))


@app.command()
def demo(
    out: Optional[Path] = OUT,
    db: Optional[Path] = DB,
    quiet: bool = QUIET,
    json_target: Optional[str] = typer.Option(None, "--json", envvar=runner.ENV_JSON, metavar="FILE", show_default=False,
                                              help="Also write the summary as JSON to FILE (`-` for stdout)."),
    export: str = EXPORT,  # as `run` (SELFOPT_TRACE_EXPORT too): the live export is the same
) -> None:
    """Trace the bundled multi-process demo workload and show where its time goes.

    Same as `selfopt-trace run -- python -m selfopt_trace.demo.workload`.
    """
    # The workload's processes import selfopt_trace.demo: when this copy of the package is not
    # installed (a source checkout), point them at it.
    import site

    package_root = str(Path(__file__).resolve().parents[2])
    pythonpath = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    installed = {str(Path(p).resolve()) for p in site.getsitepackages()}
    extra_env = ({} if package_root in pythonpath or package_root in installed
                 else {"PYTHONPATH": os.pathsep.join(pythonpath + [package_root])})
    command = [sys.executable, "-m", "selfopt_trace.demo.workload"]
    _execute(run_options(command, None, out, db, None, quiet, json_target, None, 1, 0, False, extra_env,
                         export=export))

