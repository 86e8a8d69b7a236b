"""A class-conditional DCGAN-style GAN: a generator with BatchNorm, a projection discriminator with spectral
normalisation (Miyato & Koyama, 2018), and the hinge loss. Two options against mode collapse on small data sets:
a minibatch standard-deviation feature in the discriminator (Karras et al., 2018), which lets it see a batch that
repeats itself, and differentiable augmentation (DiffAugment, Zhao et al., 2020: random translation and cutout of
real and generated images alike, before the discriminator), which keeps it from memorising the training images.

The generator is the model :func:`medassist.train.fit` trains; the discriminator and its optimiser live in the
:class:`GANStep` object, whose state travels in the engine's checkpoint, so that ``--resume`` continues both.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

from medassist.errors import MedAssistError
from medassist.synth.common import check_image_size
from medassist.train.data import model_device
from medassist.train.device import current
from medassist.train.distributed import average_gradients, broadcast_module, ranks, sync_buffers, unwrap


class Generator(nn.Module):
    """z and a class embedding -> (C, H, W) in [-1, 1], two nearest-upsample + conv stages from H/4."""

    def __init__(
        self, *, in_channels: int = 1, num_classes: int = 2, image_size: int = 28, latent_dim: int = 64, width: int = 64
    ) -> None:
        super().__init__()
        check_image_size(image_size, what="the GAN")
        self.latent_dim, self.s, self.w = latent_dim, image_size // 4, width
        self.emb = nn.Embedding(num_classes, latent_dim)
        self.fc = nn.Linear(2 * latent_dim, 2 * width * self.s * self.s)
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * width),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(2 * width, width, 3, padding=1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Upsample(scale_factor=2),
            nn.Conv2d(width, width // 2, 3, padding=1),
            nn.BatchNorm2d(width // 2),
            nn.ReLU(),
            nn.Conv2d(width // 2, in_channels, 3, padding=1),
            nn.Tanh(),
        )

    def forward(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.fc(torch.cat([z, self.emb(y)], 1)).view(len(z), 2 * self.w, self.s, self.s)
        return self.net(h)  # (B, C, H, W)

    @torch.no_grad()
    def generate(self, y: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        was = self.training
        self.eval()
        dev = model_device(self)  # noise drawn on the CPU from ``generator``: the same images on every device
        out = torch.cat(
            [
                self(torch.randn(len(yb), self.latent_dim, generator=generator).to(dev), yb.to(dev)).cpu()
                for yb in y.split(512)
            ]
        )
        self.train(was)
        return out


class Discriminator(nn.Module):
    """Spectrally normalised conv net; the score is ``linear(h) + <embed(y), h>`` (projection conditioning).

    With ``minibatch_std``, the mean over features of the batch's standard deviation joins the last feature map as
    one more channel, followed by one more convolution: a batch of near-copies then looks different from a real one.
    """

    def __init__(
        self, *, in_channels: int = 1, num_classes: int = 2, width: int = 64, minibatch_std: bool = False
    ) -> None:
        super().__init__()
        w = width
        self.minibatch_std = minibatch_std
        self.net = nn.Sequential(
            spectral_norm(nn.Conv2d(in_channels, w // 2, 3, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(w // 2, w, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(w, w, 3, padding=1)),
            nn.LeakyReLU(0.2),
            spectral_norm(nn.Conv2d(w, 2 * w, 4, stride=2, padding=1)),
            nn.LeakyReLU(0.2),
        )
        if minibatch_std:
            self.mbstd = nn.Sequential(spectral_norm(nn.Conv2d(2 * w + 1, 2 * w, 3, padding=1)), nn.LeakyReLU(0.2))
        self.out = spectral_norm(nn.Linear(2 * w, 1))
        self.emb = spectral_norm(nn.Embedding(num_classes, 2 * w))

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.net(x)  # (B, 2w, H/4, W/4)
        if self.minibatch_std:
            std = h.std(dim=0, correction=0).mean() if len(h) > 1 else h.new_zeros(())
            h = self.mbstd(torch.cat([h, std.expand(len(h), 1, *h.shape[2:])], 1))
        h = h.sum(dim=(2, 3))  # (B, 2w): global sum pooling
        return self.out(h).squeeze(1) + (self.emb(y) * h).sum(1)  # (B,)


def diff_augment(x: torch.Tensor, policy: tuple[str, ...], *, shift: float = 0.125, cut: float = 0.5) -> torch.Tensor:
    """DiffAugment (Zhao et al., 2020) on a batch (B, C, H, W): ``translation`` shifts each image by up to
    ``shift`` of its size (edge pixels repeated), ``cutout`` zeroes one square of ``cut`` of its size at a random
    place. Both are differentiable in ``x``, so the generator learns through them."""
    b, _, h, w = x.shape
    dev = x.device
    if "translation" in policy:
        dy = torch.randint(-int(h * shift), int(h * shift) + 1, (b, 1, 1), device=dev)
        dx = torch.randint(-int(w * shift), int(w * shift) + 1, (b, 1, 1), device=dev)
        rows = (torch.arange(h, device=dev).view(1, h, 1) + dy).clamp(0, h - 1).expand(b, h, w)
        cols = (torch.arange(w, device=dev).view(1, 1, w) + dx).clamp(0, w - 1).expand(b, h, w)
        flat = (rows * w + cols).view(b, 1, h * w).expand(-1, x.shape[1], -1)
        x = x.flatten(2).gather(2, flat).view_as(x)
    if "cutout" in policy:
        ch, cw = int(h * cut), int(w * cut)
        cy, cx = (
            torch.randint(0, h - ch + 1, (b, 1, 1), device=dev),
            torch.randint(0, w - cw + 1, (b, 1, 1), device=dev),
        )
        ys, xs = torch.arange(h, device=dev).view(1, h, 1), torch.arange(w, device=dev).view(1, 1, w)
        keep = ~((ys >= cy) & (ys < cy + ch) & (xs >= cx) & (xs < cx + cw))  # (B, H, W)
        x = x * keep.unsqueeze(1).to(x.dtype)
    return x


class GANStep:
    """One GAN step for :func:`medassist.train.fit`: a discriminator update (hinge loss, its own Adam), then the
    generator's loss ``-D(G(z, y), y)``, which the engine backpropagates and steps with the generator's optimiser.

    ``augment`` names the DiffAugment transforms applied to every image the discriminator sees (real and generated,
    in both updates). Logs per batch: the discriminator's loss and its mean score on real and on generated images.
    """

    def __init__(
        self,
        discriminator: Discriminator,
        *,
        lr: float = 2e-4,
        betas: tuple[float, float] = (0.0, 0.9),
        augment: tuple[str, ...] = (),
    ) -> None:
        unknown = set(augment) - {"translation", "cutout"}
        if unknown:
            raise MedAssistError(f"unknown DiffAugment transform(s) {sorted(unknown)}; known: translation, cutout")
        self.d, self.augment = discriminator, tuple(augment)
        self.opt_d = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=betas)
        self.scaler: torch.amp.GradScaler | None = None

    def _score(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return self.d(diff_augment(x, self.augment) if self.augment else x, y)

    def __call__(self, g: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> tuple[Any, ...]:
        x = inputs[0]
        self.d.train()
        z = torch.randn(len(x), unwrap(g).latent_dim, device=x.device)  # type: ignore[arg-type]
        fake = g(z, y)
        d_real, d_fake = self._score(x, y), self._score(fake.detach(), y)
        loss_d = F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
        self.opt_d.zero_grad(set_to_none=True)
        r, scaler = ranks(), self.scaler  # float16: scaled as the engine scales the generator's loss
        (scaler.scale(loss_d) if scaler is not None else loss_d).backward()
        if scaler is not None:
            scaler.unscale_(self.opt_d)
        average_gradients(self.d, r)  # under torchrun: one discriminator, as for the generator DDP wraps
        if scaler is not None:
            scaler.step(self.opt_d)
            scaler.update()
        else:
            self.opt_d.step()
        sync_buffers(self.d, r)  # spectral normalisation's power-iteration vectors: rank 0's on every rank
        loss_g = -self._score(fake, y).mean()
        logs = {"d_loss": loss_d.detach(), "d_real": d_real.detach().mean(), "d_fake": d_fake.detach().mean()}
        return loss_g, None, logs

    def to(self, device: torch.device) -> GANStep:
        """The discriminator (and its optimiser's state) on the generator's device, with a gradient scaler of its
        own at precision 16-mixed, and under torchrun rank 0's weights on every rank; :func:`fit` calls this."""
        self.d.to(device)
        if current().precision == "16-mixed" and self.scaler is None:
            self.scaler = current().grad_scaler()
        broadcast_module(self.d, ranks())
        for state in self.opt_d.state.values():
            for k, v in state.items():
                if isinstance(v, torch.Tensor):
                    state[k] = v.to(device)
        return self

    def state_dict(self) -> dict[str, Any]:
        state = {"discriminator": self.d.state_dict(), "optimizer": self.opt_d.state_dict()}
        return state | ({"scaler": self.scaler.state_dict()} if self.scaler is not None else {})

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.d.load_state_dict(state["discriminator"])
        self.opt_d.load_state_dict(state["optimizer"])
        if self.scaler is not None and state.get("scaler") is not None:
            self.scaler.load_state_dict(state["scaler"])
