"""Tiny bundles for the service's tests: a GAP CNN with its class-activation output, and a WordPiece text model with
the MiniLM tokenizer.json; both calibrated (a temperature and an abstention rule), built in a second."""

from __future__ import annotations

import io
import shutil
import struct
import zlib
from pathlib import Path

import numpy as np
import torch
from torch import nn

from helpers import dicom_dataset
from medassist.deploy.bundle import write_bundle
from medassist.deploy.export import export_onnx
from medassist.models import create_model

IMAGE_SIZE = 28
IMAGE_LABELS = ["normal", "pneumonia"]
TEXT_LABELS = ["effusion", "edema", "cardiomegaly"]
REPORT = "Small left pleural effusion with mild edema. Heart size is normal."


class TinyText(nn.Module):
    """Embedding, mean over real tokens, linear head: logits (B, K) from input_ids and attention_mask (B, T)."""

    def __init__(self, vocab_size: int, num_labels: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 4, padding_idx=0)
        self.head = nn.Linear(4, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, 4)
        return self.head(pooled)  # (B, K)


def image_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = create_model("cnn_gap", num_classes=2, in_channels=1, width=4).eval()
    with torch.no_grad():  # BatchNorm statistics that are not the identity, so the maps have structure
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.2, 0.2)
                m.running_var.uniform_(0.5, 1.5)
        model.head[-1].weight.normal_(0.0, 1.0)  # the class with the larger mean map wins: it has positive evidence
        model.head[-1].bias.zero_()
    return model


def make_image_bundle(folder: Path, *, min_confidence: float = 0.0, temperature: float = 1.5) -> Path:
    """An image bundle of :func:`image_model` (28x28 grayscale) with its ``cam`` output."""
    folder.mkdir(parents=True, exist_ok=True)
    onnx = export_onnx(image_model(), (torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE),), folder / "m.onnx", cam=True)
    return write_bundle(
        folder / "bundle",
        model_path=onnx,
        kind="image",
        task="multi-class",
        labels=IMAGE_LABELS,
        preprocessing={"image_size": IMAGE_SIZE, "channels": 1, "scale": 1 / 255, "mean": 0.5, "std": 0.5},
        metrics={"test_auc": 0.5},
        info={"variant": "tiny"},
        name=f"tiny x-ray model ({folder.name})",
        calibration={
            "temperature": temperature,
            "abstain": {"min_confidence": min_confidence, "target_error": 0.02},
            "cam_output": "cam",
        },
    )


def make_segmentation_bundle(
    folder: Path, *, shape: tuple[int, int] = (48, 40), channels: int = 1, label: str = "lesion"
) -> Path:
    """A segmentation bundle of an untrained tiny U-Net (width 2) reading images of ``shape`` with ``channels``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    model = create_model("unet", num_classes=2, in_channels=channels, width=2).eval()
    padded = tuple(-(-v // 16) * 16 for v in shape)
    onnx = export_onnx(model, (torch.zeros(1, channels, *padded),), folder / "s.onnx", spatial=True)
    return write_bundle(
        folder / "bundle",
        model_path=onnx,
        kind="segmentation",
        task="segmentation",
        labels=["background", label],
        preprocessing={
            "image_shape": list(shape),
            "channels": channels,
            "scale": 1 / 255,
            "mean": 0.5,
            "std": 0.5,
            "multiple": 16,
        },
        metrics={"test_dice": 0.5},
        name=f"tiny lesion model ({folder.name})",
    )


def tokenizer_json() -> Path:
    from medassist.text.hf import minilm_dir

    return minilm_dir() / "tokenizer.json"


def make_text_bundle(folder: Path, *, min_confidence: float = 0.0, abstain: dict | None = None, seed: int = 0) -> Path:
    """A multi-label WordPiece text bundle: a tiny model over the MiniLM vocabulary and its tokenizer.json;
    ``abstain`` replaces the case-level rule (e.g. a per-finding one); ``seed`` makes another version."""
    from tokenizers import Tokenizer

    folder.mkdir(parents=True, exist_ok=True)
    tok = shutil.copyfile(tokenizer_json(), folder / "tokenizer.json")
    vocab = Tokenizer.from_file(str(tok)).get_vocab_size()
    torch.manual_seed(seed)
    model = TinyText(vocab, len(TEXT_LABELS)).eval()
    ids = torch.ones(1, 5, dtype=torch.long)
    export_onnx(model, (ids, torch.ones_like(ids)), folder / "t.onnx", text=True)
    return write_bundle(
        folder / "bundle",
        model_path=folder / "t.onnx",
        kind="text",
        task="multi-label",
        labels=TEXT_LABELS,
        preprocessing={"tokenizer": "wordpiece", "vocab_file": "tokenizer.json", "max_len": 64},
        metrics={"test_macro_f1": 0.5},
        extra_files={"tokenizer.json": tok},
        threshold=[0.5, 0.4, 0.6],
        name=f"tiny report model ({folder.name})",
        calibration={
            "temperature": 0.8,
            "abstain": abstain or {"min_confidence": min_confidence, "target_error": 0.02},
        },
    )


def png_bytes(image: np.ndarray, mode: str | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image, mode=mode).save(buf, format="PNG")
    return buf.getvalue()


def jpeg_bytes(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=95)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` grayscale pixels, with one tiny compressed row: what a
    decompression bomb looks like before it is decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = chunk(b"IDAT", zlib.compress(b"\x00" * 16))
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + idat + chunk(b"IEND", b"")


def dicom_bytes(gray: np.ndarray, *, patient: str, pixels: bool = True, syntax: str | None = None) -> bytes:
    """An 8-bit MONOCHROME2 DICOM of ``gray`` (H, W) uint8 with a patient name and id (the tags never to echo)."""
    ds = dicom_dataset(
        gray, syntax=syntax, pixels=pixels, PatientName=patient, PatientID=patient.replace("^", "") + "-4711"
    )
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()
