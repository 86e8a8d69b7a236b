"""The one report of a pipeline (``medassist all``): Parts 1-5 in one HTML file and one PDF.

It reads the parent folder's ``pipeline.json`` and each study's run folder, and nothing else. Figures and tables
are numbered in order and the text refers to them by number; the written pieces are the studies' own, generated
from their measurements; a part that did not complete is named as missing, with its error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medassist.report.format import (
    fmt_ci,
    fmt_delta,
    fmt_metric,
    fmt_quantity,
    fmt_ratio,
    fmt_seconds,
    readable_header,
    readable_table,
)
from medassist.report.html import markdown_to_html
from medassist.report.words import count_words
from medassist.utils.io import atomic_path, atomic_write_text

# The written pieces the brief asks for, with their lengths in words.
WORD_LIMITS = {
    "text": (150, 250),
    "image": (200, 300),
    "synth": (150, 200),
    "deploy": (100, 150),
    "ethics": (400, 600),
}

REFERENCES = [
    "Demner-Fushman D. et al. Preparing a collection of radiology examinations for distribution and retrieval. "
    "JAMIA 23(2), 2016 (Open-i, Indiana University chest X-ray reports).",
    "Bustos A. et al. PadChest: a large chest x-ray image dataset with multi-label annotated reports. Medical "
    "Image Analysis 66, 2020.",
    "Yang J. et al. MedMNIST v2: a large-scale lightweight benchmark for 2D and 3D biomedical image "
    "classification. Scientific Data 10, 2023 (PneumoniaMNIST, BreastMNIST; the published baselines).",
    "Kermany D. et al. Identifying medical diagnoses and treatable diseases by image-based deep learning. Cell "
    "172(5), 2018 (the pediatric chest X-rays behind PneumoniaMNIST).",
    "Wang W. et al. MiniLM: deep self-attention distillation for task-agnostic compression of pre-trained "
    "Transformers. NeurIPS 2020 (all-MiniLM-L6-v2).",
    "Tan M., Le Q. EfficientNet: rethinking model scaling for convolutional neural networks. ICML 2019 "
    "(EfficientNet-Lite0).",
    "Selvaraju R. et al. Grad-CAM: visual explanations from deep networks via gradient-based localization. ICCV 2017.",
    "Kingma D., Welling M. Auto-encoding variational Bayes. ICLR 2014; Miyato T. et al. Spectral normalization "
    "for generative adversarial networks. ICLR 2018; Ho J. et al. Denoising diffusion probabilistic models. "
    "NeurIPS 2020; Song J. et al. Denoising diffusion implicit models. ICLR 2021.",
    "Abadi M. et al. Deep learning with differential privacy. CCS 2016 (DP-SGD; Opacus).",
    "Hardt M. et al. Equality of opportunity in supervised learning. NeurIPS 2016 (ThresholdOptimizer, fairlearn).",
    "Guo C. et al. On calibration of modern neural networks. ICML 2017 (temperature scaling).",
    "Mitchell M. et al. Model cards for model reporting. FAT* 2019; Gebru T. et al. Datasheets for datasets. "
    "CACM 64(12), 2021.",
]


@dataclass
class Doc:
    """The report being written: numbers figures and tables in order, and remembers what each answers."""

    root: Path
    lines: list[str] = field(default_factory=list)
    n_figures: int = 0
    n_tables: int = 0
    deliverables: list[tuple[str, str]] = field(default_factory=list)  # (deliverable, "Figure 3")
    pieces: dict[str, str] = field(default_factory=dict)

    def snapshot(self) -> tuple[int, int, int, int, dict[str, str]]:
        return len(self.lines), self.n_figures, self.n_tables, len(self.deliverables), dict(self.pieces)

    def restore(self, saved: tuple[int, int, int, int, dict[str, str]]) -> None:
        """Undo what was added since :meth:`snapshot` (a part that failed half-way leaves nothing behind)."""
        n_lines, self.n_figures, self.n_tables, n_deliverables, self.pieces = saved
        del self.lines[n_lines:], self.deliverables[n_deliverables:]

    def figure(self, path: Path, caption: str, deliverable: str = "") -> str:
        """Add a figure (if its file exists); return its label, e.g. "Figure 3" (empty if absent)."""
        if not path.is_file():
            return ""
        self.n_figures += 1
        label = f"Figure {self.n_figures}"
        rel = path.resolve().relative_to(self.root.resolve()).as_posix()
        self.lines += [
            f'<figure><img src="{rel}" alt="{label}"><figcaption>{label}. {caption}</figcaption></figure>',
            "",
        ]
        if deliverable:
            self.deliverables.append((deliverable, label))
        return label

    def table(self, markdown: str, caption: str, deliverable: str = "") -> str:
        """Add a table (Markdown) with its caption above; return its label, e.g. "Table 2"."""
        if not markdown.strip():
            return ""
        self.n_tables += 1
        label = f"Table {self.n_tables}"
        self.lines += [f'<p class="caption">{label}. {caption}</p>', "", markdown.strip(), ""]
        if deliverable:
            self.deliverables.append((deliverable, label))
        return label

    def text(self, *paragraphs: str) -> None:
        for p in paragraphs:
            if p:
                self.lines += [p, ""]

    def piece(self, key: str, text: str, refs: list[str], deliverable: str) -> None:
        """A written piece the brief asks for, its length stated, followed by the figures and tables it rests on."""
        self.pieces[key] = text
        low, high = WORD_LIMITS[key]
        shown = [r for r in refs if r]
        self.text(
            text,
            f"*({count_words(text)} words; brief: {low}-{high}." + (f" See {', '.join(shown)}.)*" if shown else ")*"),
        )
        self.deliverables.append((deliverable, f"the written piece of {key} ({count_words(text)} words)"))


def _file_problem(err: Exception, run: Path) -> str:
    """What is wrong with a run folder, without a traceback: the missing file, or the error's type and key."""
    if isinstance(err, FileNotFoundError) and err.filename:
        try:
            return f"{Path(err.filename).relative_to(run)} is missing"
        except ValueError:
            return f"{err.filename} is missing"
    if isinstance(err, KeyError):
        return f"a file lacks the entry {err.args[0]!r}"
    return f"{type(err).__name__}: {str(err)[:200]}"


def _json(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text()) if path.is_file() else {}


def _csv(path: Path) -> pd.DataFrame | None:
    return pd.read_csv(path) if path.is_file() else None


# --- Part 1: text --------------------------------------------------------------------------------------------


def part_text(doc: Doc, run: Path) -> list[tuple[str, str]]:
    from medassist.report.text import _test_table, _versus_table
    from medassist.report.text_analysis import text_explanation

    m, data = _json(run / "metrics.json"), _json(run / "data.json")
    cfg = _json(run / "config.json") or _yaml(run / "config.yaml")
    task = m.get("task", "multi-label")
    comparison = pd.read_csv(run / "tables" / "comparison.csv")
    t1 = doc.table(
        _test_table(comparison, task),
        "Test metrics of each text model and the tuned TF-IDF baseline (95% bootstrap intervals).",
        "Part 1: model comparison table",
    )
    t2 = doc.table(
        _versus_table(comparison, task),
        "Each neural model against the tuned TF-IDF baseline: paired bootstrap interval of the difference on test.",
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
    if diff in neural and not neural.empty:  # the best neural model on validation against the tuned baseline
        n = neural.loc[neural["val_auc"].idxmax()]
        out.append(
            (
                f"Text: the best neural model on validation ({n['model']}) minus the tuned TF-IDF, test macro-F1",
                f"{fmt_delta(n[diff])} {fmt_ci(n[diff + '_lo'], n[diff + '_hi'], kind='delta')}",
            )
        )
    return out


def _yaml(path: Path) -> dict[str, Any]:
    import yaml

    return yaml.safe_load(path.read_text()) if path.is_file() else {}


# --- Part 2: images ------------------------------------------------------------------------------------------


def part_image(doc: Doc, run: Path) -> list[tuple[str, str]]:
    from medassist.report.analysis import image_analysis
    from medassist.report.image import _headline, _val_labels

    m, data = _json(run / "metrics.json"), _json(run / "data.json")
    sel = m["selected"]
    t1 = doc.table(
        "\n".join(_headline(sel["headline"])),
        f"Test metrics of the selected model, {sel['label']} (95% bootstrap intervals).",
        "Part 2: test metrics",
    )
    cap = _csv(run / "tables" / "capacity.csv")
    t2 = ""
    if cap is not None:
        cols = [c for c in ["model", "params", "train_accuracy", "val_accuracy", "val_auc", "gap_accuracy"] if c in cap]
        t2 = doc.table(
            readable_table(cap[cols], headers=True),
            "Capacity: every model with the same recipe (train metrics in eval mode at the best epoch).",
            "Part 2: capacity and bias-variance",
        )
    abl = _csv(run / "tables" / "ablation.csv")
    t3 = ""
    if abl is not None:
        cols = [c for c in ["name", "val_accuracy", "val_auc", "gap_accuracy", "best_epoch"] if c in abl]
        t3 = doc.table(
            readable_table(abl[cols], headers=True), "Regularisation ablation on validation.", "Part 2: regularisation"
        )
    tr = _csv(run / "tables" / "transfer.csv")
    t4 = ""
    if tr is not None:
        cols = [c for c in ["name", "trainable_params", "val_accuracy", "val_auc", "train_time_s"] if c in tr]
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


# --- Part 4: deployment --------------------------------------------------------------------------------------


def part_deploy(doc: Doc, run: Path, what: str) -> list[tuple[str, str]]:
    from medassist.report.deploy import deploy_analysis

    m = _json(run / "metrics.json")
    table = _csv(run / "tables" / "benchmark.csv")
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
            ]
            if c in table
        ]
        refs.append(
            doc.table(
                readable_table(table[cols], headers=True),
                f"Every {what} variant: size, latency at batch 1 and test metrics, measured in one process.",
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
    first = chosen["variant"].split(" ")[0]
    ref_name = f"{first} fp32 (PyTorch)" if f"{first} fp32 (PyTorch)" in variants else "fp32 (PyTorch)"
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
            f"Deployment ({what}): shipped {chosen['variant']}",
            f"{fmt_quantity(chosen['size_mb'])} MB, {fmt_quantity(chosen['latency_b1_median_ms'])} ms at batch 1, "
            f"{accuracy}{against}",
        )
    ]


# --- Part 3: synthetic data ----------------------------------------------------------------------------------


def _table_rows(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    return df[[c for c in cols if c in df.columns]]


def part_synth(doc: Doc, run: Path) -> list[tuple[str, str]]:
    from medassist.report.synth import measurement_rows, reflection

    m = _json(run / "metrics.json")
    if m.get("kind") == "records":
        return part_records(doc, run, m)
    rows = measurement_rows(m)
    fidelity = ["generator", "frechet_distance", "precision", "recall", "coverage", "conditional_accuracy"]
    useful = [
        "generator",
        "test_auc",
        "test_auc_lo",
        "test_auc_hi",
        "test_accuracy",
        "test_accuracy_lo",
        "test_accuracy_hi",
    ]
    privacy = [c for c in rows.columns if c.startswith(("dcr", "share_", "attack", "mia"))]
    t1 = doc.table(
        readable_table(_table_rows(rows, fidelity), headers=True),
        "Fidelity, diversity and conditional plausibility "
        "of each generator on the domain classifier's features, beside the real-vs-real floor.",
        "Part 3: fidelity and diversity",
    )
    t2 = doc.table(
        readable_table(_table_rows(rows, useful), max_columns=None, headers=True),
        "Usefulness: the same classifier "
        "trained on each generator's images (TSTR) and on real images (TRTR), tested on real test images.",
        "Part 3: TSTR against TRTR",
    )
    t3 = doc.table(
        readable_table(_table_rows(rows, ["generator", *privacy]), max_columns=None, headers=True) if privacy else "",
        "Privacy: distance to the closest training image and membership-inference attacks.",
        "Part 3: privacy",
    )
    gens = list(m.get("generators", {}))
    figs = [
        doc.figure(
            run / "figures" / f"samples_{g}.png", f"Samples of the {g} per class (synthetic).", f"Part 3: {g} samples"
        )
        for g in gens
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
            "The closest synthetic-training pairs (GAN).",
            "Part 3: closest-pair gallery",
        )
    )
    doc.piece("synth", reflection(m), [t1, t2, t3, *figs], "Part 3: reflection (150-200 words)")
    out = []
    generators = m.get("generators", {})
    if generators:  # the generator chosen on validation, as the study's reflection chooses it
        best = max(generators, key=lambda g: generators[g]["tstr"]["val_auc"])
        auc = generators[best]["tstr"]["test"]["auc"]
        out.append(
            (
                f"Synthetic images ({m['data']['name']}): TSTR test AUC of the {best} (chosen on validation)",
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
        readable_table(_table_rows(rows, cols), kinds=kinds, max_columns=None, headers=True),
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


def part_fairness(doc: Doc, run: Path) -> list[tuple[str, str]]:
    from medassist.fairness.ethics import ethics_text

    m = _json(run / "metrics.json")
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
    mit = _csv(run / "tables" / "mitigation.csv")
    if mit is not None:
        refs.append(
            doc.table(
                readable_table(mit, headers=True),
                "Before and after mitigation (ThresholdOptimizer fitted on validation; group-balanced retrain).",
                "Part 5: mitigation before and after",
            )
        )
    doc.piece("ethics", ethics_text(m), refs, "Part 5: ethics report (400-600 words)")
    return []


SECTIONS: list[tuple[str, str, Callable[..., list[tuple[str, str]]], tuple[str, ...]]] = [
    ("Part 1: clinical text", "text", part_text, ()),
    ("Part 2: medical images", "image", part_image, ()),
    ("Part 3: synthetic data", "synth", part_synth, ("synth_records",)),
    ("Part 4: edge deployment", "deploy_image", lambda d, r: part_deploy(d, r, "image"), ("deploy_text",)),
    ("Part 5: ethics and fairness", "fairness", part_fairness, ("fairness_image",)),
]


def build_pipeline_report(root: str | Path) -> tuple[str, Doc]:
    """The Markdown/HTML body of the pipeline's report, and the document record (numbers, pieces, deliverables)."""
    root = Path(root)
    state = _json(root / "pipeline.json")
    parts = state.get("parts", {})
    doc = Doc(root)
    summary: list[tuple[str, str]] = []
    missing: list[str] = []
    body = Doc(root)
    for title, key, build, extra in SECTIONS:
        body.lines += [f"## {title}", ""]
        for name in (key, *extra):
            info = parts.get(name)
            if info is None:
                continue
            if info.get("status") != "complete":
                missing.append(name)
                body.text(
                    f"**Missing: the {name.replace('_', ' ')} study did not complete** (status "
                    f"{info.get('status')}{': ' + info['error'] if info.get('error') else ''}). This part of "
                    "the report is absent; `medassist all --resume` runs it again."
                )
                continue
            run = root / info["run"]
            part = {"deploy_text": lambda d, r: part_deploy(d, r, "text"), "synth_records": part_synth}.get(name)
            part = part or {"fairness_image": part_fairness}.get(name, build)
            saved = body.snapshot()
            try:
                summary += part(body, run)
            except (OSError, KeyError, IndexError, TypeError, ValueError) as err:  # a run folder changed or damaged
                body.restore(saved)
                missing.append(name)
                body.text(
                    f"**Missing: the {name.replace('_', ' ')} study completed, but its run folder "
                    f"`{info['run']}` cannot be read** ({_file_problem(err, run)}). This part of the report is "
                    "absent; run the study again (delete its folder and `medassist all --resume`)."
                )
    doc.lines += [
        "# medassist: an intelligent healthcare assistant, built and measured",
        "",
        f"Pipeline folder `{root.name}`; {len(parts)} studies, "
        f"{sum(1 for p in parts.values() if p.get('status') == 'complete')} complete, wall time "
        f"{fmt_seconds(state.get('seconds', 0.0))} s on this machine. Every number comes from the run folders; every "
        "choice was made on validation splits, and test splits were only evaluated. Intervals are 95% bootstrap "
        "intervals.",
        "",
        "## Summary of the headline results",
        "",
    ]
    if summary:
        doc.lines += [readable_table(pd.DataFrame(summary, columns=["result", "value [95% CI]"]), max_columns=None), ""]
    if missing:
        doc.lines += [f"Missing parts: {', '.join(missing)} (see their sections).", ""]
    # The body's numbering continues after the summary (which has no numbered items).
    doc.lines += body.lines
    doc.n_figures, doc.n_tables = body.n_figures, body.n_tables
    doc.deliverables, doc.pieces = body.deliverables, body.pieces
    doc.lines += ["## References", ""] + [f"{i}. {r}" for i, r in enumerate(REFERENCES, 1)] + [""]
    doc.lines += ["## Appendix: where each deliverable is answered", ""]
    if doc.deliverables:
        doc.lines += [
            readable_table(pd.DataFrame(doc.deliverables, columns=["deliverable", "answered by"]), max_columns=None),
            "",
        ]
    return "\n".join(doc.lines), doc


PRINT_CSS = """
@page{size:A4;margin:14mm 13mm 16mm 13mm;@bottom-center{content:counter(page) " / " counter(pages);font-size:8pt}}
body{font-size:9pt;line-height:1.35;max-width:none;margin:0}
h1{font-size:15pt;margin:0 0 4pt}h2{font-size:12pt;margin:10pt 0 4pt;break-after:avoid}
figure{margin:4pt 0;break-inside:avoid;text-align:center}figure img{max-height:62mm;max-width:100%}
figcaption,.caption{font-size:8pt;color:#444;margin:2pt 0}.caption{break-after:avoid}
table{font-size:7.5pt;display:table;margin:2pt 0 6pt;break-inside:avoid}th,td{padding:1px 4px}
"""


def write_pipeline_report(root: str | Path, *, pdf: bool = True) -> Path:
    """Write report.md, report.html and (with ``pdf``) report.pdf of a pipeline folder; return the HTML path.

    The PDF's page count goes into ``report.json`` with the word count of each written piece."""
    root = Path(root)
    md, doc = build_pipeline_report(root)
    atomic_write_text(root / "report.md", md)
    html = markdown_to_html(md, base_dir=root, title="medassist: the whole assistant")
    atomic_write_text(root / "report.html", html)
    info: dict[str, Any] = {
        "figures": doc.n_figures,
        "tables": doc.n_tables,
        "words": {k: count_words(v) for k, v in doc.pieces.items()},
        "limits": WORD_LIMITS,
    }
    if pdf:
        from weasyprint import CSS, HTML

        document = HTML(string=html, base_url=str(root)).render(stylesheets=[CSS(string=PRINT_CSS)])
        with atomic_path(root / "report.pdf") as tmp:
            document.write_pdf(tmp)
        info["pages"] = len(document.pages)
    atomic_write_text(root / "report.json", json.dumps(info, indent=2) + "\n")
    return root / "report.html"
