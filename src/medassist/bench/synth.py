"""The synthetic-data benchmark: each generator's training time, sampling time per 1,000 images, the peak memory
of the run, and the headline numbers (TSTR against TRTR, fidelity, membership inference), with several seeds.

Each seed runs ``medassist synth`` (a profile, PneumoniaMNIST by default) in a process of its own, so that its peak
resident memory is its own; the numbers are read from the run folder's metrics.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from medassist.config import DeviceOptions, RunOptions, option, to_dict
from medassist.errors import MedAssistError
from medassist.run import Run
from medassist.train.device import on_device
from medassist.utils.format import readable_table

CHILD = (
    "import resource, sys\n"
    "from medassist.cli import main\n"
    "rc = main(sys.argv[1:])\n"
    "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)\n"
    "sys.exit(rc)\n"
)


@dataclass
class SynthBenchConfig(DeviceOptions, RunOptions):
    """The synthetic-data benchmark."""

    seeds: list[int] = option([0, 1], "seeds; each runs the whole study once")
    study_profile: str = option("quick", "profile of `medassist synth` that each seed runs")
    dataset: str = option("pneumoniamnist", "MedMNIST data set")
    data_dir: str = option("", "data directory (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    extra: list[str] = option([], "further `medassist synth` options, e.g. --set,dp.epsilons=[]")


def rows_of(metrics: dict[str, Any], *, seed: int, wall: float, peak_mb: float) -> list[dict[str, Any]]:
    """One benchmark row per generator of a study's metrics.json."""
    trtr = metrics["trtr"]["test"]["auc"]
    out = []
    for g, r in {**metrics["generators"], **metrics.get("dp", {})}.items():
        t, p = r["tstr"]["test"]["auc"], r["privacy"]
        out.append(
            {
                "seed": seed,
                "generator": g,
                "train_time_s": r["train_time"],
                "sample_s_per_1000": r["sample_seconds_per_1000"],
                "frechet_distance": r["frechet_distance"],
                "coverage": r["coverage"],
                "tstr_auc": t["value"],
                "tstr_auc_lo": t["ci_low"],
                "tstr_auc_hi": t["ci_high"],
                "trtr_auc": trtr["value"],
                "tstr_minus_trtr_auc": r["tstr_minus_trtr_auc"][0],
                "tstr_minus_trtr_auc_lo": r["tstr_minus_trtr_auc"][1],
                "tstr_minus_trtr_auc_hi": r["tstr_minus_trtr_auc"][2],
                "attack_auc": max(p["attack_distance_feature"]["auc"], p.get("attack_model", {}).get("auc", 0.0)),
                "epsilon": r.get("epsilon"),
                "study_wall_s": wall,
                "peak_memory_mb": peak_mb,
            }
        )
    return out


@on_device
def run_synth_benchmark(cfg: SynthBenchConfig) -> Path:
    """Run the study once per seed and print one table (also written to the benchmark's run folder)."""
    run = Run.create(cfg.out, "bench-synth", to_dict(cfg), kind="bench_synth")
    with run:
        rows: list[dict[str, Any]] = []
        for seed in cfg.seeds:
            argv = [
                "synth",
                "--profile",
                cfg.study_profile,
                "--dataset",
                cfg.dataset,
                "--seed",
                str(seed),
                "--out",
                str(run.dir / "studies"),
                "--progress",
                "false",
                "--device",
                cfg.device,
                "--precision",
                cfg.precision,
                *cfg.extra,
            ]
            if cfg.data_dir:
                argv += ["--data-dir", cfg.data_dir]
            t0 = time.perf_counter()
            proc = subprocess.run([sys.executable, "-c", CHILD, *argv], capture_output=True, text=True)
            wall = time.perf_counter() - t0
            if proc.returncode != 0:
                raise MedAssistError(f"the study with seed {seed} failed:\n{proc.stderr[-2000:]}")
            peak = next(int(line.split()[1]) for line in proc.stdout.splitlines() if line.startswith("PEAK_KB"))
            study = next(line.split(": ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("run complete"))
            metrics = json.loads((Path(study) / "metrics.json").read_text())
            rows += rows_of(metrics, seed=seed, wall=wall, peak_mb=peak / 1024)
        df = pd.DataFrame(rows)
        run.write_table(
            "bench_synth",
            df,
            kinds={
                "peak_memory_mb": "quantity",
                "epsilon": "quantity",
                "frechet_distance": "quantity",
                "sample_s_per_1000": "seconds",
            },
        )
        text = readable_table(
            df,
            headers=True,
            max_columns=None,
            kinds={
                "peak_memory_mb": "quantity",
                "epsilon": "quantity",
                "frechet_distance": "quantity",
                "sample_s_per_1000": "seconds",
            },
        )
        (run.dir / "report.md").write_text(
            f"# Synthetic-data benchmark ({cfg.study_profile} profile, {cfg.dataset})\n\n{text}"
        )
        print(text)
    return run.dir
