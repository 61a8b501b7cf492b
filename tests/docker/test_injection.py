"""`docker run/create/exec` in a traced process: the container's processes join the host's trace."""

from __future__ import annotations

import json
import os
import stat

import pytest

from tests.docker.conftest import docker, host_program, result_of, run_args, traced_python, untraced
from tests.spanfiles import RunSpans, SpanRecord

PRINT_ENV = "import json, os; print(json.dumps({k: v for k, v in os.environ.items() if k.startswith(('SELFOPT', 'PYTHONPATH', 'TRACEPARENT', 'MINE'))}))"


def docker_span(spans: RunSpans) -> SpanRecord:
    found = [s for s in spans.spans if s.category == "subprocess"
             and s.attributes.get("process.executable.name") == "docker"]
    assert len(found) == 1, found
    return found[0]


def resource_of(spans_dir, span: SpanRecord) -> dict:
    """The resource in the header of the span's own file (every container's first process is pid 1)."""
    header = (spans_dir / "spans" / span.file).read_text().split("\n", 1)[0]
    return json.loads(header.split("\t")[10])["resource"]


def container_firsts(spans: RunSpans) -> list[SpanRecord]:
    return [p for p in spans.processes() if p.attributes.get("process.pid") == 1]


def test_container_process_joins_the_host_trace_under_the_docker_run_span(traced, image):
    argv = run_args(image, "python3", "-c", "import json; print('in container')")
    completed = traced_python(traced, host_program(argv))
    assert result_of(completed) == (0, "in container\n", "")

    spans = traced.spans()
    run = docker_span(spans)
    assert run.kind == "CLIENT"
    inside = container_firsts(spans)
    assert len(inside) == 1, [p.attributes.get("process.command_args") for p in spans.processes()]
    first = inside[0]
    assert first.parent_span_id == run.span_id and first.trace_id == run.trace_id
    assert spans.trace_ids() == {run.trace_id}
    resource = resource_of(traced.run_dir, first)
    assert len(resource["container.id"]) == 64
    assert resource["container.image.name"] + ":" + resource["container.image.tags"][0] == image or \
        resource["container.image.name"] == image
    assert resource["container.runtime"] == "docker"
    # Same kernel clock: the container's process lives inside the host's docker span.
    assert run.start_ns <= first.start_ns <= first.end_ns <= run.end_ns
    children = spans.children(first)
    assert [c.name for c in children if c.category == "startup"] == ["interpreter.startup"]
    assert any(c.name == "import json" for c in spans.spans if c.file == first.file)
    inject = [c for c in spans.children(run) if c.name == "container.inject"]
    assert len(inject) == 1 and inject[0].attributes["selfopt_trace.docker.subcommand"] == "run"


def test_container_sees_merged_pythonpath_and_no_duplicated_flags(traced, app_image, tmp_path):
    env_file = tmp_path / "env.list"
    env_file.write_text("MINE_FROM_FILE=1\nMINE_BARE\n")
    code = PRINT_ENV + "; import appmod; print(appmod.VALUE)"
    cases = {
        "image": ([], "/selfopt-trace/bootstrap:/opt/app"),
        "user -e": (["-e", "PYTHONPATH=/opt/app:/user"], "/selfopt-trace/bootstrap:/opt/app:/user"),
        "grouped -ie": (["-ie", "PYTHONPATH=/opt/app:/grouped"], "/selfopt-trace/bootstrap:/opt/app:/grouped"),
        "env-file": (["--env-file", str(env_file)], "/selfopt-trace/bootstrap:/opt/app"),
    }
    for label, (flags, expected) in cases.items():
        argv = run_args(app_image, "python3", "-c", code, flags=tuple(flags))
        completed = traced_python(traced, host_program(argv), extra_env={"MINE_BARE": "bare"})
        code_, out, err = result_of(completed)
        assert (code_, err) == (0, ""), (label, err)
        env_line, value = out.splitlines()
        env = json.loads(env_line)
        assert env["PYTHONPATH"] == expected, label
        assert value == "from-image-pythonpath", label
        assert env["SELFOPT_TRACE_DIR"] == "/selfopt-trace/run"
        if label == "env-file":
            assert env["MINE_FROM_FILE"] == "1" and env["MINE_BARE"] == "bare"


def test_user_values_win_and_bare_keys_get_container_values(traced, image):
    explicit = "00-0123456789abcdef0123456789abcdef-0123456789abcdef-01"
    argv = run_args(image, "python3", "-c", PRINT_ENV,
                    flags=("-e", f"TRACEPARENT={explicit}", "-e", "SELFOPT_TRACE_DIR", "--name", "selfopt-named"))
    code, out, err = result_of(traced_python(traced, host_program(argv)))
    assert (code, err) == (0, "")
    env = json.loads(out)
    assert env["TRACEPARENT"].split("-")[1] == explicit.split("-")[1]  # the user's own trace is kept
    assert env["SELFOPT_TRACE_DIR"] == "/selfopt-trace/run"  # a bare key gets the container's value
    assert env["SELFOPT_TRACE_CONTAINER_NAME"] == "selfopt-named"
    spans = traced.spans()
    inside = container_firsts(spans)
    assert inside and inside[0].trace_id == explicit.split("-")[1] and inside[0].parent_span_id == explicit.split("-")[2]
    assert resource_of(traced.run_dir, inside[0])["container.name"] == "selfopt-named"


def test_entrypoint_detached_and_exec(traced, image):
    name = f"selfopt-detached-{os.getpid()}"
    script = host_program(["true"]) + f"""
import subprocess
subprocess.run(['docker', 'run', '-d', '--network', 'host', '--name', {name!r}, '--entrypoint', 'python3',
                {image!r}, '-c', 'import time; time.sleep(1.5); print("slept")'], check=True, capture_output=True)
out = subprocess.run(['docker', 'exec', {name!r}, 'python3', '-c', 'import os; print(os.environ["TRACEPARENT"])'],
                     check=True, capture_output=True, text=True).stdout
print(out.strip())
subprocess.run(['docker', 'wait', {name!r}], check=True, capture_output=True)
print(subprocess.run(['docker', 'logs', {name!r}], capture_output=True, text=True).stdout.strip())
subprocess.run(['docker', 'rm', {name!r}], check=True, capture_output=True)
"""
    completed = traced_python(traced, script)
    assert completed.returncode == 0 and completed.stderr == ""
    lines = completed.stdout.splitlines()
    assert lines[-1] == "slept"
    spans = traced.spans()
    runs = [s for s in spans.spans if s.category == "subprocess" and s.attributes.get("process.command_args", [""])[1:2] == ["run"]]
    execs = [s for s in spans.spans if s.category == "subprocess" and s.attributes.get("process.command_args", [""])[1:2] == ["exec"]]
    assert len(runs) == 1 and len(execs) == 1
    main = [p for p in spans.processes() if p.parent_span_id == runs[0].span_id]
    assert len(main) == 1 and not main[0].incomplete
    assert main[0].end_ns > runs[0].end_ns  # detached: the container outlived `docker run -d`
    exec_process = [p for p in spans.processes() if p.parent_span_id == execs[0].span_id]
    assert len(exec_process) == 1
    assert lines[-2].split("-")[2] == exec_process[0].span_id  # the agent's own TRACEPARENT for its children
    assert resource_of(traced.run_dir, exec_process[0])["container.id"] == resource_of(traced.run_dir, main[0])["container.id"]


def test_non_root_user_writes_spans_the_host_can_read(traced, image):
    argv = run_args(image, "python3", "-c", "import os; print(os.getuid())", flags=("--user", "12345:12345"))
    assert result_of(traced_python(traced, host_program(argv))) == (0, "12345\n", "")
    spans_dir = traced.run_dir / "spans"
    assert stat.S_IMODE(spans_dir.stat().st_mode) == 0o777
    theirs = [p for p in spans_dir.iterdir() if p.stat().st_uid == 12345]
    assert len(theirs) == 1 and stat.S_IMODE(theirs[0].stat().st_mode) & 0o044 == 0o044
    spans = traced.spans()
    assert any(p.parent_span_id == docker_span(spans).span_id for p in spans.processes())


def test_non_python_image_runs_exactly_as_untraced(traced, no_python_image):
    argv = run_args(no_python_image, "sh", "-c", "echo out; echo err >&2; exit 3")
    traced_result = result_of(traced_python(traced, host_program(argv)))
    assert traced_result == result_of(untraced(host_program(argv))) == (3, "out\n", "err\n")
    spans = traced.spans()
    assert len(spans.processes()) == 1 and spans.diagnostics == []  # the host process only


def test_killed_container_keeps_its_finished_spans(traced, image):
    name = f"selfopt-killed-{os.getpid()}"
    code = "import json, time; print('ready', flush=True); time.sleep(60)"
    script = f"""
import subprocess, time
p = subprocess.Popen(['docker', 'run', '--rm', '--network', 'host', '--name', {name!r}, {image!r}, 'python3', '-c', {code!r}],
                     stdout=subprocess.PIPE, text=True)
assert p.stdout.readline() == 'ready\\n'
time.sleep(0.5)  # past the agent's 100 ms flush interval
subprocess.run(['docker', 'kill', {name!r}], check=True, capture_output=True)
print(p.wait())
"""
    completed = traced_python(traced, script)
    assert completed.returncode == 0 and completed.stderr == ""
    assert completed.stdout.strip() == "137"
    spans = traced.spans()
    inside = container_firsts(spans)
    assert len(inside) == 1 and inside[0].incomplete
    assert any(s.name == "import json" and s.file == inside[0].file for s in spans.spans)


def test_docker_sdk_run_create_and_exec_run(traced, image):
    script = f"""
import docker
client = docker.from_env()
out = client.containers.run({image!r}, ['python3', '-c', 'print("sdk")'], network_mode='host', remove=True)
print(out.decode().strip())
c = client.containers.run({image!r}, ['python3', '-c', 'import time; time.sleep(30)'], network_mode='host',
                          detach=True, environment={{'MINE': '1'}})
code, out = c.exec_run(['python3', '-c', 'import os; print(os.environ["MINE"], os.environ["PYTHONPATH"])'])
print(code, out.decode().strip())
c.kill(); c.remove()
"""
    completed = traced_python(traced, script)
    assert completed.stderr == "" and completed.returncode == 0
    assert completed.stdout.splitlines() == ["sdk", "0 1 /selfopt-trace/bootstrap"]
    spans = traced.spans()
    sdk_runs = [s for s in spans.spans if s.name == "docker run" and s.category == "container"]
    execs = [s for s in spans.spans if s.name == "docker exec"]
    assert len(sdk_runs) == 2 and len(execs) == 1
    assert all(s.kind == "CLIENT" for s in sdk_runs + execs)
    assert not [s for s in spans.spans if s.name == "docker create"]  # run() calls create() inside its span
    first = [p for p in spans.processes() if p.parent_span_id == sdk_runs[0].span_id]
    assert len(first) == 1 and sdk_runs[0].start_ns <= first[0].start_ns <= first[0].end_ns <= sdk_runs[0].end_ns
    assert len([p for p in spans.processes() if p.parent_span_id == execs[0].span_id]) == 1


@pytest.mark.parametrize("how", ["env", "label"])
def test_opt_out(traced, image, how):
    flags = ("--label", "selfopt-trace=off") if how == "label" else ()
    argv = run_args(image, "python3", "-c", PRINT_ENV, flags=flags)
    extra = {"SELFOPT_TRACE_DOCKER": "0"} if how == "env" else {}
    code, out, err = result_of(traced_python(traced, host_program(argv), extra_env=extra))
    assert (code, err) == (0, "")
    assert "SELFOPT_TRACE_DIR" not in json.loads(out)
    assert container_firsts(traced.spans()) == []


# ---------------------------------------------------------------- bad input

def test_docker_missing_leaves_the_programs_error_unchanged(traced, tmp_path):
    code = "import subprocess\ntry:\n    subprocess.run(['docker', 'run', 'img', 'true'])\nexcept OSError as e:\n    print(type(e).__name__, e.errno, e.filename)"
    completed = traced_python(traced, code, extra_env={"PATH": str(tmp_path)})
    plain = untraced(code, PATH=str(tmp_path))
    assert completed.returncode == 0 and completed.stderr == ""
    assert completed.stdout == plain.stdout == "FileNotFoundError 2 docker\n"
    assert [d["code"] for d in traced.spans().diagnostics] == ["docker.cli_missing"]


def test_unreachable_engine_same_error_and_a_diagnostic(traced, image):
    argv = run_args(image, "true")
    env = {"DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    code = host_program(argv)
    traced_result = result_of(traced_python(traced, code, extra_env=env))
    plain = untraced(code, **env)
    assert traced_result == tuple(json.loads(plain.stdout))
    assert traced_result[0] != 0
    assert [d["code"] for d in traced.spans().diagnostics] == ["docker.image_unknown"]


def test_read_only_run_dir_in_container_no_crash_and_a_diagnostic(traced, image, tmp_path):
    (tmp_path / "ro").mkdir()
    argv = run_args(image, "python3", "-c", "print('fine')", flags=("-v", f"{tmp_path / 'ro'}:/selfopt-trace/run:ro"))
    assert result_of(traced_python(traced, host_program(argv))) == (0, "fine\n", "")
    assert list((tmp_path / "ro").iterdir()) == []
    assert [d["code"] for d in traced.spans().diagnostics] == ["docker.run_dir_read_only"]


def test_run_dir_not_mounted_in_container_no_crash_and_a_diagnostic(traced, image):
    argv = run_args(image, "python3", "-c", "print('fine')", flags=("--read-only", "-e", "SELFOPT_TRACE_DIR=/nowhere/run"))
    assert result_of(traced_python(traced, host_program(argv))) == (0, "fine\n", "")
    assert [d["code"] for d in traced.spans().diagnostics] == ["docker.run_dir_not_mounted"]
    assert container_firsts(traced.spans()) == []


@pytest.mark.skipif(not os.environ.get("SELFOPT_TRACE_TEST_OLD_PYTHON_IMAGE"),
                    reason="needs an image whose python3 is older than 3.8 (SELFOPT_TRACE_TEST_OLD_PYTHON_IMAGE); "
                           "none can be pulled or built from this machine's Debian 12 packages")
def test_old_python_image_untraced_and_unchanged(traced):
    old = os.environ["SELFOPT_TRACE_TEST_OLD_PYTHON_IMAGE"]
    argv = run_args(old, "python3", "-c", "import sys; print(sys.version_info[:2] < (3, 8))")
    assert result_of(traced_python(traced, host_program(argv))) == result_of(untraced(host_program(argv))) == (0, "True\n", "")
    assert container_firsts(traced.spans()) == []


def test_manual_injection_with_docker_env_flags(tmp_path, image):
    import shlex
    import subprocess
    import sys

    run_dir = tmp_path / "manual"
    flags = subprocess.run([sys.executable, "-m", "selfopt_trace", "docker-env", "--run-dir", str(run_dir),
                            "--image", image, "--name", "manual"], capture_output=True, text=True, check=True).stdout
    out = docker("run", "--rm", "--network", "host", *shlex.split(flags), image, "python3", "-c", "print('manual')")
    assert (out.stdout, out.stderr) == ("manual\n", "")
    from tests.spanfiles import read_run

    spans = read_run(run_dir)
    assert [p.attributes["process.pid"] for p in spans.processes()] == [1]
    assert spans.headers[0]["resource"]["container.name"] == "manual"


def test_testcontainers_container_joins_through_the_sdk(traced, image):
    script = f"""
from testcontainers.core.container import DockerContainer
with DockerContainer({image!r}, command=['python3', '-c', 'import time; time.sleep(30)'], network_mode='host') as c:
    code, out = c.get_wrapped_container().exec_run(['python3', '-c', 'print("exec")'])
    print(code, out.decode().strip())
"""
    completed = traced_python(traced, script, extra_env={"TESTCONTAINERS_RYUK_DISABLED": "true"})
    assert completed.returncode == 0 and completed.stderr == "" and completed.stdout == "0 exec\n"
    spans = traced.spans()
    [create] = [s for s in spans.spans if s.name == "docker create" and s.category == "container"]  # then start()
    [exec_span] = [s for s in spans.spans if s.name == "docker exec"]
    assert len([p for p in spans.processes() if p.parent_span_id == create.span_id]) == 1
    [exec_process] = [p for p in spans.processes() if p.parent_span_id == exec_span.span_id]
    assert exec_process.trace_id == create.trace_id


def test_run_of_a_docker_run_traces_the_container_into_the_run(image, tmp_path):
    """`selfopt-trace run -- docker run IMAGE python3 ...`: CMD is the docker CLI, no traced Python
    process to rewrite its argv, and nothing was traced. `run` now starts such a CMD through a traced
    Python process that execs it (runner._EXEC_SHIM): the container's process joins the run's trace
    under the exec, and CMD keeps its output and exit status."""
    from tests.cli.conftest import Cli

    cli = Cli(tmp_path)
    done = cli("run", "--run-id", "docker", "--", *run_args(image, "python3", "-c", "import sys; print('in'); sys.exit(3)"))
    assert done.returncode == 3, done.stderr
    assert done.stdout == b"in\n"
    rows = cli.query("SELECT name, trace_id, span_id, parent_span_id, attributes->>'process.command' FROM spans "
                     "WHERE name IN ('process', 'exec') ORDER BY start_ns")
    assert [row[0] for row in rows] == ["process", "exec", "process"], rows
    shim, exec_, inside = rows
    assert len({row[1] for row in rows}) == 1  # one trace
    assert (exec_[3], inside[3]) == (shim[2], exec_[2])
    assert "print('in')" in inside[4], inside
    # the injection's span is under the exec (written before the exec's process span closed its file),
    # so `query docker` and the breakdown's container start-up see the container
    assert cli.query("SELECT parent_span_id FROM spans WHERE name = 'container.inject'") == [(exec_[2],)]
    docker_rows = cli("query", "docker", "--run", "docker", "-f", "json")
    assert docker_rows.returncode == 0 and json.loads(docker_rows.stdout), docker_rows.stderr
    missing = cli("run", "--run-id", "missing", "--", *run_args("selfopt-test/no-such-image:0", "python3", "-c", "1"))
    assert missing.returncode == 125
    assert cli.query("SELECT code FROM diagnostics WHERE run_id = 'missing'") == [("docker.image_unknown",)]
