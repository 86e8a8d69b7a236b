"""Fidelity and diversity on a domain classifier's features: the Fréchet distance (MONAI's ``FIDMetric``),
precision and recall (Kynkäänniemi et al., 2019) and density and coverage (Naeem et al., 2020), overall and per
class; the conditional accuracy of a real-trained classifier on the synthetic images; the near-duplicate rate."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from medassist.train.data import model_device, to_tensor


@torch.no_grad()
def classifier_features(model: nn.Module, images: np.ndarray | torch.Tensor, *, batch_size: int = 512) -> torch.Tensor:
    """The input of ``model.head`` (the pooled features of a registered classifier such as cnn_gap), (N, F)."""
    x = images if isinstance(images, torch.Tensor) else to_tensor(images)
    head = getattr(model, "head", None)
    if head is None:
        raise ValueError(f"{type(model).__name__} has no `head`; the features are read from its input")
    feats: list[torch.Tensor] = []
    hook = head.register_forward_pre_hook(lambda _m, args: feats.append(args[0].flatten(1).float()))
    was = model.training
    model.eval()
    try:
        device = model_device(model)
        for start in range(0, len(x), batch_size):
            model(x[start : start + batch_size].to(device))
    finally:
        hook.remove()
        model.train(was)
    return torch.cat(feats).double().cpu()


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, F) and (M, F), by MONAI's FIDMetric."""
    from monai.metrics import FIDMetric

    return float(FIDMetric()(a.double(), b.double()))


def _kth_nn(x: torch.Tensor, k: int) -> torch.Tensor:
    d = torch.cdist(x, x)  # (N, N)
    return d.kthvalue(k + 1, dim=1).values  # the k-th neighbour, the point itself being the first


def prdc(real: torch.Tensor, fake: torch.Tensor, *, k: int = 5) -> dict[str, float]:
    """Precision, recall, density and coverage of ``fake`` against ``real`` with k-nearest-neighbour balls.

    precision: share of fake points inside some real point's k-NN ball (realism); recall: share of real points
    inside some fake point's ball (diversity); density: mean number of real balls a fake point falls in, over k;
    coverage: share of real points whose ball holds at least one fake point.
    """
    real, fake = real.float(), fake.float()
    r_real, r_fake = _kth_nn(real, k), _kth_nn(fake, k)
    d = torch.cdist(real, fake)  # (N_real, N_fake)
    inside_real = d < r_real[:, None]  # fake j in real i's ball
    return {
        "precision": float(inside_real.any(0).float().mean()),
        "recall": float((d < r_fake[None, :]).any(1).float().mean()),
        "density": float(inside_real.float().sum(0).mean() / k),
        "coverage": float((d.min(1).values < r_real).float().mean()),
    }


def near_duplicate_rate(fake: torch.Tensor, reference: torch.Tensor, *, quantile: float = 0.05) -> tuple[float, float]:
    """Share of generated images whose nearest other generated image is closer than the ``quantile`` of the
    nearest-neighbour distances among ``reference`` real images (same number of images, pixel space): about
    ``quantile`` for a set as varied as real data, higher when the generator repeats itself (mode collapse).

    Returns:
        (rate, threshold).
    """
    n = min(len(fake), len(reference))
    f, r = fake[:n].flatten(1).float(), reference[:n].flatten(1).float()
    nn_r = torch.cdist(r, r).fill_diagonal_(float("inf")).min(1).values
    threshold = float(torch.quantile(nn_r, quantile))
    nn_f = torch.cdist(f, f).fill_diagonal_(float("inf")).min(1).values
    return float((nn_f < threshold).float().mean()), threshold
