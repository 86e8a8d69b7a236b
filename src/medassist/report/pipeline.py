"""The one report of a pipeline (``medassist all``): Parts 1-5 in one HTML file and one PDF.

It reads the parent folder's ``pipeline.json`` and each study's run folder, and nothing else. Figures and tables
are numbered in order and the text refers to them by number; the written pieces are the studies' own, generated
from their measurements; a part that did not complete is named as missing, with its error.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pandas as pd

from medassist.report.document import WORD_LIMITS, Doc, file_problem, read_json
from medassist.report.html import markdown_to_html
from medassist.report.parts import (
    part_deploy,
    part_detect,
    part_fairness,
    part_image,
    part_segment,
    part_synth,
    part_text,
)
from medassist.utils.format import computed_on, fmt_seconds, readable_table
from medassist.utils.io import atomic_path, atomic_write_text
from medassist.utils.words import count_words

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


SECTIONS: list[tuple[str, str, Callable[..., list[tuple[str, str]]], tuple[str, ...]]] = [
    ("Part 1: clinical text", "text", part_text, ()),
    ("Part 2: medical images", "image", part_image, ("segment", "detect")),
    ("Part 3: synthetic data", "synth", part_synth, ("synth_records",)),
    ("Part 4: edge deployment", "deploy_image", lambda d, r: part_deploy(d, r, "image"), ("deploy_text",)),
    ("Part 5: ethics and fairness", "fairness", part_fairness, ("fairness_image",)),
]


def _computed_on(root: Path, parts: dict[str, Any]) -> str:
    """The method line of the first complete part that recorded its device (every part runs on the pipeline's)."""
    for info in parts.values():
        metrics = root / str(info.get("run", "")) / "metrics.json"
        if info.get("status") == "complete" and metrics.is_file():
            line = computed_on(read_json(metrics))
            if line:
                return line
    return ""


def build_pipeline_report(root: str | Path) -> tuple[str, Doc]:
    """The Markdown/HTML body of the pipeline's report, and the document record (numbers, pieces, deliverables)."""
    root = Path(root)
    state = read_json(root / "pipeline.json")
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
            part = part or {"fairness_image": part_fairness, "segment": part_segment, "detect": part_detect}.get(
                name, build
            )
            saved = body.snapshot()
            try:
                summary += part(body, run)
            except (OSError, KeyError, IndexError, TypeError, ValueError) as err:  # a run folder changed or damaged
                body.restore(saved)
                missing.append(name)
                body.text(
                    f"**Missing: the {name.replace('_', ' ')} study completed, but its run folder "
                    f"`{info['run']}` cannot be read** ({file_problem(err, run)}). This part of the report is "
                    "absent; run the study again (delete its folder and `medassist all --resume`)."
                )
    doc.lines += [
        "# medassist: an intelligent healthcare assistant, built and measured",
        "",
        f"Pipeline folder `{root.name}`; {len(parts)} studies, "
        f"{sum(1 for p in parts.values() if p.get('status') == 'complete')} complete, wall time "
        f"{fmt_seconds(state.get('seconds', 0.0))} s on this machine. Every number comes from the run folders; every "
        "choice was made on validation splits, and test splits were only evaluated. Intervals are 95% bootstrap "
        "intervals. " + _computed_on(root, parts),
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
