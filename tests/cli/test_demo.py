"""`selfopt-trace demo`: the bundled workload runs traced and shows a real breakdown."""

from __future__ import annotations

import json


def test_demo_runs_and_shows_processes(cli, tmp_path):
    target = tmp_path / "demo.json"
    result = cli("demo", "--json", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[-1] == b"demo: 7 child processes done"
    assert b"Slowest processes" in result.stderr and b"selfopt_trace.demo" in result.stderr
    summary = json.loads(target.read_text())
    # the workload, 3 sequential + 2 parallel children, multiprocessing (child + resource tracker), python under sh
    assert summary["processes"] >= 9
    assert summary["incomplete_spans"] == 0 and summary["exit_code"] == 0
    tasks = [p for p in summary["slowest_processes"] if "selfopt_trace.demo.task" in p["command"]]
    assert len(tasks) >= 6
    # each task imports a module that busy-waits 20 ms at import
    assert all(task["imports_ms"] >= 20 for task in tasks), tasks
    by_category = summary["time_by_category_ms"]
    # the children's time is seen inside them: their start-up and imports, not just "waiting"
    assert by_category["subprocess spawn overhead"] > 0 and by_category["imports"] > 20
    # one trace for the whole tree
    assert cli.query("SELECT count(DISTINCT trace_id) FROM spans") == [(1,)]
    tree = cli("tree", "latest").stdout.decode()
    # six task processes (the `sh -c` line names one too, unless the checkout's path cuts it off)
    assert tree.count("selfopt_trace.demo.task ") >= 6 and "multiprocessing" in tree and "sh -c" in tree


def test_multiprocessings_resource_tracker_is_a_helper_of_its_own_that_takes_no_wall_time(cli, tmp_path):
    assert cli("demo", "--quiet").returncode == 0
    [(parent_name, running_at_exit)] = cli.query(
        "SELECT p.name, p.attributes->>'selfopt_trace.child.running_at_exit' FROM spans AS s "
        "JOIN spans AS p ON p.span_id = s.parent_span_id "
        "WHERE s.name = 'process' AND s.attributes::VARCHAR LIKE '%resource_tracker%'")
    # not the `multiprocessing` span of the Process that needed it: a Process.join waits on that one
    assert parent_name == "subprocess" and running_at_exit == "true"
    [(spawned_parent,)] = cli.query(
        "SELECT p.name FROM spans AS s JOIN spans AS p ON p.span_id = s.parent_span_id "
        "WHERE s.name = 'process' AND s.attributes::VARCHAR LIKE '%spawn_main%'")
    assert spawned_parent == "multiprocessing"


def test_demo_takes_selfopt_trace_export_as_run_does(cli):
    """SELFOPT_TRACE_EXPORT=never: no live export, though a collector answers at the endpoint (demo
    built its options without the setting, so it exported to whatever answered)."""
    import http.server
    import threading

    posts: list[str] = []

    class Collector(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            posts.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.end_headers()

        def log_message(self, *args) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        endpoint = f"http://127.0.0.1:{server.server_address[1]}"
        result = cli("demo", "--quiet", env=cli.env(SELFOPT_TRACE_EXPORT="never", OTEL_EXPORTER_OTLP_ENDPOINT=endpoint))
    finally:
        server.shutdown()
    assert result.returncode == 0, result.stderr
    [run_dir] = cli.run_dirs()
    assert posts == [] and not (run_dir / "export.json").exists()
