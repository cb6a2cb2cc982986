"""A TCP server on 127.0.0.1 for tests that speak HTTP by hand: real sockets, one thread per
connection; each test server says what a connection gets (`serve`)."""

from __future__ import annotations

import socket
import threading
from typing import Self


class ConnectionServer:
    """Listens on a free port of 127.0.0.1 from its creation and runs `serve(conn)` in a
    thread of its own for each connection (`connections` counts them); leaving its `with`
    block stops it accepting. Subclasses set their own attributes before calling
    `__init__`."""

    def __init__(self, backlog: int = 64) -> None:
        self.connections = 0
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=backlog)
        self.port: int = self._listener.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self._listener.close()

    def serve(self, conn: socket.socket) -> None:
        """What one connection gets (it runs in the connection's thread)."""
        raise NotImplementedError

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self.serve, args=(conn,), daemon=True).start()
