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
from torch import nn

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


def setup(device: str) -> Ranks:
    """Join the process group that torchrun describes in the environment (no-op for a single process): NCCL when
    ``device``, the device the job trains on (its ``--device``), resolves to CUDA, each rank on its ``LOCAL_RANK``
    GPU; gloo otherwise. The backend follows the training device, never merely the machine: a CPU job on a machine
    with GPUs still trains under gloo."""
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


def sync_buffers(module: torch.nn.Module, r: Ranks) -> None:
    """Every rank's buffers (BatchNorm's running statistics) become rank 0's, so that every rank validates the same
    model: DDP broadcasts them only at the start of a training forward, and each rank's last batch moved its own."""
    if r.distributed:
        for b in module.buffers():
            dist.broadcast(b, src=0)


def from_main(obj: object, r: Ranks) -> object:
    """Rank 0's ``obj`` on every rank (a validation's numbers, so that every rank takes the same decision: keep
    the epoch, stop early, lower the rate; a rank that decided otherwise would wait in a collective forever)."""
    if not r.distributed:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model inside DDP's wrapper (``module``) or Opacus's (``_module``): where its own attributes are (a
    generator's ``latent_dim``, a diffusion model's ``timesteps``). A step function calls the wrapper, so that the
    wrapper sees the forward pass, and reads attributes from what this returns."""
    while True:
        if isinstance(model, torch.nn.parallel.DistributedDataParallel):
            model = model.module
        elif type(model).__name__ == "GradSampleModule" and isinstance(getattr(model, "_module", None), nn.Module):
            model = model._module
        else:
            return model


def average_gradients(module: torch.nn.Module, r: Ranks) -> None:
    """The mean over ranks of ``module``'s gradients, in place: the data-parallel step of a module that DDP does not
    wrap (a GAN's discriminator, trained inside the step function with an optimiser of its own)."""
    if not r.distributed:
        return
    for p in module.parameters():
        if p.grad is not None:
            dist.all_reduce(p.grad, op=dist.ReduceOp.SUM)
            p.grad.div_(r.world_size)


def broadcast_module(module: torch.nn.Module, r: Ranks) -> None:
    """Rank 0's weights and buffers on every rank (a module that DDP does not wrap starts the same everywhere)."""
    if r.distributed:
        for t in (*module.parameters(), *module.buffers()):
            dist.broadcast(t.data, src=0)


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
