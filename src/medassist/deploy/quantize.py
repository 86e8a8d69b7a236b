"""Int8 quantization with ONNX Runtime.

- Convolutional image models: *static* quantization in QDQ format, int8 weights per output channel and uint8
  activations, with activation ranges calibrated on training images. Dynamic quantization is the wrong tool for
  a CNN (it re-measures activations at every call and leaves convolutions in float).
- Recurrent and Transformer text models: *dynamic* quantization of the matrix products (int8 weights, activations
  quantized on the fly), plus the embedding table, which holds most of a word model's bytes.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from medassist.train.data import to_tensor
from medassist.utils.io import atomic_path


class _Calibration:
    """Feeds normalised calibration images to ONNX Runtime's calibrator, ``batch_size`` at a time."""

    def __init__(
        self, images: np.ndarray, input_name: str, batch_size: int, prepare: Callable[[np.ndarray], Any] = to_tensor
    ) -> None:
        self._batches: Iterator[np.ndarray] = (
            np.asarray(prepare(images[i : i + batch_size])) for i in range(0, len(images), batch_size)
        )
        self.input_name = input_name

    def get_next(self) -> dict[str, np.ndarray] | None:
        x = next(self._batches, None)
        return None if x is None else {self.input_name: x}


def calibration_sample(images: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` training images drawn at random (seeded) for calibration."""
    if n >= len(images):
        return images
    return images[np.sort(np.random.default_rng(seed).choice(len(images), n, replace=False))]


def quantize_static_int8(
    onnx_in: str | Path,
    onnx_out: str | Path,
    calibration_images: np.ndarray,
    *,
    batch_size: int = 64,
    prepare: Callable[[np.ndarray], Any] = to_tensor,
) -> Path:
    """Static QDQ int8 quantization of an image model (per-channel int8 weights, uint8 activations, MinMax
    calibration on ``calibration_images``, uint8 (N, C, H, W), turned into the model's input by ``prepare``: the
    image models' normalisation by default; a detector takes [0, 1])."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Reader(_Calibration, CalibrationDataReader):
        pass

    onnx_out = Path(onnx_out)
    with tempfile.TemporaryDirectory() as work, _quiet():
        pre = Path(work) / "pre.onnx"  # shapes inferred and graph optimised, as ONNX Runtime recommends
        quant_pre_process(str(onnx_in), str(pre), skip_symbolic_shape=True)
        with atomic_path(onnx_out) as tmp:
            quantize_static(
                str(pre),
                str(tmp),
                Reader(calibration_images, "images", batch_size, prepare),
                quant_format=QuantFormat.QDQ,
                per_channel=True,
                weight_type=QuantType.QInt8,
                activation_type=QuantType.QUInt8,
            )
    return onnx_out


def quantize_dynamic_int8(
    onnx_in: str | Path, onnx_out: str | Path, *, op_types: tuple[str, ...] | None = None
) -> Path:
    """Dynamic int8 quantization of the matrix products, recurrent cells and embedding lookups of a text model."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    ops = list(op_types or ("MatMul", "Gemm", "LSTM", "GRU", "Gather"))
    onnx_out = Path(onnx_out)
    with atomic_path(onnx_out) as tmp, _quiet():
        quantize_dynamic(str(onnx_in), str(tmp), weight_type=QuantType.QInt8, op_types_to_quantize=ops)
    return onnx_out


def torch_dynamic_int8(model: torch.nn.Module) -> torch.nn.Module:
    """PyTorch's own dynamic int8 quantization of Linear, LSTM and GRU layers (for comparison with ORT)."""
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = quantize_dynamic(model, {torch.nn.Linear, torch.nn.LSTM, torch.nn.GRU}, dtype=torch.qint8)
    if any(isinstance(m, torch.nn.TransformerEncoderLayer) for m in model.modules()):
        q = _WithoutFastPath(q)
    return q


class _WithoutFastPath(torch.nn.Module):
    """Runs a dynamically quantized ``nn.TransformerEncoder`` on its ordinary path: the fused eval-mode "fast path"
    reads ``linear.weight`` as a tensor, which a quantized Linear holds as a packed parameter, and fails."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        before = torch.backends.mha.get_fastpath_enabled()
        torch.backends.mha.set_fastpath_enabled(False)
        try:
            return self.model(*inputs)
        finally:
            torch.backends.mha.set_fastpath_enabled(before)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """Silence ONNX Runtime's quantization logging and warnings (its advice is about other set-ups)."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)
