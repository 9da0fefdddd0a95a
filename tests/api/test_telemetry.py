"""FastAPI's native OpenTelemetry is off unless ``EMBEDTRAIN_OTEL`` turns it on (core/store/settings.py)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import ROOT, settings_env

# A process of its own for each case: OpenTelemetry's global tracer provider can be set once per process.
SPANS_OF_ONE_REQUEST = """
from fastapi.testclient import TestClient
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

exporter = InMemorySpanExporter()
provider = TracerProvider()
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)

from api.main import create_app

with TestClient(create_app()) as client:
    assert client.get("/healthz").status_code == 200
print(len(exporter.get_finished_spans()))
"""


@pytest.mark.parametrize("otel", [False, True])
def test_requests_reach_a_configured_tracer_only_when_asked(settings, otel: bool) -> None:
    env = {**settings_env(settings), "EMBEDTRAIN_OTEL": str(otel).lower()}
    run = subprocess.run([sys.executable, "-c", SPANS_OF_ONE_REQUEST], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=120)  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    spans = int(run.stdout.split()[-1])
    assert (spans > 0) == otel, spans
