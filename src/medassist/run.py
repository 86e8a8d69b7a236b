"""A run folder: everything one study run writes, and its status (running, complete or failed).

Layout::

    <run>/status.json      {"status": "running" | "complete" | "failed", ...}
    <run>/timings.json     seconds in all and per step the study announced (what ``medassist bench pipeline`` reads)
    <run>/config.yaml      the resolved configuration
    <run>/metrics.json     headline numbers
    <run>/history/*.csv    per-epoch history of each trained model
    <run>/figures/*.png
    <run>/tables/*.csv and *.md
    <run>/models/          the selected model (safetensors + model.json)
    <run>/units/           per-model results and checkpoints (what --resume reuses)
    <run>/report.md, report.html
"""

from __future__ import annotations

import datetime as dt
import json
import math
import resource
import sys
import traceback
from pathlib import Path
from typing import Any

import pandas as pd
import torch
import yaml
from safetensors.torch import save_file

from medassist.config import config_differences
from medassist.errors import MedAssistError
from medassist.utils.io import atomic_path, atomic_write_text

STATUS = "status.json"
CONFIG = "config.yaml"
TIMINGS = "timings.json"  # seconds per announced step (medassist.utils.steps), written when the run ends


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item") and callable(obj.item):  # numpy / torch scalars
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, Path):
        return str(obj)
    return obj


def peak_rss_gb() -> float:
    """The peak resident memory of this process so far, in GB (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (2**30 if sys.platform == "darwin" else 2**20)


KINDS_BY_METRICS = (  # folders written before runs recorded their kind: told apart by their metrics' keys
    ("generators", "synth"),
    ("audits", "fairness"),
    ("variants", "deploy"),
    ("comparison", "text"),
    ("selected", "image"),
)


def run_kind(path: str | Path) -> str:
    """What a run folder is (image, text, synth, synth_records, deploy, fairness, tabular, ...): the kind its study
    recorded in status.json; for a folder written before kinds were recorded, read off its metrics.json ('' when
    neither tells)."""
    path = Path(path)
    status = path / STATUS
    if status.is_file():
        kind = json.loads(status.read_text()).get("kind")
        if kind:
            return str(kind)
    metrics = path / "metrics.json"
    if not metrics.is_file():
        return ""
    m = json.loads(metrics.read_text())
    if m.get("kind") in ("records", "tabular"):
        return "synth_records" if m["kind"] == "records" else "tabular"
    return next((kind for key, kind in KINDS_BY_METRICS if key in m), "")


class Run:
    """A run folder. Use as a context manager: an exception marks the run failed, a clean exit complete."""

    def __init__(self, path: str | Path) -> None:
        self.dir = Path(path)

    @classmethod
    def saved_config(cls, path: str | Path) -> dict[str, Any]:
        """The configuration saved in the unfinished run folder ``path``, which ``--resume`` continues.

        Raises:
            MedAssistError: ``path`` is not a run folder, is already complete, or has no readable config.yaml.
        """
        run = cls(path)
        if not (run.dir / STATUS).is_file():
            raise MedAssistError(f"cannot resume {run.dir}: it is not a run folder (no {STATUS})")
        if run.status().get("status") == "complete":
            raise MedAssistError(f"cannot resume {run.dir}: the run is already complete")
        saved = run.dir / CONFIG
        if not saved.is_file():
            raise MedAssistError(f"cannot resume {run.dir}: it has no {CONFIG} (the configuration it was started with)")
        try:
            data = yaml.safe_load(saved.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise MedAssistError(f"cannot resume {run.dir}: {saved} is not valid YAML: {exc}") from None
        if not isinstance(data, dict):
            raise MedAssistError(f"cannot resume {run.dir}: {saved} does not hold a mapping of options")
        return data

    @classmethod
    def create(
        cls, root: str | Path, name: str, config: dict[str, Any], *, kind: str = "", resume: str | Path | None = None
    ) -> Run:
        """Make a new run folder ``<root>/<name>-<timestamp>`` and write its config, or reopen ``resume``.

        ``kind`` (the study that makes it: image, text, synth, ...) goes into status.json at the start, so that a
        reader of the folder is told what it is rather than guessing it (:func:`run_kind`).

        A resumed run keeps the config.yaml it was started with: ``config`` must agree with it on every key that
        changes results (all but :data:`medassist.config.RESUME_FREE_KEYS`), so that one run folder never mixes
        models trained under two configurations.
        """
        if resume is not None:
            run = cls(resume)
            diffs = config_differences(cls.saved_config(run.dir), _jsonable(config))
            if diffs:
                listed = "; ".join(f"{k}: {a!r} in the run, {b!r} now" for k, a, b in diffs)
                raise MedAssistError(
                    f"cannot resume {run.dir}: the configuration differs from its {CONFIG} ({listed}); resume with "
                    "the run's own configuration, or start a new run"
                )
        else:
            stamp = dt.datetime.now().strftime("%Y%m%d-%H%M%S")
            path = Path(root) / f"{name}-{stamp}"
            i = 1
            while path.exists():
                i += 1
                path = Path(root) / f"{name}-{stamp}-{i}"
            run = cls(path)
        for sub in ("figures", "tables", "history", "models", "units"):
            (run.dir / sub).mkdir(parents=True, exist_ok=True)
        if resume is None:
            from medassist.train.device import current

            # The resolved device in words, as a comment: the options themselves stay what the study reads back.
            head = f"# computed on {current().summary()}\n"
            atomic_write_text(run.dir / CONFIG, head + yaml.safe_dump(_jsonable(config), sort_keys=False))
        run.set_status("running", **({"kind": kind} if kind else {}))
        return run

    def __enter__(self) -> Run:
        from medassist.utils.steps import open_timeline

        self._timeline = open_timeline()  # the steps its study announces, timed (timings.json)
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        from medassist.utils.steps import close_timeline

        if getattr(self, "_timeline", None) is not None:
            self.write_json(TIMINGS, close_timeline(self._timeline))
            self._timeline = None
        if exc is None:
            self.set_status("complete")
        else:
            self.set_status(
                "failed",
                error=f"{exc_type.__name__}: {exc}",
                traceback="".join(traceback.format_exception(exc_type, exc, tb))[-4000:],
            )
        return False

    # --- status -------------------------------------------------------------------------------------------------
    def status(self) -> dict[str, Any]:
        path = self.dir / STATUS
        return json.loads(path.read_text()) if path.is_file() else {}

    def set_status(self, status: str, **extra: Any) -> None:
        info = self.status()
        now = dt.datetime.now().isoformat(timespec="seconds")
        info.setdefault("started", now)
        info.update({"status": status, "updated": now, **extra})
        if status != "failed":
            info.pop("error", None)
            info.pop("traceback", None)
        self.write_json(STATUS, info)

    # --- writers --------------------------------------------------------------------------------------------------
    def path(self, rel: str) -> Path:
        p = self.dir / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        return p

    def write_json(self, rel: str, obj: Any) -> Path:
        return atomic_write_text(self.path(rel), json.dumps(_jsonable(obj), indent=2) + "\n")

    def write_metrics(self, metrics: dict[str, Any]) -> Path:
        """Write ``metrics.json``: the study's numbers, with the device they were computed on and the peak memory
        (the process's resident set, and the GPU's where one ran) under ``accelerator``."""
        from medassist.train.device import current

        accel = current()
        info = {**accel.describe(), "peak_rss_gb": peak_rss_gb(), "peak_gpu_memory_gb": accel.peak_memory_gb()}
        return self.write_json("metrics.json", {**metrics, "accelerator": info})

    def read_json(self, rel: str) -> Any:
        return json.loads((self.dir / rel).read_text())

    def write_table(
        self, name: str, df: pd.DataFrame, *, floatfmt: str | None = None, kinds: dict[str, str] | None = None
    ) -> Path:
        """Write ``tables/<name>.csv`` (full precision) and ``tables/<name>.md`` (for people).

        The Markdown formats each column by its name (``medassist.utils.format``: seconds, counts, ratios,
        metrics to 3 decimals, intervals as ``[lo, hi]``) and splits a wide table into parts that fit a page.
        ``kinds`` overrides the kind of named columns; ``floatfmt`` formats float columns of no known kind.
        """
        # Imported here: the report package imports this module.
        from medassist.utils.format import readable_table

        atomic_write_text(self.path(f"tables/{name}.md"), readable_table(df, kinds=kinds, floatfmt=floatfmt))
        return atomic_write_text(self.path(f"tables/{name}.csv"), df.to_csv(index=False))

    def figure(self, name: str) -> Path:
        return self.path(f"figures/{name}.png")

    def save_model(self, model: torch.nn.Module, meta: dict[str, Any], *, name: str = "model") -> Path:
        """Save weights as ``models/<name>.safetensors`` and ``models/<name>.pt`` (a plain state dict, loadable
        with ``torch.load(weights_only=True)``), with ``models/<name>.json`` describing how to rebuild the model."""
        state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
        st_path = self.path(f"models/{name}.safetensors")
        with atomic_path(st_path) as tmp:
            save_file(state, str(tmp))
        with atomic_path(self.path(f"models/{name}.pt")) as tmp:
            torch.save(state, tmp)
        self.write_json(f"models/{name}.json", meta)
        return st_path
