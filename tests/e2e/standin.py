"""A stand-in of codeflash-internal for the end-to-end test: a test fixture, not a product feature.

It answers the AI service (127.0.0.1:8000, /ai/...) and cfapi (127.0.0.1:3001, /cfapi/...) well
enough that the real codeflash CLI completes a full optimization of the toy project offline
(tests/e2e/toy: a bubble sort) and accepts the faster candidate (`arr.sort()`). codeflash has no
setting for host or port, so the ports are fixed; `port_lock` serializes the users of this machine.

    python tests/e2e/standin.py --log requests.jsonl

prints `ready` once both ports listen, appends one JSON line per request to the log, and serves
until SIGTERM or SIGINT. It uses the standard library's http.server, so under `selfopt-trace run`
its requests become SERVER spans that continue the client's trace.
"""

from __future__ import annotations

import ast
import fcntl
import json
import os
import re
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

AI_PORT = 8000
CFAPI_PORT = 3001
PLACEHOLDER = "{codeflash_run_tmp_dir_client_side}"
LOCK_PATH = Path(tempfile.gettempdir()) / "selfopt-trace-codeflash-standin.lock"

# The faster candidate: what an LLM answers for a bubble sort.
FAST_SORTER = '''def sorter(arr):
    arr.sort()
    return arr
'''

# Generated tests: two files (test_index 0 and 1), each with enough calls for codeflash to trust a
# baseline (>= 6 passing results) and to cover every line of the bubble sort.
TEST_CASES = (
    ("test_sorted_input", "[1, 2, 3, 4, 5]", "[1, 2, 3, 4, 5]"),
    ("test_reversed_input", "[5, 4, 3, 2, 1]", "[1, 2, 3, 4, 5]"),
    ("test_duplicates", "[3, 1, 2, 3, 1]", "[1, 1, 2, 3, 3]"),
    ("test_negative_numbers", "[0, -2, 7, -9]", "[-9, -2, 0, 7]"),
    ("test_empty", "[]", "[]"),
    ("test_large_reversed", "list(range(300, 0, -1))", "list(range(1, 301))"),
    ("test_floats", "[2.5, -1.0, 2.25]", "[-1.0, 2.25, 2.5]"),
    ("test_strings", "['pear', 'apple', 'fig']", "['apple', 'fig', 'pear']"),
)


def generated_test_source(module_path: str, function_name: str, test_index: int) -> str:
    lines = ["from %s import %s\n" % (module_path, function_name)]
    for name, given, expected in TEST_CASES:
        lines.append("\n\ndef %s_%d():\n    assert %s(%s) == %s\n" % (name, test_index, function_name, given, expected))
    return "".join(lines)


_instrument_lock = threading.Lock()  # codeflash's instrumentation (its run temp dir, isort) is not thread-safe


def instrument(source: str, function: dict, test_module_path: str) -> tuple[str, str]:
    """Behaviour and performance variants, instrumented by codeflash's own instrumentation.

    The tests it writes point at this process's codeflash temp dir; the client expects the
    placeholder it replaces with its own.
    """
    from codeflash.code_utils.code_utils import get_run_tmp_file
    from codeflash.code_utils.instrument_existing_tests import inject_profiling_into_existing_test
    from codeflash.models.function_types import FunctionParent, FunctionToOptimize
    from codeflash.models.models import CodePosition, TestingMode

    name = function["function_name"]
    target = FunctionToOptimize(
        function_name=name,
        file_path=Path(function["file_path"]),
        parents=[FunctionParent(name=p["name"], type=p["type"]) for p in function.get("parents") or ()],
        is_method=bool(function.get("is_method")),
    )
    positions = [CodePosition(node.lineno, node.col_offset) for node in ast.walk(ast.parse(source))
                 if isinstance(node, ast.Call) and getattr(node.func, "id", None) == name]
    with _instrument_lock, tempfile.TemporaryDirectory() as root:
        path = Path(root, *test_module_path.split(".")).with_suffix(".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(source)
        variants = []
        for mode in (TestingMode.BEHAVIOR, TestingMode.PERFORMANCE):
            ok, instrumented = inject_profiling_into_existing_test(path, positions, target, Path(root), mode)
            if not ok or instrumented is None:
                raise RuntimeError("codeflash could not instrument the generated tests")
            variants.append(instrumented.replace(get_run_tmp_file(Path()).as_posix(), PLACEHOLDER))
    return variants[0], variants[1]


_FENCE = re.compile(r"```(\w+):([^\n]+)\n(.*?)```", re.S)


def fast_candidate(markdown: str) -> str:
    """The request's code with `sorter` replaced by the fast version, in codeflash's markdown."""
    blocks = []
    for language, path, code in _FENCE.findall(markdown):
        tree = ast.parse(code)
        lines = code.splitlines(keepends=True)
        for node in tree.body:
            if isinstance(node, ast.FunctionDef) and node.name == "sorter":
                code = "".join(lines[: node.lineno - 1]) + FAST_SORTER + "".join(lines[node.end_lineno:])
                break
        blocks.append("```%s:%s\n%s```" % (language, path.strip(), code))
    return "\n".join(blocks)


def answer(path: str, body: dict) -> tuple[int, object]:
    """(status, JSON body) for one request. Unknown endpoints get a 404 codeflash logs and ignores."""
    if path == "/ai/optimize":
        return 200, {"optimizations": [{
            "source_code": fast_candidate(body["source_code"]),
            "explanation": "Use the built-in Timsort instead of a quadratic bubble sort.",
            "optimization_id": "standin-sort-1",
            "parent_id": None,
            "model": "standin",
        }]}
    if path in ("/ai/optimize-line-profiler", "/ai/refinement"):
        return 200, {"optimizations": [], "refinements": []}
    if path == "/ai/testgen":
        function = body["function_to_optimize"]
        source = generated_test_source(str(body["module_path"]), function["function_name"], int(body["test_index"]))
        behavior, perf = instrument(source, function, str(body["test_module_path"]))
        return 200, {"generated_tests": source, "instrumented_behavior_tests": behavior,
                     "instrumented_perf_tests": perf, "raw_generated_tests": source}
    if path == "/ai/testgen_review":
        return 200, {"reviews": []}
    if path == "/ai/rank":
        return 200, {"ranking": list(range(len(body.get("optimization_ids") or ())))}
    if path == "/ai/explain":
        return 200, {"explanation": "Replaced the bubble sort with list.sort()."}
    if path == "/ai/optimization_review":
        return 200, {"review": "high", "review_explanation": "Same results, far fewer comparisons."}
    if path in ("/ai/log_features", "/cfapi/mark-as-success", "/cfapi/send-completion-email", "/cfapi/create-pr"):
        return 200, {"ok": True}
    if path == "/cfapi/cli-get-user":
        return 200, "standin-user"
    if path == "/cfapi/is-github-app-installed":
        return 200, True
    return 404, {"error": "the stand-in does not implement %s" % path}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    log_path: str = ""
    _log_lock = threading.Lock()

    def do_GET(self) -> None:
        self._serve(b"")

    def do_POST(self) -> None:
        self._serve(self.rfile.read(int(self.headers.get("Content-Length") or 0)))

    def _serve(self, raw: bytes) -> None:
        started = time.time_ns()
        try:
            status, payload = answer(self.path.split("?", 1)[0], json.loads(raw) if raw else {})
        except Exception as exc:  # a broken answer must show up in the test, not hang the client
            status, payload = 500, {"error": "%s: %s" % (type(exc).__name__, exc)}
        data = payload.encode() if isinstance(payload, str) else json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain" if isinstance(payload, str) else "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)
        self._log({"method": self.command, "path": self.path, "status": status, "request_bytes": len(raw),
                   "response_bytes": len(data), "traceparent": self.headers.get("traceparent"),
                   "start_ns": started, "end_ns": time.time_ns()})

    def _log(self, record: dict) -> None:
        if self.log_path:
            with self._log_lock, open(self.log_path, "a") as log:
                log.write(json.dumps(record) + "\n")

    def log_message(self, format: str, *args) -> None:  # keep stderr for real problems
        pass


@contextmanager
def port_lock(timeout_s: float = 600.0):
    """Only one user of ports 8000/3001 at a time on this machine (tests, benchmarks)."""
    with open(LOCK_PATH, "w") as handle:
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise TimeoutError("another codeflash stand-in holds %s" % LOCK_PATH) from None
                time.sleep(0.2)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def serve(log_path: str) -> None:
    import codeflash.code_utils.instrument_existing_tests  # noqa: F401  (imported now, not in the first request)

    Handler.log_path = log_path
    servers = [ThreadingHTTPServer(("127.0.0.1", port), Handler) for port in (AI_PORT, CFAPI_PORT)]
    for server in servers:
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    print("ready", flush=True)
    stop.wait()
    for server in servers:
        server.shutdown()
        server.server_close()


if __name__ == "__main__":
    serve(sys.argv[sys.argv.index("--log") + 1] if "--log" in sys.argv else os.devnull)
