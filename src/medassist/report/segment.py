"""The segmentation study's report, written from its run folder only (metrics.json, tables, histories, figures)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from medassist.report.html import write_report  # noqa: E402
from medassist.utils.format import computed_on, fmt_ci, fmt_metric, readable_table  # noqa: E402
from medassist.utils.words import fit_sentences  # noqa: E402

NAMES = {
    "dice": "Dice",
    "iou": "IoU",
    "sensitivity": "sensitivity",
    "specificity": "specificity",
    "hd95": "HD95 (pixels)",
    "area_error": "area error (relative)",
}


def _curves(run_dir: Path, units: list[str], path: Path) -> Path:
    """Training loss and validation Dice per epoch of the given units."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.5), layout="constrained")
    for n in units:
        h = pd.read_csv(run_dir / "history" / f"{n}.csv")
        a.plot(h.epoch, h.train_loss, label=n)
        b.plot(h.epoch, h.val_dice, label=n)
    a.set(xlabel="epoch", ylabel="training loss (Dice + CE)")
    b.set(xlabel="epoch", ylabel="validation Dice")
    b.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def size_curve(units: dict[str, Any], path: Path, metric: str = "dice", name: str = "Dice") -> Path:
    """Training and validation ``metric`` of the size-curve units against their training images."""
    rows = sorted(
        (u["n_train"], u[f"train_{metric}"], u[f"val_{metric}"]) for n, u in units.items() if n.startswith("size-")
    )
    fig, ax = plt.subplots(figsize=(4.5, 3.5), layout="constrained")
    ax.plot([r[0] for r in rows], [r[1] for r in rows], "o-", label=f"train {name}")
    ax.plot([r[0] for r in rows], [r[2] for r in rows], "o-", label=f"validation {name}")
    ax.set(xlabel="training images", ylabel=name)
    ax.legend(fontsize="small")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def _metric(summary: dict[str, Any], key: str) -> str:
    m = summary["metrics"][key]
    return f"{fmt_metric(m['mean'])} {fmt_ci(m['ci_low'], m['ci_high'])}"


def segment_analysis(m: dict[str, Any]) -> str:
    """The analysis paragraph (at most 300 words), every number from metrics.json."""
    units, test = m["units"], m["test"]
    cap = {n: u for n, u in units.items() if n.startswith("capacity-")}
    chosen = units[m["chosen"]]
    diag = m["diagnosis"]
    widths = sorted(cap.values(), key=lambda u: u["width"])
    s = [
        f"On {test['n']} test images the chosen network ({m['model']} at width {chosen['width']}, "
        f"{chosen['params']:,} parameters, chosen by validation Dice) reaches Dice {_metric(test, 'dice')} and "
        f"IoU {_metric(test, 'iou')}, with sensitivity {_metric(test, 'sensitivity')} and specificity "
        f"{_metric(test, 'specificity')}.",
    ]
    auc = test.get("pixel_auc") or {}
    if auc.get("auc") is not None:
        s.append(f"Its pixel AUC is {fmt_metric(auc['auc'])} {fmt_ci(auc['ci_low'], auc['ci_high'])}.")
    sg = test.get("second_grader")
    if sg:
        d = sg["dice"]
        s.append(
            f"A second human grader scored against the first reaches Dice {fmt_metric(d['mean'])} "
            f"{fmt_ci(d['ci_low'], d['ci_high'])} on {sg['n']} images: the human reference for these masks."
        )
    if len(widths) > 1:
        a, b = widths[0], widths[-1]
        s.append(
            f"Doubling the width from {a['width']} to {b['width']} ({a['params']:,} to {b['params']:,} parameters) "
            f"moved validation Dice from {fmt_metric(a['val_dice'])} to {fmt_metric(b['val_dice'])}; the rule calls "
            f"the smaller network {diag[a['name']]['label']} (train Dice {fmt_metric(a['train_dice'])}) and the "
            f"larger {diag[b['name']]['label']} (train Dice {fmt_metric(b['train_dice'])})."
        )
    abl = {n[len("ablation-") :]: u for n, u in units.items() if n.startswith("ablation-")}
    if "none" in abl and len(abl) > 1:
        best = max(abl, key=lambda k: abl[k]["val_dice"])
        s.append(
            f"Without augmentation or regularisation the small network reaches validation Dice "
            f"{fmt_metric(abl['none']['val_dice'])}; the best ablation row is '{best}' at "
            f"{fmt_metric(abl[best]['val_dice'])}."
        )
    size = sorted((u["n_train"], u["val_dice"]) for n, u in units.items() if n.startswith("size-"))
    if len(size) > 1:
        s.append(
            f"With {size[0][0]} training images validation Dice is {fmt_metric(size[0][1])}, with {size[-1][0]} it is "
            f"{fmt_metric(size[-1][1])}."
        )
    hd = test["metrics"]["hd95"]
    s.append(
        f"The 95th-percentile boundary distance is {fmt_metric(hd['mean'], 1)} pixels "
        f"{fmt_ci(hd['ci_low'], hd['ci_high'], 1)}, and the predicted area differs from the true one by "
        f"{fmt_metric(test['metrics']['area_error']['mean'])} of it on average."
    )
    s.append(
        "Validation chose every network and epoch; the test images were read once, for the numbers above. "
        "Thin structures dominate the errors: see the outlines below."
    )
    return fit_sentences(s, optional=[len(s) - 1, 4, 5], max_words=300)


def build_segment_report(run_dir: str | Path) -> str:
    run_dir = Path(run_dir)
    m = json.loads((run_dir / "metrics.json").read_text())
    data = json.loads((run_dir / "data.json").read_text())
    units, test = m["units"], m["test"]
    cap = [n for n in units if n.startswith("capacity-")]
    curves = _curves(run_dir, cap, run_dir / "figures" / "capacity_curves.png")
    size_fig = size_curve(units, run_dir / "figures" / "size_curve.png")
    metric_rows = [
        {
            "metric": NAMES[k],
            "mean": test["metrics"][k]["mean"],
            "ci_low": test["metrics"][k]["ci_low"],
            "ci_high": test["metrics"][k]["ci_high"],
            "images": test["metrics"][k]["n"],
        }
        for k in test["metric_names"]
    ]
    if test["pixel_auc"]["auc"] is not None:
        a = test["pixel_auc"]
        metric_rows.append(
            {
                "metric": "pixel AUC",
                "mean": a["auc"],
                "ci_low": a["ci_low"],
                "ci_high": a["ci_high"],
                "images": test["n"],
            }
        )
    unit_cols = [
        "name",
        "width",
        "params",
        "augment",
        "weight_decay",
        "dropout",
        "n_train",
        "best_epoch",
        "epochs_run",
        "train_dice",
        "val_dice",
        "train_time",
        "same_as",
    ]
    unit_table = pd.DataFrame([{c: u.get(c) for c in unit_cols} for u in units.values()])
    unit_table["same_as"] = unit_table["same_as"].fillna("")  # a row with the settings of an earlier one reuses it
    diag = pd.DataFrame([{"network": n, **d} for n, d in m["diagnosis"].items()])
    analysis = segment_analysis(m)
    lines = [
        f"# Segmentation study: {data['name']} ({m['model']})",
        "",
        computed_on(m),
        "",
        f"{data['sizes']['train']} training, {data['sizes']['val']} validation and {data['sizes']['test']} test images "
        f"of {data['image_shape'][0]}x{data['image_shape'][1]} pixels, {data['num_classes']} classes (background "
        f"included); foreground {fmt_metric(data['foreground_share']['train'])} of training pixels"
        + ("; metrics inside each image's field of view." if data["fov"] else ".")
        + (
            f" Masks read as binary at value >= {data['source']['mask_threshold']:g} (--mask-threshold): the "
            f"threshold decided {data['source']['thresholded_pixels']:,} pixels whose value was neither 0 nor 255."
            if "mask_threshold" in data.get("source", {})
            else ""
        ),
        "",
        "## Analysis",
        "",
        analysis,
        "",
        "## Test (the network chosen on validation)",
        "",
        readable_table(pd.DataFrame(metric_rows)),
        "",
        "Per image: `tables/test_per_image.csv`.",
        "",
    ]
    sg = test.get("second_grader")
    if sg:
        lines += [
            f"Second grader against the first on {sg['n']} test images (the human reference): Dice "
            f"{fmt_metric(sg['dice']['mean'])} {fmt_ci(sg['dice']['ci_low'], sg['dice']['ci_high'])}, sensitivity "
            f"{fmt_metric(sg['sensitivity']['mean'])}, specificity {fmt_metric(sg['specificity']['mean'])}.",
            "",
        ]
    lines += [
        "![test overlays](figures/test_overlays.png)",
        "",
        "## Capacity, bias and variance",
        "",
        f"![curves]({curves.relative_to(run_dir)})",
        "",
        readable_table(diag),
        "",
        "## Every network trained",
        "",
        readable_table(unit_table),
        "",
        f"![size]({size_fig.relative_to(run_dir)})",
        "",
    ]
    return "\n".join(lines)


def write_segment_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    return write_report(run_dir, build_segment_report(run_dir), title=run_dir.name)
