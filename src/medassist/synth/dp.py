"""DP-SGD through Opacus, as a privacy hook of the training engine: ``fit(..., privacy=OpacusPrivacy(...))``.

The noise multiplier is chosen by Opacus for a target epsilon at delta (``make_private_with_epsilon``) and the
epsilon spent is read from Opacus's RDP accountant, not computed here. Batches are the engine's shuffled
fixed-size batches (Opacus's ``poisson_sampling=False``); the accountant treats them as sampled at rate B/N.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medassist.errors import MedAssistError

MAX_NOISE = 100.0  # noise multipliers above this are refused as unreachable budgets


def check_reachable(target_epsilon: float, delta: float, *, n_samples: int, batch_size: int, epochs: int) -> float:
    """The noise multiplier Opacus needs for ``target_epsilon``; refuses a budget it cannot reach."""
    from opacus.accountants.utils import get_noise_multiplier

    if not target_epsilon > 0 or not 0 < delta < 1:
        raise MedAssistError(
            f"DP-SGD needs epsilon > 0 and 0 < delta < 1 (got epsilon {target_epsilon}, delta {delta})"
        )
    # Opacus's RDP-to-(epsilon, delta) conversion adds a term that no amount of noise removes; below its minimum
    # over Opacus's orders, no noise multiplier reaches the target (and Opacus's own search takes a minute to say so).
    import numpy as np
    from opacus.accountants import RDPAccountant

    orders = np.asarray(RDPAccountant.DEFAULT_ALPHAS, dtype=np.float64)
    floor = float(np.min(np.log((orders - 1) / orders) - (np.log(delta) + np.log(orders)) / (orders - 1)))
    if target_epsilon <= floor:
        raise MedAssistError(
            f"Opacus cannot reach epsilon {target_epsilon} at delta {delta:.2g}: its RDP accountant gives at least "
            f"{floor:.3g} at any noise level; raise dp_epsilons above {floor:.3g}"
        )
    # Opacus searches up to a noise multiplier of 1e6, which takes minutes for an unreachable target; more noise
    # than MAX_NOISE times the clipping norm leaves nothing to learn, so a target it cannot reach is refused here.
    q = min(1.0, batch_size / n_samples)
    steps = int(epochs / q)
    acc = RDPAccountant()
    acc.history = [(MAX_NOISE, q, steps)]
    if acc.get_epsilon(delta=delta) > target_epsilon:
        raise MedAssistError(
            f"Opacus cannot reach epsilon {target_epsilon} at delta {delta:.2g} with {epochs} epochs of batch "
            f"{batch_size} over {n_samples} records: even a noise multiplier of {MAX_NOISE:g} spends more; raise "
            "dp_epsilons, or train fewer epochs / smaller batches"
        )
    try:
        return float(
            get_noise_multiplier(
                target_epsilon=target_epsilon,
                target_delta=delta,
                sample_rate=min(1.0, batch_size / n_samples),
                epochs=epochs,
                accountant="rdp",
            )
        )
    except ValueError as exc:
        raise MedAssistError(
            f"Opacus cannot reach epsilon {target_epsilon} at delta {delta:.2g} with {epochs} epochs of batch "
            f"{batch_size} over {n_samples} records ({exc}); raise dp_epsilons, or train fewer epochs / smaller batches"
        ) from None


class OpacusPrivacy:
    """Wraps the model in Opacus's GradSampleModule and the optimiser in its DPOptimizer (per-sample clipping at
    ``max_grad_norm`` and Gaussian noise), for a target (epsilon, delta)."""

    def __init__(self, *, target_epsilon: float, delta: float, max_grad_norm: float = 1.0) -> None:
        self.target_epsilon, self.delta, self.max_grad_norm = target_epsilon, delta, max_grad_norm
        self.engine: Any = None
        self.noise_multiplier = float("nan")

    def attach(
        self, model: nn.Module, optimizer: torch.optim.Optimizer, *, n_samples: int, batch_size: int, epochs: int
    ) -> tuple[nn.Module, torch.optim.Optimizer]:
        from opacus import PrivacyEngine
        from opacus.validators import ModuleValidator

        errors = ModuleValidator.validate(model, strict=False)
        if errors:
            raise MedAssistError(
                f"Opacus cannot train this model with DP-SGD: {errors[0]} (use GroupNorm, not BatchNorm)"
            )
        check_reachable(self.target_epsilon, self.delta, n_samples=n_samples, batch_size=batch_size, epochs=epochs)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.TensorDataset(torch.arange(n_samples)), batch_size=batch_size
        )
        self.engine = PrivacyEngine(accountant="rdp")
        wrapped, dp_opt, _ = self.engine.make_private_with_epsilon(
            module=model,
            optimizer=optimizer,
            data_loader=loader,
            target_epsilon=self.target_epsilon,
            target_delta=self.delta,
            epochs=epochs,
            max_grad_norm=self.max_grad_norm,
            poisson_sampling=False,
        )
        self.noise_multiplier = float(dp_opt.noise_multiplier)
        return wrapped, dp_opt

    def epsilon(self) -> float:
        """The epsilon spent so far at ``delta``, from Opacus's accountant."""
        return float(self.engine.get_epsilon(self.delta)) if self.engine is not None else float("nan")

    def state_dict(self) -> dict[str, Any]:
        return {"accountant": self.engine.accountant.state_dict() if self.engine is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if self.engine is not None and state.get("accountant") is not None:
            self.engine.accountant.load_state_dict(state["accountant"])
