"""The demo workload: a CLI that starts short Python children in every common way.

    python -m selfopt_trace.demo.workload [--children N]

It serves a small JSON document on 127.0.0.1 from a thread, then runs `N` children one after the
other with subprocess.run, two at once with Popen, one with multiprocessing (spawn), and one through
`sh -c`; each imports a module that costs ~20 ms and does ~15 ms of work (selfopt_trace.demo.task).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shlex
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Iterator

from selfopt_trace.demo import task
from selfopt_trace.demo.spin import spin

SERVER_DELAY_S = 0.005
PARENT_WORK_S = 0.030
PAYLOAD = json.dumps({"items": list(range(100))}).encode()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802  (http.server's naming)
        time.sleep(SERVER_DELAY_S)
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)

    def log_message(self, format: str, *args: object) -> None:
        pass  # the demo's output is its own lines, not an access log


@contextmanager
def serve_in_thread() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    # polled every 10 ms: shutdown() waits for the next poll (0.5 s by default: a third of the demo's wall)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/data"
    finally:
        server.shutdown()
        server.server_close()


def child(name: str, url: str) -> list[str]:
    return [sys.executable, "-m", "selfopt_trace.demo.task", name, url]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m selfopt_trace.demo.workload", description=__doc__.splitlines()[0])
    parser.add_argument("--children", type=int, default=3, help="children run one after the other (default 3)")
    args = parser.parse_args(argv)

    with serve_in_thread() as url:
        spin(PARENT_WORK_S)
        for i in range(args.children):
            subprocess.run(child(f"sequential-{i + 1}", url), check=True)
        parallel = [subprocess.Popen(child(f"parallel-{i + 1}", url)) for i in range(2)]
        for process in parallel:
            if process.wait():
                return process.returncode
        spawned = multiprocessing.get_context("spawn").Process(target=task.work, args=("multiprocessing", url))
        spawned.start()
        spawned.join()
        subprocess.run(["sh", "-c", shlex.join(child("via-sh", url))], check=True)
        task.work("parent", url)
    print(f"demo: {args.children + 4} child processes done", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
