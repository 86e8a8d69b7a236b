"""Pruning that really shrinks a model.

- Structured (channel) pruning with torch-pruning: whole filters are removed along with everything that depends
  on them, so the pruned network is a smaller dense network (fewer bytes, fewer multiply-adds). It is then
  fine-tuned briefly through the training engine.
- Unstructured magnitude pruning with ``torch.nn.utils.prune``: the smallest weights are zeroed and the masks
  removed (``prune.remove``); the weights are then stored as a bitmask plus the surviving values, so the file
  shrinks with the sparsity. Dense kernels do not skip zeros, so it does not run faster.
"""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medassist.errors import MedAssistError
from medassist.utils.io import atomic_path


def prune_channels(model: nn.Module, example: torch.Tensor, ratio: float) -> dict[str, int]:
    """Remove ``ratio`` of the channels of every prunable layer (L2 magnitude), in place; the outputs (a
    classifier's classes, a segmentation network's class maps) are kept. Returns parameter and multiply-add counts
    before and after."""
    import torch_pruning as tp

    if not 0.0 < ratio < 1.0:
        raise MedAssistError(f"the channel pruning ratio must lie in (0, 1); got {ratio}")
    model.eval()
    macs0, params0 = tp.utils.count_ops_and_params(model, example)
    k = _n_out(model, example)
    # The outputs stay: a classifier's last linear layer, a segmentation network's last convolution (K channels).
    heads = [
        m
        for m in model.modules()
        if (isinstance(m, nn.Linear) and m.out_features == k)
        or (isinstance(m, nn.Conv2d | nn.ConvTranspose2d) and m.out_channels == k)
    ]
    pruner = tp.pruner.MagnitudePruner(
        model, example, importance=tp.importance.MagnitudeImportance(p=2), pruning_ratio=ratio, ignored_layers=heads
    )
    pruner.step()
    macs1, params1 = tp.utils.count_ops_and_params(model, example)
    return {
        "params_before": int(params0),
        "params_after": int(params1),
        "macs_before": int(macs0),
        "macs_after": int(macs1),
    }


def _n_out(model: nn.Module, example: torch.Tensor) -> int:
    with torch.no_grad():
        return int(model(example).shape[1])


def prunable_weights(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """The weights of convolutions, linear layers, recurrent cells and embeddings (biases and norms are kept)."""
    out = []
    for m in model.modules():
        if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Linear, nn.Embedding)):
            out.append((m, "weight"))
        elif isinstance(m, (nn.LSTM, nn.GRU)):
            out += [(m, n) for n, _ in m.named_parameters() if n.startswith("weight")]
    return out


def add_magnitude_masks(model: nn.Module, amount: float) -> list[tuple[nn.Module, str]]:
    """Mask the ``amount`` fraction of smallest-magnitude weights of every prunable tensor.

    Each tensor is ranked on its own (uniform sparsity): one global ranking would empty the layers whose weights
    are small by construction (an LSTM's next to an embedding's), which is how a pruned model loses everything.
    The masks stay attached (as ``torch.nn.utils.prune`` forward hooks) so that fine-tuning keeps the pruned
    weights at zero; :func:`remove_masks` makes the zeros permanent.
    """
    from torch.nn.utils import prune

    if not 0.0 < amount < 1.0:
        raise MedAssistError(f"the pruning amount must lie in (0, 1); got {amount}")
    params = prunable_weights(model)
    for m, name in params:
        prune.l1_unstructured(m, name, amount=amount)
    return params


def remove_masks(params: list[tuple[nn.Module, str]]) -> float:
    """Fold the masks into the weights (the mask and the saved original go) and return the sparsity reached over
    the prunable weights."""
    from torch.nn.utils import prune

    for m, name in params:
        prune.remove(m, name)
    total = sum(getattr(m, n).numel() for m, n in params)
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in params)
    return zeros / total


def save_sparse(state: dict[str, torch.Tensor], path: str | Path, *, min_sparsity: float = 0.5) -> Path:
    """Save a state dict with its sparse tensors as (bitmask, nonzero values): about ``density * 4 + 1/8`` bytes
    per weight instead of 4. Dense tensors are stored as they are. One zip file of .npy arrays."""
    path = Path(path)
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED) as zf:
        for name, t in state.items():
            a = t.detach().cpu().numpy()
            if a.dtype == np.float32 and a.size >= 64 and float((a == 0).mean()) >= min_sparsity:
                mask = a != 0
                _put(zf, f"{name}.mask.npy", np.packbits(mask.reshape(-1)))
                _put(zf, f"{name}.values.npy", a[mask])
                _put(zf, f"{name}.shape.npy", np.asarray(a.shape, dtype=np.int64))
            else:
                _put(zf, f"{name}.dense.npy", a)
    return path


def load_sparse(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict written by :func:`save_sparse` (sparse tensors come back dense)."""
    arrays: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(path) as zf:
        for entry in zf.namelist():
            arrays[entry[: -len(".npy")]] = np.load(io.BytesIO(zf.read(entry)), allow_pickle=False)
    state: dict[str, torch.Tensor] = {}
    for key, a in arrays.items():
        name, kind = key.rsplit(".", 1)
        if kind == "dense":
            state[name] = torch.from_numpy(a.copy())
        elif kind == "mask":
            shape = tuple(arrays[f"{name}.shape"])
            mask = np.unpackbits(a, count=int(np.prod(shape))).astype(bool)
            dense = np.zeros(mask.size, dtype=np.float32)
            dense[mask] = arrays[f"{name}.values"]
            state[name] = torch.from_numpy(dense.reshape(shape))
    return state


def _put(zf: zipfile.ZipFile, name: str, a: np.ndarray) -> None:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    zf.writestr(name, buf.getvalue())
