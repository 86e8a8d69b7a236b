"""The text study's explanation, generated from the measured numbers only.

Two models are said to differ only when their 95% bootstrap intervals do not overlap.
"""

from __future__ import annotations

from typing import Any

MAX_WORDS = 250


def _f(x: Any, d: int = 3) -> str:
    return "n/a" if x is None or x != x else f"{x:.{d}f}"


def _sci(x: Any) -> str:
    return "n/a" if x is None or x != x else f"{x:.2g}"


def _ci(r: dict[str, Any], k: str) -> str:
    return f"{_f(r[f'test_{k}'])} (95% CI {_f(r[f'test_{k}_lo'])}-{_f(r[f'test_{k}_hi'])})"


def _versus(a: dict[str, Any], b: dict[str, Any], k: str) -> str:
    """'better than', 'worse than' or 'no clearly different from', by interval overlap."""
    if a[f"test_{k}_lo"] > b[f"test_{k}_hi"]:
        return "better than"
    if a[f"test_{k}_hi"] < b[f"test_{k}_lo"]:
        return "worse than"
    return "not clearly different from"


def text_explanation(m: dict[str, Any], data: dict[str, Any], cfg: dict[str, Any]) -> str:
    """A 150-250-word explanation of a text study run, every figure taken from ``metrics.json``."""
    rows = {r["model"]: r for r in m["comparison"]}
    rec, tra = rows[cfg["recurrent"]], rows[cfg["transformer"]]
    base = rows["tfidf_logreg"]
    words = data["mean_words"]["train"]
    pretrained = cfg["transformer"] == "minilm"
    s: list[str] = []
    optional: list[int] = []
    s.append(
        f"On {data['name']} ({data['sizes']['train']} training, {data['sizes']['val']} validation and "
        f"{data['sizes']['test']} test reports, {len(data['label_names'])} labels, {words:.0f} words per report on "
        f"average), the Transformer ({cfg['transformer']}) reached a test macro-F1 of {_ci(tra, 'macro_f1')} and the "
        f"recurrent model ({cfg['recurrent']}) {_ci(rec, 'macro_f1')}: the Transformer was "
        f"{_versus(tra, rec, 'macro_f1')} the recurrent model. Macro-AUC was {_ci(tra, 'macro_auc')} against "
        f"{_ci(rec, 'macro_auc')}."
    )
    best_neural = max((tra, rec), key=lambda r: r["val_auc"])
    s.append(
        f"The TF-IDF baseline scored macro-F1 {_ci(base, 'macro_f1')}; the better neural model on validation, "
        f"{best_neural['model']}, was {_versus(best_neural, base, 'macro_f1')} it."
    )
    verdict = _versus(tra, rec, "macro_f1")
    if pretrained:
        why = (
            "attention links every token to every other in one step, so a finding stated early in the report need "
            "not survive a long recurrence, and the weights were pretrained on a large English corpus, whereas the "
            "recurrent model learns its word embeddings from the training reports alone"
        )
    else:
        why = (
            "attention links every token to every other in one step; trained from scratch, it had no pretraining "
            "advantage and learned from the training reports alone, like the recurrent model"
        )
    if verdict == "better than":
        s.append(f"This fits the Transformer's advantages: {why}.")
    elif verdict == "worse than":
        s.append(
            f"The Transformer's advantages did not pay off here: {why}; with {data['sizes']['train']} training "
            "reports and the epochs it was given, that was not enough."
        )
    else:
        s.append(f"The Transformer's advantages gave no measurable edge here: {why}.")
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
            f"from its last state is {_sci(lb)} times the one at the last step before training and {_sci(la)} times "
            f"after: the signal {fade} along the sequence. The selected model's mean and max pooling give every step a "
            f"direct path to the loss (ratio {_sci(pa)} after training), which sidesteps the vanishing gradient."
        )
    optional.append(len(s))
    s.append(
        f"Costs differ: {tra['params']:,} against {rec['params']:,} parameters, {tra['train_time_s']:.0f} s against "
        f"{rec['train_time_s']:.0f} s of training, and {_f(tra['infer_ms_batch1'], 1)} ms against "
        f"{_f(rec['infer_ms_batch1'], 1)} ms per report at batch 1."
    )
    optional.append(len(s))
    s.append(
        f"The overfitting gap (train minus validation macro-F1) of the selected runs was "
        f"{_f(tra['gap_macro_f1'])} for the Transformer and {_f(rec['gap_macro_f1'])} for the recurrent model."
    )
    for i in reversed(optional):
        if sum(len(x.split()) for x in s) <= MAX_WORDS:
            break
        s[i] = ""
    return " ".join(x for x in s if x)
