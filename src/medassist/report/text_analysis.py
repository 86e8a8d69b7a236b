"""The text study's explanation, generated from the measured numbers only.

Two models are said to differ only when the 95% interval of their difference excludes zero: the paired bootstrap
interval against the baseline, and, between two neural models, non-overlapping intervals.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from medassist.evaluate.training import usable
from medassist.utils.format import fmt_int, fmt_metric, fmt_ratio, fmt_seconds, fmt_value_ci
from medassist.utils.words import fit_sentences

MAX_WORDS = 250


def _r(x: Any) -> str:
    """A ratio without the "x" (scientific when tiny)."""
    return fmt_ratio(x, suffix="")


def _ci(r: dict[str, Any], k: str) -> str:
    return fmt_value_ci(r[f"test_{k}"], r[f"test_{k}_lo"], r[f"test_{k}_hi"])


def _versus(a: dict[str, Any], b: dict[str, Any], k: str) -> str:
    """'better than', 'worse than' or 'not clearly different from', by interval overlap."""
    if a[f"test_{k}_lo"] > b[f"test_{k}_hi"]:
        return "better than"
    if a[f"test_{k}_hi"] < b[f"test_{k}_lo"]:
        return "worse than"
    return "not clearly different from"


def baseline_verdict(r: dict[str, Any], head: str) -> str:
    """'beats the baseline', 'below the baseline' or 'no difference', by the paired interval of the difference."""
    lo, hi = r.get(f"vs_tfidf_{head}_lo"), r.get(f"vs_tfidf_{head}_hi")
    if lo is None or hi is None or lo != lo or hi != hi:
        return "not measured"
    if lo > 0:
        return "beats the baseline"
    if hi < 0:
        return "below the baseline"
    return "no difference"


def _against_baseline(r: dict[str, Any], head: str, what: str) -> str:
    d = fmt_value_ci(r[f"vs_tfidf_{head}"], r[f"vs_tfidf_{head}_lo"], r[f"vs_tfidf_{head}_hi"], kind="delta")
    verdict = baseline_verdict(r, head)
    if verdict == "beats the baseline":
        return f"{r['model']} beat it by {d} {what}"
    if verdict == "below the baseline":
        return f"{r['model']} fell below it by {d} {what}"
    return f"{r['model']} did not differ from it ({d} {what}, an interval that includes zero)"


def _unfit_sentence(rows: list[dict[str, Any]]) -> str:
    parts = []
    for r in rows:
        if r.get("under_trained"):
            parts.append(
                f"{r['model']} was under-trained (a time budget ended it after {fmt_int(r['epochs_run'])} of "
                f"{fmt_int(r.get('planned_epochs'))} epochs while validation was still improving)"
            )
        if r.get("at_chance"):
            parts.append(f"{r['model']} was at chance level (validation macro-AUC {fmt_metric(r['val_auc'])})")
    return (
        f"{'; '.join(parts)}: the budget was too short to decide between the architectures, and no conclusion "
        "about them rests on this run."
    )


def _architecture_sentence(verdict: str, pretrained: bool) -> str:
    if pretrained:
        why = (
            "attention links every token to every other in one step, and the weights were pretrained on a large "
            "English corpus, whereas the recurrent model learns its word embeddings from the training reports alone"
        )
    else:
        why = (
            "attention links every token to every other in one step; trained from scratch, it had no pretraining "
            "advantage and learned from the training reports alone, like the recurrent model"
        )
    if verdict == "better than":
        return f"This fits the Transformer's advantages: {why}."
    if verdict == "worse than":
        return f"The Transformer's advantages did not pay off in this run: {why}."
    return f"The Transformer's advantages gave no measurable edge here: {why}."


def _why_below(tra: dict[str, Any], per_label: list[dict[str, Any]], data: dict[str, Any], multilabel: bool) -> str:
    """Why the Transformer did not beat the baseline, in numbers: its training, and the labels on which it lost."""
    steps = tra.get("steps")
    text = ""
    if steps:
        text = (
            f"The Transformer trained to the end of its {fmt_int(tra.get('planned_epochs'))} "
            f"epoch{'' if tra.get('planned_epochs') == 1 else 's'} "
            f"({fmt_int(steps)} steps at batch {fmt_int(tra.get('batch_size'))}) on {fmt_int(data['sizes']['train'])} "
            "reports"
        )
    a, b = (
        f"{tra['model']} AUC" if not multilabel else tra["model"],
        "tfidf_logreg AUC" if not multilabel else "tfidf_logreg",
    )
    counts = (data.get("label_counts") or {}).get("train")
    name_key = "label" if multilabel else "class"
    if per_label and counts and all(a in r and b in r for r in per_label):
        train_n = dict(zip(data["label_names"], counts, strict=False))
        lost = [r for r in per_label if r[a] == r[a] and r[b] == r[b] and r[a] < r[b]]
        won = [r for r in per_label if r[a] == r[a] and r[b] == r[b] and r[a] >= r[b]]
        if lost:
            med = lambda rows: float(np.median([train_n.get(r[name_key], 0) for r in rows]))  # noqa: E731
            what = "labels" if multilabel else "classes"
            text += (
                f"{'; it' if text else 'It'} ranked worse than TF-IDF (test AUC) on {len(lost)} of {len(per_label)} "
                f"{what}, whose median number of training examples was {med(lost):.0f}"
                + (f", against {med(won):.0f} on the {len(won)} where it was as good or better" if won else "")
            )
    return f"{text}." if text else ""


def text_explanation(m: dict[str, Any], data: dict[str, Any], cfg: dict[str, Any]) -> str:
    """A 150-250-word explanation of a text study run, every figure taken from ``metrics.json``."""
    multilabel = m.get("task", "multi-label") == "multi-label"
    head = "macro_f1_t" if multilabel else "macro_f1"
    what = "macro-F1 at validation-chosen thresholds" if multilabel else "macro-F1"
    rows = {r["model"]: r for r in m["comparison"]}
    rec, tra = rows[cfg["recurrent"]], rows[cfg["transformer"]]
    base = rows["tfidf_logreg"]
    words = data["mean_words"]["train"]
    sizes = data["sizes"]
    pretrained = cfg["transformer"] == "minilm"
    kind = f"{len(data['label_names'])} labels" if multilabel else f"{len(data['label_names'])} classes"
    s: list[str] = []
    optional: list[int] = []
    s.append(
        f"On {data['name']} ({fmt_int(sizes['train'])} training, {fmt_int(sizes['val'])} validation and "
        f"{fmt_int(sizes['test'])} test reports, {kind}, {words:.0f} words per report on average), the Transformer "
        f"({cfg['transformer']}) reached a test {what} of {_ci(tra, head)} and the recurrent model "
        f"({cfg['recurrent']}) {_ci(rec, head)}: the Transformer was {_versus(tra, rec, head)} the recurrent model. "
        f"Macro-AUC was {_ci(tra, 'macro_auc')} against {_ci(rec, 'macro_auc')}."
    )
    neural = [r for r in m["comparison"] if r["model"] != "tfidf_logreg"]
    beat = [r["model"] for r in neural if baseline_verdict(r, head) == "beats the baseline"]
    best_neural = max(neural, key=lambda r: r["val_auc"])
    s.append(
        f"The TF-IDF baseline, tuned on validation ({base.get('settings', 'default settings')}), scored "
        f"{_ci(base, head)}; by the paired bootstrap interval of the difference on the same test reports, "
        f"{_against_baseline(best_neural, head, what)}, and "
        + (
            f"{len(beat)} of the {len(neural)} other models ({', '.join(beat)}) beat it."
            if beat
            else f"none of the {len(neural)} other models beats it."
        )
    )
    if not cfg.get("sweep", True) and usable(tra) and usable(rec) and tra.get("planned_epochs"):
        optional.append(len(s))
        s.append(
            f"This run skipped the regularisation sweep of the full profile; the recurrent model trained for "
            f"{fmt_int(rec.get('planned_epochs'))} epochs and the Transformer for {fmt_int(tra['planned_epochs'])}, "
            "each to the end."
        )
    unfit = [r for r in (tra, rec) if not usable(r)]
    if unfit:
        # The architectures' merits are not argued from a model whose training was cut or that learned nothing.
        s.append(_unfit_sentence(unfit))
    else:
        if baseline_verdict(tra, head) != "beats the baseline":
            s.append(_why_below(tra, m.get("per_label") or [], data, multilabel))
            optional.append(len(s))  # the numbers above say why; the general argument gives way to them
        s.append(_architecture_sentence(_versus(tra, rec, head), pretrained))
    optional.append(len(s))
    s.append(
        f"The reports are short ({words:.0f} words), which limits how much the recurrent model loses to long-range "
        "dependencies."
    )
    g = m.get("gradients", {})
    ratios = g.get("ratio_first_to_last_step", {})
    lb, la = (ratios.get(f"LSTM, last state, {w} training") for w in ("before", "after"))
    pa = next((v for k, v in ratios.items() if "selected" in k and k.endswith("after training")), None)
    if la is not None:
        fade = "fades" if la < 0.1 else "does not fade much"
        s.append(
            f"Along {g['steps']} time steps, the loss gradient that reaches the first hidden state of an LSTM read "
            f"from its last state is {_r(lb)} times the one at the last step before training and {_r(la)} "
            f"times after: the signal {fade} along the sequence. The selected model's mean and max pooling give every "
            f"step a direct path to the loss (ratio {_r(pa)} after training), which sidesteps the vanishing "
            "gradient."
        )
    optional.append(len(s))
    s.append(
        f"Costs differ: {fmt_int(tra['params'])} against {fmt_int(rec['params'])} parameters, "
        f"{fmt_seconds(tra['train_time_s'])} s against {fmt_seconds(rec['train_time_s'])} s of training, and "
        f"{fmt_metric(tra['infer_ms_batch1'], 1)} ms against {fmt_metric(rec['infer_ms_batch1'], 1)} ms per report "
        "at batch 1."
    )
    optional.append(len(s))
    s.append(
        f"The overfitting gap (train minus validation macro-F1) of the selected runs was "
        f"{fmt_metric(tra['gap_macro_f1'])} for the Transformer and {fmt_metric(rec['gap_macro_f1'])} for the "
        "recurrent model."
    )
    return fit_sentences(s, optional, MAX_WORDS)
