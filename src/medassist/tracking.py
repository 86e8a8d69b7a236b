"""Experiment tracking with MLflow: a pipeline is one MLflow run, each of its studies a run nested under it.

Each study's resolved config (as parameters), the numbers of its metrics.json (as metrics) and its report, tables
and figures (as artifacts) are logged once the study is done, so that ``mlflow ui`` compares pipelines over time.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import yaml

from medassist.config import flatten

EXPERIMENT = "medassist"
MAX_PARAM = 500  # MLflow's limit on a parameter's value length


def numbers(data: Any, prefix: str = "") -> dict[str, float]:
    """Every finite number of a nested metrics mapping, keyed by its dotted path (lists by their index)."""
    out: dict[str, float] = {}
    if isinstance(data, dict):
        for k, v in data.items():
            out.update(numbers(v, f"{prefix}{k}."))
    elif isinstance(data, list):
        for i, v in enumerate(data):
            name = v.get("model") or v.get("variant") or v.get("name") if isinstance(v, dict) else None
            out.update(numbers(v, f"{prefix}{name or i}."))
    elif isinstance(data, (int, float)) and not isinstance(data, bool) and math.isfinite(data):
        out[prefix.rstrip(".")] = float(data)
    return out


def _key(name: str) -> str:
    """An MLflow-safe key: letters, digits and _-./ only."""
    return "".join(c if c.isalnum() or c in "_-./ " else "_" for c in name)[:250]


def default_store(folder: Path) -> tuple[str, str]:
    """The local MLflow store beside the pipelines: ``folder/mlflow.db`` (SQLite, which MLflow 3 recommends over
    its file store) and artifacts in ``folder/mlartifacts``. ``mlflow ui --backend-store-uri <uri>`` shows it."""
    folder = folder.resolve()
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "mlartifacts").as_uri()


class MlflowTracker:
    """Logs a pipeline and its studies to the MLflow tracking store at ``uri``."""

    def __init__(self, *, uri: str, pipeline: str, artifacts: str | None = None) -> None:
        from mlflow.tracking import MlflowClient

        self.client = MlflowClient(tracking_uri=uri)
        exp = self.client.get_experiment_by_name(EXPERIMENT)
        self.experiment = (
            exp.experiment_id
            if exp is not None
            else self.client.create_experiment(EXPERIMENT, artifact_location=artifacts)
        )
        self.parent = self.client.create_run(self.experiment, run_name=pipeline, tags={"medassist.kind": "pipeline"})
        self.parent_id = self.parent.info.run_id

    def log_study(self, name: str, run_dir: Path) -> str:
        """Log one finished study run folder as a nested run; return its MLflow run id."""
        from mlflow.entities import Metric, Param

        run = self.client.create_run(
            self.experiment, run_name=name, tags={"mlflow.parentRunId": self.parent_id, "medassist.part": name}
        )
        rid = run.info.run_id
        config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").is_file() else {}
        params = [Param(_key(k), str(v)[:MAX_PARAM]) for k, v in flatten(config or {}).items()]
        metrics_file = run_dir / "metrics.json"
        values = numbers(json.loads(metrics_file.read_text())) if metrics_file.is_file() else {}
        metrics = [Metric(_key(k), v, 0, 0) for k, v in values.items()]
        for i in range(0, len(params), 100):  # MLflow takes at most 100 parameters per batch
            self.client.log_batch(rid, params=params[i : i + 100])
        for i in range(0, len(metrics), 1000):
            self.client.log_batch(rid, metrics=metrics[i : i + 1000])
        for rel in ("report.md", "report.html", "metrics.json", "config.yaml"):
            if (run_dir / rel).is_file():
                self.client.log_artifact(rid, str(run_dir / rel))
        for sub in ("tables", "figures"):
            if (run_dir / sub).is_dir() and any((run_dir / sub).iterdir()):
                self.client.log_artifacts(rid, str(run_dir / sub), artifact_path=sub)
        self.client.set_terminated(rid)
        return rid

    def finish(self, root: Path) -> None:
        """Log the pipeline's own report and state, and close its run."""
        for rel in ("report.html", "report.pdf", "pipeline.json"):
            if (root / rel).is_file():
                self.client.log_artifact(self.parent_id, str(root / rel))
        self.client.set_terminated(self.parent_id)
