"""Data-parallel scaling: one fixed amount of training work in 1 process and in N processes under torchrun.

``medassist bench ddp`` trains the same model on the same PneumoniaMNIST images for the same number of epochs,
first in one process (all cores), then as N ranks launched by ``torch.distributed.run`` (the cores shared among
them), each run repeated; it prints the median training time of each and their ratio. On one machine with 2 cores
this cannot show true scaling (the ranks share the cores that one process already used), only what DDP's
communication costs; across machines the same command line scales out.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from medassist.config import RunOptions, TrainConfig, option, to_dict
from medassist.errors import MedAssistError
from medassist.run import Run
from medassist.utils.format import readable_table


def _train() -> TrainConfig:
    return TrainConfig(epochs=2, batch_size=128, optimizer="adamw", lr=1e-3, seed=0)


@dataclass
class DDPBenchConfig(RunOptions):
    """The data-parallel scaling benchmark."""

    dataset: str = option("pneumoniamnist", "MedMNIST v2 data set trained on")
    model: str = option("cnn_gap", "registered image model trained")
    processes: list[int] = option([1, 2], "process counts compared (1 = no torchrun)")
    repeats: int = option(3, "timed runs of each process count (after one warm-up run of each)")
    train: TrainConfig = field(default_factory=_train, metadata={"help": "the fixed training work"})
    data_dir: str = option("", "data directory (default: $MEDASSIST_DATA_DIR, else a per-user cache)")
    progress: bool = option(True, "show a progress bar (the table is printed either way)")


def work(cfg: DDPBenchConfig, out: Path) -> None:
    """One timed training (run on every rank when launched by torchrun); rank 0 writes its time to ``out``."""
    from medassist.data.medmnist import load_medmnist
    from medassist.models import create_model
    from medassist.train import fit
    from medassist.train.distributed import ranks, setup

    r = setup("cpu")  # the benchmark measures data parallelism on the CPU (gloo), whatever GPUs the machine has
    data = load_medmnist(cfg.dataset, data_dir=cfg.data_dir or None, progress=False)
    import torch

    torch.manual_seed(cfg.train.seed)
    model = create_model(cfg.model, num_classes=data.num_classes, in_channels=data.n_channels)
    t0 = time.perf_counter()
    result = fit(
        model, data.splits["train"], data.splits["val"], cfg.train, num_classes=data.num_classes, progress=False
    )
    seconds = time.perf_counter() - t0
    if ranks().is_main:
        out.write_text(
            json.dumps(
                {
                    "world_size": r.world_size,
                    "seconds": seconds,
                    "train_time": result.train_time,
                    "val_auc": float(result.history["val_auc"].iloc[-1]),
                    "threads": torch.get_num_threads(),
                }
            )
        )


def _launch(cfg: DDPBenchConfig, n: int, scratch: Path, i: int) -> dict:
    out = scratch / f"n{n}-{i}.json"
    cfg_file = scratch / "config.json"
    cfg_file.write_text(json.dumps(to_dict(cfg)))
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")}
    worker = [str(Path(__file__).resolve()), str(cfg_file), str(out)]
    if n == 1:
        cmd = [sys.executable, *worker]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(n), *worker]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0 or not out.is_file():
        raise MedAssistError(f"the {n}-process run failed:\n{proc.stderr[-2000:]}")
    return json.loads(out.read_text())


def run_ddp_benchmark(cfg: DDPBenchConfig) -> Run:
    """Time every process count (interleaved, after a warm-up of each); write and print the table."""
    from tqdm.auto import tqdm

    if not cfg.processes or min(cfg.processes) < 1:
        raise MedAssistError(f"processes must be positive counts (got {cfg.processes})")
    run = Run.create(cfg.out, "bench-ddp", to_dict(cfg), kind="bench_ddp")
    with run, tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        results: dict[int, list[dict]] = {n: [] for n in cfg.processes}
        jobs = [(n, -1) for n in cfg.processes] + [(n, i) for i in range(cfg.repeats) for n in cfg.processes]
        for n, i in tqdm(jobs, desc="ddp benchmark", disable=not cfg.progress):
            r = _launch(cfg, n, scratch, i)
            if i >= 0:  # the first run of each count warms the caches and is not counted
                results[n].append(r)
        base = statistics.median(r["train_time"] for r in results[cfg.processes[0]])
        rows = []
        for n, rs in results.items():
            t = statistics.median(r["train_time"] for r in rs)
            rows.append(
                {
                    "processes": n,
                    "threads_per_process": rs[0]["threads"],
                    "train_time_median_s": t,
                    "train_time_runs_s": ", ".join(f"{r['train_time']:.1f}" for r in rs),
                    "time_ratio": t / base,
                    "speedup": base / t,
                    "final_val_auc": rs[0]["val_auc"],
                }
            )
        df = pd.DataFrame(rows)
        run.write_table("scaling", df)
        run.write_metrics(
            {"scaling": rows, "cpu_count": os.cpu_count(), "note": "ranks share this machine's cores"},
        )
        print(readable_table(df, headers=True, max_columns=None))
        print(f"{os.cpu_count()} cores on this machine, shared by the ranks: not true scaling")
        print(f"benchmark run folder: {run.dir}")
    return run


if __name__ == "__main__":  # one timed run, started by run_ddp_benchmark (through torchrun for N > 1)
    from medassist.config import from_dict

    work(from_dict(DDPBenchConfig, json.loads(Path(sys.argv[1]).read_text())), Path(sys.argv[2]))
