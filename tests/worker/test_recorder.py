"""The worker's progress recorder while the database is away."""

from __future__ import annotations

import socket
import threading
import time

from core.store.storage import Storage
from core.train.callbacks import StepReport
from tests.conftest import make_settings
from worker.recorder import DatabaseRecorder


class SilentDatabase:
    """A loopback port that accepts connections and never answers: a database host that hangs."""

    def __init__(self) -> None:
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

    def close(self) -> None:
        self.sock.close()
        for conn in self.accepted:
            conn.close()


def step(n: int) -> StepReport:
    return StepReport(step=n, total_steps=1000, epoch=0, loss=1.0 / n, lr=0.1, temperature=0.5, samples_per_s=100.0)


def test_steps_back_off_from_a_database_that_does_not_answer(tmp_path, redis_url) -> None:
    """One connection attempt, not one a step: each attempt holds the training thread up to db_timeout_s."""
    db = SilentDatabase()
    try:
        url = f"postgresql+psycopg://nobody@127.0.0.1:{db.port}/none"
        settings = make_settings(tmp_path, url, redis_url, db_timeout_s=1.0, progress_interval_s=0.0)
        recorder = DatabaseRecorder(settings, "job", "worker", Storage(settings.storage_root))
        for n in range(1, 21):
            recorder.on_step(step(n))
        assert len(db.accepted) == 1
        assert len(recorder.pending) == 20 * 4  # every point kept for later
        time.sleep(recorder.MIN_RETRY_S + 0.1)  # the first wait is over: the next step tries again
        for n in range(21, 41):
            recorder.on_step(step(n))
        assert len(db.accepted) == 2
        assert recorder.failures == 2 and len(recorder.pending) == 40 * 4
    finally:
        db.close()
