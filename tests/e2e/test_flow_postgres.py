"""The whole workflow on real PostgreSQL, real Redis and a real Celery worker process."""

from __future__ import annotations

import pytest

from tests.e2e.flow import digits_flow


@pytest.mark.slow
def test_digits_from_upload_to_embeddings(client, auth, worker, settings) -> None:
    digits_flow(client, auth, settings.storage_root, expected_queue=f"{settings.queue_prefix}cpu")
