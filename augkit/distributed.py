"""Several processes, one job: torchrun detection, the process group, and failing together.

augkit scales on PyTorch's own engine (``torch.distributed``, ``DistributedDataParallel``). This module
holds only what every trainer and command needs around it, so they stay readable:

* :func:`setup` starts the process group when torchrun launched us (env ``RANK``/``WORLD_SIZE``/
  ``LOCAL_RANK``): NCCL on GPUs (one GPU per process, ``cuda:LOCAL_RANK``), gloo on CPUs.
* :func:`rank`, :func:`world_size`, :func:`is_main`; without torchrun: rank 0 of 1, and every helper
  below is a no-op, so single-process code paths are unchanged.
* :func:`all_gather_rows` gathers a batch over the ranks with its gradient (a loss whose negatives
  are the other images of the batch needs the global batch, as with one process).
* :func:`wrap` puts a network into DDP (and converts BatchNorm to SyncBatchNorm with ``sync_bn``);
  :func:`unwrap` gives the plain module whose state dict checkpoints store (no ``module.`` prefix).
* Failing together: a crash on one rank makes torchrun stop the others (it tears the group down when a
  worker exits non-zero); errors that can be caught at a sync point go through :func:`fail_together`
  and :func:`run_on_main`, so every rank raises (the failing rank its own error, the others
  :class:`RankFailed` naming it) instead of waiting for the process group's timeout.
* :func:`end_process` ends a torchrun worker without interpreter teardown, which races with gloo's
  threads in PyTorch; augkit's command line ends this way, and scripts built on augkit may too.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any, NoReturn, TypeVar

from augkit.errors import AugkitError, UserError

T = TypeVar("T")

#: minutes a collective waits for a missing rank before the group gives up (AUGKIT_DIST_TIMEOUT_MIN)
DEFAULT_TIMEOUT_MIN = 60.0

_sync_bn = False


class RankFailed(AugkitError):
    """Raised on the ranks that did not fail when another one did: names that rank and repeats its error."""

    def __init__(self, failed_rank: int, message: str, exit_code: int = 1):
        super().__init__(f"rank {failed_rank} failed: {message}")
        self.failed_rank = failed_rank
        self.exit_code = exit_code


def env_rank() -> int:
    """This process's rank as torchrun set it (0 without torchrun)."""
    return int(os.environ.get("RANK", "0"))


def launched() -> bool:
    """True when torchrun (or an equivalent launcher) started several processes."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def active() -> bool:
    """A process group with more than one rank is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if dist.is_available() and dist.is_initialized() else env_rank()


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Rank 0: the one process that writes checkpoints, shards, reports and prints progress."""
    return rank() == 0


def local_world_size() -> int:
    """Processes on this machine (they share its memory)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def sync_bn() -> bool:
    return _sync_bn


def default_device() -> str:
    """``cuda`` when a GPU is visible, else ``cpu``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def check_device(device: str | None) -> str:
    """``device`` checked against this machine (None: :func:`default_device`); a GPU that is not there
    is a clear error rather than a crash deep inside training, and never a silent fall-back to the CPU."""
    import torch

    if device is None:
        return default_device()
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise UserError(f"device '{device}': not a device name; use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise UserError(f"device '{device}': no CUDA GPU is visible here; use --device cpu")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise UserError(f"device '{device}': this machine has {torch.cuda.device_count()} GPU(s) "
                            f"(cuda:0 to cuda:{torch.cuda.device_count() - 1})")
    elif dev.type != "cpu":
        raise UserError(f"device '{device}': augkit runs on cpu or cuda")
    return str(dev)


def setup(device: str | None = None, *, sync_batchnorm: bool | None = None) -> str:
    """Start the process group if torchrun launched this process; returns the device this rank uses.

    Without torchrun it only checks ``device``. Under torchrun ``cuda`` becomes ``cuda:LOCAL_RANK``
    (backend NCCL) and ``cpu`` stays ``cpu`` (backend gloo). ``sync_batchnorm`` makes :func:`wrap`
    convert BatchNorm layers to SyncBatchNorm, which PyTorch runs on GPUs only; None keeps what an
    earlier call set (the CLI sets it, the library functions it calls only join the group).
    """
    import torch
    import torch.distributed as dist

    global _sync_bn
    device = check_device(device)
    if not launched():
        _sync_bn = False
        return device
    dev = torch.device(device)
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        if dev.index is not None and dev.index != local:
            raise UserError(f"device '{device}': under torchrun each process uses cuda:LOCAL_RANK "
                            f"(cuda:{local} here); pass --device cuda")
        if local >= torch.cuda.device_count():
            raise UserError(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPU(s); start at "
                            "most that many processes per node (torchrun --nproc-per-node)")
        dev = torch.device("cuda", local)
        torch.cuda.set_device(dev)
        backend = "nccl"
    else:
        if sync_batchnorm:
            raise UserError("--sync-bn needs GPUs: PyTorch's SyncBatchNorm does not run on CPUs")
        backend = "gloo"
    if not dist.is_initialized():
        minutes = float(os.environ.get("AUGKIT_DIST_TIMEOUT_MIN", DEFAULT_TIMEOUT_MIN))
        dist.init_process_group(backend, timeout=timedelta(minutes=minutes),
                                device_id=dev if dev.type == "cuda" else None)
    if sync_batchnorm is not None:
        _sync_bn = sync_batchnorm
    return str(dev)


def cleanup() -> None:
    """Leave the process group (at the end of a command; harmless when none was started)."""
    import torch.distributed as dist

    global _sync_bn
    _sync_bn = False
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def end_process(code: int | str | None = 0) -> NoReturn:
    """Leave the process group and end the process with ``code`` (as ``sys.exit`` reads it).

    Under torchrun the process ends without Python's interpreter teardown (``os._exit``, after flushing
    stdout and stderr). Why: gloo's worker threads may still hold the tensors of the last collective
    when the interpreter finalises; freeing them needs the GIL, a finalising interpreter ends such a
    thread instead, and the C++ runtime then aborts the whole process (SIGABRT, "terminate called
    without an active exception"): a finished run reported as failed. It is a race in PyTorch, seen in
    about one torchrun launch in twenty here. Call this last, once every file is closed: atexit handlers
    do not run. Without torchrun it is ``sys.exit(code)``.
    """
    cleanup()
    if not launched():
        sys.exit(code)
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): the message on stderr, exit status 1
        print(code, file=sys.stderr)
        status = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed or broken pipe: nothing left to save
            pass
    os._exit(status)


def _collective_device():
    import torch
    import torch.distributed as dist

    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_object(obj: T, src: int = 0) -> T:
    """``obj`` from rank ``src`` on every rank (any picklable value)."""
    import torch.distributed as dist

    if not active():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src, device=_collective_device())
    return box[0]


def all_gather_object(obj: Any) -> list:
    """Every rank's ``obj``, in rank order, on every rank."""
    import torch.distributed as dist

    if not active():
        return [obj]
    out: list = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def any_true(*flags: bool) -> tuple[bool, ...]:
    """Each flag OR-ed over all ranks (one small all-reduce): e.g. "stop now" decided together."""
    import torch
    import torch.distributed as dist

    if not active():
        return tuple(bool(f) for f in flags)
    t = torch.tensor([float(bool(f)) for f in flags], device=_collective_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return tuple(bool(v) for v in t.tolist())


def mean_over_ranks(values: dict[str, float]) -> dict[str, float]:
    """Each value averaged over the ranks (for logged losses)."""
    import torch
    import torch.distributed as dist

    if not active() or not values:
        return values
    t = torch.tensor(list(values.values()), dtype=torch.float64, device=_collective_device())
    dist.all_reduce(t)
    return dict(zip(values, (t / dist.get_world_size()).tolist()))


def all_gather_rows(t):
    """Every rank's ``t`` (the same shape on each), concatenated along dim 0 in rank order; ``t`` itself
    without torchrun. Differentiable: the gradient a rank's loss sends to another rank's rows goes back
    to that rank, so a loss over the gathered batch has, after DDP's averaging, the one-process gradient
    of the global batch (a contrastive loss's negatives then come from every rank, as one process's would)."""
    import torch

    if not active():
        return t
    from torch.distributed.nn.functional import all_gather

    return torch.cat(all_gather(t), 0)


def wrap(module, device) -> Any:
    """``module`` in DistributedDataParallel when several ranks run (SyncBatchNorm with ``sync_bn``);
    the module itself otherwise. Parameters are shared, so optimisers built on ``module`` keep working."""
    import torch
    from torch.nn.parallel import DistributedDataParallel

    if not active():
        return module
    if _sync_bn:
        module = torch.nn.SyncBatchNorm.convert_sync_batchnorm(module)
    dev = torch.device(device)
    return DistributedDataParallel(module, device_ids=[dev.index] if dev.type == "cuda" else None)


def unwrap(module) -> Any:
    """The plain module inside a DDP wrapper (what checkpoints store), or ``module`` itself."""
    from torch.nn.parallel import DistributedDataParallel

    return module.module if isinstance(module, DistributedDataParallel) else module


def cache_key_fields() -> dict:
    """What of the process group changes a trained model, for cache keys: a global batch of batch size x
    ranks (and SyncBatchNorm) trains another model than one process does. Empty in one process, so
    single-process keys stay as they were."""
    return {"world_size": world_size(), "sync_bn": sync_bn()} if world_size() > 1 else {}


def rank_seed(seed: int, offset: int = 0) -> int:
    """A seed for this rank's own random stream: ``seed + offset`` on rank 0 (so one process draws exactly
    what it always did), an independent derived seed on the other ranks."""
    r = rank()
    if r == 0:
        return seed + offset
    import numpy as np

    return int(np.random.SeedSequence([seed, offset, r]).generate_state(1, np.uint64)[0] >> 1)


def _describe(exc: BaseException) -> tuple[int, str]:
    return getattr(exc, "exit_code", 1), (str(exc) if isinstance(exc, AugkitError)
                                         else f"{type(exc).__name__}: {exc}")


@contextmanager
def fail_together() -> Iterator[None]:
    """Every rank runs the block (with no collectives inside); if it raised on any rank, every rank raises.

    The failing rank re-raises its own error; the others raise :class:`RankFailed`. An error that rank 0
    raised with the same message is marked ``same_on_main`` so only rank 0 prints it.
    """
    if not active():
        yield
        return
    error: Exception | None = None
    try:
        yield
    except Exception as exc:  # noqa: BLE001 - reported to every rank, then re-raised
        error = exc
    reports = all_gather_object(None if error is None else _describe(error))
    if error is not None:
        if rank() != 0 and reports[0] is not None and reports[0][1] == _describe(error)[1]:
            error.same_on_main = True  # type: ignore[attr-defined]
        raise error
    failed = [(r, rep) for r, rep in enumerate(reports) if rep is not None]
    if failed:
        r, (code, message) = failed[0]
        raise RankFailed(r, message, code)


def run_on_main(fn: Callable[[], T]) -> T:
    """``fn()`` on rank 0 only (file writes, imports, reports); its result on every rank. An error there
    is raised on every rank."""
    result = None
    with fail_together():
        if is_main():
            result = fn()
    return broadcast_object(result)


def should_report(exc: BaseException) -> bool:
    """Whether this rank prints ``exc``: rank 0 always; another rank only its own error, unless rank 0
    reports the same one."""
    import torch.distributed as dist

    if rank() == 0 or not launched():
        return True
    if not dist.is_initialized():  # before the group is up every rank runs the same code on the same input
        return False
    return not isinstance(exc, RankFailed) and not getattr(exc, "same_on_main", False)


__all__ = ["RankFailed", "active", "all_gather_object", "any_true", "broadcast_object", "cleanup",
           "fail_together", "is_main", "launched", "mean_over_ranks", "rank", "rank_seed", "run_on_main", "setup",
           "should_report", "unwrap", "world_size", "wrap"]
