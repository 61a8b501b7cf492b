"""queries/docker.sql on a real run: the parts of each container's start-up add up to its docker command."""

from __future__ import annotations

import json

from selfopt_trace.queries import run_query
from selfopt_trace.store import Store
from tests.docker.conftest import run_args, traced_python


def test_docker_breakdown_figures(traced, image, no_python_image, tmp_path):
    (tmp_path / "data").mkdir()
    code = "import json, email.parser; print('ok')"
    runs = [
        run_args(image, "python3", "-c", code, flags=("--name", f"plain-{id(tmp_path)}")),
        run_args(image, "python3", "-c", code, flags=("-v", f"{tmp_path / 'data'}:/data", "--name", f"mounted-{id(tmp_path)}")),
        run_args(no_python_image, "true"),
    ]
    script = "import subprocess\n" + "".join(f"subprocess.run({argv!r}, check=True)\n" for argv in runs)
    completed = traced_python(traced, script)
    assert completed.returncode == 0 and completed.stderr == "" and completed.stdout == "ok\nok\n"

    with Store(tmp_path / "traces.duckdb") as store:
        run_id = store.load_run(traced.run_dir).run_id
        result = run_query(store, "docker", {"run_id": run_id}).records()
        _, docker_calls = store.sql("SELECT span_id, duration_ns FROM spans WHERE run_id = ? AND category = 'subprocess' "
                                    "AND attributes->>'process.executable.name' = 'docker' ORDER BY start_ns", [run_id])

    containers = [r for r in result if r["row"] == "container"]
    assert [r["container"].split("-")[0] for r in containers[:2]] == ["plain", "mounted"]
    assert [r["user_mounts"] for r in containers] == [0, 1, 0]
    assert [r["traced"] for r in containers] == [True, True, False]
    for row, (_, duration_ns) in zip(containers, docker_calls):
        assert abs(row["total_ms"] - duration_ns / 1e6) < 0.002
    for row in containers[:2]:
        assert row["image"] == image and row["subcommand"] == "run" and row["detached"] is False
        assert all(row[k] > 0 for k in ("engine_startup_ms", "interpreter_ms", "imports_ms", "work_ms", "teardown_ms")), row
        parts = sum(row[k] for k in ("engine_startup_ms", "interpreter_ms", "imports_ms", "work_ms", "teardown_ms"))
        assert abs(parts - row["total_ms"]) < 0.01
    untraced_row = containers[2]
    assert untraced_row["engine_startup_ms"] is None and untraced_row["interpreter_ms"] is None and untraced_row["total_ms"] > 0

    groups = {r["row"]: r for r in result if "bind mounts" in r["row"]}
    assert set(groups) == {"with bind mounts", "without bind mounts"}
    assert groups["with bind mounts"]["engine_startup_ms"] == containers[1]["engine_startup_ms"]
    assert groups["without bind mounts"]["engine_startup_ms"] == containers[0]["engine_startup_ms"]
    total = result[-1]
    assert total["row"] == "total" and total["containers"] == 3 and total["traced"] is False
    assert abs(total["total_ms"] - sum(r["total_ms"] for r in containers)) < 0.01


def test_the_summary_says_what_container_start_up_took(image, tmp_path):
    """Four `docker run`s of a trivial Python, two with a bind mount of their own: container start-up is
    most of the wall time, and the summary's note gives a container's medians and the mounts' split."""
    import json
    import sys

    from tests.cli.conftest import Cli

    (tmp_path / "data").mkdir()
    runs = [run_args(image, "python3", "-c", "pass", flags=flags)
            for flags in ((), (), ("-v", f"{tmp_path / 'data'}:/data"), ("-v", f"{tmp_path / 'data'}:/data"))]
    script = "import subprocess\n" + "".join(f"subprocess.run({argv!r}, check=True)\n" for argv in runs)
    done = Cli(tmp_path)("run", "--export", "never", "--json", "--", sys.executable, "-c", script)
    assert done.returncode == 0, done.stderr
    (note,) = [note for note in json.loads(done.stdout)["notes"] if note.startswith("container start-up is")]
    assert ": 4 containers traced, a median of " in note and " from `docker` to its first process " in note, note
    assert "; to its first process with bind mounts of its own " in note and " (medians)" in note, note
    assert "`selfopt-trace query docker --run " in note, note


def test_a_docker_cmd_s_container_runs_to_cmd_s_exit(image, tmp_path):
    """`run -- docker run ...`: the shim execs docker, which ends its client span (the exec) as docker
    starts; the docker command returns when `run` saw CMD exit. The container's teardown runs to there
    (it was negative: -113 ms, to the exec's end) and its parts add up to that command; the breakdown's
    container start-up is the engine's part of it."""
    from tests.cli.conftest import Cli

    cli = Cli(tmp_path)
    done = cli("run", "--export", "never", "--json", "--", *run_args(image, "python3", "-c", "raise SystemExit(3)"))
    assert done.returncode == 3, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    with Store(cli.db, read_only=True) as store:
        [row, _total] = run_query(store, "docker", {"run_id": run_id}).records()
        [(exec_start, exec_ns, cmd_exit)] = store.sql(
            "SELECT s.start_ns, s.duration_ns, r.end_ns FROM spans s JOIN runs r USING (run_id)"
            " WHERE s.run_id = ? AND s.name = 'exec'", [run_id])[1]
        [(first_exit, tail_ns)] = store.sql(
            "SELECT p.attributes->>'process.exit.code', f.end_ns - p.end_ns FROM spans p JOIN spans f"
            " ON f.parent_span_id = p.span_id AND f.category = 'finalize' WHERE p.run_id = ? AND p.pid = 1"
            " AND p.name = 'process'", [run_id])[1]
        breakdown = {r["category"]: r["wall_ms"] for r in run_query(store, "breakdown", {"run_id": run_id}).records()}
    assert row["traced"] and row["teardown_ms"] > 0, row
    assert abs(row["total_ms"] - (cmd_exit - exec_start) / 1e6) < 0.002, row
    parts = sum(row[k] for k in ("engine_startup_ms", "interpreter_ms", "imports_ms", "work_ms", "teardown_ms"))
    assert abs(parts - row["total_ms"]) < 0.01, row
    assert first_exit == "3"  # the container's Python: no traced process waited for it, its C twin saw its exit
    # the breakdown: the engine's start and stop of the container (outside traced processes before), and
    # the container's Python's own teardown to its exit
    assert breakdown["outside traced processes"] == 0, breakdown
    engine_ms = row["engine_startup_ms"] + row["teardown_ms"] - tail_ns / 1e6  # from the exec, to CMD's exit
    # (the exec itself: the injection, its imports aside)
    assert engine_ms - exec_ns / 1e6 - 0.01 <= breakdown["container start-up"] <= engine_ms + 0.01, (breakdown, row)
    assert abs(breakdown["interpreter teardown"] - tail_ns / 1e6) < 0.01, breakdown


def test_a_container_s_process_is_not_sampled_as_the_host_s_process_of_its_pid(image, tmp_path):
    """A container's first process writes pid 1 (its namespace's) in its span file: the CPU sampler read
    the host's pid 1 (init, idle) for it, and the breakdown made a container spinning 300 ms of CPU
    mostly untraced waits. Not sampled now, its work is its own on the CPU."""
    from tests.cli.conftest import Cli

    spin = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3:\n    pass\n"
    cli = Cli(tmp_path)
    done = cli("run", "--export", "never", "--json", "--", *run_args(image, "python3", "-c", spin))
    assert done.returncode == 0, done.stderr
    run_id = json.loads(done.stdout)["run_id"]
    with Store(cli.db, read_only=True) as store:
        assert store.sql("SELECT count(*) FROM cpu_samples WHERE run_id = ? AND pid = 1", [run_id])[1] == [(0,)]
        breakdown = {r["category"]: r["wall_ms"] for r in run_query(store, "breakdown", {"run_id": run_id}).records()}
    assert breakdown["own work"] + breakdown["child processes' own work"] >= 280, breakdown
    assert breakdown["untraced waits"] < 20, breakdown
