"""The image study's analysis paragraph, generated from the measured numbers only.

A comparison is called a difference only when a paired bootstrap interval of it excludes zero; otherwise the text
says there is no clear difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medassist.report.format import MISSING, fmt_ci, fmt_delta, fmt_int, fmt_metric, fmt_seconds
from medassist.report.words import fit_sentences


def paired_auc_difference(
    y: np.ndarray, p_a: np.ndarray, p_b: np.ndarray, *, n_boot: int = 1000, seed: int = 0
) -> tuple[float, float, float]:
    """AUC(a) - AUC(b) on the same cases, with a 95% paired bootstrap interval."""
    from medassist.evaluate.metrics import METRICS, paired_bootstrap_difference

    return paired_bootstrap_difference(y, p_a, p_b, METRICS["auc"], n_boot=n_boot, seed=seed)


MAX_WORDS = 300

# What the diagnosis says to try, stated before the ablation's result.
REMEDY = {
    "high variance": "High variance calls for regularisation or more data, which the ablation and the size curve test.",
    "high bias": "High bias calls for more capacity or longer training rather than regularisation; the ablation "
    "shows whether regularisation costs accuracy here.",
    "high bias and high variance": "Both call for different remedies: more capacity for the bias, regularisation for "
    "the variance; the ablation tests the second.",
    "good fit": "A good fit leaves regularisation only a small margin to gain, which the ablation measures.",
}


def _f(x: float | None, d: int = 3) -> str:
    text = fmt_metric(x, d)
    return "n/a" if text == MISSING else text


def _ci(h: dict[str, float], d: int = 3) -> str:
    ci = fmt_ci(h["ci_low"], h["ci_high"], d)
    return _f(h["value"], d) if ci == MISSING else f"{_f(h['value'], d)} (95% CI {ci})"


def _s(seconds: float | None) -> str:
    text = fmt_seconds(seconds)
    return "n/a" if text == MISSING else f"{text} s"


def image_analysis(m: dict[str, Any], data: dict[str, Any], run_dir: Path, y_val: np.ndarray | None) -> str:
    """A 200-300-word analysis of an image study run, every figure taken from ``metrics.json``."""
    cap = sorted(m["capacity"], key=lambda r: -(r["val_auc"] or 0))
    best, worst = cap[0], cap[-1]
    diag = m["diagnosis"]
    size = m["size_curve"]
    sel = m["selected"]
    h = sel["headline"]
    s: list[str] = []
    optional: list[int] = []  # sentences dropped first (last first) if the text would pass MAX_WORDS
    s.append(
        f"On {data['name']} ({fmt_int(data['sizes']['train'])} training, {fmt_int(data['sizes']['val'])} validation "
        f"and {fmt_int(data['sizes']['test'])} test images, {len(data['class_names'])} classes), {len(cap)} "
        f"architectures were trained with the same recipe. {best['model']} reached the highest validation AUC "
        f"({_f(best['val_auc'])}, "
        f"{fmt_int(best['params'])} parameters, {_s(best['train_time_s'])} of training); {worst['model']} the "
        f"lowest ({_f(worst['val_auc'])}, {fmt_int(worst['params'])} parameters)."
    )
    if len(cap) > 1:
        bigger = [r for r in cap if r["params"] > best["params"]]
        if bigger:
            optional.append(len(s))
            s.append(
                f"Larger models did not help here: {', '.join(r['model'] for r in bigger)} had more parameters "
                f"but lower validation AUC, within the epochs and time they were given."
            )
    s.append(
        f"For {m['chosen_architecture']}, training accuracy (eval mode) was {_f(diag['train_accuracy'])} against "
        f"{_f(diag['val_accuracy'])} on validation, a gap of {_f(diag['gap_accuracy'])}, and the validation loss "
        f"over the last epochs sat {diag['val_loss_rise']:.0%} above its minimum; by the stated rule the diagnosis is "
        f"{diag['label']}."
    )
    optional.append(len(s))
    s.append(REMEDY[diag["label"]])
    if len(size) > 1:
        a, b = size[0], size[-1]
        trend = (
            "rose"
            if b["val_accuracy"] > a["val_accuracy"] + 0.005
            else ("fell" if b["val_accuracy"] < a["val_accuracy"] - 0.005 else "stayed flat")
        )
        s.append(
            f"With more training data validation accuracy {trend}, from {_f(a['val_accuracy'])} with "
            f"{fmt_int(a['n_train'])} images to {_f(b['val_accuracy'])} with {fmt_int(b['n_train'])}, while training "
            f"accuracy went from {_f(a['train_accuracy'])} to {_f(b['train_accuracy'])}."
        )
    s.append(_ablation_sentence(m, run_dir, y_val))
    tr = {r["mode"]: r for r in m.get("transfer", [])}
    if tr:
        parts = [f"{k} {_f(v['val_auc'])} in {_s(v['train_time_s'])}" for k, v in tr.items()]
        s.append(f"EfficientNet-Lite0 reached validation AUC {', '.join(parts)}.")
        if "finetune" in tr and "scratch" in tr:
            d = (tr["finetune"]["val_auc"] or 0) - (tr["scratch"]["val_auc"] or 0)
            verdict = "helped" if d > 0.005 else "hurt" if d < -0.005 else "made no material difference"
            optional.append(len(s))
            s.append(
                f"Starting from ImageNet weights instead of a random initialisation {verdict} "
                f"({fmt_delta(d)} validation AUC for the same architecture and budget)."
            )
    s.append(
        f"The selected model, {sel['label']}, chosen on validation AUC alone, scored on the untouched test set an AUC "
        f"of {_ci(h['auc'])}, accuracy {_ci(h['accuracy'])} and macro-F1 {_ci(h['macro_f1'])}; its expected "
        f"calibration error was {_f(h['ece']['value'])}."
    )
    s.append(_per_class_sentence(sel["metrics"]))
    gap = (sel["val_accuracy"] or 0) - h["accuracy"]["value"]
    if abs(gap) > 0.03:
        optional.append(len(s))
        s.append(
            f"Test accuracy was {'lower' if gap > 0 else 'higher'} than validation accuracy "
            f"({_f(h['accuracy']['value'])} against {_f(sel['val_accuracy'])}), a shift between the splits that the "
            "validation set could not reveal."
        )
    return fit_sentences(s, optional, MAX_WORDS)


def _per_class_sentence(metrics: dict[str, Any]) -> str:
    names = metrics["class_names"]
    cm = np.asarray(metrics["confusion_matrix"], dtype=float)
    recalls = ", ".join(f"{c} {_f(metrics['per_class'][c]['recall'])}" for c in names)
    off = cm.copy()
    np.fill_diagonal(off, 0)
    text = f"Per-class test recall was {recalls}"
    if off.sum() > 0:
        i, j = np.unravel_index(off.argmax(), off.shape)
        text += (
            f"; the most frequent error was {names[i]} predicted as {names[j]} ({fmt_int(off[i, j])} of "
            f"{fmt_int(off.sum())} errors)"
        )
    return text + "."


def _ablation_sentence(m: dict[str, Any], run_dir: Path, y_val: np.ndarray | None) -> str:
    rows = m["ablation"]
    if not rows:
        return ""
    none = next((r for r in rows if r["regularisation"] == "none"), None)
    top = max(rows, key=lambda r: r["val_auc"] or 0)
    if none is None or top is none:
        return (
            f"Among the regularisation settings, none improved on '{top['regularisation']}' in validation AUC "
            f"({_f(top['val_auc'])})."
        )
    text = (
        f"Of the regularisation settings, {top['regularisation'].replace('_', ' ')} gave the highest validation "
        f"AUC ({_f(top['val_auc'])} against {_f(none['val_auc'])} without regularisation)"
    )
    pa, pb = run_dir / "units" / top["name"] / "val_probs.npy", run_dir / "units" / none["name"] / "val_probs.npy"
    if y_val is not None and pa.is_file() and pb.is_file():
        d, lo, hi = paired_auc_difference(y_val, np.load(pa), np.load(pb))
        verdict = "a clear gain" if lo > 0 else "no clear difference"
        text += f"; the paired bootstrap interval of the difference, {fmt_ci(lo, hi)}, shows {verdict}"
    return text + "."
