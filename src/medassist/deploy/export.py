"""ONNX export, ONNX Runtime sessions, and the parity check between a PyTorch model and its export.

Image models export as they are. The recurrent text models run a *packed* sequence in PyTorch, which ONNX cannot
express; :class:`ExportableTextRNN` computes the same function with plain tensors (the backward direction reads
each report reversed within its own length), so the exported graph gives the packed model's logits on padded
batches too.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from medassist.errors import MedAssistError
from medassist.train.data import Batcher, as_batcher, main_logits, probabilities
from medassist.utils.io import atomic_path

IMAGE_INPUTS = ("images",)
TEXT_INPUTS = ("input_ids", "attention_mask")


def reverse_within_length(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each row of ``x`` (B, T, D) within its first ``lengths[b]`` steps; padding stays in place.

    Applying it twice gives ``x`` back.
    """
    t = torch.arange(x.shape[1], device=x.device)[None, :]  # (1, T)
    rev = lengths[:, None] - 1 - t  # (B, T)
    idx = torch.where(rev >= 0, rev, t)  # (B, T) padding maps to itself
    return torch.gather(x, 1, idx[:, :, None].expand(-1, -1, x.shape[2]))


class ExportableTextRNN(nn.Module):
    """The function of a trained :class:`~medassist.models.text_rnn.TextRNN`, without packed sequences.

    ``forward(input_ids (B, T) int64, attention_mask (B, T) int64) -> logits (B, K)``. One unidirectional RNN per
    layer and direction holds the trained weights; the backward direction runs on the reports reversed within
    their lengths, so padding never reaches a real position (as with packing).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        rnn = model.rnn
        self.embed, self.head, self.pooling = model.embed, model.head, model.pooling
        self.hidden, self.bidirectional, self.num_layers = rnn.hidden_size, rnn.bidirectional, rnn.num_layers
        cls = type(rnn)
        self.cells = nn.ModuleList()
        for layer in range(rnn.num_layers):
            for suffix in ("", "_reverse")[: 2 if rnn.bidirectional else 1]:
                width = rnn.input_size if layer == 0 else rnn.hidden_size * (2 if rnn.bidirectional else 1)
                cell = cls(width, rnn.hidden_size, batch_first=True)
                for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    getattr(cell, f"{name}_l0").data.copy_(getattr(rnn, f"{name}_l{layer}{suffix}").data)
                self.cells.append(cell)
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask > 0  # (B, T)
        lengths = mask.sum(1)  # (B,)
        x = self.embed(input_ids)  # (B, T, E)
        dirs = 2 if self.bidirectional else 1
        for layer in range(self.num_layers):
            outs = [self.cells[layer * dirs](x)[0]]  # (B, T, H)
            if self.bidirectional:
                back = self.cells[layer * dirs + 1](reverse_within_length(x, lengths))[0]
                outs.append(reverse_within_length(back, lengths))  # (B, T, H)
            x = torch.cat(outs, dim=2)  # (B, T, H * dirs)
        return self.head(self._pool(x, mask, lengths))

    def _pool(self, states: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.pooling == "meanmax":
            m = mask.unsqueeze(-1).to(states.dtype)  # (B, T, 1)
            mean = (states * m).sum(1) / m.sum(1).clamp_min(1.0)  # (B, D)
            mx = states.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)  # (B, D)
            return torch.cat([mean, mx], dim=1)
        h = self.hidden
        idx = (lengths - 1).clamp_min(0)[:, None, None].expand(-1, 1, h)  # (B, 1, H)
        last = torch.gather(states[..., :h], 1, idx).squeeze(1)  # (B, H)
        return torch.cat([last, states[:, 0, h:]], dim=1) if self.bidirectional else last


CAM_OUTPUT = "cam"


class WithCAM(nn.Module):
    """An image classifier with global average pooling before a linear head, returning its logits (B, K) and its
    class-activation maps (B, K, h, w): ``cam[b, k] = sum_c W[k, c] * A[b, c] / (h w)`` of the last feature maps A.

    For such a head Grad-CAM equals CAM (the gradient of logit k with respect to A[c] is W[k, c] / (h w) at every
    position), so the maps of the shipped model are its Grad-CAM before the ReLU and normalisation.
    """

    def __init__(self, model: nn.Module, pool: nn.Module, head: nn.Linear) -> None:
        super().__init__()
        self.model, self.head = model, head
        self._pool = [pool]  # a list, so the pool is not registered twice as a submodule

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features: list[torch.Tensor] = []
        hook = self._pool[0].register_forward_hook(lambda _m, inputs, _out: features.append(inputs[0]))
        try:
            logits = self.model(images)  # (B, K)
        finally:
            hook.remove()  # the caller's model is left without hooks
        a = features[-1]  # (B, C, h, w)
        cam = torch.einsum("kc,bchw->bkhw", self.head.weight, a) / (a.shape[2] * a.shape[3])  # (B, K, h, w)
        return logits, cam


def cam_parts(model: nn.Module, example: torch.Tensor) -> tuple[nn.Module, nn.Linear] | None:
    """The global-average-pooling layer and linear head of ``model`` when its logits are exactly
    ``head(mean of the pooled feature maps)`` (checked on ``example``); None otherwise (no CAM for that model)."""
    pools = [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d) and m.output_size in (1, (1, 1))]
    heads = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if not pools or not heads:
        return None
    pool, head = pools[-1], heads[-1]
    seen: list[torch.Tensor] = []
    hook = pool.register_forward_hook(lambda _m, inputs, _out: seen.append(inputs[0]))
    try:
        with torch.no_grad():
            logits = model.eval()(example)
    finally:
        hook.remove()
    if len(seen) != 1 or seen[0].ndim != 4 or seen[0].shape[1] != head.in_features:
        return None
    expected = seen[0].mean(dim=(2, 3)) @ head.weight.T + (head.bias if head.bias is not None else 0.0)
    return (pool, head) if torch.allclose(expected, logits, atol=1e-4, rtol=1e-4) else None


def exportable(model: nn.Module) -> nn.Module:
    """The module to export for ``model``: recurrent text models are rewritten without packing."""
    from medassist.models.text_rnn import TextRNN

    return ExportableTextRNN(model) if isinstance(model, TextRNN) else model


def export_onnx(
    model: nn.Module,
    example: Sequence[torch.Tensor],
    path: str | Path,
    *,
    text: bool = False,
    cam: bool = False,
    spatial: bool = False,
    outputs: Sequence[str] = ("logits",),
) -> Path:
    """Export ``model`` (in eval mode) to one self-contained ONNX file with a dynamic batch (and length) axis; with
    ``spatial`` (segmentation networks) the height and width of the images and of the logits are dynamic too.

    Inputs are named ``images`` (image models) or ``input_ids`` and ``attention_mask`` (text models); the output
    is ``logits`` (``outputs`` names a model's several outputs, e.g. a detector's maps per level). With ``cam`` an
    image model whose head is global average pooling + linear (:func:`cam_parts`) gets a second output ``cam``,
    its class-activation maps (:class:`WithCAM`); other models export without it.
    """
    module = exportable(model).eval()
    outputs = list(outputs)
    if cam and not text and (parts := cam_parts(model, example[0])) is not None:
        module = WithCAM(model, *parts).eval()
        outputs.append(CAM_OUTPUT)
    if text:  # the bundle's contract: int64 ids and an int64 0/1 mask
        example = tuple(a.long() for a in example)
    names = list(TEXT_INPUTS if text else IMAGE_INPUTS)
    image_axes = {0: "batch", 2: "height", 3: "width"} if spatial else {0: "batch"}
    axes = {n: {0: "batch", 1: "length"} if text else image_axes for n in names}
    axes.update({name: dict(image_axes) if spatial else {0: "batch"} for name in outputs})
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the exporter's deprecation and tracer notes are not the user's concern
        torch.onnx.export(
            module,
            tuple(example),
            str(tmp),
            input_names=names,
            output_names=outputs,
            dynamic_axes=axes,
            opset_version=17,
            dynamo=False,
        )
    return path


class OrtModel:
    """An ONNX Runtime session that takes the same inputs as the PyTorch model (tensors or arrays)."""

    def __init__(self, path: str | Path, *, threads: int = 0) -> None:
        import onnxruntime as ort

        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - ORT raises its own types for unreadable models
            raise MedAssistError(f"ONNX Runtime cannot open {path}: {exc}") from None
        self.inputs = [i.name for i in self.session.get_inputs()]
        self.path = Path(path)

    def __call__(self, *args: torch.Tensor | np.ndarray) -> np.ndarray:
        feed = {}
        for name, a in zip(self.inputs, args, strict=True):
            a = a.numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
            feed[name] = a.astype(np.int64) if a.dtype == np.bool_ else a
        return self.session.run(None, feed)[0]


def logits_of(
    model: nn.Module | OrtModel, data: np.ndarray | torch.Tensor | Batcher, *, batch_size: int = 256
) -> np.ndarray:
    """Logits (N, K) of a PyTorch model or an ONNX Runtime session on images or a batcher, in input order."""
    batcher = as_batcher(data)
    out: np.ndarray | None = None
    with torch.no_grad():
        for idx in batcher.order(batch_size):
            inputs = batcher.inputs(idx)
            if isinstance(model, OrtModel):
                z = model(*inputs)
            else:
                model.eval()
                z = main_logits(model(*inputs)).float().numpy()
            if out is None:
                out = np.empty((len(batcher), z.shape[1]), dtype=np.float32)
            out[idx.numpy()] = z
    return out if out is not None else np.zeros((0, 0), dtype=np.float32)


def probs_from_logits(logits: np.ndarray, task: str) -> np.ndarray:
    """Softmax (multi-class) or sigmoid (multi-label) probabilities, float64."""
    return probabilities(torch.from_numpy(logits), task).numpy()


def parity(reference: np.ndarray, candidate: np.ndarray, task: str, threshold: float = 0.5) -> dict[str, float]:
    """Largest absolute logit difference and label agreement between two models' logits on the same inputs."""
    if reference.shape != candidate.shape:
        raise MedAssistError(f"parity: logits of shape {reference.shape} and {candidate.shape} cannot be compared")
    if task == "multi-label":
        agree = float(((reference > 0) == (candidate > 0)).mean())  # logit 0 = probability 0.5
    else:
        agree = float((reference.argmax(1) == candidate.argmax(1)).mean())
    return {"max_abs_logit_diff": float(np.abs(reference - candidate).max()), "label_agreement": agree}
