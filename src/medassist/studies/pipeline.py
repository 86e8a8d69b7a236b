"""The whole assistant in one command: ``medassist all --profile quick|full``.

Runs the studies in order, each in its own folder under one parent ``runs/all-<time>/``, passing each study's run
folder to the studies that build on it (the deploy study takes the text and image runs, the fairness audit takes
the text, synthetic-data and deploy runs), then writes one report of Parts 1-5 (``report.html`` and
``report.pdf``). ``--resume`` continues a pipeline: finished studies are reused, an unfinished one is resumed where
the study supports it (else run again), and a failed study is marked failed in ``pipeline.json`` while the others
go on; the report names every part that is missing.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medassist.config import DeviceOptions, RunOptions, option, to_dict
from medassist.deploy.config import DeployConfig
from medassist.errors import MedAssistError
from medassist.run import STATUS, Run
from medassist.studies.detect_config import DetectStudyConfig
from medassist.studies.fairness import FairnessConfig
from medassist.studies.image_config import ImageStudyConfig
from medassist.studies.segment_config import SegmentStudyConfig
from medassist.studies.synth_config import SynthStudyConfig
from medassist.studies.table import by_profiles
from medassist.studies.text_setup import TextStudyConfig
from medassist.train.device import on_device
from medassist.utils.io import atomic_write_text

PIPELINE_FILE = "pipeline.json"


AUDITED = "<audit>"
"""Stands for the part whose run the fairness audit reads (``--audit``: text or fairness_text)."""


@dataclass(frozen=True)
class Part:
    """One study of the pipeline, and how it is wired to the others, as data.

    Attributes:
        name: its config section and folder.
        study: the study's profile folder under configs/ (text, image, synth, deploy, fairness).
        title: its heading in the report.
        needs: the parts that must have completed before it runs.
        feeds: (its option, the part whose run folder it is given).
        optional: (its option, a part whose run folder it is given when that part completed and built on no other
            run than this part does).
        user: (its option, the pipeline option that passes the user's own data to it when given).
        fallback: (its option, the value it takes when its section leaves it empty).
    """

    name: str
    study: str
    title: str
    needs: tuple[str, ...] = ()
    feeds: tuple[tuple[str, str], ...] = ()
    optional: tuple[tuple[str, str], ...] = ()
    user: tuple[tuple[str, str], ...] = ()
    fallback: tuple[tuple[str, str], ...] = ()

    @property
    def runner(self) -> str:
        """The study's "module:function" in the study table."""
        return by_profiles(self.study).runner


PARTS: tuple[Part, ...] = (
    Part("text", "text", "Part 1: clinical text (Open-i)", user=(("texts", "texts"),)),
    Part("image", "image", "Part 2: medical images (PneumoniaMNIST)", user=(("images", "images"),)),
    Part("segment", "segment", "Part 2: segmentation (optional: --segment.images)", fallback=(("images", "drive"),)),
    Part("detect", "detect", "Part 2: object detection (optional: --detect.data)"),
    Part("synth", "synth", "Part 3: synthetic images", user=(("images", "images"),)),
    Part("synth_records", "synth", "Part 3: synthetic patient records"),
    Part("deploy_image", "deploy", "Part 4: image deployment", ("image",), feeds=(("run", "image"),)),
    Part("deploy_text", "deploy", "Part 4: text deployment", ("text",), feeds=(("run", "text"),)),
    Part("fairness_text", "text", "Part 5: the text run audited (PadChest)"),
    Part(
        "fairness",
        "fairness",
        "Part 5: fairness and ethics",
        (AUDITED,),
        feeds=(("run", AUDITED),),
        optional=(("synth_run", "synth"), ("deploy_run", "deploy_text")),
    ),
    Part(
        "fairness_image",
        "fairness",
        "Part 5: the image run audited (what its data holds)",
        ("image",),
        feeds=(("run", "image"),),
    ),
)
PART_NAMES = tuple(p.name for p in PARTS)
PARTS_BY_NAME = {p.name: p for p in PARTS}


@dataclass
class PipelineConfig(DeviceOptions, RunOptions):
    """The whole assistant: which studies run, with which options, and where the parent folder is made."""

    parts: list[str] = option(
        ["text", "image", "synth", "synth_records", "deploy_image", "deploy_text", "fairness", "fairness_image"],
        f"studies to run, in this order: {', '.join(PART_NAMES)}",
    )
    audit: str = option(
        "text", "the text run the fairness audit reads: text (the Open-i run) or fairness_text (a PadChest run)"
    )
    images: str = option("", "your own images (a folder of class subfolders, or a CSV) for the image and synth studies")
    texts: str = option("", "your own text CSV or JSONL for the text study (see --text.text-column and friends)")
    out: str = option("runs", "folder in which the parent folder all-<time>/ is made")
    resume: str = option("", "an unfinished pipeline folder to continue (finished studies are reused)")
    stop_on_failure: bool = option(False, "stop at the first failed study instead of going on with the others")
    mlflow: bool = option(False, "log each study's config, metrics and report to MLflow, nested under the pipeline")
    mlflow_uri: str = option(
        "", "MLflow tracking URI (default: sqlite:///<out>/mlflow.db, artifacts in <out>/mlartifacts)"
    )
    pdf: bool = option(True, "also write report.pdf (WeasyPrint)")
    text: TextStudyConfig = field(default_factory=TextStudyConfig, metadata={"help": "Part 1, the text study"})
    image: ImageStudyConfig = field(default_factory=ImageStudyConfig, metadata={"help": "Part 2, the image study"})
    segment: SegmentStudyConfig = field(
        default_factory=lambda: SegmentStudyConfig(images=""),
        metadata={"help": "Part 2, segmentation: runs when --segment.images is given (drive, a folder or a CSV)"},
    )
    detect: DetectStudyConfig = field(
        default_factory=lambda: DetectStudyConfig(data=""),
        metadata={
            "help": "Part 2, object detection: runs when --detect.data (bccd) or --detect.voc/coco/yolo/boxes is given"
        },
    )
    synth: SynthStudyConfig = field(default_factory=SynthStudyConfig, metadata={"help": "Part 3, synthetic images"})
    synth_records: SynthStudyConfig = field(
        default_factory=lambda: SynthStudyConfig(data="padchest-records"),
        metadata={"help": "Part 3, synthetic patient records"},
    )
    deploy_image: DeployConfig = field(default_factory=DeployConfig, metadata={"help": "Part 4, image deployment"})
    deploy_text: DeployConfig = field(default_factory=DeployConfig, metadata={"help": "Part 4, text deployment"})
    fairness_text: TextStudyConfig = field(
        default_factory=lambda: TextStudyConfig(dataset="padchest"),
        metadata={"help": "Part 5, the PadChest text run that the full profile audits"},
    )
    fairness: FairnessConfig = field(default_factory=FairnessConfig, metadata={"help": "Part 5, the fairness audit"})
    fairness_image: FairnessConfig = field(
        default_factory=FairnessConfig, metadata={"help": "Part 5, the audit of the image run"}
    )


def expand_profiles(data: dict[str, Any]) -> dict[str, Any]:
    """Replace each section's ``profile: NAME`` by that study's shipped profile, with the section's other keys over
    it: the pipeline's profiles name the studies' profiles instead of copying them."""
    from medassist.config import load_yaml, merge, profile_path

    out = dict(data)
    for part in PARTS:
        section = out.get(part.name)
        if isinstance(section, dict) and "profile" in section:
            rest = {k: v for k, v in section.items() if k != "profile"}
            out[part.name] = merge(load_yaml(profile_path(part.study, str(section["profile"]))), rest)
    return out


def _import(path: str) -> Callable[..., Any]:
    module, name = path.split(":")
    return getattr(importlib.import_module(module), name)


class Pipeline:
    """The parent folder and its ``pipeline.json``: each part's status, run folder, wall time and error."""

    def __init__(self, root: Path, cfg: PipelineConfig) -> None:
        self.root, self.cfg = root, cfg
        self.state: dict[str, Any] = {"parts": {}}
        if (root / PIPELINE_FILE).is_file():
            self.state = json.loads((root / PIPELINE_FILE).read_text())

    def save(self) -> None:
        atomic_write_text(self.root / PIPELINE_FILE, json.dumps(self.state, indent=2) + "\n")

    def part(self, name: str) -> dict[str, Any]:
        return self.state["parts"].setdefault(name, {"status": "pending"})

    def run_dir(self, name: str) -> Path | None:
        rel = self.part(name).get("run")
        return self.root / rel if rel else None


def _unfinished(folder: Path) -> Path | None:
    """The newest run folder under ``folder`` that started and did not complete (to resume), if any."""
    runs = sorted(p for p in folder.glob("*/") if (p / STATUS).is_file())
    for p in reversed(runs):
        if json.loads((p / STATUS).read_text()).get("status") != "complete":
            return p
    return None


def _configure(part: Part, cfg: PipelineConfig, pipe: Pipeline) -> Any:
    """The study config of ``part``: its section, written under the parent folder, fed the runs it builds on."""
    sub = getattr(cfg, part.name)
    folder = pipe.root / part.name
    changes: dict[str, Any] = {"out": str(folder), "device": cfg.device, "precision": cfg.precision}
    if hasattr(sub, "progress"):
        changes["progress"] = cfg.progress
    changes |= {key: getattr(cfg, given) for key, given in part.user if getattr(cfg, given)}
    changes |= {key: str(pipe.run_dir(_part_name(src, cfg))) for key, src in part.feeds}
    for key, src in part.optional:
        complete = pipe.part(src).get("status") == "complete"
        if complete and set(_needs(PARTS_BY_NAME[src], cfg)) <= set(_needs(part, cfg)):
            changes[key] = str(pipe.run_dir(src))
    changes |= {key: value for key, value in part.fallback if not getattr(sub, key)}
    unfinished = _unfinished(folder) if folder.is_dir() else None
    if unfinished is not None and hasattr(sub, "resume"):
        changes["resume"] = str(unfinished)
    return dataclasses.replace(sub, **{k: v for k, v in changes.items() if hasattr(sub, k)})


def _detect_source(d: DetectStudyConfig) -> str:
    return d.data or d.voc or d.coco or d.yolo or d.boxes


def _part_name(name: str, cfg: PipelineConfig) -> str:
    return cfg.audit if name == AUDITED else name


def _needs(part: Part, cfg: PipelineConfig) -> tuple[str, ...]:
    return tuple(_part_name(n, cfg) for n in part.needs)


@on_device
def run_pipeline(cfg: PipelineConfig) -> Path:
    """Run every study of ``cfg.parts`` in order and write the one report; return the parent folder."""
    unknown = [p for p in cfg.parts if p not in PART_NAMES]
    if unknown:
        raise MedAssistError(f"unknown part(s) {', '.join(unknown)}; the parts are {', '.join(PART_NAMES)}")
    if cfg.audit not in ("text", "fairness_text"):
        raise MedAssistError(f"audit must be text or fairness_text (got '{cfg.audit}')")
    if cfg.resume:
        root = Path(cfg.resume)
        if not (root / PIPELINE_FILE).is_file():
            raise MedAssistError(f"cannot resume {root}: it is not a pipeline folder (no {PIPELINE_FILE})")
        Run(root).set_status("running")
    else:
        root = Run.create(cfg.out, "all", to_dict(cfg), kind="pipeline").dir
    pipe = Pipeline(root, cfg)
    parts = list(cfg.parts)
    for name, given in (("segment", cfg.segment.images), ("detect", _detect_source(cfg.detect))):
        if given and name not in parts:
            parts.append(name)  # an optional part runs when its data is named
    pipe.state.update({"profile_parts": parts, "audit": cfg.audit})
    tracker = _tracker(cfg, root)
    order = [p for p in PARTS if p.name in parts]
    t_start = time.perf_counter()
    for part in order:
        state = pipe.part(part.name)
        if state.get("status") == "complete" and pipe.run_dir(part.name) and pipe.run_dir(part.name).is_dir():
            continue
        missing = [n for n in _needs(part, cfg) if pipe.part(n).get("status") != "complete"]
        if missing:
            state.update({"status": "skipped", "error": f"needs {', '.join(missing)}, which did not complete"})
            pipe.save()
            continue
        print(f"[all] {part.title}", file=sys.stderr, flush=True)
        state.update({"status": "running", "error": ""})
        pipe.save()
        t0 = time.perf_counter()
        try:
            out = _import(part.runner)(_configure(part, cfg, pipe))
        except KeyboardInterrupt:
            state.update({"status": "interrupted"})
            pipe.save()
            raise
        except Exception as exc:  # a failed study is recorded and the others go on
            message = str(exc) if isinstance(exc, MedAssistError) else f"{type(exc).__name__}: {exc}"
            state.update({"status": "failed", "error": message, "seconds": time.perf_counter() - t0})
            (root / part.name).mkdir(parents=True, exist_ok=True)
            atomic_write_text(root / part.name / "error.txt", traceback.format_exc())
            pipe.save()
            print(f"[all] {part.name} failed: {message}", file=sys.stderr, flush=True)
            if cfg.stop_on_failure:
                break
            continue
        state.update(
            {
                "status": "complete",
                "run": str(Path(out).resolve().relative_to(root.resolve())),
                "seconds": time.perf_counter() - t0,
            }
        )
        pipe.save()
        if tracker is not None:
            tracker.log_study(part.name, Path(out))
    pipe.state["seconds"] = pipe.state.get("seconds", 0.0) + time.perf_counter() - t_start
    pipe.save()
    from medassist.report.pipeline import write_pipeline_report

    write_pipeline_report(root, pdf=cfg.pdf)
    if tracker is not None:
        tracker.finish(root)
    failed = [n for n in parts if pipe.part(n).get("status") != "complete"]
    Run(root).set_status("complete" if not failed else "incomplete", missing=failed)
    return root


def exit_status(root: Path) -> int:
    """The exit status of ``medassist all``: 1 when any part did not complete (the report is written and names
    it), else 0."""
    state = json.loads((Path(root) / PIPELINE_FILE).read_text())
    failed = {n: p.get("status") for n, p in state.get("parts", {}).items() if p.get("status") != "complete"}
    if failed:
        listed = ", ".join(f"{n} ({s})" for n, s in failed.items())
        report = Path(root) / "report.html"
        print(f"medassist all: {len(failed)} part(s) did not complete: {listed}; see {report}", file=sys.stderr)
        return 1
    return 0


def _tracker(cfg: PipelineConfig, root: Path) -> Any:
    if not cfg.mlflow:
        return None
    from medassist.tracking import MlflowTracker, default_store

    uri, artifacts = default_store(root.parent)
    if cfg.mlflow_uri:
        uri, artifacts = cfg.mlflow_uri, None
    return MlflowTracker(uri=uri, pipeline=root.name, artifacts=artifacts)
