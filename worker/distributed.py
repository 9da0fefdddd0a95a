"""Multi-device jobs: one process per device (torchrun-style), ``core``'s distributed loss across them.

The worker process keeps the heartbeat; it starts ``num_devices`` spawned processes (never forked: CUDA may
be initialised in them), which form a process group on loopback (NCCL on GPUs, gloo on CPUs) and call
``fit``. Rank 0 records progress and checkpoints through its own :class:`DatabaseRecorder`. A stop request is
passed to the ranks through an event that ``fit`` polls on rank 0 and broadcasts to the others.
"""

from __future__ import annotations

import os
import socket
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from core.allocator import keep_freed_memory
from core.config import RunConfig
from core.data.records import Records
from core.store.settings import Settings
from core.store.storage import Storage
from core.train.loop import FitResult, TrainingError, fit


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank_main(
    rank: int, world: int, port: int, settings_json: str, job_id: str, worker: str, config_json: str,
    train: Records, val: Records | None, directory: str, resume: str | None, start: str | None, stop,  # noqa: ANN001
    results,  # noqa: ANN001
) -> None:  # fmt: skip
    from worker.recorder import DatabaseRecorder

    keep_freed_memory()  # a spawned process starts with glibc's defaults again
    config = RunConfig.model_validate_json(config_json)
    use_cuda = config.train.device != "cpu" and torch.cuda.is_available()
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world))
    backend = "nccl" if use_cuda else "gloo"
    dist.init_process_group(backend, init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        settings = Settings.model_validate_json(settings_json)
        recorder = (DatabaseRecorder(settings, job_id, worker, Storage(settings.storage_root),
                                     keep_checkpoints=config.train.keep_checkpoints) if rank == 0 else None)  # fmt: skip
        result = fit(config, train, val, checkpoint_dir=Path(directory), callback=recorder,
                     should_stop=stop.is_set, resume_from=Path(resume) if resume else None,
                     start_from=Path(start) if start else None)  # fmt: skip
        if recorder is not None:
            recorder.flush(must=True)
        if rank == 0:
            path = str(result.last_checkpoint) if result.last_checkpoint else None
            results.put(("ok", result.status, result.step, result.total_steps, path, result.early_stop))
    except TrainingError as error:
        if rank == 0:
            results.put(("error", str(error), 0, 0, None, None))
    except Exception as error:  # the job's error says what broke, not only that a process exited
        message = f"training process {rank} of {world} failed: {type(error).__name__}: {error}"
        results.put(("error", message, 0, 0, None, None))
        results.close()
        results.join_thread()
        raise  # its traceback goes to the worker's log, and the exit code stops the other ranks
    finally:
        dist.destroy_process_group()
    results.close()
    results.join_thread()  # rank 0's result has left this process
    sys.stdout.flush()
    sys.stderr.flush()
    # Without the interpreter's teardown: there, now and then, a gloo thread still joinable aborts the process
    # (SIGABRT) after its work is done, and a rank that dies makes run_distributed stop the others, rank 0 perhaps
    # before its result was sent (tests/core/test_distributed_loss.py saw it 1 run in 6-14 before it left this way).
    os._exit(0)


def run_distributed(
    settings: Settings, job_id: str, worker: str, config: RunConfig, train: Records, val: Records | None,
    directory: Path, resume: Path | None, start: Path | None, heartbeat,  # noqa: ANN001 - worker.heartbeat.Heartbeat
) -> FitResult:  # fmt: skip
    """Train with ``config.train.num_devices`` processes and return rank 0's result."""
    world = config.train.num_devices
    if config.train.device == "cuda" and torch.cuda.device_count() < world:
        raise TrainingError(f"train.num_devices is {world} but this worker sees {torch.cuda.device_count()} GPUs")
    ctx = mp.get_context("spawn")
    stop, results = ctx.Event(), ctx.Queue()
    port = _free_port()
    args = (world, port, settings.model_dump_json(), job_id, worker, config.model_dump_json(), train, val,
            str(directory), str(resume) if resume else None, str(start) if start else None, stop, results)  # fmt: skip
    procs = [ctx.Process(target=_rank_main, args=(rank, *args), daemon=False) for rank in range(world)]
    for proc in procs:
        proc.start()
    while any(proc.is_alive() for proc in procs):
        if heartbeat.should_stop():
            stop.set()
        if any(proc.exitcode not in (None, 0) for proc in procs):  # one rank died: the others would hang
            for proc in procs:
                proc.terminate()
            break
        time.sleep(0.2)
    for proc in procs:
        proc.join(timeout=30)
    if results.empty():
        codes = [proc.exitcode for proc in procs]
        raise TrainingError(f"a training process of the distributed run exited abnormally (exit codes {codes})")
    kind, status, step, total, path, early_stop = results.get()
    if kind == "error":
        raise TrainingError(status)
    return FitResult(status, step, total, Path(path) if path else None, early_stop=early_stop)
