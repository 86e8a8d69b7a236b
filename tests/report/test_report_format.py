"""The image and deploy reports built from small fake run folders show numbers formatted for people."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest

from medassist.report.deploy import build_deploy_report, write_deploy_report
from medassist.report.image import build_image_report, write_image_report
from medassist.utils.format import MAX_COLUMNS


def _unit(name: str, model: str, params: int, time_s: float, val_auc: float, **extra: float | str) -> dict:
    return {
        "name": name,
        "model": model,
        "params": params,
        "trainable_params": params,
        "n_train": 4708,
        "best_epoch": 7,
        "epochs_run": 10,
        "train_time_s": time_s,
        "train_loss": 0.123456,
        "train_accuracy": 0.95123,
        "train_auc": 0.99,
        "val_loss": 0.2345678,
        "val_accuracy": 0.93456,
        "val_auc": val_auc,
        "val_macro_f1": 0.9123,
        "gap_accuracy": 0.0166700,
        "stopped_by": "epochs",
        **extra,
    }


def _write(run: Path, tables: dict[str, list[dict]], metrics: dict, data: dict | None = None) -> Path:
    (run / "tables").mkdir(parents=True)
    for name, rows in tables.items():
        pd.DataFrame(rows).to_csv(run / "tables" / f"{name}.csv", index=False)
    (run / "metrics.json").write_text(json.dumps(metrics))
    if data is not None:
        (run / "data.json").write_text(json.dumps(data))
    return run


@pytest.fixture
def image_run(tmp_path: Path) -> Path:
    capacity = [
        _unit("capacity-cnn_gap", "cnn_gap", 287138, 38.6, 0.9612345),
        _unit("capacity-resnet18", "resnet18", 11172546, 1234.5678, 0.9501234),
    ]
    ablation = [
        {
            "regularisation": r,
            **_unit(f"ablation-cnn_gap-{r}", "cnn_gap", 287138, 40.0, auc),
            "test_accuracy": 0.8812,
            "test_auc": 0.95,
            "test_macro_f1": 0.87,
        }
        for r, auc in (("none", 0.9612345), ("dropout", 0.9655555))
    ]
    transfer = [
        {
            "mode": mode,
            **_unit(f"transfer-{mode}", "efficientnet_lite0", 3373570, 61.25, auc),
            "test_accuracy": 0.85,
            "test_auc": 0.93,
        }
        for mode, auc in (("scratch", 0.90), ("finetune", 0.95))
    ]
    size = [
        {
            "fraction": f,
            "n_train": n,
            "train_loss": 0.1,
            "val_loss": 0.2,
            "train_accuracy": 0.96,
            "val_accuracy": va,
            "train_auc": 0.99,
            "val_auc": 0.95,
        }
        for f, n, va in ((0.5, 2354, 0.91), (1.0, 4708, 0.93456))
    ]
    headline = {
        k: {"value": v, "ci_low": v - 0.02, "ci_high": v + 0.02}
        for k, v in (("accuracy", 0.8541666), ("macro_f1", 0.8349336), ("auc", 0.9222880), ("ece", 0.0809061))
    }
    metrics = {
        "dataset": "fake",
        "chosen_architecture": "cnn_gap",
        "diagnosis": {
            "label": "good fit",
            "train_accuracy": 0.95123,
            "val_accuracy": 0.93456,
            "gap_accuracy": 0.01667,
            "val_loss_rise": 0.05,
        },
        "diagnosis_rule": "a stated rule",
        "capacity": capacity,
        "size_curve": size,
        "ablation": ablation,
        "transfer": transfer,
        "selected": {
            "label": "cnn_gap + dropout",
            "val_auc": 0.9655555,
            "val_accuracy": 0.93456,
            "headline": headline,
            "metrics": {
                "class_names": ["normal", "pneumonia"],
                "confusion_matrix": [[200, 34], [12, 378]],
                "per_class": {"normal": {"recall": 0.8547}, "pneumonia": {"recall": 0.9692}},
            },
            "gradcam": "Grad-CAM at the last convolution",
        },
    }
    data = {
        "name": "fake",
        "class_names": ["normal", "pneumonia"],
        "sizes": {"train": 4708, "val": 524, "test": 624},
        "class_counts": {"train": [1214, 3494], "val": [135, 389], "test": [234, 390]},
    }
    per_class = [
        {"class": "normal", "precision": 0.9433962, "recall": 0.8547009, "f1": 0.8968610, "support": 234},
        {"class": "pneumonia", "precision": 0.9174757, "recall": 0.9692308, "f1": 0.9426434, "support": 390},
    ]
    tables = {
        "capacity": capacity,
        "ablation": ablation,
        "transfer": transfer,
        "size_curve": size,
        "test_per_class": per_class,
    }
    return _write(tmp_path / "image-fake", tables, metrics, data)


def _widths(text: str) -> list[int]:
    """The number of columns of every Markdown table in ``text``."""
    return [line.count("|") - 1 for line in text.splitlines() if re.fullmatch(r"\|(---\|)+", line)]


def test_image_report_shows_formatted_numbers(image_run: Path) -> None:
    text = build_image_report(image_run)
    # counts and parameters with thousands separators, seconds with one decimal, metrics with 3
    assert "train 4,708 (normal 1,214, pneumonia 3,494)" in text
    assert "| cnn_gap | 287,138 | 10 | 7 | 38.6 | epochs |" in text  # epochs run, then the best epoch
    assert "| resnet18 | 11,172,546 | 10 | 7 | 1,235 | epochs |" in text
    assert "| cnn_gap | 0.123 | 0.235 | 0.951 | 0.935 | 0.961 | +0.017 |" in text
    assert "| AUC | 0.922 | [0.902, 0.942] |" in text
    assert "| normal | 0.943 | 0.855 | 0.897 | 234 |" in text
    assert "| 50% | 2,354 |" in text
    assert "(95% CI [0.902, 0.942])" in text
    # nothing at the CSV's precision, no four-decimal numbers, and the full CSV named
    assert "38.6000" not in text and not re.search(r"\d\.\d{4}\b", text)
    assert "`tables/capacity.csv`" in text and "`tables/ablation.csv`" in text
    assert max(_widths(text)) <= MAX_COLUMNS
    # the CSV is left at full precision
    assert pd.read_csv(image_run / "tables" / "capacity.csv")["train_time_s"].iloc[1] == 1234.5678


def test_image_report_html_has_the_formatted_tables(image_run: Path) -> None:
    write_image_report(image_run)
    html = (image_run / "report.html").read_text()
    assert "<td>287,138</td>" in html and "<td>[0.902, 0.942]</td>" in html


@pytest.fixture
def deploy_run(tmp_path: Path) -> Path:
    def variant(name: str, size: float, ms: float, acc: float, auc: float, **extra: object) -> dict:
        return {
            "variant": name,
            "technique": "t",
            "runtime": "onnxruntime",
            "size_mb": size,
            "latency_b1_median_ms": ms,
            "latency_b1_p95_ms": ms * 1.5,
            "throughput_b64_per_s": 25789.7715,
            "val_accuracy": acc,
            "val_auc": auc,
            "val_macro_f1": acc,
            "test_accuracy": acc,
            "test_auc": auc,
            "test_macro_f1": acc,
            "note": "",
            **extra,
        }

    rows = [
        variant("fp32 (PyTorch)", 1.164, 0.617, 0.8365, 0.9623),
        variant("fp32 (ONNX Runtime)", 1.150, 0.136, 0.8365, 0.9623, parity_with="fp32 (PyTorch)",
                max_abs_logit_diff=9.5e-07, label_agreement=1.0),
        variant("int8 static (ONNX Runtime)", 0.309, 0.098, 0.8365, 0.96225617, parity_with="fp32 (PyTorch)",
                max_abs_logit_diff=0.0123, label_agreement=0.99679),
        variant("channel-pruned 50% int8 (ONNX Runtime)", 0.090, 0.052, 0.8462, 0.9760),
    ]  # fmt: skip
    table = pd.DataFrame(rows)
    base = table.iloc[0]
    table["size_ratio"] = base.size_mb / table.size_mb
    table["speedup_b1"] = base.latency_b1_median_ms / table.latency_b1_median_ms
    for split in ("val", "test"):
        table[f"{split}_accuracy_drop"] = base[f"{split}_accuracy"] - table[f"{split}_accuracy"]
        table[f"{split}_auc_drop"] = base[f"{split}_auc"] - table[f"{split}_auc"]
    table["meets_target"] = [False, False, False, True]
    intervals = [
        {"metric": "auc", "what": "fp32 (PyTorch)", "value": 0.9623, "ci95_low": 0.9512, "ci95_high": 0.9721},
        {"metric": "auc", "what": "int8 static (ONNX Runtime)", "value": 0.9622, "ci95_low": 0.951, "ci95_high": 0.972},
        {"metric": "auc", "what": "drop (baseline - shipped)", "value": 4.38e-05, "ci95_low": -0.00026,
         "ci95_high": 0.00029},
    ]  # fmt: skip
    metrics = {
        "dataset": "fake",
        "model": "cnn_gap",
        "source_run": "runs/image-fake",
        "threads": 2,
        "targets": {"size_ratio": 4.0, "speedup_b1": 3.0, "accuracy_drop": 0.005, "auc_drop": 0.005},
        "selection": {"max_accuracy_drop": 0.005, "max_auc_drop": 0.005},
        "chosen": "int8 static (ONNX Runtime)",
        "variants": table.to_dict("records"),
        "teachers": None,
    }
    tables = {"benchmark": table.to_dict("records"), "test_intervals": intervals}
    return _write(tmp_path / "deploy-fake", tables, metrics)


def _table_rows(text: str, first_cell: str) -> list[list[str]]:
    """The cells of every table row of ``text`` that starts with ``first_cell``."""
    out = []
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip("|").split(" | ")]
        if line.startswith("|") and cells[0] == first_cell:
            out.append(cells)
    return out


def test_deploy_report_shows_formatted_numbers_and_one_verdict(deploy_run: Path) -> None:
    text = build_deploy_report(deploy_run)
    shipped = _table_rows(text, "int8 static (ONNX Runtime) **shipped**")
    assert len(shipped) == 2  # the size/speed table and the accuracy table
    # size 0.309 MB, 3.8x smaller, 0.098 ms, 6.3x faster, throughput with thousands separators
    assert shipped[0] == ["int8 static (ONNX Runtime) **shipped**", "0.309", "3.8x", "0.098", "0.147", "6.3x", "25,790"]
    # accuracy drop in points, AUC drop signed (a non-zero drop is never 0.000), and the verdict on this row only
    assert shipped[1] == ["int8 static (ONNX Runtime) **shipped**", "0.837", "0.962", "0.0", "+4.4e-05", "missed: size"]
    pruned = _table_rows(text, "channel-pruned 50% int8 (ONNX Runtime)")[1]
    assert pruned[3:] == ["-1.0", "-0.014", ""]  # it met the target on test, yet it is not the variant judged
    assert _table_rows(text, "fp32 (PyTorch)")[1][-1] == ""  # the baseline has no target, so no verdict
    assert "True" not in text and "False" not in text and "meets_target" not in text
    assert "| AUC | drop (baseline - shipped) | +4.4e-05 | [-2.6e-04, +2.9e-04] |" in text
    assert "| fp32 (ONNX Runtime) | fp32 (PyTorch) | 9.5e-07 | 100% |" in text
    assert "| int8 static (ONNX Runtime) | fp32 (PyTorch) | 0.012 | 99.7% |" in text
    assert "3.8x smaller and 6.3x faster" in text  # the analysis uses the same rules
    assert not re.search(r"\d\.\d{4}\b", text) and max(_widths(text)) <= MAX_COLUMNS
    assert "`tables/benchmark.csv`" in text


def test_deploy_report_verdict_met(deploy_run: Path) -> None:
    m = json.loads((deploy_run / "metrics.json").read_text())
    m["chosen"] = "channel-pruned 50% int8 (ONNX Runtime)"
    (deploy_run / "metrics.json").write_text(json.dumps(m))
    write_deploy_report(deploy_run)
    text = (deploy_run / "report.md").read_text()
    rows = _table_rows(text, "channel-pruned 50% int8 (ONNX Runtime) **shipped**")
    assert rows[1][-1] == "**met**"
    assert sum(line.count("**met**") for line in text.splitlines()) == 1
    assert "<strong>met</strong>" in (deploy_run / "report.html").read_text()


def test_deploy_report_splits_the_transformer_table(deploy_run: Path) -> None:
    rows = [
        {"variant": "minilm fp32 (PyTorch)", "size_mb": 86.7, "size_ratio": 1.0, "latency_b1_median_ms": 23.7,
         "speedup_b1": 1.0, "test_accuracy": 0.61, "test_auc": 0.9941, "test_macro_f1": 0.9272, "test_auc_drop": 0.0},
        {"variant": "minilm int8 dynamic (PyTorch)", "size_mb": 57.8, "size_ratio": 1.5, "latency_b1_median_ms": 8.17,
         "speedup_b1": 2.9, "test_accuracy": 0.6, "test_auc": 0.9930, "test_macro_f1": 0.9201, "test_auc_drop": 0.0011,
         "parity_with": "minilm fp32 (PyTorch)", "label_agreement": 0.9987},
    ]  # fmt: skip
    pd.DataFrame(rows).to_csv(deploy_run / "tables" / "transformer.csv", index=False)
    text = build_deploy_report(deploy_run).split("## Dynamic int8 of the text study's Transformer")[1]
    assert "| minilm int8 dynamic (PyTorch) | 57.8 | 1.5x | 8.17 | 2.9x |" in text
    assert "| minilm int8 dynamic (PyTorch) | 0.600 | 0.993 | 0.920 | +0.001 | 99.9% |" in text
    assert "| minilm fp32 (PyTorch) | 0.610 | 0.994 | 0.927 | 0.000 | — |" in text
    assert max(_widths(text)) <= MAX_COLUMNS and "`tables/transformer.csv`" in text


def _under_trained_fine_tune(run: Path, chosen: str = "") -> dict:
    """The deploy run with its channel-pruning fine-tune cut by its time budget while validation still improved."""
    m = json.loads((run / "metrics.json").read_text())
    table = pd.read_csv(run / "tables" / "benchmark.csv")
    table["training"] = ["not retrained"] * 3 + ["under-trained"]
    table.to_csv(run / "tables" / "benchmark.csv", index=False)
    for row, training in zip(m["variants"], table["training"], strict=True):
        row["training"] = training
    m["trainings"] = [
        {"training": "channel-pruned 50%", "kind": "fine-tune", "best_epoch": 3, "epochs_run": 3, "planned_epochs": 5,
         "time_budget": 60.0, "budget_reached": True, "under_trained": True},
    ]  # fmt: skip
    m["chosen"] = chosen or m["chosen"]
    (run / "metrics.json").write_text(json.dumps(m))
    return m


def test_deploy_report_marks_an_under_trained_fine_tune_and_draws_nothing_from_it(deploy_run: Path) -> None:
    from medassist.report.deploy import deploy_analysis
    from medassist.utils.words import count_words

    m = _under_trained_fine_tune(deploy_run)
    text = build_deploy_report(deploy_run)
    name = "channel-pruned 50% int8 (ONNX Runtime)"
    assert len(_table_rows(text, f"{name} (under-trained)")) == 2  # the size/speed and the accuracy tables
    assert _table_rows(text, name)[-1][3] == "under-trained"  # the techniques table's training column
    assert _table_rows(text, "int8 static (ONNX Runtime)")[-1][3] == "not retrained"
    analysis = deploy_analysis(m)
    assert 100 <= count_words(analysis) <= 150
    assert "The channel-pruned 50% fine-tune was under-trained" in analysis
    assert "the budget was too short to decide what that compression costs" in analysis
    # It alone met every target on test: that is no finding, since its fine-tune was cut short.
    assert f"e.g. {name}." not in analysis and "only under-trained variants met every target" in analysis
    assert max(_widths(text)) <= MAX_COLUMNS


def test_deploy_analysis_says_the_shipped_variant_rests_on_an_under_trained_fine_tune(deploy_run: Path) -> None:
    from medassist.report.deploy import deploy_analysis
    from medassist.utils.words import count_words

    m = _under_trained_fine_tune(deploy_run, chosen="channel-pruned 50% int8 (ONNX Runtime)")
    analysis = deploy_analysis(m)
    assert "The shipped variant is one of them: its accuracy drop measures the budget" in analysis
    assert 100 <= count_words(analysis) <= 150
    text = build_deploy_report(deploy_run)
    assert _table_rows(text, "channel-pruned 50% int8 (ONNX Runtime) (under-trained) **shipped**")


def test_deploy_report_of_a_run_before_the_rule_renders_without_training_marks(deploy_run: Path) -> None:
    from medassist.report.deploy import deploy_analysis

    m = json.loads((deploy_run / "metrics.json").read_text())
    assert all("training" not in r for r in m["variants"]) and "trainings" not in m
    assert "under-trained" not in build_deploy_report(deploy_run) and "under-trained" not in deploy_analysis(m)
