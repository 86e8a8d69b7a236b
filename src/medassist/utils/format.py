"""Numbers and tables formatted for people: one rule per kind of number, chosen per column by its name.

The rules (every helper returns a string; ``None``, NaN and missing values give :data:`MISSING`):

=========  ==========================================================  ==============================
kind       rule                                                        examples
=========  ==========================================================  ==============================
metric     3 decimals (AUC, F1, accuracy, loss, ECE, interval ends)    0.292, 38.600
delta      signed, 3 decimals (drops, gaps, differences)               +0.013, -0.008, 0.000
points     a fraction shown in percentage points, signed, 1 decimal    0.0321 -> +3.2
percent    a fraction as a percentage, at most 1 decimal               0.9968 -> 99.7%, 1.0 -> 100%
int        an integer with thousands separators (counts, parameters)   22,713,216
seconds    at most one decimal; no decimal from 100 s                  0.1, 2.1, 397, 1,234
quantity   about 3 significant figures (ms, MB, items per second)      0.040, 1.16, 18.3, 24,512
ratio      "x" suffix; 1 decimal from 1, 2 significant figures below   3.8x, 0.37x, 2.0e-17x
number     up to 3 significant figures (hyperparameters)               0.1, 0.001, 3.0e-05
sci        scientific notation, 1 decimal                              2.0e-17
bool       yes / no
text       as is (empty when missing)
=========  ==========================================================  ==============================

A number that is not zero is never written as zero: when a fixed-decimal rule would round it to zero it is written
in scientific notation (``4.4e-05``), and seconds as ``<0.1``.

Tables: :func:`column_kind` picks a kind from a column's name (and dtype); :func:`format_frame` formats a whole
DataFrame, merging ``x``/``x_lo``/``x_hi`` (and ``value``/``ci95_low``/``ci95_high``) into one cell
``"0.922 [0.895, 0.946]"``; :func:`readable_table` renders it as Markdown, split into tables of at most
:data:`MAX_COLUMNS` columns (the first column repeated) so that it fits a page.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

MISSING = "—"
# Columns per Markdown/HTML table before it is split: about what fits a printed page.
MAX_COLUMNS = 8

KINDS = (
    "metric",
    "delta",
    "points",
    "percent",
    "int",
    "seconds",
    "quantity",
    "ratio",
    "number",
    "sci",
    "bool",
    "text",
    "auto",
)


def _num(x: Any) -> float | None:
    """``x`` as a float, or None when it is missing (None, NaN, pandas NA) or not a number."""
    if x is None or isinstance(x, (str, bytes)):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(v) else v


def _inf(v: float) -> str:
    return "inf" if v > 0 else "-inf"


def fmt_sci(x: Any, digits: int = 1) -> str:
    """Scientific notation: ``fmt_sci(2e-17) == "2.0e-17"``."""
    v = _num(x)
    if v is None:
        return MISSING
    if math.isinf(v):
        return _inf(v)
    return f"{v:.{digits}e}"


def _fixed(v: float, digits: int, *, sign: bool = False) -> str:
    """``v`` with ``digits`` decimals and thousands separators; scientific when a non-zero ``v`` would read 0."""
    if math.isinf(v):
        return _inf(v)
    if v != 0 and round(abs(v), digits) == 0:
        return f"{v:+.1e}" if sign else f"{v:.1e}"
    if round(v, digits) == 0:
        v = 0.0  # no "-0.000"
        return f"{v:.{digits}f}"
    return f"{v:+,.{digits}f}" if sign else f"{v:,.{digits}f}"


def fmt_metric(x: Any, digits: int = 3) -> str:
    """A metric (AUC, F1, accuracy, loss, ECE...): ``fmt_metric(0.29204) == "0.292"``."""
    v = _num(x)
    return MISSING if v is None else _fixed(v, digits)


def fmt_delta(x: Any, digits: int = 3) -> str:
    """A signed difference of metrics: ``fmt_delta(0.0125) == "+0.013"``, ``fmt_delta(0) == "0.000"``."""
    v = _num(x)
    return MISSING if v is None else _fixed(v, digits, sign=True)


def fmt_points(fraction: Any, digits: int = 1) -> str:
    """A difference of fractions in percentage points, signed: ``fmt_points(0.0321) == "+3.2"``."""
    v = _num(fraction)
    return MISSING if v is None else _fixed(100 * v, digits, sign=True)


def fmt_percent(fraction: Any, digits: int = 1) -> str:
    """A fraction as a percentage: ``fmt_percent(0.9968) == "99.7%"``, ``fmt_percent(0.5) == "50%"``.

    Only 0 and 1 read as 0% and 100%: 0.99996 is ">99.9%", 0.00004 is "<0.1%".
    """
    v = _num(fraction)
    if v is None:
        return MISSING
    if math.isinf(v):
        return _inf(v)
    p = 100 * v
    step = 10.0**-digits
    if 0 < p < step:
        return f"<{step:.{digits}f}%"
    if 100 - step < p < 100:
        return f">{100 - step:.{digits}f}%"
    text = f"{p:,.{digits}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text + "%"


def fmt_int(x: Any) -> str:
    """An integer with thousands separators: ``fmt_int(22713216) == "22,713,216"`` (floats are rounded)."""
    v = _num(x)
    if v is None:
        return MISSING
    if math.isinf(v):
        return _inf(v)
    return f"{round(v):,}"


def fmt_seconds(x: Any) -> str:
    """Seconds with at most one decimal: ``fmt_seconds(2.1467) == "2.1"``, ``fmt_seconds(397.4) == "397"``.

    A positive time under 0.05 s reads ``"<0.1"`` rather than 0.
    """
    v = _num(x)
    if v is None:
        return MISSING
    if math.isinf(v):
        return _inf(v)
    if abs(round(v, 1)) >= 100:
        return f"{v:,.0f}"
    if 0 < abs(v) < 0.05:
        return "<0.1" if v > 0 else ">-0.1"
    return _fixed(v, 1)


def _decimals(v: float) -> int:
    """Decimals that give about 3 significant figures, at most 3 decimals."""
    a = abs(v)
    for bound, d in ((99.95, 0), (9.995, 1), (0.9995, 2)):
        if a >= bound:
            return d
    return 3


def fmt_quantity(x: Any) -> str:
    """A measured quantity (milliseconds, megabytes, items per second), about 3 significant figures:
    ``fmt_quantity(0.0403) == "0.040"``, ``fmt_quantity(1.164) == "1.16"``, ``fmt_quantity(24512.3) == "24,512"``."""
    v = _num(x)
    return MISSING if v is None else _fixed(v, _decimals(v))


def fmt_ratio(x: Any, suffix: str = "x") -> str:
    """A ratio: ``fmt_ratio(3.8456) == "3.8x"``, ``fmt_ratio(0.3712) == "0.37x"``, ``fmt_ratio(2e-17) == "2.0e-17x"``.

    One decimal from 1 up, two significant figures below 1, scientific notation below 0.01 (never "0.0x").
    ``suffix=""`` gives a bare ratio (``"2.0e-17"``).
    """
    v = _num(x)
    if v is None:
        return MISSING
    if math.isinf(v):
        return _inf(v) + suffix
    a = abs(v)
    if a >= 0.995 or v == 0:
        text = f"{v:,.1f}"
    elif a >= 0.00995:
        # Two significant figures, keeping a trailing zero (.2g would write 0.4 for 0.40).
        r = float(f"{v:.2g}")
        text = f"{r:.{1 - math.floor(math.log10(abs(r)))}f}"
    else:
        text = f"{v:.1e}"
    return text + suffix


def fmt_number(x: Any) -> str:
    """A setting or any other number, up to 3 significant figures: ``fmt_number(0.1) == "0.1"``,
    ``fmt_number(3e-5) == "3.0e-05"``, ``fmt_number(20) == "20"``."""
    v = _num(x)
    if v is None:
        return MISSING
    if math.isinf(v):
        return _inf(v)
    if v == round(v) and abs(v) < 1e15:
        return fmt_int(v)
    if 0.001 <= abs(v) < 1000:
        return f"{v:.3g}"
    return f"{v:.1e}"


def fmt_bool(x: Any) -> str:
    """``True`` -> ``"yes"``, ``False`` -> ``"no"``."""
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return MISSING
    if isinstance(x, str):
        low = x.strip().lower()
        if low in ("true", "false"):
            return "yes" if low == "true" else "no"
        return x
    return "yes" if bool(x) else "no"


def fmt_text(x: Any) -> str:
    """Text as is; missing text is an empty string."""
    if x is None or (isinstance(x, float) and math.isnan(x)) or x is pd.NA:
        return ""
    return str(x)


def fmt_ci(lo: Any, hi: Any, digits: int = 3, *, kind: str = "metric") -> str:
    """An interval: ``fmt_ci(0.8946, 0.9464) == "[0.895, 0.946]"``; missing when either end is."""
    if _num(lo) is None or _num(hi) is None:
        return MISSING
    if kind == "metric":
        return f"[{fmt_metric(lo, digits)}, {fmt_metric(hi, digits)}]"
    return f"[{fmt_value(lo, kind)}, {fmt_value(hi, kind)}]"


def fmt_value_ci(value: Any, lo: Any, hi: Any, digits: int = 3, *, kind: str = "metric") -> str:
    """A value and its interval: ``fmt_value_ci(0.9223, 0.8946, 0.9464) == "0.922 [0.895, 0.946]"``."""
    v = fmt_metric(value, digits) if kind == "metric" else fmt_value(value, kind)
    if v == MISSING:
        return MISSING
    ci = fmt_ci(lo, hi, digits, kind=kind)
    return v if ci == MISSING else f"{v} {ci}"


_FORMATTERS = {
    "metric": fmt_metric,
    "delta": fmt_delta,
    "points": fmt_points,
    "percent": fmt_percent,
    "int": fmt_int,
    "seconds": fmt_seconds,
    "quantity": fmt_quantity,
    "ratio": fmt_ratio,
    "number": fmt_number,
    "sci": fmt_sci,
    "bool": fmt_bool,
    "text": fmt_text,
}


def fmt_value(x: Any, kind: str = "auto", *, floatfmt: str | None = None) -> str:
    """Format ``x`` by ``kind`` (one of :data:`KINDS`).

    ``"auto"`` picks by type: bools yes/no, integers :func:`fmt_int`, floats ``format(x, floatfmt)`` when
    ``floatfmt`` is given, else :func:`fmt_metric`; anything else as text.
    """
    if kind == "auto":
        if isinstance(x, (bool, np.bool_)):
            return fmt_bool(x)
        if isinstance(x, (int, np.integer)):
            return fmt_int(x)
        if isinstance(x, (float, np.floating)):
            v = _num(x)
            if v is None:
                return MISSING
            return format(v, floatfmt) if floatfmt else fmt_metric(v)
        return fmt_text(x)
    try:
        return _FORMATTERS[kind](x)
    except KeyError:
        raise ValueError(f"unknown number kind '{kind}'; choose from {', '.join(KINDS)}") from None


# Name tokens that say what a column holds (tokens are the lower-case words of the name split on "_", " ", "/").
_RATIO = {"ratio", "speedup", "smaller", "faster"}
_QUANTITY = {"ms", "mb", "gb", "kb", "memory", "latency", "throughput"}
_SECONDS = {"s", "seconds", "sec", "secs"}
_DELTA = {"drop", "gap", "diff", "difference", "delta", "change"}
_PERCENT = {"agreement", "fraction", "percent", "pct", "share"}
_INT = {
    "params",
    "parameters",
    "count",
    "counts",
    "support",
    "epoch",
    "epochs",
    "seeds",
    "members",
    "positives",
    "negatives",
    "index",
    "steps",
    "step",
    "reports",
    "images",
    "samples",
}
_METRIC = {
    "accuracy",
    "acc",
    "auc",
    "roc",
    "f1",
    "precision",
    "recall",
    "sensitivity",
    "specificity",
    "loss",
    "ece",
    "brier",
    "mcc",
    "kappa",
    "confidence",
    "value",
    "lo",
    "hi",
    "low",
    "high",
    "error",
    "score",
    "prob",
    "probability",
}
_NUMBER = {"lr", "dropout", "decay", "momentum", "threshold", "amount", "temperature", "alpha", "gamma", "smoothing"}


def _tokens(name: str) -> list[str]:
    return [t for t in re.split(r"[^a-z0-9]+", name.lower()) if t]


def column_kind(name: str, values: pd.Series | Sequence[Any] | None = None) -> str:
    """The kind of number a column holds, from its name (and, given ``values``, its dtype).

    Examples: ``train_time_s`` seconds; ``latency_b1_median_ms``, ``size_mb``, ``train_reports_per_s`` quantity;
    ``size_ratio``, ``speedup_b1``, ``*_x`` ratio; ``params``, ``n_train``, ``best_epoch``, ``count`` int;
    ``test_accuracy_drop``, ``gap_accuracy`` delta; ``label_agreement``, ``fraction`` percent; ``lr``,
    ``weight_decay``, ``dropout`` number; ``val_auc``, ``macro_f1``, ``ci95_low`` metric. Bool columns are bool,
    non-numeric columns text, anything else ``"auto"`` (integers as integers, floats as metrics).
    """
    if values is not None:
        s = values if isinstance(values, pd.Series) else pd.Series(list(values))
        if pd.api.types.is_bool_dtype(s):
            return "bool"
        if not pd.api.types.is_numeric_dtype(s):
            # Object columns of True/False (with gaps) still read as yes/no.
            present = [v for v in s if not (v is None or (isinstance(v, float) and math.isnan(v)))]
            if present and all(isinstance(v, (bool, np.bool_)) for v in present):
                return "bool"
            return "text"
    t = _tokens(name)
    if not t:
        return "auto"
    low = name.lower()
    if _RATIO & set(t) or (len(t) > 1 and t[-1] == "x"):
        return "ratio"
    # "per_s" before seconds: reports per second is a rate, not a time.
    if _QUANTITY & set(t) or "per_s" in low or "/s" in low:
        return "quantity"
    if _SECONDS & set(t):
        return "seconds"
    if _DELTA & set(t):
        # An absolute difference (max_abs_logit_diff) has no sign and can be tiny.
        return "quantity" if {"abs", "max"} & set(t) else "delta"
    if _PERCENT & set(t):
        return "percent"
    # "n" and "t" count only as the whole name or its first word (n_train), never as a suffix (macro_f1_t).
    if _INT & set(t) or t[0] == "n" or t == ["t"]:
        return "int"
    if _NUMBER & set(t):
        return "number"
    if _METRIC & set(t):
        return "metric"
    return "auto"


def _interval_of(col: str, columns: Sequence[str]) -> tuple[str, str] | None:
    """The (low, high) columns that hold the interval of ``col``, if the frame has them."""
    cands = [(f"{col}_lo", f"{col}_hi"), (f"{col}_low", f"{col}_high"), (f"{col}_ci_low", f"{col}_ci_high")]
    if col == "value":
        cands += [("ci95_low", "ci95_high"), ("ci_low", "ci_high"), ("lo", "hi"), ("low", "high")]
    return next(((lo, hi) for lo, hi in cands if lo in columns and hi in columns), None)


def format_frame(
    df: pd.DataFrame,
    *,
    kinds: Mapping[str, str] | None = None,
    floatfmt: str | None = None,
    intervals: bool = True,
) -> pd.DataFrame:
    """Every cell of ``df`` as a string formatted for its column's kind.

    Args:
        df: the table (not changed).
        kinds: kind per column name, overriding :func:`column_kind`.
        floatfmt: format spec for float columns whose kind is not known from the name (``"auto"``).
        intervals: merge ``x``, ``x_lo``, ``x_hi`` (and ``value``, ``ci95_low``, ``ci95_high``) into one
            column ``x`` holding ``"0.922 [0.895, 0.946]"``.
    """
    kinds = dict(kinds or {})
    for k in kinds.values():
        if k not in KINDS:
            raise ValueError(f"unknown number kind '{k}'; choose from {', '.join(KINDS)}")
    cols = [str(c) for c in df.columns]
    frame = df.copy()
    frame.columns = cols
    kind = {c: kinds.get(c) or column_kind(c, frame[c]) for c in cols}
    out: dict[str, list[str]] = {}
    merged: set[str] = set()
    for c in cols:
        if c in merged:
            continue
        pair = _interval_of(c, cols) if intervals and kind[c] not in ("text", "bool") else None
        if pair:
            lo, hi = pair
            merged.update(pair)
            k = "metric" if kind[c] == "auto" else kind[c]
            out[c] = [fmt_value_ci(v, a, b, kind=k) for v, a, b in zip(frame[c], frame[lo], frame[hi], strict=True)]
        else:
            out[c] = [fmt_value(v, kind[c], floatfmt=floatfmt) for v in frame[c]]
    return pd.DataFrame({c: out[c] for c in cols if c in out}, index=df.index)


def readable_header(name: str) -> str:
    """A column name for people: ``"latency_b1_median_ms"`` -> ``"latency b1 median (ms)"``,
    ``"test_macro_f1"`` -> ``"test macro-F1"``, ``"val_auc"`` -> ``"val AUC"``."""
    words = str(name).split("_")
    unit = None
    if len(words) > 2 and words[-2:] == ["per", "s"]:
        words = [*words[:-2], "per second"]
    elif len(words) > 1 and words[-1] in ("s", "ms", "mb", "gb", "x"):
        unit = {"s": "s", "ms": "ms", "mb": "MB", "gb": "GB", "x": "x"}[words.pop()]
    text = " ".join(words)
    for src, dst in (("macro f1", "macro-F1"), ("micro f1", "micro-F1"), ("macro auc", "macro-AUC")):
        text = text.replace(src, dst)
    text = re.sub(r"\bauc\b", "AUC", text)
    text = re.sub(r"\bf1\b", "F1", text)
    text = re.sub(r"\bece\b", "ECE", text)
    return f"{text} ({unit})" if unit else text


def _cell(v: str) -> str:
    # A pipe would end the cell and a newline the row.
    return v.replace("|", "\\|").replace("\r", " ").replace("\n", " ")


def _markdown(frame: pd.DataFrame, headers: Sequence[str]) -> str:
    head = "| " + " | ".join(_cell(h) for h in headers) + " |"
    sep = "|" + "|".join("---" for _ in headers) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([head, sep, *body]) + "\n"


def split_columns(columns: Sequence[str], max_columns: int = MAX_COLUMNS, *, key: int = 1) -> list[list[str]]:
    """Split ``columns`` into groups of at most ``max_columns``, each starting with the first ``key`` columns;
    the others are shared out evenly in their order."""
    columns = list(columns)
    if len(columns) <= max_columns:
        return [columns]
    keys, rest = columns[:key], columns[key:]
    room = max_columns - len(keys)
    if room < 1:
        raise ValueError(f"max_columns={max_columns} leaves no room beside the {len(keys)} key column(s)")
    n = math.ceil(len(rest) / room)
    size = math.ceil(len(rest) / n)
    return [keys + rest[i : i + size] for i in range(0, len(rest), size)]


def readable_table(
    df: pd.DataFrame,
    *,
    kinds: Mapping[str, str] | None = None,
    headers: Mapping[str, str] | bool | None = None,
    floatfmt: str | None = None,
    intervals: bool = True,
    max_columns: int | None = MAX_COLUMNS,
    key: int = 1,
) -> str:
    """``df`` as GitHub-flavoured Markdown with every number formatted for its column (see :func:`format_frame`).

    Args:
        df: the table.
        kinds: kind per column, overriding the one read from the name.
        headers: column titles: a mapping (columns not in it keep their name), ``True`` for
            :func:`readable_header` of every column, or None to keep the names.
        floatfmt: format spec for float columns of unknown kind.
        intervals: merge ``x``/``x_lo``/``x_hi`` columns into one cell.
        max_columns: wider tables are split into several (blank line between), each repeating the first
            ``key`` columns; None never splits.
        key: how many leading columns name a row and are repeated in every part.
    """
    frame = format_frame(df, kinds=kinds, floatfmt=floatfmt, intervals=intervals)
    if headers is True:
        titles = {c: readable_header(c) for c in frame.columns}
    else:
        titles = {c: (headers or {}).get(c, c) for c in frame.columns}
    groups = [list(frame.columns)] if max_columns is None else split_columns(frame.columns, max_columns, key=key)
    return "\n".join(_markdown(frame[g], [titles[c] for c in g]) for g in groups)


def computed_on(metrics: Mapping[str, Any]) -> str:
    """The method line of a run: the device and precision it was computed on, the library versions and the peak
    memory (the process's, and the GPU's where one ran), from ``metrics["accelerator"]``; '' for a run folder
    written before runs recorded it."""
    acc = metrics.get("accelerator")
    if not acc:
        return ""
    where = acc["device"] + (f" ({acc['name']}, {fmt_quantity(acc['memory_gb'])} GB)" if acc.get("memory_gb") else "")
    cuda = f", CUDA {acc['cuda']}" if acc.get("cuda") and acc["device"].startswith("cuda") else ""
    peak = f"peak memory {fmt_quantity(acc['peak_rss_gb'])} GB (process)" if acc.get("peak_rss_gb") else ""
    if acc.get("peak_gpu_memory_gb") is not None:
        peak += f" and {fmt_quantity(acc['peak_gpu_memory_gb'])} GB (GPU)"
    threads = f", {acc['threads']} CPU threads" if acc.get("threads") else ""
    return (
        f"Computed on {where} at precision {acc['precision']} (torch {acc['torch']}{cuda}{threads})"
        + (f"; {peak}" if peak else "")
        + "."
    )
