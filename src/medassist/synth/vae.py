"""A class-conditional convolutional VAE with KL annealing, free bits and a posterior-collapse monitor.

Pixels are modelled as Bernoulli probabilities of the [0, 1] intensity (the usual choice for MedMNIST-like images),
so the negative ELBO is in nats per image. GroupNorm throughout (no BatchNorm), so Opacus can train it with DP-SGD;
the decoder upsamples with nearest-neighbour + convolution, which Opacus computes per-sample gradients for.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from medassist.synth.common import check_image_size
from medassist.train.data import model_device


def _block(cin: int, cout: int, groups: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1), nn.GroupNorm(min(groups, cout), cout), nn.SiLU()]


class ConditionalVAE(nn.Module):
    """Encoder 2 x (stride-2 conv) -> (mu, logvar) of ``latent_dim``; decoder from z and a class embedding."""

    def __init__(
        self, *, in_channels: int = 1, num_classes: int = 2, image_size: int = 28, latent_dim: int = 32, width: int = 32
    ) -> None:
        super().__init__()
        check_image_size(image_size, what="the VAE")
        self.latent_dim, self.num_classes, self.in_channels, self.image_size = (
            latent_dim,
            num_classes,
            in_channels,
            image_size,
        )
        s, w = image_size // 4, width
        self.label_map = nn.Embedding(num_classes, image_size * image_size)  # the class as an extra input channel
        self.encoder = nn.Sequential(
            *_block(in_channels + 1, w, 8),
            nn.Conv2d(w, w, 4, stride=2, padding=1),
            *_block(w, 2 * w, 8),
            nn.Conv2d(2 * w, 2 * w, 4, stride=2, padding=1),
            nn.SiLU(),
            nn.Flatten(),
        )
        self.to_stats = nn.Linear(2 * w * s * s, 2 * latent_dim)
        self.label_emb = nn.Embedding(num_classes, 16)
        self.from_z = nn.Linear(latent_dim + 16, 2 * w * s * s)
        self.decoder = nn.Sequential(
            nn.Unflatten(1, (2 * w, s, s)),
            nn.SiLU(),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_block(2 * w, w, 8),
            nn.Upsample(scale_factor=2, mode="nearest"),
            *_block(w, w, 8),
            nn.Conv2d(w, in_channels, 3, padding=1),
        )

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, _, H, W = x.shape
        cond = self.label_map(y).view(B, 1, H, W)
        mu, logvar = self.to_stats(self.encoder(torch.cat([x, cond], 1))).chunk(2, dim=1)  # (B, D) each
        return mu, logvar.clamp(-10, 10)

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.from_z(torch.cat([z, self.label_emb(y)], 1)))  # (B, C, H, W) Bernoulli logits

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mu, logvar = self.encode(x, y)
        z = mu + torch.randn_like(mu) * (0.5 * logvar).exp()
        return self.decode_logits(z, y), mu, logvar

    @torch.no_grad()
    def generate(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Images in [-1, 1] for the classes ``y``: the decoder's mean at z drawn from the prior."""
        dev = model_device(self)  # z drawn on the CPU from ``generator``: the same images on every device
        z = torch.randn(len(y), self.latent_dim, generator=generator).to(dev)
        return (torch.sigmoid(self.decode_logits(z, y.to(dev))) * 2 - 1).cpu()


def kl_per_dim(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per latent dimension, (B, D)."""
    return 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar)


def recon_nats(logits: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Bernoulli negative log-likelihood per image (B,) of the [0, 1] intensities of ``x`` (given in [-1, 1])."""
    target = (x + 1) / 2
    return F.binary_cross_entropy_with_logits(logits, target, reduction="none").flatten(1).sum(1)


def beta_at(step: int, *, schedule: str, warmup_steps: int, cycles: int, total_steps: int) -> float:
    """The KL weight at ``step``: constant 1, linear warm-up over ``warmup_steps``, or cyclical (Fu et al., 2019:
    each of ``cycles`` cycles rises linearly over its first half, then stays at 1)."""
    if schedule == "none" or warmup_steps <= 0 and schedule == "warmup":
        return 1.0
    if schedule == "warmup":
        return min(1.0, step / warmup_steps)
    if schedule == "cyclical":
        period = max(1, math.ceil(total_steps / max(1, cycles)))
        return min(1.0, (step % period) / (0.5 * period))
    raise ValueError(f"unknown KL schedule {schedule!r}")


class VAEStep:
    """The VAE's training step for :func:`medassist.train.fit`: reconstruction + beta * KL (with free bits)."""

    def __init__(
        self,
        *,
        schedule: str = "warmup",
        warmup_steps: int = 500,
        cycles: int = 4,
        total_steps: int = 1000,
        free_bits: float = 0.0,
    ) -> None:
        self.schedule, self.warmup_steps, self.cycles, self.total_steps = schedule, warmup_steps, cycles, total_steps
        self.free_bits = free_bits
        self.step = 0

    def __call__(self, model: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> tuple[Any, ...]:
        x = inputs[0]
        logits, mu, logvar = model(x, y)
        recon = recon_nats(logits, x).mean()
        kl_d = kl_per_dim(mu, logvar)  # (B, D)
        kl = kl_d.sum(1).mean()
        # Free bits (Kingma et al., 2016): a dimension's KL below the floor is not pushed further down.
        kl_term = kl_d.mean(0).clamp(min=self.free_bits).sum() if self.free_bits > 0 else kl
        beta = beta_at(
            self.step,
            schedule=self.schedule,
            warmup_steps=self.warmup_steps,
            cycles=self.cycles,
            total_steps=self.total_steps,
        )
        self.step += 1
        return recon + beta * kl_term, None, {"recon": recon.detach(), "kl": kl.detach(), "beta": beta}

    def state_dict(self) -> dict[str, int]:
        return {"step": self.step}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.step = int(state["step"])


@torch.no_grad()
def vae_scores(
    model: ConditionalVAE, x: torch.Tensor, y: torch.Tensor, *, batch_size: int = 512
) -> dict[str, torch.Tensor]:
    """Per-image negative ELBO, reconstruction and KL (nats), and the posterior means, at beta = 1 (eval mode)."""
    was = model.training
    model.eval()
    g = torch.Generator().manual_seed(0)  # the same posterior draw every time: a fixed validation number
    out: dict[str, list[torch.Tensor]] = {"neg_elbo": [], "recon": [], "kl": [], "mu": [], "kl_dim": []}
    dev = model_device(model)
    for start in range(0, len(x), batch_size):
        xb, yb = x[start : start + batch_size].to(dev), y[start : start + batch_size].to(dev)
        mu, logvar = model.encode(xb, yb)
        z = mu + torch.randn(mu.shape, generator=g).to(dev) * (0.5 * logvar).exp()
        recon = recon_nats(model.decode_logits(z, yb), xb)
        kl_d = kl_per_dim(mu, logvar)
        out["recon"].append(recon)
        out["kl"].append(kl_d.sum(1))
        out["neg_elbo"].append(recon + kl_d.sum(1))
        out["mu"].append(mu)
        out["kl_dim"].append(kl_d)
    model.train(was)
    return {k: torch.cat(v).cpu() for k, v in out.items()}


def active_units(mu: torch.Tensor, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across images by more than ``threshold`` (Burda et al., 2016):
    a collapsed dimension carries no information about the image."""
    return int((mu.var(0) > threshold).sum())


def vae_validation(x: torch.Tensor, y: torch.Tensor):  # noqa: ANN201 - a closure for fit(validate=...)
    """The VAE's validation hook: negative ELBO (``loss``), reconstruction, KL and active units on (x, y)."""

    def validate(model: nn.Module) -> dict[str, float]:
        s = vae_scores(model, x, y)  # type: ignore[arg-type]
        return {
            "loss": float(s["neg_elbo"].mean()),
            "recon": float(s["recon"].mean()),
            "kl": float(s["kl"].mean()),
            "active_units": float(active_units(s["mu"])),
        }

    return validate
