"""End-to-end: the text study on a slice of the real Open-i reports (debug profile), and on a user's CSV."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from helpers import multiclass_notes_csv
from medassist.cli import main
from medassist.train.device import cpu_bf16_supported


@pytest.mark.xdist_group("openi")  # one worker makes the shared Open-i run and reads it
def test_openi_run_folder_and_report(openi_run: Path) -> None:
    assert json.loads((openi_run / "status.json").read_text())["status"] == "complete"
    for rel in [
        "models/vocab.json",
        "models/tfidf.joblib",
        "tables/comparison.csv",
        "tables/sweep.csv",
        "tables/errors.csv",
        "tables/hidden_gradients.csv",
        "tables/per_label_auc.csv",
        "figures/gradient_norms_layers.png",
        "figures/gradient_norms_time.png",
        "figures/curves_best.png",
        "history/lstm_last-base_grad_norms.csv",
        "report.md",
        "report.html",
    ]:
        assert (openi_run / rel).is_file(), rel
    m = json.loads((openi_run / "metrics.json").read_text())
    models = {r["model"] for r in m["comparison"]}
    assert {"bilstm", "minilm", "gru", "bilstm_multitask", "tfidf_logreg"} <= models
    for r in m["comparison"]:
        assert r["test_macro_auc_lo"] <= r["test_macro_auc"] <= r["test_macro_auc_hi"]
    ratios = m["gradients"]["ratio_first_to_last_step"]
    assert "LSTM, last state, after training" in ratios
    assert len(m["errors"]) == 5 and all(e["text"] for e in m["errors"])
    text = (openi_run / "report.md").read_text()
    explanation = text.split("## Explanation")[1].split("\n## ")[0]
    assert 150 <= len(explanation.split()) <= 250
    minilm = next(r for r in m["comparison"] if r["model"] == "minilm")
    assert f"{minilm['test_macro_f1_t']:.3f}" in explanation  # the numbers come from the measurements


def test_text_study_on_own_csv(tmp_path: Path) -> None:
    """A user's CSV with two 0/1 label columns; the from-scratch Transformer keeps it fast and offline."""
    rows = []
    for i in range(120):
        eff, card = i % 2, (i // 2) % 2
        words = ["heart size normal", "lungs clear"] if not (eff or card) else []
        words += ["small left pleural effusion"] * eff + ["the heart is enlarged cardiomegaly"] * card
        rows.append(
            {"text": f"report {i}. " + ". ".join(words or ["no acute disease"]), "effusion": eff, "cardiomegaly": card}
        )
    path = tmp_path / "reports.csv"
    pd.DataFrame(rows).to_csv(path, index=False)
    out = tmp_path / "runs"
    argv = [
        "text",
        "--profile",
        "debug",
        "--texts",
        str(path),
        "--label-columns",
        "effusion,cardiomegaly",
        "--transformer",
        "transformer_small",
        "--extra-models",
        "[]",
        "--frozen-encoder",
        "false",
        "--ensemble",
        "false",
        "--out",
        str(out),
        "--progress",
        "false",
        "--rnn-train.epochs",
        "6",
    ]
    assert main(argv) == 0
    (run,) = list(out.iterdir())
    m = json.loads((run / "metrics.json").read_text())
    rows = {r["model"]: r for r in m["comparison"]}
    assert rows["tfidf_logreg"]["test_macro_auc"] > 0.9  # the keywords decide the labels
    assert rows["bilstm"]["test_macro_auc"] > 0.8


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--recurrent", "rnn"], "unknown recurrent model 'rnn'"),
        (["--transformer", "bert"], "unknown Transformer 'bert'"),
        (["--dataset", "mimic"], "unknown text data set 'mimic'"),
        (["--texts", "/nonexistent.csv"], "texts not found"),
    ],
)
def test_bad_options_exit_2(argv: list[str], message: str, tmp_path: Path, capsys) -> None:
    assert main(["text", "--profile", "debug", "--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


def test_text_benchmark_debug_profile(tmp_path: Path, capsys) -> None:
    assert main(["bench", "text", "--profile", "debug", "--out", str(tmp_path), "--progress", "false"]) == 0
    out = capsys.readouterr().out
    assert "bucketed + dynamic padding" in out and "padded to" in out
    (run,) = list(tmp_path.iterdir())
    m = json.loads((run / "metrics.json").read_text())
    rows = m["speed"]
    # 2 models x bucketed/padded, in fp32 and, where the CPU has native bfloat16, in bf16
    assert len(rows) == 2 * 2 * (2 if cpu_bf16_supported() else 1)
    assert {r["precision"] for r in rows} == ({"32", "bf16-mixed"} if cpu_bf16_supported() else {"32"})
    assert m["bf16"] in out
    assert all(r["train_reports_per_s"] > 0 and r["latency_ms_batch1_median"] > 0 for r in rows)


def test_padchest_report_sets_the_best_model_beside_the_published_labeller() -> None:
    from medassist.report.text import PADCHEST_REFERENCE, _reference

    row = {"run": "bilstm-base", "model": "bilstm"}
    row |= {f"test_{k}{s}": v for k in ("micro_f1", "macro_auc") for s, v in (("", 0.9), ("_lo", 0.89), ("_hi", 0.91))}
    m = {"comparison": [row], "best_model": "bilstm-base"}
    data = {"name": "padchest", "sizes": {"test": 13196}, "label_names": ["a", "b"]}
    text = "\n".join(_reference(m, data))
    assert "0.900 [0.890, 0.910]" in text and f"{PADCHEST_REFERENCE['micro_f1']:.2f}" in text
    assert "0.030 below the published figure" in text
    assert _reference(m, {**data, "name": "openi"}) == []


def test_multiclass_csv_with_named_columns_runs_end_to_end(tmp_path: Path) -> None:
    """Every model trains multi-class; the report has accuracy, macro-F1, one-vs-rest AUC, per-class F1, a confusion
    matrix and the comparison with the tuned baseline."""
    path = multiclass_notes_csv(tmp_path / "notes.csv")
    out = tmp_path / "runs"
    argv = ["text", "--profile", "debug", "--texts", str(path), "--text-column", "note", "--label-column", "urgency"]
    argv += ["--transformer", "transformer_small", "--out", str(out), "--progress", "false", "--rnn-train.epochs", "6"]
    assert main(argv) == 0
    (run,) = list(out.iterdir())
    m = json.loads((run / "metrics.json").read_text())
    assert m["task"] == "multi-class" and m["thresholds"] == {}
    rows = {r["model"]: r for r in m["comparison"]}
    # no multi-task head without 'normal'; the frozen MiniLM and the ensemble (of TF-IDF and transformer_small) too
    assert set(rows) == {"bilstm", "transformer_small", "gru", "tfidf_logreg", "minilm_frozen_lr", "ensemble"}
    for r in rows.values():
        assert r["test_accuracy_lo"] <= r["test_accuracy"] <= r["test_accuracy_hi"]
    assert rows["tfidf_logreg"]["test_macro_f1"] > 0.9  # the keywords decide the class
    assert rows["bilstm"]["test_macro_auc"] > 0.8
    assert "vs_tfidf_macro_f1_lo" in rows["bilstm"]
    per_class = pd.read_csv(run / "tables" / "per_class.csv")
    assert sorted(per_class["class"]) == ["emergency", "routine", "urgent"]
    assert (run / "figures" / "confusion_matrix.png").is_file()
    text = (run / "report.md").read_text()
    assert "Per-class test F1" in text and "3 classes (multi-class" in text
    explanation = text.split("## Explanation")[1].split("\n## ")[0]
    assert 150 <= len(explanation.split()) <= 250
    assert all(e["true"] in ("routine", "urgent", "emergency") for e in m["errors"])


def test_wrong_text_column_lists_the_columns_present(tmp_path: Path, capsys) -> None:
    path = multiclass_notes_csv(tmp_path / "notes.csv")
    argv = ["text", "--profile", "debug", "--texts", str(path), "--text-column", "report", "--label-column", "urgency"]
    assert main([*argv, "--out", str(tmp_path / "runs")]) == 2
    err = capsys.readouterr().err
    assert "report" in err and "note" in err and "urgency" in err and "site" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
