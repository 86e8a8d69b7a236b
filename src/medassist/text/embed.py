"""Sentence embeddings from the frozen all-MiniLM-L6-v2 encoder: mean-pooled over the tokens, L2-normalised (as
sentence-transformers computes them), once per set of texts.

The embeddings of a list of texts are cached in ``embeddings/`` of :func:`~medassist.data.paths.cache_root` under a
hash of the texts, ``max_len`` and the weights file's size, and written whole or not at all; a second study of the
same reports reads them in a moment. They are derived from the reports, so they stay in the per-user cache like
the reports themselves, never in a run folder.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from medassist.data.paths import cache_root
from medassist.models.text_transformer import MiniLMClassifier
from medassist.text.hf import hf_encode_batch, load_minilm_tokenizer, minilm_dir
from medassist.train.data import TokenBatcher
from medassist.utils.io import atomic_path

DIM = 384  # all-MiniLM-L6-v2's hidden size


def load_sentence_encoder() -> MiniLMClassifier:
    """The frozen MiniLM in eval mode; :func:`embed` reads sentence embeddings from it (its head is unused)."""
    return MiniLMClassifier(num_classes=1, freeze_encoder=True).eval()


def embed(model: MiniLMClassifier, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """(B, 384) sentence embeddings: the model's masked mean of the token states, L2-normalised."""
    return torch.nn.functional.normalize(model.embed(input_ids, attention_mask), dim=1)


class FrozenEncoderClassifier(torch.nn.Module):
    """The frozen-encoder model as one network: :func:`embed` then the logistic regression's linear layer, so that
    it exports to one ONNX graph (and quantises) like any text model.

    Args:
        encoder: the frozen MiniLM (:func:`load_sentence_encoder`).
        weight: (K, 384) logistic-regression weights; bias: (K,) (``LogisticHead.weights()``).
    """

    def __init__(self, encoder: MiniLMClassifier, weight: np.ndarray, bias: np.ndarray) -> None:
        super().__init__()
        self.minilm = encoder  # its own one-label head is unused
        self.head = torch.nn.Linear(DIM, len(bias))
        with torch.no_grad():
            self.head.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            self.head.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        self.eval()

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, K)."""
        return self.head(embed(self.minilm, input_ids, attention_mask))


def _key(texts: Sequence[str], max_len: int) -> str:
    h = hashlib.sha256(f"minilm-mean-v1\0{max_len}\0{(minilm_dir() / 'model.safetensors').stat().st_size}".encode())
    for t in texts:
        h.update(t.encode("utf-8", "surrogatepass") + b"\0")
    return h.hexdigest()[:32]


@torch.no_grad()
def sentence_embeddings(
    texts: Sequence[str],
    *,
    max_len: int = 256,
    batch_size: int = 64,
    cache: bool = True,
    progress: bool = False,
    models: tuple[Any, MiniLMClassifier] | None = None,
) -> tuple[np.ndarray, float]:
    """float32 (N, 384) embeddings of ``texts`` and the seconds they took to compute (read from the cache, with
    the seconds of that computation, when the same texts were embedded before).

    Texts are embedded in order of length (at most 64 a batch), so a batch pads little; the result is in the given
    order. ``models``
    (tokenizer, encoder) saves loading them again; its loading time is then not counted.
    """
    path = cache_root() / "embeddings" / f"{_key(texts, max_len)}.npz"
    if cache and path.is_file():
        try:
            with np.load(path) as stored:
                if stored["embeddings"].shape == (len(texts), DIM):
                    return stored["embeddings"], float(stored["seconds"])
        except (ValueError, OSError, KeyError):
            pass  # a damaged cache file is computed again
    t0 = time.perf_counter()
    tokenizer, model = models or (load_minilm_tokenizer(), load_sentence_encoder())
    batcher = TokenBatcher(hf_encode_batch(tokenizer, texts, max_len=max_len))
    out = np.zeros((len(texts), DIM), dtype=np.float32)
    for idx in tqdm(list(batcher.order(batch_size)), desc="Embedding", unit="batch", disable=not progress):
        out[idx.numpy()] = embed(model, *batcher.inputs(idx)).numpy()  # batches sorted by length: little padding
    seconds = time.perf_counter() - t0
    if cache:
        with atomic_path(path) as tmp:
            with open(tmp, "wb") as f:
                np.savez(f, embeddings=out, seconds=seconds)
    return out, seconds
