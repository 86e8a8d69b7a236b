"""The clinical text study: a recurrent model against a Transformer on radiology reports, with a regularisation
sweep, a vanishing-gradient analysis, a TF-IDF baseline, a multi-task variant, and a generated report.

Every choice is made on the validation split; the test split is only evaluated.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medassist.config import TrainConfig, option, to_dict
from medassist.data.text_types import TextData, TextSplit, validate_text_data
from medassist.errors import MedAssistError
from medassist.run import Run
from medassist.studies.units import UnitResult, load_history, train_unit
from medassist.train import Labelled, TokenBatcher

RECURRENT = ("bilstm", "gru")
TRANSFORMERS = ("minilm", "transformer_small")


def _text_train(**settings) -> TrainConfig:
    """AdamW at weight decay 0.01, the best epoch by validation macro-AUC, the head's bias at the label log-odds."""
    return TrainConfig(
        **{"optimizer": "adamw", "weight_decay": 0.01, "monitor": "val_auc", "prior_bias": True, **settings}
    )


def _rnn_train() -> TrainConfig:
    return _text_train(epochs=12, batch_size=32, lr=2e-3, scheduler="cosine", grad_norms=True)


def _transformer_train() -> TrainConfig:
    # lr 2e-4 with the head's bias started at the label log-odds: one epoch gave validation macro-AUC 0.976, against
    # 0.967 at 1e-4 and 0.729 at 5e-5 without the prior bias (Open-i, seed 0).
    return _text_train(epochs=3, batch_size=16, lr=2e-4, scheduler="onecycle")


@dataclass
class TextStudyConfig:
    """The text study: which reports, which models, how long to train, where to write."""

    dataset: str = option("openi", "openi (Indiana University reports) | padchest (stemmed Spanish reports)")
    texts: str = option("", "your own CSV or JSONL with a `text` column and a `label` column or 0/1 label columns")
    label_columns: list[str] = option([], "with `texts`: the 0/1 label columns (multi-label); empty = `label`")
    subsample: int = option(0, "keep at most this many train and validation reports each (0 = all; quick runs)")
    out: str = option("runs", "folder in which the run folder is made")
    resume: str = option("", "an unfinished run folder to continue (finished models are reused)")
    max_len: int = option(256, "tokens kept per report")
    recurrent: str = option("bilstm", "the recurrent model: bilstm | gru")
    transformer: str = option("minilm", "the Transformer: minilm (pretrained) | transformer_small (from scratch)")
    extra_models: list[str] = option(["gru", "bilstm_multitask"], "further models in the comparison")
    rnn_train: TrainConfig = field(default_factory=_rnn_train, metadata={"help": "training of recurrent models"})
    transformer_train: TrainConfig = field(
        default_factory=_transformer_train, metadata={"help": "training of the Transformer"}
    )
    dropouts: list[float] = option([0.1, 0.3, 0.5], "dropout values of the sweep")
    weight_decays: list[float] = option(
        [1e-3, 1e-2, 1e-1],
        "weight decay (L2, decoupled in AdamW) values of the sweep; a run equal to another is reused",
    )
    base_dropout: float = option(0.3, "dropout of the weight-decay and early-stopping runs")
    patience: int = option(2, "early stopping patience (epochs, on validation loss)")
    sweep: bool = option(True, "run the regularisation sweep (else one run per architecture)")
    bf16: bool = option(False, "bfloat16 autocast for the Transformer (if it keeps the metric; see the benchmark)")
    train_eval_samples: int = option(1000, "training reports evaluated in eval mode for the train metrics and gap")
    n_boot: int = option(1000, "bootstrap resamples for the 95% confidence intervals")
    n_errors: int = option(10, "test reports listed in the error analysis")
    seed: int = option(0, "random seed")
    progress: bool = option(True, "show progress bars")


def load_text_data(cfg: TextStudyConfig) -> TextData:
    """The study's reports: the user's own file if given, else Open-i or PadChest."""
    if cfg.texts:
        from medassist.data.text_files import read_text_file

        path = Path(cfg.texts)
        if not path.exists():
            raise MedAssistError(f"texts not found: {path} (give a CSV or JSONL file)")
        data = read_text_file(path, label_columns=cfg.label_columns or None, seed=cfg.seed)
    elif cfg.dataset == "openi":
        from medassist.data.reports import load_openi

        data = load_openi(seed=cfg.seed)
    elif cfg.dataset == "padchest":
        from medassist.data.reports import load_padchest

        data = load_padchest(seed=cfg.seed, max_reports=2 * cfg.subsample)
    else:
        raise MedAssistError(f"unknown text data set '{cfg.dataset}'; choose openi or padchest, or give --texts")
    if cfg.subsample:
        rng = np.random.default_rng(cfg.seed)
        for name in ("train", "val"):
            split = data.splits[name]
            if len(split) > cfg.subsample:
                idx = np.sort(rng.choice(len(split), cfg.subsample, replace=False))
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


def multitask_step(normal_index: int, abnormal_weight: float = 1.0):
    """Loss of the two-head model: findings (binary cross-entropy per label) plus normal-vs-abnormal.

    The abnormal head counts as one label more: the loss is the mean over the K findings and the abnormal output,
    with the abnormal term scaled by ``abnormal_weight``. (Adding the abnormal loss to the findings' mean instead
    would give that one output K times the weight of any finding and slow the findings' learning.)
    """

    def step(model, inputs, y):
        findings, abnormal = model(*inputs)
        target = 1.0 - y[:, normal_index].float()  # abnormal = not labelled 'normal'
        k = findings.shape[1]
        loss = k * F.binary_cross_entropy_with_logits(findings, y.float())
        loss = loss + abnormal_weight * F.binary_cross_entropy_with_logits(abnormal, target)
        return loss / (k + 1), findings

    return step


def sweep_runs(cfg: TextStudyConfig, arch: str, base: TrainConfig) -> list[tuple[str, float, TrainConfig]]:
    """(name, dropout, training settings) of each run of the regularisation sweep of ``arch``."""
    if not cfg.sweep:
        return [(f"{arch}-base", cfg.base_dropout, base)]
    runs = [(f"{arch}-dropout{d:g}", d, base) for d in cfg.dropouts]
    runs += [
        (f"{arch}-wd{w:g}", cfg.base_dropout, dataclasses.replace(base, weight_decay=w)) for w in cfg.weight_decays
    ]
    es = dataclasses.replace(base, early_stopping=True, patience=cfg.patience, monitor="val_loss")
    runs.append((f"{arch}-earlystop", cfg.base_dropout, es))
    return runs


def _check(cfg: TextStudyConfig) -> None:
    if cfg.recurrent not in RECURRENT:
        raise MedAssistError(f"unknown recurrent model '{cfg.recurrent}'; choose from {', '.join(RECURRENT)}")
    if cfg.transformer not in TRANSFORMERS:
        raise MedAssistError(f"unknown Transformer '{cfg.transformer}'; choose from {', '.join(TRANSFORMERS)}")
    known = (*RECURRENT, *TRANSFORMERS, "bilstm_multitask")
    bad = [m for m in cfg.extra_models if m not in known]
    if bad:
        raise MedAssistError(f"unknown model '{bad[0]}' in extra_models; choose from {', '.join(known)}")


def run_text_study(cfg: TextStudyConfig) -> Path:
    """Run the whole text study and return its run folder."""
    _check(cfg)
    data = load_text_data(cfg)
    if data.task != "multi-label":
        raise MedAssistError(f"{data.name}: the text study handles multi-label findings; give 0/1 label columns")
    run = Run.create(cfg.out, f"text-{data.name}", to_dict(cfg), resume=cfg.resume or None)
    with run:
        _study(run, cfg, data)
        from medassist.report.text import write_text_report

        write_text_report(run.dir)
    return run.dir


def _stage(cfg: TextStudyConfig, i: int, n: int, text: str) -> None:
    if cfg.progress:
        tqdm.write(f"[{i}/{n}] {text}", file=sys.stderr)


def _study(run: Run, cfg: TextStudyConfig, data: TextData) -> None:
    from medassist.studies.text_eval import compare_models, error_analysis, gradient_analysis, tfidf_baseline

    enc = Encoded(data, run, cfg.max_len)
    k = data.num_labels
    run.write_json(
        "data.json",
        {
            "name": data.name,
            "label_names": data.label_names,
            "task": data.task,
            "sizes": {s: len(data.splits[s]) for s in data.splits},
            "label_counts": {s: data.splits[s].labels.sum(0).astype(int).tolist() for s in data.splits},
            "mean_words": {s: float(np.mean([len(t.split()) for t in data.splits[s].texts])) for s in data.splits},
            "info": data.info,
        },
    )
    pd.DataFrame(data.splits["val"].labels, columns=data.label_names).to_csv(
        run.path("tables/val_labels.csv"), index=False
    )
    n_stages = 6
    _stage(cfg, 1, n_stages, "TF-IDF + logistic regression baseline")
    baseline = tfidf_baseline(run, data)

    units: dict[str, UnitResult] = {}
    models: dict[str, torch.nn.Module] = {}
    sweep_rows = []
    best: dict[str, str] = {}
    for i, (arch, base) in enumerate(((cfg.recurrent, cfg.rnn_train), (cfg.transformer, cfg.transformer_train))):
        base = dataclasses.replace(base, seed=cfg.seed, bf16=cfg.bf16 and arch in TRANSFORMERS)
        _stage(cfg, 2 + i, n_stages, f"{arch}: regularisation sweep")
        sets = enc.get(arch)
        trained: dict[str, dict] = {}  # settings -> the sweep row of the run that trained them
        for name, dropout, tcfg in sweep_runs(cfg, arch, base):
            key = repr((dropout, to_dict(tcfg)))
            if key in trained:  # e.g. the weight-decay run at the base decay is the base-dropout run
                sweep_rows.append({**trained[key], "run": name})
                continue
            u, m = train_unit(
                run,
                name,
                model_name=arch,
                model_kwargs=enc.model_kwargs(arch, dropout),
                train=sets["train"],
                val=sets["val"],
                cfg=tcfg,
                num_classes=k,
                task="multi-label",
                train_eval_samples=cfg.train_eval_samples,
                progress=cfg.progress,
            )
            units[name], models[name] = u, m
            trained[key] = {
                "arch": arch,
                "run": name,
                "unit": name,
                "dropout": dropout,
                "weight_decay": tcfg.weight_decay,
                "early_stopping": tcfg.early_stopping,
                **_unit_cols(u),
            }
            sweep_rows.append(trained[key])
        # best run of the architecture: highest validation macro-AUC
        best[arch] = max((r for r in sweep_rows if r["arch"] == arch), key=lambda r: r["val_auc"])["run"]

    _stage(cfg, 4, n_stages, f"further models: {', '.join(cfg.extra_models) or 'none'}")
    for arch in cfg.extra_models:
        sets = enc.get(arch)
        base = cfg.transformer_train if arch in TRANSFORMERS else cfg.rnn_train
        step = None
        if arch == "bilstm_multitask":
            if "normal" not in data.label_names:
                continue  # the second head predicts 'normal' vs abnormal; without that label there is nothing to add
            step = multitask_step(data.label_names.index("normal"))
        name = f"{arch}-base"
        u, m = train_unit(
            run,
            name,
            model_name=arch,
            model_kwargs=enc.model_kwargs(arch, cfg.base_dropout),
            train=sets["train"],
            val=sets["val"],
            cfg=dataclasses.replace(base, seed=cfg.seed),
            num_classes=k,
            task="multi-label",
            train_eval_samples=cfg.train_eval_samples,
            progress=cfg.progress,
            step_fn=step,
        )
        units[name], models[name] = u, m
        best[arch] = name

    _stage(cfg, 5, n_stages, "vanishing-gradient analysis")
    # Mean+max pooling gives every time step a direct path to the loss; a one-directional LSTM read from its last
    # state has only the recurrence, which is where gradients vanish. Both are analysed.
    sets = enc.get("bilstm")
    name = "lstm_last-base"
    kwargs = {**enc.model_kwargs("bilstm", cfg.base_dropout), "bidirectional": False, "pooling": "last"}
    u, m = train_unit(
        run,
        name,
        model_name="bilstm",
        model_kwargs=kwargs,
        train=sets["train"],
        val=sets["val"],
        cfg=dataclasses.replace(cfg.rnn_train, seed=cfg.seed),
        num_classes=k,
        task="multi-label",
        train_eval_samples=cfg.train_eval_samples,
        progress=cfg.progress,
    )
    units[name], models[name] = u, m
    analysed = [(f"{cfg.recurrent} (selected, mean+max pooling)", best[cfg.recurrent]), ("LSTM, last state", name)]
    gradient_analysis(run, cfg, enc, analysed, units, models)

    _stage(cfg, 6, n_stages, "test comparison, error analysis and report")
    comparison = compare_models(run, cfg, data, enc, units, models, best, baseline)
    sweep = pd.DataFrame(sweep_rows)
    if len(comparison.sweep_test):
        sweep = sweep.merge(comparison.sweep_test.rename(columns={"run": "unit"}), on="unit", how="left")
    sweep["same_as"] = np.where(sweep["unit"] != sweep["run"], sweep["unit"], "")
    sweep = sweep.drop(columns="unit")
    run.write_table("sweep", sweep)
    from medassist.evaluate.plots import plot_learning_curves

    for arch in (cfg.recurrent, cfg.transformer):
        names = [r["run"] for r in sweep_rows if r["arch"] == arch and r["unit"] == r["run"]]
        plot_learning_curves(
            {n: load_history(run, n) for n in names}, run.figure(f"sweep_{arch}"), metrics=("loss", "auc")
        )
    plot_learning_curves(
        {a: load_history(run, n) for a, n in best.items()}, run.figure("curves_best"), metrics=("loss", "auc")
    )
    err = error_analysis(run, cfg, data, enc, comparison.best_name, comparison.best_probs)
    run.write_json(
        "metrics.json",
        {
            "dataset": data.name,
            "best": best,
            "sweep": sweep.to_dict("records"),
            "comparison": comparison.table.to_dict("records"),
            "best_model": comparison.best_name,
            "gradients": run.read_json("gradients.json"),
            "errors": err,
        },
    )


def _unit_cols(u: UnitResult) -> dict:
    return {
        "params": u.params,
        "epochs_run": u.epochs_run,
        "best_epoch": u.best_epoch,
        "train_time_s": u.train_time,
        "train_loss": u.train["loss"],
        "val_loss": u.val["loss"],
        "train_macro_f1": u.train["macro_f1"],
        "val_macro_f1": u.val["macro_f1"],
        "train_auc": u.train["auc"],
        "val_auc": u.val["auc"],
        "gap_macro_f1": u.train["macro_f1"] - u.val["macro_f1"],
        "gap_loss": u.val["loss"] - u.train["loss"],
    }
