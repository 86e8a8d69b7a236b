"""The WordPiece tokenizer of a Transformer text bundle: the ``tokenizers`` library's fast tokenizer, saved as one
tokenizer.json (vocabulary, lowercasing, [CLS]/[SEP] template) that the manifest covers.

It gives the ids that :func:`medassist.text.hf_encode_batch` gave the model in training (truncated to ``max_len``
with [CLS] and [SEP], unpadded), without importing ``transformers`` at serving time.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medassist.errors import DataError
from medassist.text.vocab import check_texts

TOKENIZER_FILE = "tokenizer.json"


class WordPiece:
    """A fast WordPiece tokenizer with the interface of :class:`medassist.text.Vocab` that bundles use
    (``encode_batch`` and ``len``)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tok = tokenizer
        self._tok.no_padding()

    @classmethod
    def from_bytes(cls, data: bytes, where: str) -> WordPiece:
        """Read a tokenizer.json from its (verified) bytes."""
        from tokenizers import Tokenizer

        try:
            return cls(Tokenizer.from_str(data.decode("utf-8")))
        except Exception as err:  # tokenizers raises its own exception types for a bad file
            problem = " ".join(str(err).split())[:200]
            raise DataError(f"{where} is not a tokenizers tokenizer.json ({problem})") from None

    def __len__(self) -> int:
        return int(self._tok.get_vocab_size())

    def encode_batch(self, texts: Sequence[str], max_len: int) -> list[list[int]]:
        """WordPiece ids of each text with [CLS]/[SEP], truncated to ``max_len``, unpadded."""
        texts = check_texts(texts)
        self._tok.enable_truncation(max_length=max_len)
        return [e.ids for e in self._tok.encode_batch(list(texts))]


def save_minilm_tokenizer(path: str | os.PathLike[str]) -> Path:
    """Write the MiniLM tokenizer the text study trained with as one tokenizer.json (atomically)."""
    from medassist.text import load_minilm_tokenizer
    from medassist.utils.io import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    backend = load_minilm_tokenizer().backend_tokenizer
    with atomic_path(path) as tmp:
        Path(tmp).write_text(backend.to_str(), encoding="utf-8")
    return path
