"""A class-conditional denoising diffusion model from MONAI's generative components: ``DiffusionModelUNet``
trained with the ``DDPMScheduler`` through ``DiffusionInferer``, sampled with few ``DDIMScheduler`` steps."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medassist.synth.common import check_image_size
from medassist.train.data import model_device
from medassist.train.distributed import unwrap


class ConditionalDiffusion(nn.Module):
    """A small ``DiffusionModelUNet`` (one residual block per level, class embeddings, attention optional at the
    lowest level) predicting the noise; 1,000 training timesteps with a linear beta schedule."""

    def __init__(
        self,
        *,
        in_channels: int = 1,
        num_classes: int = 2,
        image_size: int = 28,
        channels: tuple[int, ...] | list[int] = (32, 64, 64),
        attention: bool = False,
        timesteps: int = 1000,
    ) -> None:
        super().__init__()
        from monai.inferers import DiffusionInferer
        from monai.networks.nets import DiffusionModelUNet
        from monai.networks.schedulers import DDPMScheduler

        check_image_size(image_size, what="the diffusion model")
        channels = tuple(channels)
        self.in_channels, self.image_size, self.timesteps = in_channels, image_size, timesteps
        self.unet = DiffusionModelUNet(
            spatial_dims=2,
            in_channels=in_channels,
            out_channels=in_channels,
            channels=channels,
            attention_levels=tuple([False] * (len(channels) - 1) + [attention]),
            num_res_blocks=1,
            num_head_channels=channels[-1] if attention else 8,
            num_class_embeds=num_classes,
            norm_num_groups=min(32, channels[0]),
        )
        self.scheduler = DDPMScheduler(num_train_timesteps=timesteps)
        self.inferer = DiffusionInferer(self.scheduler)

    def forward(self, x: torch.Tensor, y: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """The predicted noise of ``x`` noised to timesteps ``t`` with ``noise``."""
        return self.inferer(inputs=x, diffusion_model=partial(self.unet, class_labels=y), noise=noise, timesteps=t)

    @torch.no_grad()
    def generate(self, y: torch.Tensor, generator: torch.Generator | None = None, *, steps: int = 25) -> torch.Tensor:
        """Images in [-1, 1] for the classes ``y``, with ``steps`` deterministic DDIM steps (eta 0)."""
        from monai.networks.schedulers import DDIMScheduler

        was = self.training
        self.eval()
        ddim = DDIMScheduler(num_train_timesteps=self.timesteps)
        ddim.set_timesteps(steps)
        out = []
        dev = model_device(self)  # noise drawn on the CPU from ``generator``: the same start on every device
        for yb in y.split(256):
            noise = torch.randn(len(yb), self.in_channels, self.image_size, self.image_size, generator=generator)
            sample = self.inferer.sample(
                noise.to(dev), partial(self.unet, class_labels=yb.to(dev)), scheduler=ddim, verbose=False
            )
            out.append(sample.clamp(-1, 1).cpu())
        self.train(was)
        return torch.cat(out)


def diffusion_step(model: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> tuple[Any, ...]:
    """The diffusion training step for :func:`medassist.train.fit`: MSE between the noise and its prediction."""
    x = inputs[0]
    noise = torch.randn_like(x)
    t = torch.randint(0, unwrap(model).timesteps, (len(x),), device=x.device).long()  # type: ignore[arg-type]
    return F.mse_loss(model(x, y, t, noise), noise), None


@torch.no_grad()
def diffusion_losses(
    model: ConditionalDiffusion, x: torch.Tensor, y: torch.Tensor, *, draws: int = 4, seed: int = 0
) -> torch.Tensor:
    """Per-image denoising loss (N,), averaged over ``draws`` fixed (timestep, noise) draws: the same draws for
    every call, so that it is a fixed validation number and a membership-inference score."""
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(seed)  # on the CPU: the same draws on every device
    dev = model_device(model)
    total = torch.zeros(len(x))
    for _ in range(draws):
        t = torch.randint(0, model.timesteps, (len(x),), generator=g)
        noise = torch.randn(x.shape, generator=g)
        for start in range(0, len(x), 256):
            sl = slice(start, start + 256)
            nb = noise[sl].to(dev)
            pred = model(x[sl].to(dev), y[sl].to(dev), t[sl].to(dev), nb)
            total[sl] += (pred - nb).pow(2).flatten(1).mean(1).cpu()
    model.train(was)
    return total / draws


def diffusion_validation(x: torch.Tensor, y: torch.Tensor):  # noqa: ANN201 - a closure for fit(validate=...)
    """The diffusion model's validation hook: the mean denoising loss on (x, y) at fixed draws."""

    def validate(model: nn.Module) -> dict[str, float]:
        return {"loss": float(diffusion_losses(model, x, y, draws=2).mean())}  # type: ignore[arg-type]

    return validate
