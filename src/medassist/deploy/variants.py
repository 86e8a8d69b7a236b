"""Deployment variants and the one measurement that compares them: file size, latency at batch 1, throughput at
a larger batch, validation and test metrics, and parity with the model each variant was made from."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from medassist.deploy.config import DeployConfig
from medassist.deploy.ensemble import TfidfEnsemble, TfidfPart, mix
from medassist.deploy.export import OrtModel, logits_of, parity, probs_from_logits
from medassist.deploy.measure import file_mb, summarise_times, time_rounds
from medassist.evaluate import metrics_for
from medassist.utils.steps import step

if TYPE_CHECKING:
    from medassist.deploy.source import Source

BASELINE = "fp32 (PyTorch)"
# The bar for the best variant against the fp32 PyTorch baseline (drops are fractions: 0.005 = 0.5 points).
TARGETS = {"size_ratio": 4.0, "speedup_b1": 3.0, "accuracy_drop": 0.005, "auc_drop": 0.005}


@dataclass
class Variant:
    """One deployable form of a model.

    Attributes:
        name: shown in tables (the first variant is the fp32 PyTorch baseline).
        technique: what was done to the model.
        runtime: "pytorch" or "onnxruntime".
        files: the files a device would hold (their total size is the variant's size).
        model: the PyTorch module (PyTorch variants).
        parity_with: the variant it was made from, whose test logits it is checked against.
        note: a fact worth a line in the report (e.g. parameters before and after pruning).
        source: the model's own data when it reads other inputs than the study's (a Transformer's WordPiece ids
            beside a word model); None for the study's source.
        trainings: the records of the trainings in this study the variant rests on (the fine-tune after pruning,
            the student's training), each with ``under_trained``; empty for a variant made without training.
        ensemble: (TF-IDF model, its weight) averaged with this model's probabilities (a text ensemble; its
            source's inputs carry the texts); None for one model.
        network: an ensemble's network is this other variant: its validation and test logits are mixed from that
            variant's instead of being computed twice (timing still runs the whole ensemble).
    """

    name: str
    technique: str
    runtime: str
    files: list[Path]
    model: nn.Module | None = None
    parity_with: str | None = None
    note: str = ""
    logits: dict[str, np.ndarray] = field(default_factory=dict)
    source: Source | None = None
    trainings: list[dict[str, Any]] = field(default_factory=list)
    ensemble: tuple[TfidfPart, float] | None = None
    network: str | None = None

    @property
    def under_trained(self) -> bool:
        """Whether a training it rests on was cut by its time budget while validation still improved."""
        return any(t.get("under_trained") for t in self.trainings)

    @property
    def training(self) -> str:
        """Its ``training`` cell: under-trained, complete, or not retrained (export and quantization only)."""
        return "under-trained" if self.under_trained else "complete" if self.trainings else "not retrained"

    @property
    def onnx_file(self) -> Path | None:
        return self.files[0] if self.runtime == "onnxruntime" else None

    def runner(self, threads: int) -> nn.Module | OrtModel:
        model = OrtModel(self.files[0], threads=threads) if self.runtime == "onnxruntime" else self.model.eval()
        return TfidfEnsemble(model, *self.ensemble) if self.ensemble is not None else model


def timing_inputs(source: Source, batch: int, seed: int) -> tuple[tuple[torch.Tensor, ...], tuple[torch.Tensor, ...]]:
    """Inputs at batch 1 (a test case of median length, for text) and at ``batch`` (drawn at random, seeded)."""
    test = source.splits["test"].batcher
    n = len(test)
    if source.kind == "text":
        one = torch.argsort(test.lengths)[n // 2 : n // 2 + 1]
    else:
        one = torch.arange(1)
    many = torch.as_tensor(np.sort(np.random.default_rng(seed).choice(n, min(batch, n), replace=False)))
    return test.inputs(one), test.inputs(many)


def _caller(runner: nn.Module | OrtModel, inputs: tuple[torch.Tensor, ...]):  # noqa: ANN202 - a closure
    if isinstance(runner, OrtModel):
        arrays = [x.numpy().astype(np.int64) if x.dtype in (torch.bool, torch.int64) else x.numpy() for x in inputs]
        return lambda: runner(*arrays)

    def call() -> Any:
        with torch.inference_mode():
            return runner(*inputs)

    return call


def measure_variants(variants: list[Variant], source: Source, cfg: DeployConfig) -> pd.DataFrame:
    """Measure every variant in one process with the same threads, inputs, warm-up and repeats."""
    torch.set_num_threads(cfg.threads)
    metrics = metrics_for(source.task)
    runners = {v.name: v.runner(cfg.threads) for v in variants}
    rows = []
    by_name = {v.name: v for v in variants}
    for v in variants:
        step("deploy", f"validation and test logits of {v.name}", show=False)
        for split in ("val", "test"):
            batcher = (v.source or source).splits[split].batcher
            network = by_name[v.network].logits.get(split) if v.network else None
            if network is not None and v.ensemble is not None:
                part, weight = v.ensemble
                v.logits[split] = mix(part.probs(batcher.texts), network, weight, part.task).astype(np.float32)
            else:
                v.logits[split] = logits_of(runners[v.name], batcher)
    # The same reports (or images) for every variant, each in the inputs its model reads.
    sources = {id(source): source} | {id(v.source): v.source for v in variants if v.source is not None}
    inputs = {key: timing_inputs(s, cfg.throughput_batch, cfg.seed) for key, s in sources.items()}
    one = {v.name: inputs[id(v.source or source)][0] for v in variants}
    many = {v.name: inputs[id(v.source or source)][1] for v in variants}
    step("deploy", f"latency at batch 1 of {len(runners)} variants", show=False)
    b1 = time_rounds(
        {k: _caller(r, one[k]) for k, r in runners.items()},
        warmup=cfg.warmup,
        rounds=cfg.rounds,
        per_round=cfg.repeats,
    )
    step("deploy", f"throughput at batch {cfg.throughput_batch} of {len(runners)} variants", show=False)
    bn = time_rounds(
        {k: _caller(r, many[k]) for k, r in runners.items()},
        warmup=max(2, cfg.warmup // 5),
        rounds=cfg.rounds,
        per_round=max(2, cfg.repeats // 8),
    )
    step("deploy", "metrics of every variant", show=False)
    for v in variants:
        row: dict[str, Any] = {
            "variant": v.name,
            "technique": v.technique,
            "runtime": v.runtime,
            "size_mb": file_mb(*v.files),
        }
        t1, tn = summarise_times(b1[v.name]), summarise_times(bn[v.name])
        row.update(
            {
                "latency_b1_median_ms": t1["median_ms"],
                "latency_b1_p95_ms": t1["p95_ms"],
                f"throughput_b{len(many[v.name][0])}_per_s": len(many[v.name][0]) / (tn["median_ms"] / 1e3),
            }
        )
        for split in ("val", "test"):
            y = (v.source or source).splits[split].labels
            y = y if source.task == "multi-label" else y.reshape(-1)
            p = probs_from_logits(v.logits[split], source.task)
            for name in ("accuracy", "auc", "macro_f1"):
                row[f"{split}_{name}"] = float(metrics[name](y, p))
        if v.parity_with:
            par = parity(by_name[v.parity_with].logits["test"], v.logits["test"], source.task)
            row.update({"parity_with": v.parity_with, **par})
        row["note"] = v.note
        row["training"] = v.training
        rows.append(row)
    df = pd.DataFrame(rows)
    # Each variant against the same model in fp32 PyTorch: a text run's MiniLM variants against MiniLM, not
    # against the recurrent model of the first row.
    names = list(df["variant"])
    base = df.iloc[[names.index(reference_of(v, names)) for v in names]].reset_index(drop=True)
    df["size_ratio"] = base.size_mb / df.size_mb
    df["speedup_b1"] = base.latency_b1_median_ms / df.latency_b1_median_ms
    for split in ("val", "test"):
        df[f"{split}_accuracy_drop"] = base[f"{split}_accuracy"] - df[f"{split}_accuracy"]
        df[f"{split}_auc_drop"] = base[f"{split}_auc"] - df[f"{split}_auc"]
    df["meets_target"] = (
        (df.size_ratio >= TARGETS["size_ratio"])
        & (df.speedup_b1 >= TARGETS["speedup_b1"])
        & (df.test_accuracy_drop <= TARGETS["accuracy_drop"] + 1e-12)
        & (df.test_auc_drop <= TARGETS["auc_drop"] + 1e-12)
    )
    return df


def reference_of(variant: str, names: list[str]) -> str:
    """The fp32 PyTorch row a variant is measured against: ``"<model> fp32 (PyTorch)"`` when the variant is named
    after a second model of the study (``"minilm int8 dynamic (ONNX Runtime)"``), else :data:`BASELINE`."""
    model = variant.split(" ")[0]
    own = f"{model} {BASELINE}"
    return own if own in names else BASELINE


def select_variant(table: pd.DataFrame, cfg: DeployConfig) -> str:
    """The variant to ship, chosen on validation only: the fastest ONNX variant at batch 1 whose validation
    accuracy and AUC stay within the tolerances of the best fp32 model's (the smaller file breaks a tie).

    The fp32 models are the rows of technique "baseline" (the study's model, and a text study's Transformer beside
    its recurrent model); the best is the one with the highest validation AUC. When nothing stays within the
    tolerances, the plain ONNX export of that model ships.
    """
    refs = table[table.technique == "baseline"] if "technique" in table else table.iloc[:1]
    best = refs.sort_values("val_auc", ascending=False, kind="stable").iloc[0]
    acc_drop = best.val_accuracy - table.val_accuracy  # drops from the best fp32 model, whatever each row's reference
    auc_drop = best.val_auc - table.val_auc
    ok = table[
        (table.runtime == "onnxruntime")
        & (acc_drop <= cfg.max_accuracy_drop + 1e-12)
        & (auc_drop <= cfg.max_auc_drop + 1e-12)
    ]
    if ok.empty:  # nothing compressed keeps the validation metrics: ship the plain export of the best model
        if "parity_with" in table:
            export = table[(table.parity_with == best.variant) & (table.technique == "ONNX export")]
            if not export.empty:
                return str(export.iloc[0]["variant"])
        return "fp32 (ONNX Runtime)"
    return str(ok.sort_values(["latency_b1_median_ms", "size_mb"]).iloc[0]["variant"])


def test_intervals(variants: list[Variant], source: Source, chosen: str, *, n_boot: int, seed: int) -> list[dict]:
    """Test accuracy and AUC of the baseline and the shipped variant with 95% bootstrap intervals, and the paired
    interval of each drop (baseline minus shipped)."""
    from medassist.evaluate import bootstrap_ci, paired_bootstrap_difference

    metrics = metrics_for(source.task)
    y = source.splits["test"].labels  # every variant's source holds the same cases in the same order
    y = y if source.task == "multi-label" else y.reshape(-1)
    by_name = {v.name: v for v in variants}
    probs = {n: probs_from_logits(by_name[n].logits["test"], source.task) for n in (BASELINE, chosen)}
    rows = []
    for name in ("accuracy", "auc"):
        for who in (BASELINE, chosen):
            v, lo, hi = bootstrap_ci(y, probs[who], metrics[name], n_boot=n_boot, seed=seed)
            rows.append({"metric": name, "what": who, "value": v, "ci95_low": lo, "ci95_high": hi})
        d, lo, hi = paired_bootstrap_difference(
            y, probs[BASELINE], probs[chosen], metrics[name], n_boot=n_boot, seed=seed
        )
        rows.append({"metric": name, "what": "drop (baseline - shipped)", "value": d, "ci95_low": lo, "ci95_high": hi})
    return rows
