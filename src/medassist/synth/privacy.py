"""Privacy measurements: distance to the closest training record (DCR) of synthetic and held-out real records,
the share of synthetic records closer than the held-out 5th percentile, the closest pairs, and membership-
inference attacks scored as an AUC with a 95% bootstrap interval (0.5: no leakage the attack can see)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import roc_auc_score


def nearest(query: torch.Tensor, reference: torch.Tensor, *, chunk: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """Euclidean distance from each query row to its nearest reference row, and that row's index."""
    q, r = query.flatten(1).float(), reference.flatten(1).float()
    dist, idx = [], []
    for start in range(0, len(q), chunk):
        d = torch.cdist(q[start : start + chunk], r)
        m = d.min(1)
        dist.append(m.values)
        idx.append(m.indices)
    return torch.cat(dist).numpy().astype(np.float64), torch.cat(idx).numpy()


def dcr_summary(synthetic: torch.Tensor, train: torch.Tensor, holdout: torch.Tensor) -> dict[str, float]:
    """DCR of synthetic and of held-out real records to the training set, and the share of synthetic records closer
    than the 5th percentile of the held-out DCR (about 0.05 when the generator copies no more than chance)."""
    d_syn, _ = nearest(synthetic, train)
    d_hold, _ = nearest(holdout, train)
    p5 = float(np.quantile(d_hold, 0.05))
    return {
        "dcr_synthetic_median": float(np.median(d_syn)),
        "dcr_holdout_median": float(np.median(d_hold)),
        "holdout_p5": p5,
        "share_below_holdout_p5": float((d_syn < p5).mean()),
    }


def auc_with_ci(
    scores_members: np.ndarray, scores_nonmembers: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, float]:
    """AUC of telling members (label 1) from non-members by ``score`` (higher = member), with a 95% bootstrap
    interval resampling both groups."""
    s = np.concatenate([scores_members, scores_nonmembers]).astype(np.float64)
    y = np.concatenate([np.ones(len(scores_members)), np.zeros(len(scores_nonmembers))])
    value = float(roc_auc_score(y, s))
    rng = np.random.default_rng(seed)
    boot = np.empty(n_boot)
    m, n = len(scores_members), len(scores_nonmembers)
    for b in range(n_boot):
        i = np.concatenate([rng.integers(0, m, m), m + rng.integers(0, n, n)])
        boot[b] = roc_auc_score(y[i], s[i])
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return {"auc": value, "auc_lo": float(lo), "auc_hi": float(hi)}


def distance_attack(
    synthetic: torch.Tensor, members: torch.Tensor, nonmembers: torch.Tensor, *, n_boot: int = 1000, seed: int = 0
) -> dict[str, float]:
    """The distance attack: a record closer to the synthetic set is guessed a training member."""
    d_m, _ = nearest(members, synthetic)
    d_n, _ = nearest(nonmembers, synthetic)
    return auc_with_ci(-d_m, -d_n, n_boot=n_boot, seed=seed)
