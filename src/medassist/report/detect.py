"""The detection study's report, written from its run folder only (metrics.json, data.json, tables, histories)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from medassist.report.html import write_report  # noqa: E402
from medassist.report.segment import size_curve  # noqa: E402
from medassist.utils.format import computed_on, fmt_ci, fmt_metric, readable_table  # noqa: E402
from medassist.utils.words import fit_sentences  # noqa: E402


def _curves(run_dir: Path, units: list[str], path: Path) -> Path:
    """Training loss, validation loss and validation mAP@0.5 per epoch of the given units."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    for n in units:
        h = pd.read_csv(run_dir / "history" / f"{n}.csv")
        (line,) = a.plot(h.epoch, h.train_loss, label=f"{n} train")
        a.plot(h.epoch, h.val_loss, ls="--", color=line.get_color(), label=f"{n} validation")
        b.plot(h.epoch, h.val_map50, label=n)
    a.set(xlabel="epoch", ylabel="loss (focal + box regression)")
    b.set(xlabel="epoch", ylabel="validation mAP@0.5")
    a.legend(fontsize="x-small")
    b.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _ci(h: dict[str, Any]) -> str:
    return f"{fmt_metric(h['mean'])} {fmt_ci(h['ci_low'], h['ci_high'])}"


def detect_analysis(m: dict[str, Any], data: dict[str, Any]) -> str:
    """The analysis paragraph (at most 300 words), every number from metrics.json and data.json."""
    units, test = m["units"], m["test"]
    ap, chosen = test["ap"], units[m["chosen"]]
    cap = sorted((u for n, u in units.items() if n.startswith("capacity-")), key=lambda u: u["width"])
    per = ap["per_class"]
    best_c = max(per, key=lambda c: per[c]["ap50"]["mean"] or 0.0)
    worst_c = min(per, key=lambda c: per[c]["ap50"]["mean"] or 0.0)
    s = [
        f"On {test['n']} test images the chosen detector ({m['model']} on {m['backbone']}, pyramid width "
        f"{chosen['width']}, {chosen['params']:,} parameters, chosen by validation mAP@0.5) reaches mAP@0.5 "
        f"{_ci(ap['map50'])} and mAP@[.5:.95] {_ci(ap['map'])}.",
        f"{best_c} is found best (AP@0.5 {_ci(per[best_c]['ap50'])}) and {worst_c} worst "
        f"(AP@0.5 {_ci(per[worst_c]['ap50'])}).",
    ]
    if len(cap) > 1:
        a, b = cap[0], cap[-1]
        diag = m["diagnosis"]
        s.append(
            f"Widening the pyramid from {a['width']} to {b['width']} channels ({a['params']:,} to {b['params']:,} "
            f"parameters) moved validation mAP@0.5 from {fmt_metric(a['val_map50'])} to {fmt_metric(b['val_map50'])}; "
            f"the rule calls the smaller detector {diag[a['name']]['label']} (train mAP@0.5 "
            f"{fmt_metric(a['train_map50'])}) and the larger {diag[b['name']]['label']} (train "
            f"{fmt_metric(b['train_map50'])})."
        )
    small = cap[0] if cap else chosen
    scratch = units.get("ablation-no_pretraining")
    if scratch:
        s.append(
            f"The same detector from scratch reaches validation mAP@0.5 {fmt_metric(scratch['val_map50'])} against "
            f"{fmt_metric(small['val_map50'])} with the ImageNet backbone, after the same training "
            f"({scratch['epochs_run']} epoch{'s' if scratch['epochs_run'] != 1 else ''})."
        )
    noaug = units.get("ablation-no_augmentation")
    if noaug:
        s.append(
            f"Without augmentation it reaches {fmt_metric(noaug['val_map50'])} (train mAP@0.5 "
            f"{fmt_metric(noaug['train_map50'])})."
        )
    size = sorted((u["n_train"], u["val_map50"]) for n, u in units.items() if n.startswith("size-"))
    if len(size) > 1:
        s.append(
            f"With {size[0][0]} training images validation mAP@0.5 is {fmt_metric(size[0][1])}, with {size[-1][0]} "
            f"it is {fmt_metric(size[-1][1])}."
        )
    fr = test["froc"]["sensitivity"]
    if fr.get("1") is not None:
        s.append(
            f"At one false positive per image the detector finds {fmt_metric(fr['1'])} of the true boxes, at 4 "
            f"{fmt_metric(fr['4'])}."
        )
    counts = test["counts"]
    s.append(
        "Per image, counts at thresholds chosen on validation are off by "
        + ", ".join(f"{_ci(counts[c]['mae'])} {c} (mean {counts[c]['mean_true']:.1f})" for c in counts)
        + "."
    )
    dropped = len(data.get("issues", {}).get("dropped", []))
    if dropped:
        s.append(f"{dropped} zero-area or inverted boxes were dropped when the data was read.")
    s.append(
        "Validation chose every detector, epoch and count threshold; the test images were read once, for the "
        "numbers above."
    )
    return fit_sentences(s, optional=[len(s) - 1, 5, 4], max_words=300)


def build_detect_report(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    data = json.loads((run_dir / "data.json").read_text())
    units, test = m["units"], m["test"]
    cap = [n for n in units if n.startswith("capacity-")]
    curves = _curves(run_dir, cap, run_dir / "figures" / "capacity_curves.png")
    size_fig = size_curve(units, run_dir / "figures" / "size_curve.png", "map50", "mAP@0.5")
    ap = test["ap"]
    headline = pd.DataFrame(
        [
            {
                "metric": "mAP@0.5",
                "value": ap["map50"]["mean"],
                "ci_low": ap["map50"]["ci_low"],
                "ci_high": ap["map50"]["ci_high"],
            },
            {
                "metric": "mAP@[.5:.95]",
                "value": ap["map"]["mean"],
                "ci_low": ap["map"]["ci_low"],
                "ci_high": ap["map"]["ci_high"],
            },
        ]
        + [
            {
                "metric": f"AP@0.5 {c}",
                "value": v["ap50"]["mean"],
                "ci_low": v["ap50"]["ci_low"],
                "ci_high": v["ap50"]["ci_high"],
            }
            for c, v in ap["per_class"].items()
        ]
    )
    froc = pd.DataFrame(
        [{"false positives per image": r, "sensitivity": v} for r, v in test["froc"]["sensitivity"].items()]
    )
    counts = pd.DataFrame(
        [
            {
                "class": c,
                "threshold": test["count_thresholds"][c],
                "mean true count": v["mean_true"],
                "mean found": v["mean_predicted"],
                "MAE": v["mae"]["mean"],
                "MAE_ci_low": v["mae"]["ci_low"],
                "MAE_ci_high": v["mae"]["ci_high"],
                "bias": v["bias"]["mean"],
            }
            for c, v in test["counts"].items()
        ]
    )
    cols = [
        "name",
        "backbone",
        "pretrained",
        "width",
        "params",
        "augment",
        "n_train",
        "best_epoch",
        "epochs_run",
        "train_map50",
        "val_map50",
        "val_map",
        "train_time",
        "same_as",
    ]
    unit_table = pd.DataFrame([{c: u.get(c) for c in cols} for u in units.values()])
    unit_table["same_as"] = unit_table["same_as"].fillna("")
    diag = pd.DataFrame([{"detector": n, **d} for n, d in m["diagnosis"].items()])
    issues = data.get("issues", {})
    boxes = ", ".join(f"{n} {c}" for c, n in data["boxes"]["train"].items())
    lines = [
        f"# Detection study: {data['name']} ({m['model']} on {m['backbone']})",
        "",
        computed_on(m),
        "",
        f"{data['sizes']['train']} training, {data['sizes']['val']} validation and {data['sizes']['test']} test "
        f"images ({', '.join(data['image_shapes'][:4])} pixels as trained); training boxes: {boxes}. Boxes clipped to "
        f"their image: {issues.get('clipped', 0)}; zero-area or inverted boxes dropped: "
        f"{len(issues.get('dropped', []))}; images without boxes: {issues.get('images_without_boxes', 0)}.",
        "",
        "## Analysis",
        "",
        detect_analysis(m, data),
        "",
        f"## Test (the detector chosen on validation; {ap['n_boot']} bootstrap resamples of {ap['n_images']} images)",
        "",
        readable_table(headline),
        "",
        "COCO AP through pycocotools (area all, up to 100 detections an image).",
        "",
        "### FROC (IoU 0.5, every class)",
        "",
        readable_table(froc),
        "",
        "![FROC](figures/froc.png)",
        "",
        "### Counts per image (score thresholds chosen on validation)",
        "",
        readable_table(counts),
        "",
        "Per image: `tables/test_counts.csv`. Dashed: true boxes; solid: detections above the threshold.",
        "",
        "![test examples](figures/test_examples.png)",
        "",
        "## Capacity, bias and variance",
        "",
        f"![curves]({curves.relative_to(run_dir)})",
        "",
        readable_table(diag),
        "",
        "## Every detector trained",
        "",
        readable_table(unit_table),
        "",
        f"![size]({size_fig.relative_to(run_dir)})",
        "",
    ]
    return "\n".join(lines)


def write_detect_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return write_report(run_dir, build_detect_report(run_dir), title=run_dir.name)
