"""One rank of the data-parallel tests (tests/train/test_distributed.py, tests/test_strict_device.py), started by
torch.distributed.run.

Trains a small model through the one engine on a tiny synthetic task, on the device the run resolves (``--device
cpu``: the CPU, or under MEDASSIST_STRICT_DEVICE=1 the strict check's stand-in), in a run folder made the way the
commands make it (rank 0 in ``out``, the other ranks in a scratch folder), and saves its final weights and history
per rank. ``what`` is ``classifier`` (a CNN), ``gan`` (a generator with the discriminator its step trains) or
``diffusion``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from helpers import blobs
from medassist.config import DeviceOptions, TrainConfig
from medassist.models import create_model
from medassist.run import Run
from medassist.train import fit
from medassist.train.device import on_device
from medassist.train.distributed import ranks, scratch_out, setup


@dataclass
class WorkerConfig(DeviceOptions):
    out: str = ""
    what: str = "classifier"
    fail_rank: int = -1


def _model_and_step(what: str) -> tuple[torch.nn.Module, object, dict]:
    """The model fit trains, its step function, and what else fit needs for it."""
    if what == "classifier":
        return create_model("cnn", num_classes=2, in_channels=1, image_size=12), None, {}
    if what == "gan":
        from medassist.synth.gan import Discriminator, GANStep, Generator

        step = GANStep(Discriminator(width=8), augment=("translation",))
        return Generator(image_size=12, latent_dim=8, width=8), step, {"validate": lambda m: {"loss": 0.0}}
    from medassist.synth.diffusion import ConditionalDiffusion, diffusion_step

    model = ConditionalDiffusion(image_size=12, channels=(8, 8), timesteps=10)
    return model, diffusion_step, {"validate": lambda m: {"loss": 0.0}}


@on_device
def train(cfg: WorkerConfig) -> None:
    out = Path(cfg.out)
    r = ranks()
    root, _ = scratch_out(str(out))
    monitor = "val_auc" if cfg.what == "classifier" else "val_loss"
    tcfg = TrainConfig(
        epochs=3, batch_size=32, optimizer="sgd", momentum=0.0, lr=0.05, seed=0, threads=1, monitor=monitor
    )
    torch.manual_seed(0)  # the same initial weights as the single process it is compared with
    model, step, extra = _model_and_step(cfg.what)
    if r.rank == cfg.fail_rank:
        raise RuntimeError(f"rank {r.rank} fails on purpose")
    with Run.create(root, "ddp", {"world_size": r.world_size}) as run:
        result = fit(
            model,
            blobs(64, seed=1),
            blobs(32, seed=2),
            tcfg,
            num_classes=2,
            checkpoint=run.path("units/m/ckpt.pt"),
            progress=False,
            step_fn=step,  # type: ignore[arg-type]
            **extra,
        )
        run.write_json("metrics.json", {"best_epoch": result.best_epoch})
    weights = {k: v.cpu() for k, v in model.state_dict().items()}
    if step is not None and hasattr(step, "d"):
        weights |= {f"discriminator.{k}": v.cpu() for k, v in step.d.state_dict().items()}
    torch.save(weights, out / f"weights-rank{r.rank}.pt")
    (out / f"history-rank{r.rank}.json").write_text(result.history.to_json(orient="records"))


if __name__ == "__main__":
    setup("cpu")
    argv = sys.argv[1:]
    train(
        WorkerConfig(
            device="cpu",
            out=argv[0],
            fail_rank=int(argv[1]) if len(argv) > 1 else -1,
            what=argv[2] if len(argv) > 2 else "classifier",
        )
    )
