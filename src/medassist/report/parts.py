"""Parts 1-5 of the pipeline report, one function per study: each adds its tables, figures and written piece to the
:class:`~medassist.report.document.Doc` and returns its rows of the summary (result, value with interval)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from medassist.report.document import Doc, read_csv, read_json, read_yaml, table_rows
from medassist.utils.format import (
    fmt_ci,
    fmt_delta,
    fmt_metric,
    fmt_quantity,
    fmt_ratio,
    readable_header,
    readable_table,
)

# --- Part 1: text --------------------------------------------------------------------------------------------


def part_text(doc: Doc, run: Path) -> list[tuple[str, str]]:
    from medassist.report.text import _test_table, _versus_table
    from medassist.report.text_analysis import text_explanation

    m, data = read_json(run / "metrics.json"), read_json(run / "data.json")
    cfg = read_json(run / "config.json") or read_yaml(run / "config.yaml")
    task = m.get("task", "multi-label")
    comparison = pd.read_csv(run / "tables" / "comparison.csv")
    t1 = doc.table(
        _test_table(comparison, task),
        "Test metrics of each text model and the tuned TF-IDF baseline (95% bootstrap intervals).",
        "Part 1: model comparison table",
    )
    t2 = doc.table(
        _versus_table(comparison, task),
        "Each model against the tuned TF-IDF baseline: paired bootstrap interval of the difference on test.",
        "Part 1: baseline comparison",
    )
    f1 = doc.figure(
        run / "figures" / "curves_best.png",
        "Training and validation curves of the best text model.",
        "Part 1: learning curves",
    )
    rec = cfg.get("recurrent", "bilstm")
    f2 = doc.figure(
        run / "figures" / f"sweep_{rec}.png",
        f"Regularisation sweep of {rec} (dropout, weight decay, early stopping).",
        "Part 1: regularisation sweep",
    )
    f3 = doc.figure(
        run / "figures" / "gradient_norms_time.png",
        "Gradient norm with respect to the hidden state along the sequence: the vanishing-gradient analysis.",
        "Part 1: vanishing-gradient analysis",
    )
    doc.piece("text", text_explanation(m, data, cfg), [t1, t2, f1, f2, f3], "Part 1: explanation (150-250 words)")
    best = str(m.get("best_model", ""))
    row = comparison[(comparison["model"] == best) | (comparison["model"] == f"{best}_logreg")]
    head = "test_macro_f1_t" if task == "multi-label" and "test_macro_f1_t" in comparison else "test_macro_f1"
    if row.empty:
        return []
    r = row.iloc[0]
    out = [
        (
            f"Text ({data.get('name', '')}): best model {best}, test macro-F1",
            f"{fmt_metric(r[head])} {fmt_ci(r.get(head + '_lo'), r.get(head + '_hi'))}",
        )
    ]
    diff = "vs_tfidf_" + head.removeprefix("test_")
    neural = comparison[comparison["model"] != "tfidf_logreg"]
    if diff in neural and not neural.empty:  # the best other model on validation against the tuned baseline
        n = neural.loc[neural["val_auc"].idxmax()]
        out.append(
            (
                f"Text: the best other model on validation ({_marked(n)}) minus the tuned TF-IDF, test macro-F1",
                f"{fmt_delta(n[diff])} {fmt_ci(n[diff + '_lo'], n[diff + '_hi'], kind='delta')}",
            )
        )
    return out


def _marked(row: pd.Series) -> str:
    """A model's name with its epochs, and its mark when its training was cut or it learned nothing."""
    name = str(row["model"])
    epochs = row.get("planned_epochs")
    if epochs == epochs and epochs:  # present and not NaN
        name += f", {int(row.get('epochs_run', epochs))} of {int(epochs)} epochs"
    status = row.get("training")
    return f"{name}, {status}" if isinstance(status, str) and status != "complete" else name


# --- Part 2: images ------------------------------------------------------------------------------------------


def part_image(doc: Doc, run: Path) -> list[tuple[str, str]]:
    from medassist.report.analysis import image_analysis
    from medassist.report.image import _headline, _val_labels

    m, data = read_json(run / "metrics.json"), read_json(run / "data.json")
    sel = m["selected"]
    t1 = doc.table(
        "\n".join(_headline(sel["headline"])),
        f"Test metrics of the selected model, {sel['label']} (95% bootstrap intervals).",
        "Part 2: test metrics",
    )
    cap = read_csv(run / "tables" / "capacity.csv")
    t2 = ""
    if cap is not None:
        cols = [
            "model",
            "params",
            "epochs_run",
            "train_accuracy",
            "val_accuracy",
            "val_auc",
            "gap_accuracy",
            "training",
        ]
        cols = [c for c in cols if c in cap]
        t2 = doc.table(
            readable_table(cap[cols], headers=True),
            "Capacity: every model with the same recipe, epochs and batch (train metrics in eval mode at the best "
            "epoch; a model marked under-trained or at chance carries no conclusion).",
            "Part 2: capacity and bias-variance",
        )
    abl = read_csv(run / "tables" / "ablation.csv")
    t3 = ""
    if abl is not None:
        cols = [c for c in ["name", "val_accuracy", "val_auc", "gap_accuracy", "best_epoch", "training"] if c in abl]
        t3 = doc.table(
            readable_table(abl[cols], headers=True), "Regularisation ablation on validation.", "Part 2: regularisation"
        )
    tr = read_csv(run / "tables" / "transfer.csv")
    t4 = ""
    if tr is not None:
        cols = ["name", "trainable_params", "epochs_run", "val_accuracy", "val_auc", "train_time_s", "training"]
        cols = [c for c in cols if c in tr]
        t4 = doc.table(
            readable_table(tr[cols], headers=True),
            "Transfer learning (EfficientNet-Lite0): from scratch, fine-tuned, frozen.",
            "Part 2: transfer learning",
        )
    f1 = doc.figure(
        run / "figures" / "capacity_curves.png",
        "Learning curves of every model: train (solid) and validation (dashed).",
        "Part 2: learning curves",
    )
    f2 = doc.figure(
        run / "figures" / "confusion_matrix.png",
        "Confusion matrix of the selected model on test.",
        "Part 2: confusion matrix",
    )
    f3 = doc.figure(
        run / "figures" / "gradcam.png", "Grad-CAM of the predicted class over ten test images.", "Part 2: Grad-CAM"
    )
    doc.piece(
        "image",
        image_analysis(m, data, run, _val_labels(run)),
        [t1, t2, t3, t4, f1, f2, f3],
        "Part 2: analysis (200-300 words)",
    )
    out = []
    for key in ("auc", "accuracy"):
        if key in sel["headline"]:
            v = sel["headline"][key]
            out.append(
                (
                    f"Images ({data['name']}): {sel['label']}, test {readable_header(key)}",
                    f"{fmt_metric(v['value'])} {fmt_ci(v['ci_low'], v['ci_high'])}",
                )
            )
    return out


def part_segment(doc: Doc, run: Path) -> list[tuple[str, str]]:
    """The segmentation study under Part 2 (when the pipeline ran it)."""
    from medassist.report.segment import NAMES, segment_analysis

    m, data = read_json(run / "metrics.json"), read_json(run / "data.json")
    test = m["test"]["metrics"]
    rows = [
        {"metric": NAMES.get(k, k), "mean": v["mean"], "ci_low": v["ci_low"], "ci_high": v["ci_high"]}
        for k, v in test.items()
    ]
    t1 = doc.table(
        readable_table(pd.DataFrame(rows), headers=True),
        f"Segmentation of {data['name']}: test metrics per image, means with 95% bootstrap intervals over images.",
        "Part 2: segmentation",
    )
    f1 = doc.figure(
        run / "figures" / "test_overlays.png", "Test images: true outline green, predicted red.", "Part 2: segmentation"
    )
    doc.text(segment_analysis(m))
    doc.text(f"({t1}; {f1}.)")
    d = test["dice"]
    return [
        (f"Segmentation ({data['name']}): test Dice", f"{fmt_metric(d['mean'])} {fmt_ci(d['ci_low'], d['ci_high'])}")
    ]


def part_detect(doc: Doc, run: Path) -> list[tuple[str, str]]:
    """The detection study under Part 2 (when the pipeline ran it)."""
    from medassist.report.detect import detect_analysis

    m, data = read_json(run / "metrics.json"), read_json(run / "data.json")
    ap = m["test"]["ap"]
    rows = [{"metric": "mAP@0.5", **ap["map50"]}, {"metric": "mAP@[.5:.95]", **ap["map"]}] + [
        {"metric": f"AP@0.5 {c}", **v["ap50"]} for c, v in ap["per_class"].items()
    ]
    t1 = doc.table(
        readable_table(pd.DataFrame(rows), headers=True),
        f"Detection on {data['name']}: COCO AP on the test images, with 95% bootstrap intervals over images.",
        "Part 2: object detection",
    )
    f1 = doc.figure(
        run / "figures" / "test_examples.png",
        "Test images: true boxes dashed, detections above the validation-chosen threshold solid.",
        "Part 2: object detection",
    )
    doc.text(detect_analysis(m, data))
    doc.text(f"({t1}; {f1}.)")
    h = ap["map50"]
    return [
        (f"Detection ({data['name']}): test mAP@0.5", f"{fmt_metric(h['mean'])} {fmt_ci(h['ci_low'], h['ci_high'])}")
    ]


# --- Part 4: deployment --------------------------------------------------------------------------------------


def part_deploy(doc: Doc, run: Path, what: str) -> list[tuple[str, str]]:
    from medassist.deploy.variants import reference_of
    from medassist.report.deploy import deploy_analysis, marked

    m = read_json(run / "metrics.json")
    table = read_csv(run / "tables" / "benchmark.csv")
    refs = []
    if table is not None:
        cols = [
            c
            for c in [
                "variant",
                "size_mb",
                "size_ratio",
                "latency_b1_median_ms",
                "speedup_b1",
                "test_accuracy",
                "test_auc",
                "training",  # complete, under-trained (a fine-tune or student its budget cut) or not retrained
            ]
            if c in table
        ]
        refs.append(
            doc.table(
                readable_table(table[cols], headers=True),
                f"Every {what} variant: size, latency at batch 1 and test metrics, measured in one process, and "
                "whether the fine-tune or student it rests on was under-trained (its time budget cut it while "
                "validation still improved).",
                f"Part 4: {what} benchmark table",
            )
        )
    refs.append(
        doc.figure(
            run / "figures" / "size_latency.png",
            f"Size against latency of every {what} variant.",
            f"Part 4: {what} size-latency figure",
        )
    )
    if what == "image":
        doc.piece("deploy", deploy_analysis(m), refs, "Part 4: explanation (100-150 words)")
    else:
        shown = ", ".join(r for r in refs if r)
        doc.text(f"The text model's deployment ({shown}): {deploy_analysis(m)}")
    variants = {r["variant"]: r for r in m.get("variants", [])}
    chosen = variants.get(m.get("chosen", ""))
    if chosen is None:
        return []
    # Against the same model in fp32 PyTorch (a text run's variants hold two models: the recurrent one and MiniLM).
    ref_name = reference_of(chosen["variant"], list(variants))
    ref = variants.get(ref_name)
    shipped = next(
        (r for r in m.get("test_intervals", []) if r["metric"] == "accuracy" and r["what"] == chosen["variant"]), None
    )
    accuracy = (
        f"test accuracy {fmt_metric(shipped['value'])} {fmt_ci(shipped['ci95_low'], shipped['ci95_high'])}"
        if shipped
        else f"test accuracy {fmt_metric(chosen['test_accuracy'])}"
    )
    against = ""
    if ref is not None and ref is not chosen:
        against = (
            f"; {fmt_ratio(ref['size_mb'] / chosen['size_mb'])} smaller and "
            f"{fmt_ratio(ref['latency_b1_median_ms'] / chosen['latency_b1_median_ms'])} faster at batch 1 than "
            f"{ref_name} ({fmt_metric(ref['test_accuracy'])})"
        )
    return [
        (
            f"Deployment ({what}): shipped {marked(chosen['variant'], chosen)}",
            f"{fmt_quantity(chosen['size_mb'])} MB, {fmt_quantity(chosen['latency_b1_median_ms'])} ms at batch 1, "
            f"{accuracy}{against}",
        )
    ]


# --- Part 3: synthetic data ----------------------------------------------------------------------------------


def part_synth(doc: Doc, run: Path) -> list[tuple[str, str]]:
    from medassist.report.synth import holdout_split, label, measurement_rows, reflection, under_trained

    m = read_json(run / "metrics.json")
    if m.get("kind") == "records":
        return part_records(doc, run, m)
    rows = measurement_rows(m)
    # Every table names how each generator's training ended (complete, or under-trained: its budget cut it).
    fidelity = ["generator", "training", "frechet_distance", "precision", "recall", "coverage", "conditional_accuracy"]
    useful = [
        "generator",
        "training",
        "test_auc",
        "test_auc_lo",
        "test_auc_hi",
        "test_accuracy",
        "test_accuracy_lo",
        "test_accuracy_hi",
    ]
    privacy = [c for c in rows.columns if c.startswith(("dcr", "share_", "attack", "mia"))]
    t1 = doc.table(
        readable_table(table_rows(rows, fidelity), headers=True),
        "Fidelity, diversity and conditional plausibility "
        "of each generator on the domain classifier's features, beside the real-vs-real floor.",
        "Part 3: fidelity and diversity",
    )
    t2 = doc.table(
        readable_table(table_rows(rows, useful), max_columns=None, headers=True),
        "Usefulness: the same classifier "
        "trained on each generator's images (TSTR) and on real images (TRTR), tested on real test images.",
        "Part 3: TSTR against TRTR",
    )
    t3 = doc.table(
        readable_table(table_rows(rows, ["generator", "training", *privacy]), max_columns=None, headers=True)
        if privacy
        else "",
        "Privacy: distance to the closest training image and membership-inference attacks, against the "
        + (
            "validation images (never trained on) as held-out records." if holdout_split(m) == "val" else "test images."
        ),
        "Part 3: privacy",
    )
    gens = m.get("generators", {})
    figs = [
        doc.figure(
            run / "figures" / f"samples_{g}.png",
            f"Samples of the {label(g, r)} per class (synthetic).",
            f"Part 3: {g} samples",
        )
        for g, r in gens.items()
    ]
    figs.append(
        doc.figure(
            run / "figures" / "reconstructions_vae.png",
            "VAE reconstructions beside their originals.",
            "Part 3: VAE reconstructions",
        )
    )
    figs.append(
        doc.figure(
            run / "figures" / "closest_gan.png",
            f"The closest synthetic-training pairs ({label('gan', gens.get('gan', {}))}).",
            "Part 3: closest-pair gallery",
        )
    )
    doc.piece("synth", reflection(m), [t1, t2, t3, *figs], "Part 3: reflection (150-200 words)")
    out = []
    generators = m.get("generators", {})
    if generators:  # the generator chosen on validation, as the study's reflection chooses it
        best = max(generators, key=lambda g: generators[g]["tstr"]["val_auc"])
        auc = generators[best]["tstr"]["test"]["auc"]
        cut = [g for g, r in generators.items() if under_trained(r)]
        if best in cut:
            how = "under-trained: the budget was too short to decide"
        elif cut:
            how = f"best on validation, but the {' and '.join(cut)} {'was' if len(cut) == 1 else 'were'} under-trained"
        else:
            how = "chosen on validation"
        out.append(
            (
                f"Synthetic images ({m['data']['name']}): TSTR test AUC of the {best} ({how})",
                f"{fmt_metric(auc['value'])} {fmt_ci(auc['ci_low'], auc['ci_high'])}",
            )
        )
    trtr = m.get("trtr", {}).get("test", {}).get("auc")
    if trtr:
        out.append(
            (
                "Real images, same classifier (TRTR): test AUC",
                f"{fmt_metric(trtr['value'])} {fmt_ci(trtr['ci_low'], trtr['ci_high'])}",
            )
        )
    return out


def part_records(doc: Doc, run: Path, m: dict[str, Any]) -> list[tuple[str, str]]:
    from medassist.report.synth_records import records_table

    rows, kinds = records_table(m)
    cols = ["generator", "quality_score", "dcr_median", "share_below_holdout_p5", "attack_auc", "tstr_auc"]
    cols += [f"{c}_{end}" for c in ("attack_auc", "tstr_auc") for end in ("lo", "hi")]
    label = doc.table(
        readable_table(table_rows(rows, cols), kinds=kinds, max_columns=None, headers=True),
        f"Synthetic patient records ({m['data']['name']}; SDV generators): SDMetrics quality, median distance to the "
        "closest training record (DCR), share closer than the held-out records' 5th percentile, the distance "
        f"attack's AUC and TSTR AUC on predicting {m['data']['target']!r}, beside the real held-out records.",
        "Part 3: patient records",
    )
    doc.text(f"The patient-record generators are measured in {label}; their run folder shows records side by side.")
    out = []
    for name, g in m.get("generators", {}).items():
        q = g.get("quality_score") if isinstance(g, dict) else None
        if q is not None:
            out.append((f"Synthetic records ({name}): SDMetrics quality score", fmt_metric(q)))
    return out


# --- Part 5: fairness and ethics ------------------------------------------------------------------------------


ETHICS_HEADING = "## Ethics report\n\n"


def part_fairness(doc: Doc, run: Path) -> list[tuple[str, str]]:
    m = read_json(run / "metrics.json")
    src = m.get("source", {})
    refs = []
    if not m.get("demographics"):
        note = m.get("no_demographics", {})
        doc.text(
            f"**{src.get('dataset', '')}: no demographics.** The {note.get('statement', 'data carry none')}. "
            "Biases that could exist, and how to test them: "
            + "; ".join(f"{b['attribute']}: {b['how_to_test']}" for b in note.get("possible_biases", []))
            + "."
        )
        doc.deliverables.append(("Part 5: MedMNIST has no demographics", "stated in Part 5"))
        return []
    for name in m.get("audits", {}):
        slug = name.replace("*", "_x_").replace(" ", "_")
        refs.append(
            doc.figure(
                run / "figures" / f"metrics_{slug}.png",
                f"Per-group metrics by {name} with 95% intervals.",
                f"Part 5: metrics by {name}",
            )
        )
    mit = read_csv(run / "tables" / "mitigation.csv")
    if mit is not None:
        refs.append(
            doc.table(
                readable_table(mit, headers=True),
                "Before and after mitigation, fitted on validation (ThresholdOptimizer for equalized odds and for "
                "demographic parity, per-group thresholds for equal sensitivity; group-balanced retrain).",
                "Part 5: mitigation before and after",
            )
        )
    # The ethics text the fairness study wrote (medassist.fairness.ethics builds it; the report only renders it).
    ethics = (run / "ethics.md").read_text(encoding="utf-8").removeprefix(ETHICS_HEADING)
    doc.piece("ethics", ethics, refs, "Part 5: ethics report (400-600 words)")
    return []
