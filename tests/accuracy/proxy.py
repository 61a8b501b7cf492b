"""A TCP proxy on 127.0.0.1 that adds a known latency to every connection before passing it on."""

from __future__ import annotations

import selectors
import socket
import threading
import time


class DelayProxy:
    def __init__(self, upstream_port: int, delay_s: float) -> None:
        self.upstream_port = upstream_port
        self.delay_s = delay_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        time.sleep(self.delay_s)  # the known latency: the request waits here before going on
        with client, socket.create_connection(("127.0.0.1", self.upstream_port)) as upstream:
            selector = selectors.DefaultSelector()
            selector.register(client, selectors.EVENT_READ, upstream)
            selector.register(upstream, selectors.EVENT_READ, client)
            open_sides = 2
            while open_sides:
                for key, _ in selector.select():
                    data = key.fileobj.recv(65536)
                    if data:
                        key.data.sendall(data)
                    else:
                        selector.unregister(key.fileobj)
                        try:
                            key.data.shutdown(socket.SHUT_WR)
                        except OSError:
                            pass
                        open_sides -= 1

    def close(self) -> None:
        self.closed = True
        self.listener.close()
