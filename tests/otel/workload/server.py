"""An HTTP server process: prints its base URL, answers /items/* 200, /fail 500, /quit then exits."""

import http.server
import json
import threading


class Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        status = 500 if self.path == "/fail" else 200
        body = json.dumps({"path": self.path}).encode()
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        if self.path == "/quit":
            threading.Thread(target=self.server.shutdown).start()

    def log_message(self, *args: object) -> None:
        pass


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
server.daemon_threads = False  # server_close() waits for the /quit request to end, span included
print(f"http://127.0.0.1:{server.server_address[1]}", flush=True)
server.serve_forever(poll_interval=0.01)
server.server_close()
