"""Data-parallel training under ``torchrun``: the process group, each rank's shard of a batch, reductions.

``torchrun --nproc-per-node N -m medassist image ...`` starts N processes with ``RANK``/``WORLD_SIZE`` set;
:func:`setup` joins them into one process group (gloo on the CPU; NCCL with ``--device cuda``, each rank on its
``LOCAL_RANK`` GPU) and :func:`fit` wraps the model in ``DistributedDataParallel``. Every rank draws the same
global batch order (the same seeded generator) and trains on its shard of each batch, so that one step sees the
combined batch, as one process would. Only rank 0 writes the run folder: the other ranks write into a scratch
folder of their own (:func:`scratch_out`), deleted when they exit. Without torchrun nothing changes.
"""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.distributed as dist

from medassist.errors import MedAssistError


@dataclass(frozen=True)
class Ranks:
    """This process's place in the job: rank, number of processes, rank on this node."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def ranks() -> Ranks:
    """The current job's ranks (one process, rank 0, when no process group is initialised)."""
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", dist.get_rank())))
    return Ranks()


def _terminate(signum: int, frame: object) -> None:
    # torchrun stops the other ranks with SIGTERM when one fails: raising lets each run folder record the failure.
    raise SystemExit(f"stopped by signal {signum}: another rank of the job failed")


def setup(device: str = "auto") -> Ranks:
    """Join the process group that torchrun describes in the environment (no-op for a single process): NCCL when
    ``device`` (``--device``) resolves to CUDA, each rank on its ``LOCAL_RANK`` GPU; gloo on the CPU."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1 or (dist.is_available() and dist.is_initialized()):
        return ranks()
    if not dist.is_available():
        raise MedAssistError("this PyTorch build has no torch.distributed; run without torchrun")
    from medassist.train.device import resolve_device

    backend = "nccl" if resolve_device(device).type == "cuda" else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    signal.signal(signal.SIGTERM, _terminate)
    atexit.register(teardown)
    return ranks()


def teardown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def shard(idx: torch.Tensor, r: Ranks) -> torch.Tensor:
    """Rank ``r``'s part of a global batch: every ``world_size``-th sample from its rank (equal sizes when the
    batch divides evenly)."""
    return idx[r.rank :: r.world_size] if r.distributed else idx


def _reduce_device() -> torch.device:
    """Where reduced tensors live: NCCL reduces only CUDA tensors (the rank's GPU), gloo CPU ones."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def all_sum(values: list[float], r: Ranks) -> list[float]:
    """The sums over ranks of ``values`` (the values themselves for one process)."""
    if not r.distributed:
        return values
    t = torch.tensor(values, dtype=torch.float64, device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.cpu().tolist()


def any_rank(flag: bool, r: Ranks) -> bool:
    """True on every rank when ``flag`` is True on any (so that all ranks leave a loop at the same step)."""
    if not r.distributed:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=_reduce_device())
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def scratch_out(out: str, resume: str = "") -> tuple[str, str]:
    """Where this rank's study writes: ``(out, resume)`` unchanged on rank 0; on the other ranks a scratch folder
    of their own (with a copy of the run being resumed, so that they read the same finished models), deleted at
    exit. Only rank 0 writes the run folder."""
    r = ranks()
    if r.is_main:
        return out, resume
    scratch = Path(tempfile.mkdtemp(prefix=f"medassist-rank{r.rank}-"))
    atexit.register(shutil.rmtree, scratch, ignore_errors=True)
    if resume:
        copy = scratch / Path(resume).name
        shutil.copytree(resume, copy)
        resume = str(copy)
    return str(scratch), resume
