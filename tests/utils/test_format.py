"""Number formatting for reports: every helper against a table of (value, kind, expected) cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from medassist.run import Run
from medassist.utils.format import (
    MAX_COLUMNS,
    MISSING,
    column_kind,
    fmt_ci,
    fmt_ratio,
    fmt_value,
    fmt_value_ci,
    format_frame,
    readable_header,
    readable_table,
    split_columns,
)

NAN = float("nan")


@pytest.mark.parametrize(
    ("value", "kind", "expected"),
    [
        # metric: 3 decimals, thousands separators, never a non-zero 0.000
        (0.29204, "metric", "0.292"),
        (38.6, "metric", "38.600"),
        (0.9995, "metric", "1.000"),
        (1.0, "metric", "1.000"),
        (0.0, "metric", "0.000"),
        (-0.0075, "metric", "-0.007"),
        (4.383e-05, "metric", "4.4e-05"),
        (-0.00026, "metric", "-2.6e-04"),
        (1234.5678, "metric", "1,234.568"),
        (np.float32(0.5), "metric", "0.500"),
        (NAN, "metric", MISSING),
        (None, "metric", MISSING),
        (math.inf, "metric", "inf"),
        # delta: signed, 3 decimals; zero unsigned
        (0.0125, "delta", "+0.013"),
        (-0.0112, "delta", "-0.011"),
        (0.0, "delta", "0.000"),
        (-0.0, "delta", "0.000"),
        (4.4e-05, "delta", "+4.4e-05"),
        (NAN, "delta", MISSING),
        # points: a fraction shown in percentage points, signed, 1 decimal
        (0.0321, "points", "+3.2"),
        (-0.0112, "points", "-1.1"),
        (0.0, "points", "0.0"),
        (0.005, "points", "+0.5"),
        (NAN, "points", MISSING),
        # percent: at most 1 decimal; only 0 and 1 read as 0% and 100%
        (0.9968, "percent", "99.7%"),
        (1.0, "percent", "100%"),
        (0.5, "percent", "50%"),
        (0.0, "percent", "0%"),
        (0.99996, "percent", ">99.9%"),
        (0.00004, "percent", "<0.1%"),
        (NAN, "percent", MISSING),
        # int: thousands separators, floats rounded
        (22713216, "int", "22,713,216"),
        (np.int64(533762), "int", "533,762"),
        (400.0, "int", "400"),
        (2.6, "int", "3"),
        (0, "int", "0"),
        (-1500, "int", "-1,500"),
        (NAN, "int", MISSING),
        # seconds: at most one decimal, none from 100 s
        (2.1467, "seconds", "2.1"),
        (0.0935, "seconds", "0.1"),
        (0.04, "seconds", "<0.1"),
        (0.0, "seconds", "0.0"),
        (99.96, "seconds", "100"),
        (397.4, "seconds", "397"),
        (3478.2, "seconds", "3,478"),
        (NAN, "seconds", MISSING),
        # quantity (ms, MB, per second): about 3 significant figures
        (0.0403, "quantity", "0.040"),
        (0.1140, "quantity", "0.114"),
        (1.164, "quantity", "1.16"),
        (18.7566, "quantity", "18.8"),
        (397.3, "quantity", "397"),
        (25789.7715, "quantity", "25,790"),
        (9.5e-07, "quantity", "9.5e-07"),
        (0.0, "quantity", "0.000"),
        (NAN, "quantity", MISSING),
        # ratio: "x"; 1 decimal from 1, 2 significant figures below, scientific below 0.01
        (3.8456, "ratio", "3.8x"),
        (12.94, "ratio", "12.9x"),
        (1.0, "ratio", "1.0x"),
        (0.995, "ratio", "1.0x"),
        (0.8609, "ratio", "0.86x"),
        (0.3712, "ratio", "0.37x"),
        (0.4, "ratio", "0.40x"),
        (0.04, "ratio", "0.040x"),
        (2e-17, "ratio", "2.0e-17x"),
        (0.0, "ratio", "0.0x"),
        (1234.5, "ratio", "1,234.5x"),
        (NAN, "ratio", MISSING),
        # number (settings): up to 3 significant figures
        (0.1, "number", "0.1"),
        (0.001, "number", "0.001"),
        (3e-05, "number", "3.0e-05"),
        (0.000123, "number", "1.2e-04"),
        (20.0, "number", "20"),
        (2.5e-4, "number", "2.5e-04"),
        (0.333333, "number", "0.333"),
        (NAN, "number", MISSING),
        # sci
        (2e-17, "sci", "2.0e-17"),
        (12345.0, "sci", "1.2e+04"),
        (NAN, "sci", MISSING),
        # bool and text
        (True, "bool", "yes"),
        (np.bool_(False), "bool", "no"),
        ("True", "bool", "yes"),
        (NAN, "bool", MISSING),
        ("cnn_gap", "text", "cnn_gap"),
        (NAN, "text", ""),
        (None, "text", ""),
        # auto: by type; floats as metrics
        (3, "auto", "3"),
        (12000, "auto", "12,000"),
        (0.12345, "auto", "0.123"),
        (False, "auto", "no"),
        ("epochs", "auto", "epochs"),
        (NAN, "auto", MISSING),
    ],
)
def test_fmt_value(value: object, kind: str, expected: str) -> None:
    assert fmt_value(value, kind) == expected


@pytest.mark.parametrize(
    ("value", "floatfmt", "expected"),
    [(1.23456e-05, ".3e", "1.235e-05"), (0.5, ".4f", "0.5000"), (NAN, ".3e", MISSING), (7, ".3e", "7")],
)
def test_fmt_value_auto_with_floatfmt(value: object, floatfmt: str, expected: str) -> None:
    assert fmt_value(value, "auto", floatfmt=floatfmt) == expected


def test_fmt_value_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown number kind 'money'"):
        fmt_value(1.0, "money")


@pytest.mark.parametrize(
    ("value", "suffix", "expected"), [(2e-17, "", "2.0e-17"), (0.04, "", "0.040"), (2.04, " times", "2.0 times")]
)
def test_fmt_ratio_suffix(value: float, suffix: str, expected: str) -> None:
    assert fmt_ratio(value, suffix) == expected


@pytest.mark.parametrize(
    ("lo", "hi", "kind", "expected"),
    [
        (0.8946, 0.9464, "metric", "[0.895, 0.946]"),
        (-0.00026, 0.00029, "metric", "[-2.6e-04, 2.9e-04]"),
        (-0.008, 0.026, "delta", "[-0.008, +0.026]"),
        (-0.008, 0.026, "points", "[-0.8, +2.6]"),
        (NAN, 0.9, "metric", MISSING),
        (0.1, None, "metric", MISSING),
    ],
)
def test_fmt_ci(lo: float, hi: float, kind: str, expected: str) -> None:
    assert fmt_ci(lo, hi, kind=kind) == expected


@pytest.mark.parametrize(
    ("value", "lo", "hi", "expected"),
    [
        (0.9223, 0.8946, 0.9464, "0.922 [0.895, 0.946]"),
        (0.9223, NAN, NAN, "0.922"),
        (NAN, 0.1, 0.2, MISSING),
    ],
)
def test_fmt_value_ci(value: float, lo: float, hi: float, expected: str) -> None:
    assert fmt_value_ci(value, lo, hi) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("train_time_s", "seconds"),
        ("train_time_s_mean", "seconds"),
        ("train time (s)", "seconds"),
        ("latency_b1_median_ms", "quantity"),
        ("ms_per_report_batch64", "quantity"),
        ("infer_ms_batch1", "quantity"),
        ("size_mb", "quantity"),
        ("peak_memory_mb_max", "quantity"),
        ("throughput_b64_per_s", "quantity"),
        ("train_reports_per_s", "quantity"),
        ("max_abs_logit_diff", "quantity"),
        ("size_ratio", "ratio"),
        ("speedup_b1", "ratio"),
        ("grad_ratio_x", "ratio"),
        ("ratio first/last step", "ratio"),
        ("params", "int"),
        ("trainable_params", "int"),
        ("n_train", "int"),
        ("n", "int"),
        ("count", "int"),
        ("support", "int"),
        ("best_epoch", "int"),
        ("epochs_run", "int"),
        ("test_positives", "int"),
        ("seeds", "int"),
        ("test_accuracy_drop", "delta"),
        ("gap_accuracy", "delta"),
        ("gap_macro_f1", "delta"),
        ("label_agreement", "percent"),
        ("fraction", "percent"),
        ("lr", "number"),
        ("weight_decay", "number"),
        ("dropout", "number"),
        ("val_auc", "metric"),
        ("test_macro_f1", "metric"),
        ("ECE", "metric"),
        ("ci95_low", "metric"),
        ("bin_high", "metric"),
        ("train_loss", "metric"),
        ("t", "int"),
        ("n_reports", "int"),
        ("test_macro_f1_t", "metric"),
        ("test_macro_f1_t_lo", "metric"),
        ("auc_n", "metric"),
        ("x", "auto"),
        ("bilstm", "auto"),
        ("", "auto"),
    ],
)
def test_column_kind_from_name(name: str, expected: str) -> None:
    assert column_kind(name) == expected


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        (pd.Series([True, False]), "bool"),
        (pd.Series([True, None], dtype=object), "bool"),
        (pd.Series(["a", "b"]), "text"),
        (pd.Series([1.0, 2.0]), "int"),  # the name decides for numbers
    ],
)
def test_column_kind_from_dtype(values: pd.Series, expected: str) -> None:
    assert column_kind("params", values) == expected


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("train_time_s", "train time (s)"),
        ("latency_b1_median_ms", "latency b1 median (ms)"),
        ("size_mb", "size (MB)"),
        ("test_macro_f1", "test macro-F1"),
        ("val_auc", "val AUC"),
        ("test_macro_auc", "test macro-AUC"),
        ("train_reports_per_s", "train reports per second"),
        ("model", "model"),
    ],
)
def test_readable_header(name: str, expected: str) -> None:
    assert readable_header(name) == expected


def test_format_frame_formats_by_column_and_merges_intervals() -> None:
    df = pd.DataFrame(
        {
            "model": ["minilm", "tfidf"],
            "params": [22713216, 101000],
            "train_time_s": [397.4, 0.04],
            "speedup_b1": [3.8456, 2e-17],
            "test_macro_f1": [0.92712, NAN],
            "test_macro_f1_lo": [0.9081, NAN],
            "test_macro_f1_hi": [0.9453, NAN],
            "meets_target": [True, False],
        }
    )
    out = format_frame(df)
    assert list(out.columns) == ["model", "params", "train_time_s", "speedup_b1", "test_macro_f1", "meets_target"]
    assert out.iloc[0].tolist() == ["minilm", "22,713,216", "397", "3.8x", "0.927 [0.908, 0.945]", "yes"]
    assert out.iloc[1].tolist() == ["tfidf", "101,000", "<0.1", "2.0e-17x", MISSING, "no"]
    # kinds override the name; without interval merging the bounds stay columns of their own
    out = format_frame(df, kinds={"speedup_b1": "sci"}, intervals=False)
    assert out["speedup_b1"].tolist() == ["3.8e+00", "2.0e-17"]
    assert out["test_macro_f1_lo"].tolist() == ["0.908", MISSING]
    assert df["train_time_s"].iloc[0] == 397.4  # the input is not changed
    with pytest.raises(ValueError, match="unknown number kind"):
        format_frame(df, kinds={"params": "millions"})


def test_format_frame_merges_value_and_ci95_columns() -> None:
    df = pd.DataFrame({"metric": ["auc"], "value": [0.92229], "ci95_low": [0.89458], "ci95_high": [0.94642]})
    assert format_frame(df).to_dict("list") == {"metric": ["auc"], "value": ["0.922 [0.895, 0.946]"]}


@pytest.mark.parametrize(
    ("n", "max_columns", "key", "expected_widths"),
    [
        (5, 8, 1, [5]),
        (8, 8, 1, [8]),
        (9, 8, 1, [5, 5]),  # 8 others shared out evenly, 4 + 4, beside the key
        (13, 8, 1, [7, 7]),
        (20, 8, 2, [8, 8, 8]),
    ],
)
def test_split_columns(n: int, max_columns: int, key: int, expected_widths: list[int]) -> None:
    cols = [f"c{i}" for i in range(n)]
    groups = split_columns(cols, max_columns, key=key)
    assert [len(g) for g in groups] == expected_widths
    assert all(g[:key] == cols[:key] for g in groups)
    assert [c for g in groups for c in g[key:]] == cols[key:]  # every column once, in order


def test_split_columns_needs_room_beside_the_key() -> None:
    with pytest.raises(ValueError, match="no room"):
        split_columns(list("abcdef"), 2, key=2)


def test_readable_table_splits_wide_tables_and_escapes_cells() -> None:
    df = pd.DataFrame({"model": ["a|b"], **{f"val_auc_{i}": [0.5 + i / 100] for i in range(12)}})
    text = readable_table(df)
    tables = text.split("\n\n")
    assert len(tables) == 2
    for t in tables:
        header = t.splitlines()[0]
        assert header.startswith("| model |") and header.count(" | ") + 1 <= MAX_COLUMNS
        assert "| a\\|b |" in t
    assert "0.500" in text and "0.610" in text
    assert len(readable_table(df, max_columns=None).split("\n\n")) == 1
    titled = readable_table(df[["model", "val_auc_0"]], headers=True)
    assert titled.splitlines()[0] == "| model | val AUC 0 |"
    renamed = readable_table(df[["model", "val_auc_0"]], headers={"val_auc_0": "AUC"})
    assert renamed.splitlines()[0] == "| model | AUC |"


def test_write_table_keeps_full_precision_in_csv_and_formats_markdown(tmp_path) -> None:
    run = Run(tmp_path)
    df = pd.DataFrame(
        {
            "model": ["cnn_gap"],
            "params": [287138],
            "train_time_s": [2.1467],
            "val_auc": [0.81904321],
            "curve": [1.23456e-05],
        }
    )
    run.write_table("t", df)
    assert pd.read_csv(tmp_path / "tables" / "t.csv")["val_auc"].iloc[0] == 0.81904321
    md = (tmp_path / "tables" / "t.md").read_text()
    assert "| cnn_gap | 287,138 | 2.1 | 0.819 | 1.2e-05 |" in md
    # floatfmt still formats float columns of unknown kind (existing callers pass it); kinds override names
    run.write_table("t", df, floatfmt=".3e", kinds={"params": "sci"})
    md = (tmp_path / "tables" / "t.md").read_text()
    assert "| cnn_gap | 2.9e+05 | 2.1 | 0.819 | 1.235e-05 |" in md
