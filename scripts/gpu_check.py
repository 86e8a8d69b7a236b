"""What ``scripts/gpu-check`` runs: the GPU tests, the debug pipeline on the GPU, and the two benchmarks on the GPU
and on 2 CPU threads, each alone and one after another; then one table of times, speed-ups and peak memory.

Every number comes from the run folders the commands write (metrics.json, tables/*.csv) and from the wall clock
around each command.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd


def run(argv: list[str], log: Path) -> float:
    """Run ``medassist argv`` (or pytest) alone; its wall time in seconds. Its output goes to ``log``."""
    t0 = time.perf_counter()
    with log.open("w") as f:
        proc = subprocess.run(argv, stdout=f, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        print(f"failed ({proc.returncode}): {' '.join(argv)}; see {log}", file=sys.stderr)
        sys.exit(proc.returncode)
    return wall


def newest(folder: Path, pattern: str) -> Path:
    return sorted(folder.glob(pattern))[-1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--device", default="cuda", help="the accelerator measured (default: cuda)")
    p.add_argument("--precision", default="32", help="its precision (default: 32)")
    p.add_argument("--cpu-threads", type=int, default=2, help="CPU threads of the CPU arm (default: 2)")
    p.add_argument("--out", default="runs/gpu-check", help="where the run folders go")
    p.add_argument("--quick", action="store_true", help="the benchmarks' debug profiles (a check of the machinery)")
    args = p.parse_args()
    out = Path(args.out) / time.strftime("%Y%m%d-%H%M%S")
    out.mkdir(parents=True)
    medassist = [sys.executable, "-m", "medassist"]
    on = ["--device", args.device, "--precision", args.precision, "--progress", "false"]
    cpu = ["--device", "cpu", "--progress", "false"]
    rows: list[dict] = []

    if args.device.startswith("cuda"):
        wall = run([sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_device.py"], out / "pytest-gpu.log")
        rows.append({"check": "pytest -m gpu", "device": args.device, "seconds": wall})

    wall = run([*medassist, "all", "--profile", "debug", "--out", str(out / "all"), *on], out / "all.log")
    parts = [json.loads(m.read_text()).get("accelerator", {}) for m in (out / "all").glob("*/*/*/metrics.json")]
    gpu_peak = max((a.get("peak_gpu_memory_gb") or 0.0 for a in parts), default=0.0) or None
    rss_peak = max((a.get("peak_rss_gb") or 0.0 for a in parts), default=0.0)
    rows.append(
        {"check": "medassist all --profile debug", "device": args.device, "seconds": wall, "peak_gpu_gb": gpu_peak}
        | {"peak_rss_gb": rss_peak}
    )

    # bench medmnist: the reference protocol (ResNet-18), fixed epochs and no budget, so that seconds per epoch
    # compare like with like
    bench = ["bench", "medmnist", "--seeds", "0", "--methods", "reference", "--budget", "100000"]
    bench += ["--profile", "debug"] if args.quick else ["--datasets", "pneumoniamnist", "--set", "reference.epochs=3"]
    per_epoch = {}
    cpu_arm = f"cpu ({args.cpu_threads} threads)"
    arms = {"accelerator": (args.device, on), "cpu": (cpu_arm, cpu)}
    for arm, (label, flags) in arms.items():
        folder = out / f"medmnist-{arm}"
        threads = ["--set", f"reference.threads={args.cpu_threads}"] if arm == "cpu" else []
        run([*medassist, *bench, "--out", str(folder), *flags, *threads], out / f"medmnist-{arm}.log")
        r = pd.read_csv(newest(folder, "bench-medmnist-*") / "tables" / "runs.csv").iloc[0]
        per_epoch[arm] = r["train_time_s"] / r["epochs_run"]
        rows.append(
            {
                "check": f"bench medmnist ({r['dataset']}, ResNet-18), seconds per epoch",
                "device": label,
                "seconds": per_epoch[arm],
                "peak_gpu_gb": (r.get("peak_gpu_memory_mb") or 0) / 1024 or None,
                "peak_rss_gb": r["peak_memory_mb"] / 1024,
            }
        )
    rows[-2]["speed_up"] = per_epoch["cpu"] / per_epoch["accelerator"]

    text = ["bench", "text"]
    text += ["--profile", "debug"] if args.quick else []
    speeds = {}
    for arm, (_, flags) in arms.items():
        folder = out / f"text-{arm}"
        threads = ["--threads", str(args.cpu_threads)] if arm == "cpu" else []
        run([*medassist, *text, "--out", str(folder), *flags, *threads], out / f"text-{arm}.log")
        df = pd.read_csv(newest(folder, "bench-text-*") / "tables" / "speed.csv")
        speeds[arm] = df[df.batches.str.startswith("bucketed") & (df.precision.astype(str) == "32")]
    for _, g in speeds["accelerator"].iterrows():
        c = speeds["cpu"][speeds["cpu"].model == g.model].iloc[0]
        rows.append(
            {
                "check": f"bench text {g.model}: training reports per second",
                "device": args.device,
                "reports_per_s": g.train_reports_per_s,
                "latency_ms_batch1": g.latency_ms_batch1_median,
                "cpu_latency_ms_batch1": c.latency_ms_batch1_median,
                "cpu_reports_per_s": c.train_reports_per_s,
                "speed_up": g.train_reports_per_s / c.train_reports_per_s,
            }
        )
    table = pd.DataFrame(rows)
    table.to_csv(out / "gpu-check.csv", index=False)
    from medassist.report.format import readable_table

    print(readable_table(table, headers=True))
    print(f"\nrun folders and logs: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
