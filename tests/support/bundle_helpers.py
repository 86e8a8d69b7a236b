"""Tiny models, inputs and file edits shared by the bundle tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medassist.deploy.manifest import write_manifest
from medassist.models import create_model
from medassist.train.data import to_tensor

SIZE = 12
IMAGE_PRE = {"image_size": SIZE, "channels": 1, "scale": 1 / 255, "mean": 0.5, "std": 0.5}
IMAGE_LABELS = ["normal", "pneumonia"]
TEXT_LABELS = ["effusion", "edema", "cardiomegaly"]
MAX_LEN = 6
REPORTS = [
    "No acute cardiopulmonary process.",
    "Small left pleural effusion with mild edema.",
    "The heart is enlarged; cardiomegaly without effusion.",
    "Mild pulmonary edema.",
]


class TinyText(nn.Module):
    """Embedding, mean over real tokens, linear head: logits (B, K) from input_ids and attention_mask (B, T)."""

    def __init__(self, vocab_size: int, num_labels: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 8, padding_idx=0)
        self.head = nn.Linear(8, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, 8)
        return self.head(pooled)  # (B, K)


def export_onnx(*args, **kwargs) -> None:
    """The legacy exporter (fast), without its deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(*args, dynamo=False, **kwargs)


def export_image_model(path: Path, in_channels: int) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("cnn_gap", num_classes=2, in_channels=in_channels, width=4).eval()
    export_onnx(
        model,
        (torch.zeros(1, in_channels, SIZE, SIZE),),
        path,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    return model


def pixels(n: int, *, channels: int = 1, seed: int = 0) -> np.ndarray:
    """uint8 (N, C, SIZE, SIZE) holding 0 and 255, so DICOM min-max scaling leaves the values unchanged."""
    x = np.random.default_rng(seed).integers(0, 256, (n, channels, SIZE, SIZE)).astype(np.uint8)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0, 255
    return x


def torch_image_probs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(to_tensor(x)), dim=1).numpy()  # (N, K)


def probs(predictions) -> np.ndarray:
    return np.array([list(p.probabilities.values()) for p in predictions])


def rewrite_manifest(bundle: Path) -> None:
    """Make the manifest agree with the files again, as someone who edits a bundle by hand might."""
    names = list(json.loads((bundle / "manifest.json").read_text())["files"])
    write_manifest(bundle, names)


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def image_arguments(image_model, **changes) -> dict:
    return {
        "model_path": image_model[1],
        "kind": "image",
        "task": "multi-class",
        "labels": IMAGE_LABELS,
        "preprocessing": IMAGE_PRE,
        "metrics": {"auc": np.float32(0.75)},  # numpy numbers are stored as plain JSON numbers
        **changes,
    }
