"""Storage of datasets and checkpoints under one root. Keys are generated here, never taken from users."""

from __future__ import annotations

import os
import shutil
import uuid
from pathlib import Path

from core.data.readers import DatasetError


class MissingDatasetFile(DatasetError):
    """A dataset the database lists whose file this process's storage does not hold."""


class Storage:
    """A local directory (the shared volume in Compose) holding every stored object.

    Args:
        root: the storage root.
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root).resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    def path(self, key: str) -> Path:
        """The path of a key; keys that would leave the root are refused."""
        path = (self.root / key).resolve()
        if self.root not in path.parents:
            raise ValueError(f"storage key {key!r} is outside the storage root")
        return path

    def dataset_file(self, key: str, dataset_id: str) -> Path:
        """The path of a stored dataset's file, which must be there: one the database lists but this process's storage
        lacks (a worker on another host without the shared volume, a file removed by hand) raises
        :class:`MissingDatasetFile`, which names the dataset rather than a path of this host."""
        path = self.path(key)
        if not path.is_file():
            raise MissingDatasetFile(
                f"the file of dataset {dataset_id} is missing from storage: the API and every worker must share one "
                "volume at EMBEDTRAIN_STORAGE_ROOT (a worker on another host needs it too), and nothing may remove "
                "files there; upload the dataset again"
            )
        return path

    def new_dataset_key(self, suffix: str) -> str:
        """A fresh key for a dataset file; ``suffix`` comes from a fixed list of formats."""
        return f"datasets/{uuid.uuid4().hex}.{suffix}"

    def checkpoint_dir(self, job_id: str) -> Path:
        """Where a job's checkpoints are written."""
        path = self.path(self._checkpoints_key(job_id))
        path.mkdir(parents=True, exist_ok=True)
        return path

    def delete_checkpoints(self, job_id: str) -> None:
        """Remove every checkpoint a job wrote."""
        self.delete(self._checkpoints_key(job_id))

    @staticmethod
    def _checkpoints_key(job_id: str) -> str:
        return f"checkpoints/{job_id}"

    def key_of(self, path: Path) -> str:
        """The key of a path under the root."""
        return Path(path).resolve().relative_to(self.root).as_posix()

    def staging(self) -> Path:
        """A fresh temporary file path for an upload in progress (never listed, removed on failure)."""
        directory = self.path("tmp")
        directory.mkdir(parents=True, exist_ok=True)
        return directory / uuid.uuid4().hex

    def commit(self, staged: Path, key: str) -> None:
        """Move a finished upload into place atomically (fsynced first)."""
        target = self.path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(staged, "rb") as handle:
            os.fsync(handle.fileno())
        os.replace(staged, target)

    def delete(self, key: str) -> None:
        """Remove a stored file or directory; missing is fine."""
        path = self.path(key)
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
