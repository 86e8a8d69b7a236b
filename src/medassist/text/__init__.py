"""Turning reports into token ids: a word vocabulary for the models trained from scratch, WordPiece for MiniLM.

Both encoders return ragged lists of ids without padding; the training engine pads each batch with id 0.
"""

from __future__ import annotations

from medassist.text.hf import hf_encode_batch, load_minilm_encoder, load_minilm_tokenizer, minilm_dir
from medassist.text.vocab import PAD_ID, UNK_ID, Vocab, check_texts, tokenize

# Which encoder each registered text model reads, so a study can build the vocabulary (and so know the model's
# ``vocab_size``) before it builds the model: "word" = :class:`Vocab`, "minilm" = :func:`load_minilm_tokenizer`.
# Each model class states the same in its ``TOKENIZER`` attribute; a test keeps the two in agreement.
TEXT_TOKENIZER: dict[str, str] = {
    "bilstm": "word",
    "gru": "word",
    "bilstm_multitask": "word",
    "transformer_small": "word",
    "minilm": "minilm",
}

__all__ = [
    "PAD_ID",
    "TEXT_TOKENIZER",
    "UNK_ID",
    "Vocab",
    "check_texts",
    "hf_encode_batch",
    "load_minilm_encoder",
    "load_minilm_tokenizer",
    "minilm_dir",
    "tokenize",
]
