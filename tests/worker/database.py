"""A database that goes away and comes back, for the worker's tests: a loopback port in front of PostgreSQL."""

from __future__ import annotations

import socket
import threading

from sqlalchemy.engine import make_url


class Database:
    """A loopback port in front of PostgreSQL. Down, it accepts connections and never answers (a database host
    that hangs); up, it passes them through."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target, self.up = target, False
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.accepted: list[socket.socket] = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:  # closed
                return
            self.accepted.append(conn)
            if self.up:
                server = socket.create_connection(self.target)
                self.accepted.append(server)
                for a, b in ((conn, server), (server, conn)):
                    threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:  # the other side closed
            pass
        finally:
            sink.close()

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def through(db: Database, pg_url: str) -> str:
    return make_url(pg_url).set(host="127.0.0.1", port=db.port).render_as_string(hide_password=False)


def target(pg_url: str) -> tuple[str, int]:
    url = make_url(pg_url)
    return url.host or "127.0.0.1", url.port or 5432
