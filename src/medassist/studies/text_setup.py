"""What the text study is set up from: its configuration, its reports, and the reports tokenised per model.

Both the study (``studies/text.py``) and its evaluation (``studies/text_eval.py``) import from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from medassist.config import DeviceOptions, RunOptions, TrainConfig, option
from medassist.data.text_types import TextData, TextSplit, validate_text_data
from medassist.errors import MedAssistError
from medassist.run import Run
from medassist.train import Labelled, TokenBatcher

RECURRENT = ("bilstm", "gru")
TRANSFORMERS = ("minilm", "transformer_small")


def _text_train(**settings) -> TrainConfig:
    """AdamW at weight decay 0.01, the best epoch by validation macro-AUC, the head's bias at the label log-odds."""
    return TrainConfig(
        **{"optimizer": "adamw", "weight_decay": 0.01, "monitor": "val_auc", "prior_bias": True, **settings}
    )


def _rnn_train() -> TrainConfig:
    # At least 1,000 steps: 12 epochs of Open-i's 2,700 training reports; more epochs for a smaller data set.
    return _text_train(epochs=12, min_steps=1000, batch_size=32, lr=2e-3, scheduler="cosine", grad_norms=True)


def _transformer_train() -> TrainConfig:
    # Chosen by the search of examples/tune_minilm.yaml on Open-i's validation split (6 trials, ASHA; the trials are
    # configs/text/minilm_search.csv): lr 2.17e-4 (kept at 2 digits), 3 epochs, warm-up over 10% of the steps,
    # layer-wise decay 0.7, the head's dropout 0.008 (transformer_dropout); validation macro-AUC 0.9953 at epoch 3.
    # The head's bias starts at the label log-odds (prior_bias).
    return _text_train(
        epochs=3, min_steps=500, batch_size=16, lr=2.2e-4, scheduler="onecycle", warmup=0.1, layer_decay=0.7
    )


@dataclass
class TextStudyConfig(DeviceOptions, RunOptions):
    """The text study: which reports, which models, how long to train, where to write."""

    dataset: str = option("openi", "openi (Indiana University reports) | padchest (stemmed Spanish reports)")
    texts: str = option("", "your own CSV or JSONL: a text column and a label column (multi-class) or 0/1 columns")
    text_column: str = option("text", "with `texts`: the column holding the report or note")
    label_column: str = option(
        "", "with `texts`: the column holding one class per row (multi-class); empty = a column named `label`"
    )
    label_columns: list[str] = option([], "with `texts`: the 0/1 label columns (multi-label)")
    subsample: int = option(0, "keep at most this many train and validation reports each (0 = all; quick runs)")
    test_subsample: int = option(
        0, "keep at most this many test reports (0 = all; for smoke runs only: a cut test split widens every interval)"
    )
    resume: str = option("", "an unfinished run folder to continue (finished models are reused)")
    max_len: int = option(256, "tokens kept per report")
    recurrent: str = option("bilstm", "the recurrent model: bilstm | gru")
    transformer: str = option("minilm", "the Transformer: minilm (pretrained) | transformer_small (from scratch)")
    extra_models: list[str] = option(["gru", "bilstm_multitask"], "further models in the comparison")
    rnn_train: TrainConfig = field(default_factory=_rnn_train, metadata={"help": "training of recurrent models"})
    transformer_train: TrainConfig = field(
        default_factory=_transformer_train, metadata={"help": "training of the Transformer"}
    )
    tfidf_C: list[float] = option([1.0, 4.0, 16.0, 64.0], "TF-IDF baseline: inverse regularisation strengths tried")
    tfidf_class_weight: list[str] = option(
        ["none", "balanced"], "TF-IDF baseline: class weightings tried (none | balanced)"
    )
    tfidf_features: list[str] = option(
        ["word", "word+char"], "TF-IDF baseline: features tried (word 1-2 grams | word+char: also char 2-5 grams)"
    )
    frozen_C: list[float] = option(
        [0.25, 1.0, 4.0, 16.0, 64.0],
        "frozen MiniLM embeddings + logistic regression: inverse regularisation strengths tried (with the class "
        "weightings of tfidf_class_weight)",
    )
    frozen_encoder: bool = option(True, "compare the frozen MiniLM encoder + logistic regression")
    ensemble: bool = option(True, "compare the validation-weighted average of TF-IDF and the Transformer")
    balance_classes: bool = option(
        True, "multi-class: weight every neural model's loss by inverse class frequency (macro-F1 counts rare classes)"
    )
    dropouts: list[float] = option([0.1, 0.3, 0.5], "dropout values of the sweep")
    weight_decays: list[float] = option(
        [1e-3, 1e-2, 1e-1],
        "weight decay (L2, decoupled in AdamW) values of the sweep; a run equal to another is reused",
    )
    base_dropout: float = option(0.3, "dropout of the weight-decay and early-stopping runs")
    transformer_dropout: float = option(
        0.01, "the Transformer's dropout (MiniLM: before its head) where base_dropout applies to the recurrent model"
    )
    patience: int = option(2, "early stopping patience (epochs, on validation loss)")
    sweep: bool = option(True, "run the regularisation sweep (else one run per architecture)")
    train_eval_samples: int = option(1000, "training reports evaluated in eval mode for the train metrics and gap")
    n_boot: int = option(1000, "bootstrap resamples for the 95% confidence intervals")
    n_errors: int = option(10, "test reports listed in the error analysis")
    seed: int = option(0, "random seed")


def load_text_data(cfg: TextStudyConfig) -> TextData:
    """The study's reports: the user's own file if given, else Open-i or PadChest."""
    if cfg.texts:
        from medassist.data.text_files import read_text_file

        path = Path(cfg.texts)
        if not path.exists():
            raise MedAssistError(f"texts not found: {path} (give a CSV or JSONL file)")
        if cfg.label_column and cfg.label_columns:
            raise MedAssistError("give either --label-column (multi-class) or --label-columns (multi-label), not both")
        data = read_text_file(
            path,
            text_column=cfg.text_column,
            label_column=cfg.label_column or None,
            label_columns=cfg.label_columns or None,
            seed=cfg.seed,
        )
    elif cfg.dataset == "openi":
        from medassist.data.reports import load_openi

        data = load_openi(seed=cfg.seed)
    elif cfg.dataset == "padchest":
        from medassist.data.reports import load_padchest

        data = load_padchest(seed=cfg.seed, max_reports=2 * cfg.subsample)
    else:
        raise MedAssistError(f"unknown text data set '{cfg.dataset}'; choose openi or padchest, or give --texts")
    if cfg.subsample or cfg.test_subsample:
        rng = np.random.default_rng(cfg.seed)
        for name, keep in (("train", cfg.subsample), ("val", cfg.subsample), ("test", cfg.test_subsample)):
            split = data.splits[name]
            if keep and len(split) > keep:
                data.info.setdefault("subsampled_from", {})[name] = len(split)  # in data.json: what was cut
                idx = np.sort(rng.choice(len(split), keep, replace=False))
                meta = None if split.metadata is None else split.metadata.iloc[idx].reset_index(drop=True)
                data.splits[name] = TextSplit([split.texts[i] for i in idx], split.labels[idx], meta)
    return validate_text_data(data)


class Encoded:
    """The splits tokenised once per tokenizer: word ids (vocabulary built on train) or MiniLM WordPiece ids."""

    def __init__(self, data: TextData, run: Run, max_len: int) -> None:
        self.data, self.run, self.max_len = data, run, max_len
        self._cache: dict[str, dict[str, Labelled]] = {}
        self.vocab_size = 0

    def tokenizer(self, model: str) -> str:
        from medassist.text import TEXT_TOKENIZER

        return TEXT_TOKENIZER[model]

    def get(self, model: str) -> dict[str, Labelled]:
        kind = self.tokenizer(model)
        if kind not in self._cache:
            texts = {s: self.data.splits[s].texts for s in ("train", "val", "test")}
            if kind == "word":
                from medassist.text.vocab import Vocab

                vocab = Vocab.build(texts["train"])
                vocab.save(self.run.path("models/vocab.json"))  # the vocabulary travels with the model
                self.vocab_size = len(vocab)
                ids = {s: vocab.encode_batch(t, max_len=self.max_len) for s, t in texts.items()}
            else:
                from medassist.text.hf import hf_encode_batch, load_minilm_tokenizer

                tok = load_minilm_tokenizer()
                ids = {s: hf_encode_batch(tok, t, max_len=self.max_len) for s, t in texts.items()}
            self._cache[kind] = {s: Labelled(TokenBatcher(ids[s]), self.data.splits[s].labels) for s in ids}
        return self._cache[kind]

    def model_kwargs(self, model: str, dropout: float) -> dict:
        self.get(model)
        kw: dict = {"dropout": dropout}
        if self.tokenizer(model) == "word":
            kw["vocab_size"] = self.vocab_size
        return kw
