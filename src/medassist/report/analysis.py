"""The image study's analysis paragraph, generated from the measured numbers only.

A comparison is called a difference only when a paired bootstrap interval of it excludes zero; otherwise the text
says there is no clear difference.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from medassist.evaluate.training import training_status, usable
from medassist.utils.format import MISSING, fmt_ci, fmt_delta, fmt_int, fmt_metric, fmt_seconds, fmt_value_ci
from medassist.utils.words import fit_sentences


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
    fair = [r for r in cap if usable(r)]
    ranked = fair or cap
    best, worst = ranked[0], ranked[-1]
    diag = m["diagnosis"]
    size = m["size_curve"]
    sel = m["selected"]
    h = sel["headline"]
    s: list[str] = []
    optional: list[int] = []  # sentences dropped first (last first) if the text would pass MAX_WORDS
    s.append(
        f"On {data['name']} ({_n_train(m, data)}, {fmt_int(data['sizes']['val'])} validation "
        f"and {fmt_int(data['sizes']['test'])} test images, {len(data['class_names'])} classes), {len(cap)} "
        f"architectures were trained with the same recipe{_epochs_phrase(cap)}."
    )
    unfit = [r for r in cap if not usable(r)]
    if unfit:
        s.append(_unfit_sentence(unfit, what="capacity"))
    if len(fair) > 1:
        of = f"Of the {len(fair)} that trained to the end, " if unfit else ""
        s.append(
            f"{of}{best['model']} reached the highest validation AUC "
            f"({_f(best['val_auc'])}, {fmt_int(best['params'])} parameters, {_s(best['train_time_s'])} of training); "
            f"{worst['model']} the lowest ({_f(worst['val_auc'])}, {fmt_int(worst['params'])} parameters)."
        )
    elif fair:
        s.append(
            f"Only {best['model']} can be judged: validation AUC {_f(best['val_auc'])} "
            f"({fmt_int(best['params'])} parameters, {_s(best['train_time_s'])} of training)."
        )
    if len(fair) > 1:
        capacity_text = _capacity_sentence(fair, m["chosen_architecture"])
        if capacity_text:  # the capacity conclusion is the analysis's point: never dropped for length
            s.append(capacity_text)
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
        parts = [f"{k} {_f(v['val_auc'])}{_mark(v)} in {_s(v['train_time_s'])}" for k, v in tr.items()]
        s.append(f"EfficientNet-Lite0 reached validation AUC {', '.join(parts)}{_epochs_phrase(list(tr.values()))}.")
        if "finetune" in tr and "scratch" in tr:
            optional.append(len(s))
            s.append(_transfer_sentence(tr["finetune"], tr["scratch"], run_dir, y_val))
        if "finetune" in tr and fair:
            s.append(_pretrained_vs_scratch(tr["finetune"], fair[0], m, data, run_dir, y_val))
    s.append(
        f"The selected model, {sel['label']}, chosen on validation AUC alone, scored on the untouched test set an AUC "
        f"of {_ci(h['auc'])}, accuracy {_ci(h['accuracy'])} and macro-F1 {_ci(h['macro_f1'])}; its expected "
        f"calibration error was {_f(h['ece']['value'])}."
    )
    optional.append(len(s))
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


def _mark(row: dict[str, Any]) -> str:
    """' (under-trained)', ' (at chance)' or '' after a model's number."""
    status = training_status(bool(row.get("under_trained")), bool(row.get("at_chance")))
    return "" if status == "complete" else f" ({status})"


def _n_train(m: dict[str, Any], data: dict[str, Any]) -> str:
    """'800 of its 4,708 training images (a stratified draw)' when this profile trained on a draw of the training
    split, else '4,708 training'."""
    full = m.get("train_subsample")
    n = fmt_int(data["sizes"]["train"])
    return f"{n} of its {fmt_int(full)} training images (a stratified draw)" if full else f"{n} training"


def _epochs_phrase(rows: list[dict[str, Any]]) -> str:
    """' (4 epochs at batch 32 each)' when the rows record one shared schedule, else ''."""
    epochs = {r.get("planned_epochs") for r in rows}
    batches = {r.get("batch_size") for r in rows}
    if len(epochs) == 1 and len(batches) == 1 and None not in epochs | batches and 0 not in epochs:
        n = epochs.pop()
        return f" ({fmt_int(n)} epoch{'' if n == 1 else 's'} at batch {fmt_int(batches.pop())} each)"
    return ""


def _unfit_sentence(rows: list[dict[str, Any]], *, what: str) -> str:
    """Names the models that no conclusion about ``what`` may rest on, and why."""
    cut = [r for r in rows if r.get("under_trained")]
    chance = [r for r in rows if r.get("at_chance")]
    parts = []
    if cut:
        when = (
            f"after {fmt_int(cut[0]['epochs_run'])} of {fmt_int(cut[0].get('planned_epochs'))}"
            if len({(r["epochs_run"], r.get("planned_epochs")) for r in cut}) == 1
            else ", ".join(
                f"{_names([r])} after {fmt_int(r['epochs_run'])} of {fmt_int(r.get('planned_epochs'))}" for r in cut
            )
        )
        parts.append(
            f"{_names(cut)} {'was' if len(cut) == 1 else 'were'} under-trained (a time budget ended training {when} "
            "epochs while validation AUC was still rising)"
        )
    if chance:
        parts.append(
            f"{_names(chance)} {'was' if len(chance) == 1 else 'were'} at chance level (validation AUC "
            f"{', '.join(_f(r['val_auc']) for r in chance)})"
        )
    text = f"No conclusion about {what} rests on {'it' if len(rows) == 1 else 'them'}: {'; '.join(parts)}"
    return text + ("; the budget was too short to decide." if cut else ".")


def _names(rows: list[dict[str, Any]]) -> str:
    names = [str(r.get("model") or r.get("mode") or r.get("regularisation")) for r in rows]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} and {names[-1]}"


def _capacity_sentence(fair: list[dict[str, Any]], chosen: str) -> str:
    """What more capacity bought, by the paired validation intervals against the best model."""
    best = fair[0]
    rows = {r["model"]: r for r in fair}
    if "val_auc_vs_best_lo" not in best:  # a run from before the intervals were recorded
        bigger = [r for r in fair if r["params"] > best["params"]]
        if not bigger:
            return ""
        return (
            f"Larger models did not help here: {_names(bigger)} had more parameters but lower validation AUC, "
            "within the epochs they were given."
        )
    if chosen != best["model"] and chosen in rows:
        c = rows[chosen]
        d = fmt_value_ci(-c["val_auc_vs_best"], -c["val_auc_vs_best_hi"], -c["val_auc_vs_best_lo"], kind="delta")
        return (
            f"More capacity did not clearly help: {best['model']}'s advantage over the smaller {chosen} was {d} "
            f"validation AUC, an interval that includes zero, so {chosen} was carried forward."
        )
    bigger = [r for r in fair if r["params"] > best["params"]]
    if not bigger:
        return f"The largest model trained to the end, {best['model']}, was also the best on validation."
    worse = [r for r in bigger if r["val_auc_vs_best_hi"] < 0]
    text = f"Larger models did not help here: {_names(bigger)} had more parameters but no higher validation AUC"
    if worse:
        text += f" ({_names(worse)} clearly lower, by the paired bootstrap interval)"
    return text + "."


def _transfer_sentence(ft: dict[str, Any], sc: dict[str, Any], run_dir: Path, y_val: np.ndarray | None) -> str:
    """ImageNet weights against a random start, decided by the paired interval, never from an unfit model."""
    unfit = [r for r in (ft, sc) if not usable(r)]
    if unfit:
        return _unfit_sentence(unfit, what="ImageNet weights against a random start")
    d = (ft["val_auc"] or 0) - (sc["val_auc"] or 0)
    pa, pb = (run_dir / "units" / r["name"] / "val_probs.npy" for r in (ft, sc))
    if y_val is None or not (pa.is_file() and pb.is_file()):
        return (
            f"Starting from ImageNet weights instead of a random initialisation changed validation AUC by "
            f"{fmt_delta(d)} for the same architecture and epochs."
        )
    d, lo, hi = paired_auc_difference(y_val, np.load(pa), np.load(pb))
    verdict = "helped" if lo > 0 else "hurt" if hi < 0 else "made no clear difference"
    return (
        f"Starting from ImageNet weights instead of a random initialisation {verdict} "
        f"({fmt_delta(d)} validation AUC, paired 95% CI {fmt_ci(lo, hi)}, for the same architecture and epochs)."
    )


def _pretrained_vs_scratch(
    ft: dict[str, Any],
    scratch: dict[str, Any],
    m: dict[str, Any],
    data: dict[str, Any],
    run_dir: Path,
    y_val: np.ndarray | None,
) -> str:
    """Did the fine-tuned pretrained network beat the best model trained from scratch? If not, why, in numbers."""
    if not usable(ft):
        return ""
    pa, pb = (run_dir / "units" / r["name"] / "val_probs.npy" for r in (ft, scratch))
    if y_val is None or not (pa.is_file() and pb.is_file()):
        return ""
    d, lo, hi = paired_auc_difference(y_val, np.load(pa), np.load(pb))
    diff = f"{fmt_delta(d)} validation AUC, paired 95% CI {fmt_ci(lo, hi)}"
    if lo > 0:
        return (
            "Fine-tuned from ImageNet, EfficientNet-Lite0 beat the best model trained from scratch, "
            f"{scratch['model']} ({diff})."
        )
    size, side = m.get("transfer_input_size"), data.get("image_size")
    why = f"it trained for {fmt_int(ft.get('planned_epochs'))} epochs at batch {fmt_int(ft.get('batch_size'))}"
    if size and side and size > side:
        why += f", on {side}-pixel images upsampled {size / side:.1f}-fold to its {size}-pixel input (no new detail)"
    return (
        f"Fine-tuned from ImageNet, EfficientNet-Lite0 did not beat the best model trained from scratch, "
        f"{scratch['model']} ({diff}): {why}."
    )


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
