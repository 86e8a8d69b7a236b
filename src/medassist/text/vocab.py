"""A word-level vocabulary for the models trained from scratch (``bilstm``, ``gru``, ``transformer_small``)."""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

from medassist.errors import DataError, MedAssistError
from medassist.utils.io import atomic_write_text

PAD, UNK = "<pad>", "<unk>"
PAD_ID, UNK_ID = 0, 1
# Words and single punctuation marks; \w is Unicode-aware, so accented and stemmed Spanish words stay whole.
_TOKEN = re.compile(r"\w+|[^\w\s]")
_FORMAT = "medassist.vocab"


def tokenize(text: str, *, lowercase: bool = True) -> list[str]:
    """Split ``text`` into words and punctuation marks."""
    return _TOKEN.findall(text.lower() if lowercase else text)


def _check_text(text: object, where: str) -> str:
    if not isinstance(text, str):
        raise DataError(f"{where} is {type(text).__name__} ({text!r}), not a string")
    if not text.strip():
        raise DataError(f"{where} is empty; drop the empty reports before encoding")
    return text


def check_texts(texts: Iterable[object]) -> list[str]:
    """Return ``texts`` as a list of strings, or raise :class:`DataError` naming the first text that is not.

    A report that is empty (or only whitespace) or missing (``None``, a pandas NaN) would become a zero-length
    sequence, which no model can classify, so it is refused here with its position.
    """
    if isinstance(texts, str):
        raise DataError("expected a list of texts, got a single string; wrap it in a list")
    return [_check_text(text, f"text at position {i}") for i, text in enumerate(texts)]


class Vocab:
    """Word-level vocabulary: ``<pad>`` is id 0 and ``<unk>`` id 1, then words by decreasing frequency.

    Args:
        tokens: all tokens in id order, starting with ``<pad>`` and ``<unk>``.
        lowercase: lowercase texts before tokenising (must match how the vocabulary was built).
    """

    pad_id = PAD_ID
    unk_id = UNK_ID

    def __init__(self, tokens: Sequence[str], *, lowercase: bool = True) -> None:
        tokens = list(tokens)
        if tokens[:2] != [PAD, UNK]:
            raise MedAssistError(f"a vocabulary must start with {PAD!r}, {UNK!r}; got {tokens[:2]}")
        if len(set(tokens)) != len(tokens):
            dup = next(t for t, n in Counter(tokens).items() if n > 1)
            raise MedAssistError(f"token {dup!r} appears twice in the vocabulary")
        self.tokens = tokens
        self.lowercase = lowercase
        self._ids = {t: i for i, t in enumerate(tokens)}

    @classmethod
    def build(cls, texts: Iterable[str], *, min_freq: int = 2, max_size: int = 20000, lowercase: bool = True) -> Vocab:
        """Build the vocabulary of ``texts`` (the training split only, so test words stay unknown).

        Args:
            texts: the training texts.
            min_freq: keep words seen at least this often; rarer words map to ``<unk>``.
            max_size: at most this many tokens, ``<pad>`` and ``<unk>`` included.
            lowercase: lowercase before tokenising.
        """
        if min_freq < 1:
            raise MedAssistError(f"min_freq must be at least 1, got {min_freq}")
        if max_size < 3:
            raise MedAssistError(f"max_size must leave room for a word besides {PAD} and {UNK}, got {max_size}")
        texts = check_texts(texts)
        if not texts:
            raise DataError("no texts to build a vocabulary from")
        counts = Counter(tok for text in texts for tok in tokenize(text, lowercase=lowercase))
        for special in (PAD, UNK):  # a literal "<pad>" in a report must not get a second id
            counts.pop(special, None)
        # Ties broken alphabetically, so the same corpus gives the same ids whatever the order of its texts.
        words = sorted((w for w, n in counts.items() if n >= min_freq), key=lambda w: (-counts[w], w))
        return cls([PAD, UNK, *words[: max_size - 2]], lowercase=lowercase)

    def __len__(self) -> int:
        return len(self.tokens)

    def __contains__(self, token: object) -> bool:
        return token in self._ids

    def __repr__(self) -> str:
        return f"Vocab(size={len(self)}, lowercase={self.lowercase})"

    def encode(self, text: str, *, max_len: int | None = None) -> list[int]:
        """Token ids of ``text`` (unknown words -> ``<unk>``), truncated to ``max_len`` if given."""
        text = _check_text(text, "text")
        ids = [self._ids.get(tok, UNK_ID) for tok in tokenize(text, lowercase=self.lowercase)]
        return ids[:max_len] if max_len is not None else ids

    def encode_batch(self, texts: Sequence[str], max_len: int = 256) -> list[list[int]]:
        """Token ids of each text, truncated to ``max_len``, unpadded (the training engine pads with 0)."""
        if max_len < 1:
            raise MedAssistError(f"max_len must be at least 1, got {max_len}")
        # Every non-space character is a token, so a text that passes the check never encodes to [].
        return [self.encode(text, max_len=max_len) for text in check_texts(texts)]

    def decode(self, ids: Iterable[int]) -> list[str]:
        """Tokens of ``ids`` (for reading what a model saw)."""
        return [self.tokens[i] for i in ids]

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the vocabulary as JSON (atomically) and return the path."""
        data = {"format": _FORMAT, "version": 1, "lowercase": self.lowercase, "tokens": self.tokens}
        return atomic_write_text(path, json.dumps(data, ensure_ascii=False))

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> Vocab:
        """Read a vocabulary written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"vocabulary file {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise DataError(
                f"vocabulary file {path} is not readable JSON ({err}); rebuild it with Vocab.build"
            ) from err
        tokens = data.get("tokens") if isinstance(data, dict) else None
        if (
            not isinstance(data, dict)
            or data.get("format") != _FORMAT
            or not isinstance(tokens, list)
            or not all(isinstance(t, str) for t in tokens)
            or not isinstance(data.get("lowercase"), bool)
        ):
            raise DataError(f"{path} is not a medassist vocabulary (written by Vocab.save)")
        try:
            return cls(tokens, lowercase=data["lowercase"])
        except MedAssistError as err:
            raise DataError(f"vocabulary file {path} is corrupt: {err}") from err
