"""A small traced program for the query tests: imports, a big json.dumps, ast.parse, two HTTP calls
to a server in a thread, and two child processes that import a slow module."""

import ast
import http.server
import json
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
payload = json.dumps([{"id": i, "name": "x" * 50, "values": list(range(20))} for i in range(3000)])
tree = ast.parse("\n".join(f"def f{i}(a, b):\n    return a * b + {i}" for i in range(2000)))
for item in (17, 42):
    with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/items/{item}") as response:
        response.read()
server.shutdown()
for _ in range(2):
    subprocess.run([sys.executable, str(HERE / "child.py")], check=True)
print("done", len(payload), len(tree.body))
