"""One rank of the data-parallel test (tests/test_distributed.py), started by torch.distributed.run.

Trains a small CNN through the one engine on a tiny synthetic task, in a run folder made the way the commands make
it (rank 0 in ``out``, the other ranks in a scratch folder), and saves its final weights and history per rank.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from helpers import blobs
from medassist.config import TrainConfig
from medassist.models import create_model
from medassist.run import Run
from medassist.train import fit
from medassist.train.distributed import ranks, scratch_out, setup


def train(out: Path, *, fail_rank: int = -1) -> None:
    r = setup()
    root, _ = scratch_out(str(out))
    cfg = TrainConfig(epochs=3, batch_size=32, optimizer="sgd", momentum=0.0, lr=0.05, seed=0, threads=1)
    torch.manual_seed(0)  # the same initial weights as the single process it is compared with
    model = create_model("cnn", num_classes=2, in_channels=1, image_size=12)
    if r.rank == fail_rank:
        raise RuntimeError(f"rank {r.rank} fails on purpose")
    with Run.create(root, "ddp", {"world_size": r.world_size}) as run:
        result = fit(
            model,
            blobs(64, seed=1),
            blobs(32, seed=2),
            cfg,
            num_classes=2,
            checkpoint=run.path("units/m/ckpt.pt"),
            progress=False,
        )
        run.write_json("metrics.json", {"best_epoch": result.best_epoch})
    torch.save(model.state_dict(), out / f"weights-rank{ranks().rank}.pt")
    (out / f"history-rank{ranks().rank}.json").write_text(result.history.to_json(orient="records"))


if __name__ == "__main__":
    train(Path(sys.argv[1]), fail_rank=int(sys.argv[2]) if len(sys.argv) > 2 else -1)
