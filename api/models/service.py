"""Model registry rules: register a job's checkpoint as a version, deploy one version per name."""

from __future__ import annotations

from itertools import groupby
from pathlib import Path

import numpy as np
from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import Conflict, Invalid, NotFound
from api.jobs.service import owned_job
from api.models.banks import Banks
from api.models.schemas import ModelCreate, ModelDeploy, ModelEntry, ModelRead, Neighbor
from core.data.readers import read_records
from core.data.records import Records
from core.inference import Embedder, Precision
from core.inspect import embed_records, nearest
from core.store.jobs import best_checkpoint
from core.store.keys import Principal
from core.store.settings import Settings
from core.store.storage import Storage
from core.store.tables import Checkpoint, Dataset, Job, ModelVersion, utcnow
from core.train.checkpoint import WEIGHTS_FILE

_NUMBERING_ATTEMPTS = 5  # registrations of one name at once that each may lose the next number before giving up


def _pick_checkpoint(session: Session, job_id: str, which: str) -> Checkpoint:
    """The checkpoint ``which`` names ("last", "best" or an id), read ``FOR SHARE`` until the registration commits,
    so that the worker's pruning of old checkpoints (:func:`~core.store.jobs.prune_checkpoints`) waits for it."""
    rows = list(session.scalars(select(Checkpoint).where(Checkpoint.job_id == job_id).order_by(Checkpoint.step)
                                .with_for_update(read=True)))  # fmt: skip
    if not rows:
        raise Invalid(f"job {job_id} has no checkpoint yet", field="checkpoint")
    if which == "last":
        return rows[-1]
    if which == "best":
        return best_checkpoint(rows)
    for row in rows:
        if row.id == which:
            return row
    raise NotFound(f"checkpoint {which} not found in job {job_id}", field="checkpoint")


def register_model(session: Session, storage: Storage, principal: Principal, body: ModelCreate) -> ModelVersion:
    """Register a checkpoint of a job as the next version of ``name``."""
    job = owned_job(session, principal, body.job_id)
    checkpoint = _pick_checkpoint(session, job.id, body.checkpoint)
    embedder = Embedder(storage.path(checkpoint.storage_key))  # loads it once: a broken checkpoint fails here
    owner, job_id, checkpoint_id = job.owner, job.id, checkpoint.id
    same_name = (ModelVersion.owner == owner, ModelVersion.name == body.name)
    for attempt in range(_NUMBERING_ATTEMPTS):
        if attempt and session.scalar(select(Checkpoint.id).where(Checkpoint.id == checkpoint_id)
                                      .with_for_update(read=True)) is None:  # fmt: skip
            raise NotFound(f"checkpoint {checkpoint_id} was pruned meanwhile (train.keep_checkpoints); register "
                           "another", field="checkpoint")  # fmt: skip
        number = (session.scalar(select(func.max(ModelVersion.version)).where(*same_name)) or 0) + 1
        version = ModelVersion(owner=owner, name=body.name, version=number, job_id=job_id,
                               checkpoint_id=checkpoint_id, modality=embedder.modality, dimensions=embedder.dim)  # fmt: skip
        session.add(version)
        try:
            session.commit()
            return version
        except IntegrityError:
            session.rollback()
            if session.scalar(select(ModelVersion.id).where(*same_name, ModelVersion.version == number)) is None:
                raise  # not the number taken by a registration beside this one
    raise Conflict(f"other registrations of {body.name!r} took the next version number {_NUMBERING_ATTEMPTS} times; "
                   "retry", field="name")  # fmt: skip


def _one_owner(name: str, rows: list, owner_of, principal: Principal) -> list:  # noqa: ANN001 - rows and a getter
    """The caller's own rows of ``name``; for an admin with none, those of the one other owner who has the name.

    Names are per owner, so an admin's request by name must not reach two owners' models at once."""
    own = [row for row in rows if owner_of(row) == principal.owner]
    if own or not principal.is_admin:
        return own
    owners = sorted({owner_of(row) for row in rows})
    if len(owners) > 1:
        raise Conflict(f"models named {name!r} belong to several owners ({', '.join(owners)}); "
                       "use a key of the owner whose model is meant", field="name")  # fmt: skip
    return rows


def _versions(session: Session, principal: Principal, name: str, lock: bool = False) -> list[ModelVersion]:
    query = select(ModelVersion).where(ModelVersion.name == name)
    if lock:
        query = query.with_for_update()
    if not principal.is_admin:
        query = query.where(ModelVersion.owner == principal.owner)
    rows = _one_owner(name, list(session.scalars(query.order_by(ModelVersion.version))), lambda r: r.owner, principal)
    if not rows:
        raise NotFound(f"model {name!r} not found", field="name")
    return rows


def _pick_version(rows: list[ModelVersion], name: str, version: int | None) -> ModelVersion:
    """``version`` of the name's ``rows`` (oldest first); the newest when ``version`` is None."""
    target = rows[-1] if version is None else next((r for r in rows if r.version == version), None)
    if target is None:
        raise NotFound(f"model {name!r} has no version {version}", field="version")
    return target


def deploy(session: Session, principal: Principal, name: str, body: ModelDeploy) -> ModelVersion:
    """Serve one version of ``name`` (the newest by default) at the body's precision; the others stop being served.

    The name's rows are locked first, so that deployments of one name beside each other take turns (the later one
    wins) rather than each locking a row the other needs next, which PostgreSQL ends as a deadlock."""
    target = _pick_version(_versions(session, principal, name, lock=True), name, body.version)
    session.execute(
        update(ModelVersion)
        .where(ModelVersion.owner == target.owner, ModelVersion.name == name, ModelVersion.id != target.id)
        .values(deployed=False)  # fmt: skip
    )
    target.deployed, target.deployed_at, target.precision = True, utcnow(), body.precision
    session.commit()
    return target


def undeploy(session: Session, principal: Principal, name: str) -> list[ModelVersion]:
    """Stop serving every version of ``name``."""
    rows = _versions(session, principal, name, lock=True)
    for row in rows:
        row.deployed = False
    session.commit()
    return rows


def _entry(versions: list[ModelVersion]) -> ModelEntry:
    """One owner's versions of one name, oldest first, as the listing's entry."""
    first = versions[0]
    deployed = next((v.version for v in versions if v.deployed), None)
    return ModelEntry(id=first.name, created=int(first.created_at.timestamp()),
                      owned_by=first.owner, deployed_version=deployed,
                      versions=[ModelRead.model_validate(v) for v in versions])  # fmt: skip


def list_models(session: Session, principal: Principal) -> list[ModelEntry]:
    """The caller's models (an admin: everyone's), one entry per owner and name, by name."""
    query = select(ModelVersion)
    if not principal.is_admin:
        query = query.where(ModelVersion.owner == principal.owner)
    rows = session.scalars(query.order_by(ModelVersion.name, ModelVersion.owner, ModelVersion.version))
    return [_entry(list(group)) for _, group in groupby(rows, key=lambda v: (v.name, v.owner))]


def get_model(session: Session, principal: Principal, name: str) -> ModelEntry:
    return _entry(_versions(session, principal, name))


def deployed_version(session: Session, principal: Principal, name: str) -> tuple[ModelVersion, str]:
    """The deployed version serving ``name`` for this caller, and its checkpoint's storage key."""
    query = select(ModelVersion, Checkpoint.storage_key).join(Checkpoint, Checkpoint.id == ModelVersion.checkpoint_id)
    query = query.where(ModelVersion.name == name, ModelVersion.deployed.is_(True))
    if not principal.is_admin:
        query = query.where(ModelVersion.owner == principal.owner)
    rows = _one_owner(name, list(session.execute(query).all()), lambda r: r[0].owner, principal)
    if not rows:
        raise NotFound(f"no deployed model named {name!r}; register it and POST /v1/models/{name}/deploy",
                       field="model")  # fmt: skip
    version, key = rows[0]  # one deployed version per owner and name
    return version, key


def neighbors(
    session: Session, storage: Storage, settings: Settings, principal: Principal, name: str, query: str, k: int,
    banks: Banks,
) -> list[Neighbor]:  # fmt: skip
    """The records of the model's training dataset nearest to ``query`` (text models; first 2,000 records), embedded
    at the deployment's precision, as /v1/embeddings embeds them."""
    version, key = deployed_version(session, principal, name)
    if version.modality != "text":
        raise Invalid("neighbours are offered for text models", field="name")
    precision = version.precision or settings.embed_precision
    records, bank, embedder = banks.get(
        (version.id, precision),
        lambda: _neighbor_bank(session, storage, settings, version, storage.path(key), precision),
    )
    hits = nearest(embedder.embed([query]).numpy()[0], bank, k)
    names = records.label_names or []
    return [
        Neighbor(
            index=i,
            score=score,
            text=records.texts[i],
            label=names[records.labels[i]] if records.labels is not None else None,
        )  # fmt: skip
        for i, score in hits
    ]


def _neighbor_bank(session: Session, storage: Storage, settings: Settings, version: ModelVersion, checkpoint: Path,
                   precision: Precision) -> tuple[Records, np.ndarray, Embedder]:  # fmt: skip
    """The first 2,000 records of the version's training dataset, their (N, D) embeddings, and the embedder."""
    job = session.get(Job, version.job_id)
    dataset = session.get(Dataset, job.dataset_id) if job and job.dataset_id else None
    if dataset is None:
        raise Invalid("the model's dataset was deleted", field="name")
    file = storage.dataset_file(dataset.storage_key, dataset.id)
    records = read_records(file, dataset.modality, dataset.format, settings.read_limits, dataset.columns)
    records = records.take(np.arange(min(2000, len(records))))
    embedder = Embedder(checkpoint, precision=precision)
    return records, embed_records(embedder, records), embedder


def weights(session: Session, storage: Storage, principal: Principal, name: str, version: int | None
            ) -> tuple[Path, ModelVersion]:  # fmt: skip
    """The weights file of ``version`` of ``name`` (the newest by default), with the version: safetensors whose
    metadata hold the run config, so that ``core.inference.Embedder`` rebuilds the model from a directory holding
    only this file."""
    target = _pick_version(_versions(session, principal, name), name, version)
    key = session.scalar(select(Checkpoint.storage_key).where(Checkpoint.id == target.checkpoint_id))
    path = storage.path(key) / WEIGHTS_FILE
    if not path.is_file():
        raise Conflict(f"model {name!r} version {target.version}: its weights are missing from storage", field="name")
    return path, target


def delete(session: Session, principal: Principal, name: str, version: int | None) -> list[int]:
    """Delete one version of ``name``, or every version; a deployed one must be undeployed first. The job and its
    checkpoint stay (DELETE /v1/jobs/{id} removes those). The version numbers deleted."""
    rows = _versions(session, principal, name, lock=True)
    if version is not None:
        rows = [row for row in rows if row.version == version]
        if not rows:
            raise NotFound(f"model {name!r} has no version {version}", field="version")
    deployed = [row.version for row in rows if row.deployed]
    if deployed:
        raise Conflict(f"model {name!r} version {deployed[0]} is deployed; undeploy it first "
                       f"(POST /v1/models/{name}/undeploy)", field="name")  # fmt: skip
    for row in rows:
        session.delete(row)
    session.commit()
    return [row.version for row in rows]
