"""Knowledge distillation: a small student learns from a large teacher's softened predictions.

The teacher's logits on the training images are computed once and travel with the images through the engine's
batcher, so a distillation epoch costs no more than a plain one; the engine's loop is reused through a
``step_fn`` (Hinton et al., 2015: ``alpha * T^2 * KL(teacher_T || student_T) + (1 - alpha) * CE``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from medassist.train.data import ImageBatcher, as_batcher, main_logits
from medassist.train.engine import StepFn


class TeacherBatcher(ImageBatcher):
    """Training images with the teacher's logits: ``inputs(idx) -> (images (B, C, H, W), teacher_logits (B, K))``.

    Not augmentable: the stored teacher logits belong to the unaugmented images. Its subsets (for evaluation)
    are plain image batchers.
    """

    augmentable = False

    def __init__(self, images: np.ndarray | torch.Tensor, teacher_logits: torch.Tensor) -> None:
        super().__init__(images)
        self.t = teacher_logits.float()

    def inputs(self, idx: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.batch(idx), self.t[idx]


@torch.no_grad()
def ensemble_logits(teachers: Sequence[nn.Module], images: np.ndarray, *, batch_size: int = 256) -> torch.Tensor:
    """The teachers' averaged log-probabilities (an ensemble's logits, up to a constant) on ``images``, computed
    on the run's device (the teachers go back to the CPU after) and returned on the CPU."""
    from medassist.train.device import current

    accel = current()
    batcher = as_batcher(images)  # read and normalised batch by batch: the images may be on disk
    out = []
    for t in teachers:
        t.to(accel.device)
    for idx in batcher.order(batch_size):
        xb = accel.put(batcher.inputs(idx)[0])
        with accel.autocast():
            logp = [F.log_softmax(main_logits(t.eval()(xb)).float(), dim=1) for t in teachers]
        out.append(torch.stack(logp).mean(0).cpu())
    for t in teachers:
        t.cpu()
    return torch.cat(out)


def distillation_step(temperature: float, alpha: float) -> StepFn:
    """A training step for :func:`medassist.train.fit` with a :class:`TeacherBatcher`."""

    def step(model: nn.Module, inputs: tuple[torch.Tensor, ...], y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        images, teacher = inputs
        logits = model(images)  # (B, K)
        soft = F.kl_div(
            F.log_softmax(logits / temperature, dim=1),
            F.log_softmax(teacher / temperature, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        hard = F.cross_entropy(logits, y)
        return alpha * temperature**2 * soft + (1 - alpha) * hard, logits

    return step
