"""A storage volume full or read-only: uploads answer 507 or 503 and keep nothing; a job that cannot write its
checkpoint fails saying so.

The volume is a real 1 MiB tmpfs (mounting one needs root, as the development and CI machines run the suite).
"""

from __future__ import annotations

import gzip
import io
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sklearn.datasets import load_wine

from tests.conftest import Keys, WorkerProcess, make_settings, wait_for


@pytest.fixture
def small_volume(tmp_path: Path) -> Iterator[Path]:
    if os.geteuid() != 0:
        pytest.skip("mounting a 1 MiB tmpfs needs root")
    volume = tmp_path / "volume"
    volume.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(volume)], check=True)
    yield volume
    subprocess.run(["umount", str(volume)], check=True)


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if not p.is_dir())


def test_a_full_volume_refuses_uploads_with_507_and_fails_a_job_saying_why(
    small_volume, tmp_path, pg_url, redis_url
) -> None:  # fmt: skip
    """Before, an upload answered a bare 500, and a gzipped one 422 "the file is not valid gzip: [Errno 28] No space
    left on device"; the job failed with "internal error: SafetensorError: ... (os error 28)"."""
    from api.main import create_app

    settings = make_settings(tmp_path, pg_url, redis_url, storage_root=small_volume / "storage")
    auth = {"Authorization": f"Bearer {Keys(settings).make('full-volume')}"}
    wine = load_wine(as_frame=True).frame.to_csv(index=False).encode()  # 11 kB: fits
    big = b"\n".join(b"a text of some length, line %d" % i for i in range(60_000))  # 2 MB: does not
    with TestClient(create_app(settings)) as client:
        for name, content in (("texts.txt", big), ("texts.txt.gz", gzip.compress(big))):
            answer = client.post("/v1/datasets", headers=auth, data={"modality": "text"},
                                 files={"file": (name, io.BytesIO(content))})  # fmt: skip
            assert answer.status_code == 507, answer.text
            assert answer.json()["error"]["message"] == (
                "the service's storage is full (No space left on device); nothing of this request was kept: an "
                "operator must free space or enlarge the volume of EMBEDTRAIN_STORAGE_ROOT"
            )
            assert files_under(small_volume) == [], name
        dataset = client.post("/v1/datasets", headers=auth, data={"modality": "vectors", "label_column": "target"},
                              files={"file": ("wine.csv", io.BytesIO(wine))})  # fmt: skip
        assert dataset.status_code == 201, dataset.text
        config = {"train": {"epochs": 2, "batch_size": 32}}  # the MLP's checkpoint with AdamW's state: ~2.7 MB
        job = client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset.json()["id"], "config": config})
        worker = WorkerProcess(settings, tmp_path / "worker.log").start()
        try:
            ended = wait_for(lambda: (j := client.get(f"/v1/jobs/{job.json()['id']}", headers=auth).json())["status"]
                             in ("succeeded", "failed") and j, 120, what="the job to end")  # fmt: skip
        finally:
            worker.stop()
    assert ended["status"] == "failed", ended
    assert ended["error"].startswith("no space left on the storage volume to write the checkpoint of step "), ended
    assert "the job's earlier checkpoints are kept" in ended["error"]
    [kept] = files_under(small_volume)  # the dataset's file alone: no checkpoint, whole or partial
    assert kept.startswith("storage/datasets/") and kept.endswith(".csv"), kept


def test_a_read_only_volume_refuses_uploads_with_503_and_fails_a_job_saying_why(
    small_volume, tmp_path, pg_url, redis_url
) -> None:  # fmt: skip
    """A volume the service's user cannot write (read-only here; a bind mount owned by root is the same to the
    image's user). Before, an upload answered a bare 500, and a job failed with "internal error: OSError: [Errno 30]
    Read-only file system: '/…/checkpoints/…'"."""
    from api.main import create_app
    from core.store.storage import Storage

    settings = make_settings(tmp_path, pg_url, redis_url, storage_root=small_volume / "storage")
    auth = {"Authorization": f"Bearer {Keys(settings).make('read-only-volume')}"}
    wine = load_wine(as_frame=True).frame.to_csv(index=False).encode()
    with TestClient(create_app(settings)) as client:
        dataset = client.post("/v1/datasets", headers=auth, data={"modality": "vectors", "label_column": "target"},
                              files={"file": ("wine.csv", io.BytesIO(wine))})  # fmt: skip
        assert dataset.status_code == 201, dataset.text
        config = {"train": {"epochs": 2, "batch_size": 32}}
        jobs = [client.post("/v1/jobs", headers=auth, json={"dataset_id": dataset.json()["id"], "config": config})
                .json()["id"] for _ in range(2)]  # fmt: skip
        # the second job's directory made while it could be: its first checkpoint fails (step 5, the first epoch's end)
        Storage(settings.storage_root).checkpoint_dir(jobs[1])
        subprocess.run(["mount", "-o", "remount,ro", str(small_volume)], check=True)

        answer = client.post("/v1/datasets", headers=auth, data={"modality": "vectors"},
                             files={"file": ("wine.csv", io.BytesIO(wine))})  # fmt: skip
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"]["message"] == (
            "the service cannot write to its storage (Read-only file system); nothing of this request was kept: an "
            "operator must make the volume of EMBEDTRAIN_STORAGE_ROOT writable by the service's user"
        )
        worker = WorkerProcess(settings, tmp_path / "worker.log").start()
        try:
            ended = [wait_for(lambda job_id=job_id: (j := client.get(f"/v1/jobs/{job_id}", headers=auth).json())
                              ["status"] in ("succeeded", "failed") and j, 120, what="the job to end") for job_id in jobs]  # fmt: skip
        finally:
            worker.stop()
    assert [(job["status"], job["error"]) for job in ended] == [
        ("failed", "the job's checkpoint directory cannot be made (Read-only file system): the volume of "
                   "EMBEDTRAIN_STORAGE_ROOT must be writable by the worker's user, with space"),
        ("failed", "the checkpoint of step 5 cannot be written (Read-only file system): the volume that holds the "
                   "checkpoints (the service's EMBEDTRAIN_STORAGE_ROOT) must be writable by the worker's user"),
    ]  # fmt: skip
