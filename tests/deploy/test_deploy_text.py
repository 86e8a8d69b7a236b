"""The deploy study end to end on real text runs: the recurrent model, the Transformer, the ensemble and the
frozen encoder in one table, the bundle's per-finding thresholds, and a multi-class text bundle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from medassist.cli import main


@pytest.mark.xdist_group("openi")  # one worker makes the shared Open-i run and reads it
@pytest.mark.realdata
def test_text_deploy_run(openi_run: Path, tmp_path: Path, capsys) -> None:
    argv = ["deploy", "--profile", "debug", "--run", str(openi_run), "--out", str(tmp_path), "--progress", "false"]
    assert main(argv) == 0
    (run,) = list(tmp_path.iterdir())
    table = pd.read_csv(run / "tables/benchmark.csv").set_index("variant")
    assert table.loc["fp32 (ONNX Runtime)"].max_abs_logit_diff < 1e-3
    assert {"int8 dynamic (ONNX Runtime)", "int8 dynamic (PyTorch)"} <= set(table.index)
    # The Transformer, its ONNX export and dynamic int8 are measured in the same table.
    assert {"minilm fp32 (PyTorch)", "minilm fp32 (ONNX Runtime)", "minilm int8 dynamic (ONNX Runtime)"} <= set(
        table.index
    )
    assert table.loc["minilm fp32 (ONNX Runtime)"].max_abs_logit_diff < 1e-3
    # So are the text study's ensemble (TF-IDF beside each MiniLM variant) and frozen encoder (one graph with its
    # head): each ONNX export gives its PyTorch model's logits.
    for model in ("ensemble", "minilm_frozen_lr"):
        rows = {f"{model} fp32 (PyTorch)", f"{model} fp32 (ONNX Runtime)", f"{model} int8 dynamic (ONNX Runtime)"}
        assert rows <= set(table.index)
        assert table.loc[f"{model} fp32 (ONNX Runtime)"].max_abs_logit_diff < 1e-3
    # The bundle takes each finding's decision at the threshold the text study chose for it on validation (moved to
    # the temperature-scaled probabilities, so every decision is the same).
    from medassist.deploy.calibrate import threshold_after_temperature

    m = json.loads((run / "metrics.json").read_text())
    study = json.loads((openi_run / "metrics.json").read_text())
    unit = study["best"].get(m["shipped_model"], m["shipped_model"])  # a trained model's run, or the model's name
    meta = json.loads((run / "bundle" / "bundle.json").read_text())
    if m["shipped_model"] == "ensemble":
        assert meta["ensemble"]["tfidf_weight"] == study["chosen"]["ensemble"]["tfidf_weight"]
        assert "tfidf.npz" in json.loads((run / "bundle" / "manifest.json").read_text())["files"]
    want = threshold_after_temperature(study["thresholds"][unit], meta["temperature"])
    assert np.allclose(meta["threshold"], want) and meta["abstain"]["rule"] == "per-label"
    assert meta["abstain"]["target_miss"] == meta["abstain"]["target_false"] == 0.05
    per_finding = pd.read_csv(run / "tables/per_finding.csv")
    assert len(per_finding) == 2 * len(meta["labels"]) and set(per_finding.split) == {"val", "test"}
    curve = pd.read_csv(run / "tables/risk_coverage.csv")
    assert curve.query("split == 'test'").accepted.max() == m["calibration"]["test"]["n"]
    for fig in ("reliability_before", "reliability_after", "risk_coverage"):
        assert (run / "figures" / f"{fig}.png").is_file()
    if m["shipped_model"] != "bilstm":
        assert meta["preprocessing"]["tokenizer"] == "wordpiece" and (run / "bundle" / "tokenizer.json").is_file()
    assert main(["predict", str(run / "bundle"), "--text", "Small left pleural effusion. Heart size normal."]) == 0
    out = capsys.readouterr().out
    assert "latency" in out and "each label's threshold" in out


@pytest.mark.realdata
def test_multiclass_text_deploy_predicts_a_class(tmp_path: Path, capsys) -> None:
    """A multi-class text run deploys to a bundle whose prediction is one class."""
    from helpers import multiclass_notes_csv

    csv = multiclass_notes_csv(tmp_path / "notes.csv")
    argv = ["text", "--profile", "debug", "--texts", str(csv), "--text-column", "note", "--label-column", "urgency"]
    argv += ["--transformer", "transformer_small", "--extra-models", "[]", "--out", str(tmp_path / "text")]
    argv += ["--frozen-encoder", "false", "--ensemble", "false"]  # the deployed model is the recurrent one
    assert main([*argv, "--progress", "false"]) == 0
    (text_run,) = list((tmp_path / "text").iterdir())
    argv = ["deploy", "--profile", "debug", "--run", str(text_run), "--out", str(tmp_path / "d"), "--progress", "false"]
    assert main(argv) == 0
    (run,) = list((tmp_path / "d").iterdir())
    assert json.loads((run / "bundle" / "bundle.json").read_text())["task"] == "multi-class"
    capsys.readouterr()
    assert main(["predict", str(run / "bundle"), "--text", "patient 7. new fever and chest pain today", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label"] in ("routine", "urgent", "emergency") and "threshold" not in out
