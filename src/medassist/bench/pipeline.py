"""Where ``medassist all`` spends its time: seconds per part, and per step within each part.

Reads a finished pipeline folder (``--run runs/all-...``), or runs ``medassist all`` first (its profile:
``--pipeline-profile``, quick by default). Each part's run folder holds ``timings.json`` (the steps its study
announced, each timed until the next; see :mod:`medassist.utils.steps`); the pipeline's ``pipeline.json`` holds each
part's wall time. The tables go to a run folder of their own (``tables/parts.csv``, ``tables/steps.csv``) and to the
terminal, so that the next change is held against them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from medassist.config import RunOptions, option, to_dict
from medassist.errors import MedAssistError
from medassist.run import TIMINGS, Run
from medassist.utils.format import readable_table


@dataclass
class PipelineBenchConfig(RunOptions):
    """Seconds per part and per step of the whole assistant."""

    run: str = option("", "a pipeline folder (runs/all-...) to read; unset: run medassist all first")
    pipeline_profile: str = option("quick", "the profile of the medassist all run made when --run is not given")
    top: int = option(8, "the slowest steps listed per part in the terminal (every step goes to steps.csv)")


def part_table(root: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Seconds, status and peak memory of each part of the pipeline folder ``root``, and every step of each part
    (seconds and share of its part)."""
    from medassist.studies.pipeline import PIPELINE_FILE

    state_file = root / PIPELINE_FILE
    if not state_file.is_file():
        raise MedAssistError(f"{root} is not a medassist all folder (no {PIPELINE_FILE}); pass one to --run")
    state = json.loads(state_file.read_text())
    parts, steps = [], []
    for name, part in state.get("parts", {}).items():
        run_dir = root / part["run"] if part.get("run") else None
        peak = None
        if run_dir is not None and (run_dir / "metrics.json").is_file():
            peak = json.loads((run_dir / "metrics.json").read_text()).get("accelerator", {}).get("peak_rss_gb")
        parts.append(
            {"part": name, "status": part.get("status", ""), "seconds": part.get("seconds"), "peak_rss_gb": peak}
        )
        timings = run_dir / TIMINGS if run_dir is not None else None
        if timings is None or not timings.is_file():
            continue
        recorded = json.loads(timings.read_text())
        for row in recorded["steps"]:
            share = row["seconds"] / recorded["seconds"] if recorded["seconds"] else 0.0
            steps.append({"part": name, "step": row["step"], "seconds": row["seconds"], "share": share})
    table = pd.DataFrame(parts, columns=["part", "status", "seconds", "peak_rss_gb"])
    total = {"part": "all", "status": "", "seconds": state.get("seconds"), "peak_rss_gb": table.peak_rss_gb.max()}
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    return table, pd.DataFrame(steps, columns=["part", "step", "seconds", "share"])


def run_pipeline_bench(cfg: PipelineBenchConfig) -> Path:
    """Time ``medassist all`` by part and step; return the benchmark's run folder."""
    if cfg.run:
        root = Path(cfg.run)
    else:
        from medassist.cli import main

        before = set(Path(cfg.out).glob("all-*")) if Path(cfg.out).is_dir() else set()
        main(["all", "--profile", cfg.pipeline_profile, "--out", cfg.out, "--progress", str(cfg.progress).lower()])
        made = sorted(set(Path(cfg.out).glob("all-*")) - before)
        if not made:
            raise MedAssistError(f"medassist all made no folder under {cfg.out}")
        root = made[-1]
    parts, steps = part_table(root)
    run = Run.create(cfg.out, "bench-pipeline", to_dict(cfg) | {"read": str(root)}, kind="bench_pipeline")
    with run:
        run.write_table("parts", parts)
        run.write_table("steps", steps)
        run.write_metrics({"pipeline": str(root), "parts": parts.to_dict("records")})
        print(readable_table(parts, headers=True))
        for name, group in steps.groupby("part", sort=False):
            slowest = group.sort_values("seconds", ascending=False).head(cfg.top)
            print(f"\n{name}: the {len(slowest)} slowest of {len(group)} steps")
            print(readable_table(slowest.drop(columns="part"), headers=True))
        print(f"\nbenchmark run folder: {run.dir}")
    return run.dir
