"""Starting a job from a registered model's weights: which version and checkpoint, and whether the job builds the
weights they fit."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.datasets.service import record_width
from api.errors import Conflict, Invalid, NotFound
from api.jobs.schemas import StartFrom
from core.config import RunConfig
from core.data.records import InputSpec
from core.store.keys import Principal
from core.store.storage import Storage
from core.store.tables import Checkpoint, ModelVersion
from core.train.checkpoint import CheckpointError, read_config


@dataclass(frozen=True)
class StartPoint:
    """The registered model a job starts from: its version, checkpoint, and the config and input it trained with."""

    version: ModelVersion
    checkpoint: Checkpoint
    config: RunConfig
    spec: InputSpec

    @property
    def name(self) -> str:
        return f"model {self.version.name!r} version {self.version.version}"

    def record(self) -> dict:
        """What the job row keeps of it."""
        return {"model": self.version.name, "version": self.version.version, "checkpoint_id": self.checkpoint.id}


def start_point(session: Session, storage: Storage, principal: Principal, ref: StartFrom, modality: str) -> StartPoint:
    """The caller's model version ``ref`` names, which must embed ``modality`` (the dataset's), its checkpoint read
    ``FOR SHARE`` until the job commits (so that the pruning of its job's checkpoints and the deletion of its job
    wait, then see the job that starts from it)."""
    query = select(ModelVersion).where(ModelVersion.owner == principal.owner, ModelVersion.name == ref.model)
    if ref.version is not None:
        query = query.where(ModelVersion.version == ref.version)
    version = session.scalars(query.order_by(ModelVersion.version.desc()).limit(1)).first()
    if version is None:
        if ref.version is None or session.scalar(select(ModelVersion.id).where(
                ModelVersion.owner == principal.owner, ModelVersion.name == ref.model).limit(1)) is None:  # fmt: skip
            raise NotFound(f"model {ref.model!r} not found", field="start_from.model")
        raise NotFound(f"model {ref.model!r} has no version {ref.version}", field="start_from.version")
    if version.modality != modality:
        raise Invalid(f"model {ref.model!r} version {version.version} embeds {version.modality}; the dataset holds "
                      f"{modality}", field="start_from.model")  # fmt: skip
    checkpoint = session.scalar(select(Checkpoint).where(Checkpoint.id == version.checkpoint_id)
                                .with_for_update(read=True))  # fmt: skip
    try:
        config, spec = read_config(storage.path(checkpoint.storage_key))
    except CheckpointError as error:
        raise Conflict(f"model {ref.model!r} version {version.version}: {error}", field="start_from.model") from None
    return StartPoint(version, checkpoint, config, spec)


def _at(config: RunConfig, path: str) -> object:
    """The value of the field at ``path`` ("model.hidden_dim") in ``config``."""
    section, field = path.split(".")
    return getattr(getattr(config, section), field, None)


def check_start(config: RunConfig, start: StartPoint, dataset) -> None:  # noqa: ANN001 - a Dataset row
    """The job must build weights of the shapes of those it starts from, for the dataset's input; the fields that
    leave them alone (pooling, max_length, image_size, head.serve, a dropout rate where the model has one) are the
    job's own."""
    ours, theirs = config.weight_fields(), start.config.weight_fields()
    if differing := [path for path in ours if ours[path] != theirs.get(path)]:
        section = differing[0].split(".")[0]
        said = ", ".join(f"{path} {_at(config, path)!r} (the model's {_at(start.config, path)!r})"
                         for path in differing)  # fmt: skip
        raise Invalid(f"config.{section} must build the weights of {start.name}, which the job starts from: {said}; "
                      "leave it out of the config to take the model's own", field=f"config.{section}")  # fmt: skip
    width = record_width(dataset)
    expected = {"vectors": start.spec.features, "image": start.spec.channels}.get(dataset.modality)
    if width is not None and width != expected:
        unit = "features" if dataset.modality == "vectors" else "channels"
        raise Invalid(f"{start.name} takes {expected} {unit}; the dataset's records have {width}",
                      field="start_from.model")  # fmt: skip
