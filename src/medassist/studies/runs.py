"""A finished run folder, read one way by every study that builds on another (deploy, fairness, the report
command): its kind (recorded in status.json when the run started), its resolved config as the study's own dataclass,
its metrics, its selected model and its saved predictions.

    run = open_run("runs/text-openi-20261205-101500", kinds=("text", "image"), expect="deploy takes ...")
    run.kind, run.config.max_len, run.selected_model, run.predictions("test")
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from medassist.config import from_dict, load_yaml
from medassist.errors import MedAssistError
from medassist.run import STATUS, run_kind

KIND_WORDS = {"deploy": "deployment", "synth": "synthetic-data", "synth_records": "synthetic-records"}
"""How a run kind reads in a sentence, where its name alone would not."""


@dataclass
class RunFolder:
    """A study's run folder, as its study wrote it.

    Attributes:
        dir: the folder.
        kind: the study that wrote it (image, text, segment, tabular, synth, synth_records, deploy, fairness, tune).
        status: "complete", "running" or "failed".
        metrics: its metrics.json ({} while it has none).
    """

    dir: Path
    kind: str
    status: str
    metrics: dict[str, Any] = field(default_factory=dict)

    @property
    def config_dict(self) -> dict[str, Any]:
        """The resolved options the run was started with (config.yaml)."""
        return load_yaml(self.dir / "config.yaml")

    @property
    def config(self) -> Any:
        """The resolved options as the dataclass of the study that wrote the run (from the study table)."""
        from medassist.studies.table import config_class

        return from_dict(config_class(self.kind), self.config_dict)

    def data(self, cfg: Any = None) -> Any:
        """The data the run was trained on, loaded again by its study's own loader from ``cfg`` (default: the run's
        config; give one to change options first, e.g. ``data_dir`` or ``progress``)."""
        from medassist.studies.table import load, study_of

        study = study_of(self.kind)
        if not study.data:
            raise MedAssistError(f"{self.dir}: a {self.kind} run has no data to load again")
        return load(study.data)(self.config if cfg is None else cfg)

    @property
    def selected_model(self) -> str:
        """The model the study selected on validation: a text run's compared model (a trained run, "tfidf",
        "ensemble", ...), an image run's unit, a tabular run's model ('' for kinds that select none)."""
        if self.kind == "image":
            meta = self.dir / "models" / "model.json"
            return str(json.loads(meta.read_text()).get("unit", "")) if meta.is_file() else ""
        return str(self.metrics.get("best_model") or self.metrics.get("selected", {}).get("model", ""))

    @property
    def has_predictions(self) -> bool:
        from medassist.studies.predictions import INFO

        return (self.dir / INFO).is_file()

    @property
    def prediction_info(self) -> dict[str, Any]:
        """What the saved predictions are (task, labels, thresholds, metadata columns)."""
        from medassist.studies.predictions import INFO

        return json.loads((self.dir / INFO).read_text())

    def predictions(self, split: str) -> pd.DataFrame:
        """The selected model's saved probabilities of ``split`` ("val" or "test") with the cases' metadata."""
        from medassist.studies.predictions import read_predictions

        return read_predictions(self.dir, split)


def open_run(path: str | Path, *, kinds: tuple[str, ...] = (), expect: str = "", complete: bool = True) -> RunFolder:
    """The run folder ``path``, checked: it exists, is a run folder, is complete (unless ``complete`` is False) and,
    when ``kinds`` are given, is of one of them.

    Args:
        path: the run folder.
        kinds: the kinds accepted (any when empty).
        expect: what the reader takes, ending the errors ("deploy takes an image or a text study run ...").
        complete: refuse a run that is still running or failed.

    Raises:
        MedAssistError: naming the folder and what to give instead.
    """
    run_dir = Path(path)
    expect = expect or f"give a finished {' or '.join(kinds) or 'study'} run"
    if not run_dir.is_dir():
        raise MedAssistError(f"run folder not found: {run_dir}; {expect}")
    if not (run_dir / STATUS).is_file():
        raise MedAssistError(f"{run_dir} is not a run folder (no {STATUS}); {expect}")
    status = str(json.loads((run_dir / STATUS).read_text()).get("status") or "unfinished")
    if complete and status != "complete":
        raise MedAssistError(f"{run_dir} is {status}, not complete; finish it first (e.g. with --resume {run_dir})")
    kind = run_kind(run_dir)
    if kinds and kind not in kinds:
        raise MedAssistError(f"{run_dir} is a {KIND_WORDS.get(kind, kind) or 'run of unknown kind'} run; {expect}")
    metrics_file = run_dir / "metrics.json"
    metrics = json.loads(metrics_file.read_text()) if metrics_file.is_file() else {}
    return RunFolder(run_dir, kind, status, metrics)
