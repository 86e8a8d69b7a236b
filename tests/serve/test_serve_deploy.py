"""The deploy study's pieces the service relies on, on tiny text models: variants reading other tokens (a
Transformer beside a word model) measured in one table, the selection against the best fp32 model, and the
calibration of the shipped variant written into its run folder."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from serve_bundles import TinyText

from medassist.deploy.config import DeployConfig
from medassist.deploy.export import export_onnx
from medassist.deploy.source import Source
from medassist.deploy.variants import BASELINE, Variant, measure_variants, select_variant
from medassist.run import Run
from medassist.train import Labelled, TokenBatcher


def _source(vocab: int, seed: int, model: torch.nn.Module) -> Source:
    rng = np.random.default_rng(0)  # the same cases and labels for both sources; only the ids differ
    labels = {s: rng.integers(0, 2, (n, 2)).astype(np.float32) for s, n in (("train", 40), ("val", 60), ("test", 60))}
    ids_rng = np.random.default_rng(seed)
    splits = {}
    for s, y in labels.items():
        ids = [list(ids_rng.integers(1, vocab, ids_rng.integers(3, 9))) for _ in range(len(y))]
        splits[s] = Labelled(TokenBatcher(ids), y)
    return Source("text", "tiny", "multi-label", ["a", "b"], model, "tiny", {}, splits, {}, Path("."))


def test_variants_of_two_models_in_one_table(tmp_path: Path) -> None:
    torch.manual_seed(0)
    word, piece = TinyText(50, 2).eval(), TinyText(80, 2).eval()
    src, other = _source(50, 1, word), _source(80, 2, piece)
    example = other.example()
    onnx = export_onnx(piece, example, tmp_path / "piece.onnx", text=True)
    variants = [
        Variant(BASELINE, "baseline", "pytorch", [onnx], model=word),
        Variant("piece fp32 (PyTorch)", "baseline", "pytorch", [onnx], model=piece, source=other),
        Variant("piece fp32 (ONNX Runtime)", "ONNX export", "onnxruntime", [onnx],
                parity_with="piece fp32 (PyTorch)", source=other),
    ]  # fmt: skip
    cfg = DeployConfig(warmup=1, rounds=1, repeats=2, throughput_batch=4, threads=1)
    table = measure_variants(variants, src, cfg)
    row = table.set_index("variant").loc["piece fp32 (ONNX Runtime)"]
    assert row.max_abs_logit_diff < 1e-4 and row.label_agreement == 1.0  # read with its own tokens
    # The export is chosen when the second model is the best fp32 one on validation ...
    best = table.assign(val_auc=[0.90, 0.95, 0.95], val_accuracy=[0.9, 0.9, 0.9])
    assert select_variant(best, cfg) == "piece fp32 (ONNX Runtime)"
    # ... and refused when it falls short of a better first model.
    worse = table.assign(val_auc=[0.95, 0.90, 0.90], val_accuracy=[0.9, 0.9, 0.9])
    assert select_variant(worse, cfg) == "fp32 (ONNX Runtime)"


def test_calibration_of_the_shipped_variant(tmp_path: Path) -> None:
    from medassist.studies.deploy import _calibrate

    torch.manual_seed(0)
    model = TinyText(50, 2).eval()
    src = dataclasses.replace(_source(50, 1, model), thresholds=[0.4, 0.6])
    var = Variant(BASELINE, "baseline", "pytorch", [], model=model)
    rng = np.random.default_rng(3)
    for s in ("val", "test"):
        y = src.splits[s].labels
        var.logits[s] = (3.0 * (2 * y - 1) + rng.normal(0, 2, y.shape)).astype(np.float32)  # over-confident
    run = Run.create(tmp_path, "deploy-test", {})
    with run:
        summary, threshold = _calibrate(run, DeployConfig(n_boot=50), src, var)
    assert summary["temperature"] > 0 and len(threshold) == 2
    assert summary["ece_test_after"] <= summary["ece_test_before"] + 0.02
    t = summary["test"]
    assert t["n"] == 60 and 0 <= t["coverage"] <= 1 and t["error_without_abstention"] >= 0
    curve = pd.read_csv(run.dir / "tables" / "risk_coverage.csv")
    assert set(curve.split) == {"val", "test"} and (run.dir / "figures" / "risk_coverage.png").is_file()
