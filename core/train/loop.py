"""The training loop: ``fit(config, train, val, ...)`` trains one run from scratch, from a checkpoint of its own, or
from the weights of another run's.

Every random draw of step ``s`` comes from generators seeded by ``(seed, s)`` (the epoch's order by
``(seed, epoch)``), so a run resumed from the checkpoint of step ``s`` continues exactly as the uninterrupted
run would. Under ``torch.distributed`` (one process per device) each rank trains on its slice of every global
batch, the loss gathers embeddings from all ranks, and rank 0 alone reports and writes checkpoints.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.nn.parallel import DistributedDataParallel

from core.augment import Views, build_views
from core.config import LossConfig, RunConfig
from core.data.records import MIN_HELD_OUT, Records, short_of_a_batch
from core.encoders import EmbeddingModel, build_model
from core.evaluate import evaluate
from core.losses import NTXentLoss, grad_cache_step
from core.train.batches import Batch, DeviceData
from core.train.callbacks import CheckpointInfo, EvalReport, NullCallback, StepReport, TrainCallback, checkpoint_score
from core.train.checkpoint import TrainerState, load_trainer_state, load_weights, save_checkpoint
from core.train.optim import build_optimizer, lr_at
from core.train.order import epoch_order, text_keys

_HALF = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingError(RuntimeError):
    """A run cannot go on; the message says what the user can change."""


@dataclass
class FitResult:
    """How a run ended."""

    status: Literal["completed", "stopped"]
    step: int
    total_steps: int
    last_checkpoint: Path | None
    metrics: dict[str, float] = field(default_factory=dict)
    early_stop: str | None = None  # why a completed run ended before its last step (train.early_stop_patience)


@dataclass
class _Run:
    """What the loop's stages share."""

    config: RunConfig
    device: torch.device
    model: EmbeddingModel
    net: nn.Module  # the model, or its DDP wrapper: forward passes go through this
    loss_fn: NTXentLoss
    optimizer: torch.optim.Optimizer
    scaler: torch.amp.GradScaler | None
    views: Views
    train: DeviceData
    val: DeviceData | None
    rank: int
    world: int
    steps_per_epoch: int
    total_steps: int
    text_keys: np.ndarray | None  # each record's texts as ids, where a text recurs (core.train.order)


def resolve_device(name: str) -> torch.device:
    """``auto`` is CUDA when present, else CPU; asking for CUDA without it is a user error."""
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("train.device is 'cuda' but no CUDA device is visible to this worker; use 'auto' or 'cpu'")
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and dist.is_initialized():
        return torch.device("cuda", dist.get_rank() % torch.cuda.device_count())
    return torch.device(name)


def build_loss(config: LossConfig) -> NTXentLoss:
    """The loss named by the config."""
    return NTXentLoss(
        config.temperature,
        learnable_temperature=config.learnable_temperature,
        variant=config.variant,
        tau_plus=config.tau_plus,
        beta=config.beta,
        chunk_size=config.chunk_size,
        similarity_dtype=getattr(torch, config.similarity_dtype),
    )


def plan_steps(config: RunConfig, n_train: int, world: int) -> tuple[int, int]:
    """Steps per epoch (full batches only) and total steps; refuses data smaller than one batch."""
    batch = config.train.batch_size
    if batch % world:
        raise TrainingError(f"train.batch_size {batch} must be divisible by train.num_devices {world}")
    if refusal := short_of_a_batch(n_train, batch):
        raise TrainingError(refusal)
    per_epoch = n_train // batch
    total = per_epoch * config.train.epochs
    if config.train.max_steps is not None:
        total = min(total, config.train.max_steps)
    return per_epoch, total


def _step_seed(seed: int, step: int) -> int:
    return (seed * 1_000_003 + step + 1) % (2**63 - 1)


def _setup(
    config: RunConfig, train: Records, val: Records | None, resume_from: Path | None, start_from: Path | None = None
) -> tuple[_Run, TrainerState | None]:  # fmt: skip
    rank, world = (dist.get_rank(), dist.get_world_size()) if dist.is_initialized() else (0, 1)
    device = resolve_device(config.train.device)
    per_epoch, total = plan_steps(config, len(train), world)
    torch.manual_seed(config.train.seed)  # the same initial weights on every rank and every attempt
    model = build_model(config, train.spec).to(device)
    image_size = config.model.image_size if train.modality == "image" else None
    train_data = DeviceData(train, device, image_size)
    if train.modality != "text":
        model.backbone.fit_normalisation(*train_data.moments())
    loss_fn = build_loss(config.loss).to(device)
    optimizer = build_optimizer(config.optim, list(model.parameters()) + list(loss_fn.parameters()))
    scaler = torch.amp.GradScaler(device.type) if config.train.precision == "fp16" else None
    tokenize = getattr(model.backbone, "tokenize", None)
    bank = train_data.tensor if train.modality == "vectors" else None
    views = build_views(config, bank, train.spec.channels, tokenize, device)
    resumed = None
    if resume_from is not None:
        resumed = _restore(resume_from, model, loss_fn, optimizer, scaler, device)
    elif start_from is not None:
        _start(start_from, model, device)
    net: nn.Module = model
    if world > 1:
        net = DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None)
    val_data = DeviceData(val, device, image_size) if val is not None and len(val) >= MIN_HELD_OUT else None
    run = _Run(config, device, model, net, loss_fn, optimizer, scaler, views, train_data, val_data, rank, world,
               per_epoch, total, text_keys(train))  # fmt: skip
    return run, resumed


def _start(path: Path, model: nn.Module, device: torch.device) -> None:
    """Load another run's model weights into this run's model, which must be built alike."""
    try:
        model.load_state_dict(load_weights(path, device))
    except RuntimeError as error:  # load_state_dict's missing, unexpected or mis-shaped tensors, one to a line
        problems = [line.strip() for line in str(error).splitlines()[1:]]
        more = f" (and {len(problems) - 2} more)" if len(problems) > 2 else ""
        raise TrainingError(f"the model this job starts from is not built as its config builds one, so its weights "
                            f"cannot be loaded: {' '.join(problems[:2]) or error}{more}") from None  # fmt: skip


def _restore(
    path: Path, model: nn.Module, loss_fn: nn.Module, optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None, device: torch.device,
) -> TrainerState:  # fmt: skip
    model.load_state_dict(load_weights(path, device))
    state = load_trainer_state(path)
    optimizer.load_state_dict(state.optimizer)
    for name, value in state.loss.items():
        getattr(loss_fn, name).data.copy_(value.to(device))
    if scaler is not None and state.scaler:
        scaler.load_state_dict(state.scaler)
    torch.set_rng_state(state.rng)
    return state


def _forward_backward(run: _Run, batch: Batch) -> Tensor:
    config = run.config
    stacked = run.views.stacked(batch.raw, batch.positives)  # 2B rows: view a, then view b
    labels = batch.labels if config.data.use_labels else None
    autocast = (
        torch.autocast(run.device.type, dtype=_HALF[config.train.precision])
        if config.train.precision in _HALF
        else nullcontext()
    )
    if config.train.grad_cache_sub_batch:
        # GradCache: embeddings in sub-batches without graph, loss, then re-embed with graph (fp32/bf16 only)
        half = _rows(stacked) // 2
        views = [_rows_slice(stacked, 0, half), _rows_slice(stacked, half, 2 * half)]

        def encode(x: Any) -> Tensor:
            with autocast:
                return run.net(x)[1]

        return grad_cache_step(
            encode, views, lambda z: run.loss_fn(z[0], z[1], labels=labels),
            config.train.grad_cache_sub_batch, run.device,
        )  # fmt: skip
    with autocast:
        z = run.net(stacked)[1]  # (2B, P) one forward pass for both views
        z_a, z_b = z.chunk(2)
        loss = run.loss_fn(z_a, z_b, labels=labels)
    (run.scaler.scale(loss) if run.scaler else loss).backward()
    return loss.detach()


def _rows(x: Any) -> int:
    return len(x["input_ids"]) if isinstance(x, dict) else len(x)


def _rows_slice(x: Any, start: int, stop: int) -> Any:
    return {k: v[start:stop] for k, v in x.items()} if isinstance(x, dict) else x[start:stop]


def _optimizer_step(run: _Run) -> None:
    if run.world > 1:  # the loss's own parameters (learnable temperature) are outside DDP: average them here
        for p in run.loss_fn.parameters():
            if p.grad is not None:
                dist.all_reduce(p.grad)
                p.grad /= run.world
    params = [p for group in run.optimizer.param_groups for p in group["params"]]
    if run.scaler is not None:
        run.scaler.unscale_(run.optimizer)  # clip the true gradients, not the scaled ones
    if run.config.optim.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(params, run.config.optim.grad_clip)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.optimizer.zero_grad(set_to_none=True)


@contextmanager
def _dropout_on(model: nn.Module) -> Iterator[None]:
    """Dropout as in training, batch norm on its running statistics (read, not updated).

    SimCSE's two views of a text are the same tokens under two dropout masks: with dropout off, as in
    ``eval()``, they coincide and the held-out loss, alignment and positive similarity say nothing.
    """
    model.train()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            module.eval()
    try:
        yield
    finally:
        model.eval()


def _evaluate(run: _Run, step: int) -> dict[str, float]:
    """The held-out metrics at ``step`` (0: the starting weights); a value that is not finite fails the run."""
    return _finite(_measure(run, step), step) if run.val is not None else {}


def _finite(metrics: dict[str, float], step: int) -> dict[str, float]:
    """``metrics`` if every value is finite, else a TrainingError saying what to change. NaN cannot be stored (JSON
    has no NaN, and a SQLite REAL column takes it as NULL): unchecked, the job failed as an internal error."""
    if not (bad := [name for name, value in metrics.items() if not math.isfinite(value)]):
        return metrics
    if step == 0:
        raise TrainingError(f"evaluating the starting weights, before any step, gave {', '.join(bad)} that are not "
                            "finite: the model's outputs on the held-out records overflow. Values near float32's "
                            "largest (3.4e38) do on the way through the model: scale the data down")  # fmt: skip
    raise TrainingError(f"the evaluation at step {step} gave {', '.join(bad)} that are not finite; lower optim.lr, "
                        "raise loss.temperature, or use precision 'fp32'")  # fmt: skip


def _measure(run: _Run, step: int) -> dict[str, float]:
    config, model = run.config, run.model
    seed = _step_seed(config.train.seed, 2 * 10**9 + step)
    val_index = run.val.sample_index(config.eval.max_samples, seed)
    train_index = run.train.sample_index(config.eval.max_samples, seed)
    batch_size = max(2, min(config.train.batch_size, 512))

    def embed(data: DeviceData, index: Tensor) -> Tensor:
        parts = [model.embed(run.views.plain(data.batch(part).raw)) for part in index.split(batch_size)]
        return torch.cat(parts)

    def project_views() -> tuple[Tensor, Tensor]:
        a, b = [], []
        with _dropout_on(model) if run.views.dropout_makes_views else nullcontext():
            for part in val_index.split(batch_size):
                batch = run.val.batch(part)
                z = model.project(run.views.stacked(batch.raw, batch.positives))
                a.append(z[: len(part)])
                b.append(z[len(part) :])
        return torch.cat(a), torch.cat(b)

    def labels_of(data: DeviceData, index: Tensor):
        return None if data.labels is None else data.labels[index.to(data.device)].cpu().numpy()

    model.eval()
    torch.manual_seed(seed)  # evaluation's views are seeded too; each step reseeds before training
    try:
        return evaluate(
            project_views=project_views,
            embed_train=lambda: embed(run.train, train_index),
            embed_val=lambda: embed(run.val, val_index),
            loss_fn=lambda a, b: run.loss_fn(a, b, gather=False),  # rank 0 alone evaluates: no collectives
            temperature=run.loss_fn.temperature,
            train_labels=labels_of(run.train, train_index),
            val_labels=labels_of(run.val, val_index),
            knn_k=config.eval.knn_k,
            probe=config.eval.linear_probe,
        )
    finally:
        model.train()


def _checkpoint(
    run: _Run, directory: Path, step: int, metrics: dict[str, float], best: dict[str, float], stale: int,
    cb: TrainCallback,
) -> Path:  # fmt: skip
    state = TrainerState(
        step=step,
        epoch=(step - 1) // run.steps_per_epoch if step else 0,
        optimizer=run.optimizer.state_dict(),
        loss={name: p.detach() for name, p in run.loss_fn.named_parameters()},
        scaler=run.scaler.state_dict() if run.scaler else None,
        rng=torch.get_rng_state(),
        metrics=metrics,
        best_metrics=best,
        stale_evaluations=stale,
    )
    path = save_checkpoint(directory / f"step-{step:08d}", run.model, run.config, run.train.records.spec, state)
    cb.on_checkpoint(CheckpointInfo(path=path, step=step, epoch=state.epoch, metrics=dict(metrics)))
    return path


_GO_ON, _STOP, _EARLY = 0, 1, 2


def _signal(run: _Run, should_stop: Callable[[], bool], early: bool) -> int:
    """Rank 0's word before each step: go on, stop as asked, or end early (``early``: its evaluation said so)."""
    flag = torch.tensor([_GO_ON if run.rank else _EARLY if early else _STOP if should_stop() else _GO_ON])
    if run.world > 1:  # every rank must leave the loop at the same step, or collectives hang
        dist.broadcast(flag, src=0)
    return int(flag.item())


def _early_stop(best: dict[str, float], patience: int, step: int, total: int) -> str:
    name = "knn_top1" if "knn_top1" in best else "val_loss"
    return (f"stopped early at step {step} of {total}: {patience} evaluation{'s' * (patience > 1)} in a row did not "
            f"beat the best so far ({name} {best[name]:.4g}); train.early_stop_patience is {patience}")  # fmt: skip


def fit(
    config: RunConfig,
    train: Records,
    val: Records | None,
    *,
    checkpoint_dir: Path,
    callback: TrainCallback | None = None,
    should_stop: Callable[[], bool] = lambda: False,
    resume_from: Path | None = None,
    start_from: Path | None = None,
) -> FitResult:
    """Train a run, reporting through ``callback`` and checkpointing into ``checkpoint_dir``.

    Args:
        config: the whole run.
        train: training records.
        val: held-out records for evaluation (of the starting weights, and at each epoch's end), or None.
        checkpoint_dir: directory that receives ``step-XXXXXXXX`` checkpoints.
        callback: receives steps, evaluations and checkpoints (rank 0 only).
        should_stop: polled between steps; True stops cleanly after writing a checkpoint.
        resume_from: a checkpoint of this run to continue from.
        start_from: a checkpoint of another run whose model weights (its input normalisation among them) this run
            starts from, with a new optimiser, schedule and step count; ignored where ``resume_from`` is given,
            whose weights already grew from them.

    Raises:
        TrainingError: the data or the numbers make the run impossible; the message says what to change.
    """
    config = config.for_data(paired=train.positives is not None)  # pairs train on their pairs unless told otherwise
    run, resumed = _setup(config, train, val, resume_from, start_from)
    start = resumed.step if resumed else 0
    cb: TrainCallback = callback if (callback is not None and run.rank == 0) else NullCallback()
    checkpoint_dir = Path(checkpoint_dir)
    seed, batch_size, local = config.train.seed, config.train.batch_size, config.train.batch_size // run.world
    last_path, metrics, evaluated_at = resume_from, {}, -1  # a checkpoint carries the metrics of its own step only
    # the best evaluation so far (a resumed run's from its checkpoint): one that beats it is checkpointed, for "best";
    # ``stale`` evaluations since it did not, and at train.early_stop_patience of them the run ends (``early``)
    best, stale = (resumed.best_metrics, resumed.stale_evaluations) if resumed else ({}, 0)
    patience, early = config.train.early_stop_patience, None
    if patience is not None and stale >= patience and start < run.total_steps:  # resumed where it was to end
        early = _early_stop(best, patience, start, run.total_steps)
    order, order_epoch = None, -1
    run.model.train()
    if start == 0 and config.eval.at_start:  # the starting weights' evaluation: the curves' baseline, never "best"
        if run.rank == 0 and (baseline := _evaluate(run, 0)):
            cb.on_eval(EvalReport(step=0, epoch=0, metrics=baseline))
        if run.world > 1:
            dist.barrier()  # ranks > 0 wait for rank 0's evaluation
    tick, step, saved_at = time.perf_counter(), start, start  # saved_at: the step of the newest checkpoint
    for step in range(start, run.total_steps):
        signal = _signal(run, should_stop, early is not None)
        if signal == _EARLY:  # checkpointed at the evaluation that said so
            return FitResult("completed", step, run.total_steps, last_path, metrics, early or "stopped early")
        if signal == _STOP:
            if run.rank == 0 and step > saved_at:  # not again where the step just done was checkpointed
                last_path = _checkpoint(run, checkpoint_dir, step, metrics if evaluated_at == step else {}, best,
                                        stale, cb)  # fmt: skip
            return FitResult("stopped", step, run.total_steps, last_path, metrics)
        epoch, index = divmod(step, run.steps_per_epoch)
        if epoch != order_epoch:  # same order on every rank; each takes its slice of the global batch
            epoch_seed = _step_seed(seed, 10**9 + epoch)
            order, order_epoch = epoch_order(epoch_seed, len(run.train), batch_size, run.text_keys), epoch
        rows = order[index * batch_size + run.rank * local : index * batch_size + (run.rank + 1) * local]
        # lr: set by hand from the step, so a resumed run needs no scheduler state
        lr = lr_at(step, run.total_steps, config.optim)
        for group in run.optimizer.param_groups:
            group["lr"] = lr
        torch.manual_seed(_step_seed(seed, step))  # views, dropout: a function of (seed, step) alone
        # forward, loss, backward
        loss = _forward_backward(run, run.train.batch(rows))
        # clip, step, zero_grad
        _optimizer_step(run)
        # report: .item() waits for the device; one sync per step is the price of a per-step loss series
        value = loss.item()
        if not math.isfinite(value):
            raise TrainingError(
                f"the loss became {value} at step {step + 1}; lower optim.lr, raise loss.temperature, "
                "or use precision 'fp32'"
            )
        now = time.perf_counter()
        cb.on_step(StepReport(step + 1, run.total_steps, epoch, value, lr, run.loss_fn.temperature,
                              batch_size / max(now - tick, 1e-9)))  # fmt: skip
        tick = now
        # evaluate at each epoch's end and at the last step
        done, improved = step + 1, False
        if done % run.steps_per_epoch == 0 or done == run.total_steps:
            if run.rank == 0:
                metrics, evaluated_at = _evaluate(run, done), done
                if metrics:
                    cb.on_eval(EvalReport(step=done, epoch=epoch, metrics=metrics))
                score = checkpoint_score(metrics)
                if score is not None and (not best or score > checkpoint_score(best)):
                    best, improved, stale = metrics, True, 0
                elif score is not None:
                    stale += 1
                    if patience is not None and stale >= patience and done < run.total_steps:
                        early = _early_stop(best, patience, done, run.total_steps)
            tick = time.perf_counter()  # evaluation time is not training throughput
        # checkpoint at the interval, at the end, where an evaluation beat the ones before, and where the run ends early
        interval = done % config.train.checkpoint_every_steps == 0
        if run.rank == 0 and (interval or done == run.total_steps or improved or early is not None):
            last_path = _checkpoint(run, checkpoint_dir, done, metrics if evaluated_at == done else {}, best, stale, cb)
            saved_at, tick = done, time.perf_counter()
        if run.world > 1 and done % run.steps_per_epoch == 0:
            dist.barrier()  # ranks > 0 wait for rank 0's evaluation and checkpoint
    return FitResult("completed", run.total_steps, run.total_steps, last_path, metrics)
