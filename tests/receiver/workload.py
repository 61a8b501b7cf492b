"""A traced program for the receiver tests: its own OpenTelemetry spans (API only) around an httpx
call instrumented by opentelemetry-instrumentation-httpx, a server in a thread, a child process,
an error, imports and serialization."""

import json
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx
from opentelemetry import trace
from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = json.dumps({"path": self.path}).encode()
        self.send_response(200 if "missing" not in self.path else 404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True).start()
HTTPXClientInstrumentor().instrument()
tracer = trace.get_tracer("workload", "1.0")
base = f"http://127.0.0.1:{server.server_address[1]}"
with tracer.start_as_current_span("phase one", attributes={"items": 3, "ratio": 0.5, "tags": ("a", "b")}) as phase:
    with httpx.Client() as client:
        for item in (17, 42, "missing"):
            client.get(f"{base}/items/{item}")
    payload = json.dumps([{"id": i, "values": list(range(30))} for i in range(2000)])
    phase.set_attribute("payload.bytes", len(payload))
with tracer.start_as_current_span("phase two"):
    subprocess.run([sys.executable, "-c", "import json; print(json.dumps({'child': True}))"], check=True)
try:
    with tracer.start_as_current_span("failing step"):
        raise KeyError("nope")
except KeyError:
    pass
server.shutdown()
print("done")
