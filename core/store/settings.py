"""Environment settings: one pydantic-settings object, every variable prefixed ``EMBEDTRAIN_``.

Read through :func:`get_settings` (cached) and injected where needed, never built at import time.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from core.data.readers import ReadLimits


class Settings(BaseSettings):
    """Deployment settings; the README lists each with its default."""

    model_config = SettingsConfigDict(env_prefix="EMBEDTRAIN_", extra="ignore")

    database_url: str = Field("sqlite:///var/embedtrain.db", description="SQLAlchemy URL (postgresql+psycopg://...).")
    broker_url: str = Field("filesystem://", description="Celery broker: redis://... or filesystem:// (embedded).")
    broker_dir: Path = Field(Path("var/broker"), description="Message folder of the filesystem broker.")
    storage_root: Path = Field(Path("var/storage"), description="Datasets and checkpoints live under this directory.")
    queue_prefix: str = Field("", description="Prefix of the Celery queue names (isolates deployments on one broker).")
    db_pool_size: int = Field(10, ge=1, le=200, description="Connections kept per process (PostgreSQL).")
    db_max_overflow: int = Field(10, ge=0, le=200, description="Extra connections under burst (PostgreSQL).")
    db_timeout_s: float = Field(5.0, gt=0, le=120, description="Connect and pool-wait timeout; then 503.")
    db_ping_after_idle_s: float = Field(
        1.0, ge=0, le=86_400, description="A pooled connection idle this long is pinged before use (0: every time)."
    )
    api_read_threads: int = Field(
        2, ge=1, le=200, description="Threads per API process for hot reads (polls, lookups); more than cores contend."
    )
    max_upload_bytes: int = Field(1 << 30, ge=1024, description="Largest dataset upload.")
    max_body_bytes: int = Field(16 << 20, ge=1024, description="Largest JSON request body.")
    max_records: int = Field(5_000_000, ge=10, description="Most records in one dataset.")
    max_image_pixels: int = Field(
        4096 * 4096,
        ge=64,
        description="Largest decoded image (pixels): a JPEG as it decodes, at 1/2 to 1/8 of its size where that "
        "still covers `EMBEDTRAIN_MAX_IMAGE_SIDE` (a camera's 45 MP photo decodes to 0.7 MP), other formats at their "
        "own size. Before, the bound was on the stored size, so that every photo of more than 16.8 MP (24, 48 and 50 "
        "MP cameras and phones) was refused.",
    )
    max_image_side: int = Field(512, ge=32, le=8192, description="Images read from a ZIP upload or a /v1/embeddings "
                                "request are shrunk (aspect kept, antialiased) to at most this many pixels on their "
                                "longer side; image models see at most 512 (`model.image_size`).")  # fmt: skip
    max_unzipped_bytes: int = Field(4 << 30, ge=1024, description="Largest total uncompressed size of a ZIP upload.")
    embed_max_inputs: int = Field(2048, ge=1, le=100_000, description="Most inputs in one /v1/embeddings request.")
    embed_max_chars: int = Field(32_768, ge=1, description="Longest text input (characters).")
    embed_batch_size: int = Field(64, ge=1, le=4096, description="Most inputs in one shared forward pass.")
    embed_batch_wait_ms: float = Field(
        0.0,
        ge=0,
        le=1000,
        description="Longest a forward pass with fewer inputs than the recent load's share waits for more "
        "(0: take what queued up).",
    )
    embed_forward_workers: int = Field(
        2,
        ge=1,
        le=64,
        description="Forward passes of one model running at once, each on its own thread with "
        "cores / workers intra-op threads (passes on fewer cores do not stall each other).",
    )
    embed_trace: bool = Field(
        True,
        description="Serve text and vector models through a TorchScript trace of their forward pass, which runs "
        "without Python's GIL; each trace is checked against the eager pass when the model loads (eager where they "
        "differ).",
    )
    embed_precision: Literal["fp32", "bf16"] = Field(
        "fp32",
        description='The precision of deployments that do not set their own (`"precision"` in the deploy body). '
        "`bf16`: forward passes under bf16 autocast (products in bf16, norms and softmax in fp32), embeddings within "
        "~1e-3 of fp32's; 1.3-1.9x faster where the CPU has bf16 units (AVX512-BF16, AMX), slower where it has none "
        '(a warning is logged when such a model loads) and for small vector models. Figures: "Serving in bf16".',
    )
    model_cache_size: int = Field(4, ge=1, le=256, description="Deployed models kept in memory per API process.")
    auth_cache_s: float = Field(
        5.0,
        ge=0,
        le=300,
        description="API processes cache a checked key this long; a revocation takes effect within it.",
    )
    model_lookup_cache_s: float = Field(
        2.0,
        ge=0,
        le=300,
        description="How long an API process caches which "
        "version serves a model name; a deploy takes effect within it.",
    )
    lease_s: float = Field(60.0, ge=1, le=3600, description="A running job's lease; renewed by its heartbeat.")
    heartbeat_s: float = Field(
        2.0, ge=0.2, le=600,
        description="How often a worker renews its lease and reads whether its job's cancel was asked for: a "
        "running job stops within this long of a cancel, after its current step. Under a third of the lease.",
    )  # fmt: skip
    sweep_interval_s: float = Field(15.0, ge=0.5, le=3600, description="How often workers look for stale jobs.")
    requeue_after_s: float = Field(120.0, ge=1, description="A queued job not picked up by then is sent again.")
    max_attempts: int = Field(3, ge=1, le=100, description="Deliveries of a job before a stale one is failed.")
    progress_interval_s: float = Field(
        2.0,
        ge=0,
        le=600,
        description="At most one progress write per this interval; while the database is away, tries back off from "
        "max(this, 1 s), doubling up to 60 s.",
    )
    job_time_limit_s: int = Field(24 * 3600, ge=10, description="Hard time limit of one training job.")
    worker_metrics_port: int = Field(
        0, ge=0, le=65535, description="Workers serve Prometheus metrics on this port (0: off)."
    )
    auto_device_queue: str = Field("cpu", pattern="^(cpu|gpu)$", description="Queue of jobs with device 'auto'.")
    admin_key: SecretStr | None = Field(
        None,
        description="An admin key to store, given whole (et_<12 hex>_<secret>): `embedtrain-admin bootstrap` stores "
        "it if it is not yet (Compose's migrate service runs that at each start) and revokes the key this variable held "
        "before, so a new value rotates it. Unset, bootstrap creates one on an empty database and prints it once.",
    )
    rate_jobs_per_min: int = Field(60, ge=1, description="Job submissions per key per minute.")
    rate_embeddings_per_min: int = Field(6000, ge=1, description="Embedding requests per key per minute.")
    log_level: str = Field("INFO", description="Python log level.")
    otel: bool = Field(
        False,
        description="FastAPI's native OpenTelemetry (request traces, HTTP metrics, error logs) through the globally "
        "configured providers (`opentelemetry-instrument`, or `FASTAPI_OTEL_AUTO_CONFIGURE=true` with `OTEL_*` "
        "variables). Off: `/metrics` covers requests, and looking for providers costs ~8 us of event-loop CPU a "
        "request.",
    )

    @model_validator(mode="after")
    def _lease_outlives_missed_beats(self) -> Settings:
        """A lease must outlive two heartbeats that fail (a failed beat is tried again at the next): otherwise it
        expires while its worker still trains, and the sweeper hands the job to another worker."""
        if self.heartbeat_s * 3 >= self.lease_s:
            raise ValueError(f"EMBEDTRAIN_HEARTBEAT_S ({self.heartbeat_s} s) must be under a third of "
                             f"EMBEDTRAIN_LEASE_S ({self.lease_s} s), so that a lease outlives two missed heartbeats; "
                             "lower the heartbeat or lengthen the lease")  # fmt: skip
        return self

    @property
    def read_limits(self) -> ReadLimits:
        """The bounds a dataset is read under, at upload and wherever it is read again."""
        return ReadLimits(self.max_records, self.max_image_pixels, self.max_unzipped_bytes,
                          max_image_side=self.max_image_side)  # fmt: skip


@lru_cache
def get_settings() -> Settings:
    """The process's settings, read once from the environment. A value that does not fit ends the process (the API,
    a worker, an operator command) with one line per variable, naming it, rather than a traceback through whatever
    first asked."""
    try:
        return Settings()
    except ValidationError as error:
        raise SystemExit(environment_problems(error)) from None


def environment_problems(error: ValidationError) -> str:
    """What is wrong with the environment's settings, one variable a line."""
    lines = ["embedtrain: the environment's settings do not fit:"]
    for problem in error.errors():
        message = problem["msg"].removeprefix("Value error, ")
        if problem["loc"]:
            name = str(problem["loc"][0])
            given = "" if name == "admin_key" else f"={problem['input']!r}"
            message = f"EMBEDTRAIN_{name.upper()}{given}: {message}"
        lines.append(f"  {message}")
    return "\n".join(lines)


def markdown_table() -> str:
    """The README's settings table."""
    rows = ["| Variable | Default | Meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = "(unset)" if field.default is None else field.default
        rows.append(f"| `EMBEDTRAIN_{name.upper()}` | `{default}` | {field.description} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
