"""The data benchmark: how fast a folder of image files becomes training batches, and what training from it costs
in memory as the folder grows.

On a folder of grayscale PNGs (generated: two classes, a bright disc present or absent on a textured background;
or your own folder) it measures, each in a fresh process so that each peak memory is its own:

- decoding every file to ``image_size`` with 1 process and with every core (images per second, and the ratio);
- the data start-up of a first run (listing, decoding into the cache) and of a second run (opening the cache);
- one training step of ``model`` on ``batch_size`` images at ``image_size`` (the median of timed steps);
- the peak resident memory of training for ``train_seconds`` and then validating on the whole validation split,
  for every N, and the memory the images would take as one array.

Run it alone on the machine: two processes that both train share the cores and the numbers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from medassist.config import RunOptions, option, to_dict
from medassist.data.image_cache import default_workers
from medassist.data.paths import CACHE_ENV
from medassist.errors import MedAssistError
from medassist.run import Run
from medassist.utils.format import readable_table

TARGETS = {
    "decode_speedup": (">=", 1.8, "decoding with every core against 1 process (2 cores)"),
    "second_startup_s": ("<=", 10.0, "the second run's data start-up (20,000 images)"),
    "step_s": ("<=", 3.0, "one ResNet-18 training step of 32 images at 224 px (2 cores)"),
    "peak_memory_ratio": ("<=", 1.10, "peak memory of the largest N over the smallest"),
    "peak_memory_gb": ("<=", 2.0, "peak memory while training at 224 px"),
}
"""The benchmark's targets (a 2-core machine): name -> (comparison, value, what it is)."""


@dataclass
class DataBenchConfig(RunOptions):
    """The data benchmark."""

    n: list[int] = option([5000, 20000], "numbers of images; the largest is decoded, every one trains")
    side: int = option(512, "generated PNGs are side x side pixels")
    image_size: int = option(224, "decode and train at this size")
    folder: str = option("", "measure this folder of class subfolders instead of generated images (n is ignored)")
    workdir: str = option("", "where the generated images go (default: the run folder; deleted at the end)")
    keep_images: bool = option(False, "keep the generated images")
    model: str = option("resnet18", "the model trained in the memory measurement")
    batch_size: int = option(32, "images per training step")
    train_seconds: float = option(60.0, "training time per N before the validation pass of the memory measurement")
    step_repeats: int = option(5, "timed training steps (after 2 warm-up steps)")
    compare_monai: bool = option(
        True, "also build MONAI's PersistentDataset over the smallest folder and read an epoch from each cache"
    )
    seed: int = option(0, "seed of the generated images and of training")


def synthetic_png(i: int, side: int, seed: int) -> tuple[int, np.ndarray]:
    """The ``i``-th generated image: its class (1: a bright disc somewhere) and uint8 (side, side) pixels."""
    rng = np.random.default_rng([seed, i])
    label = int(i % 2)
    yy, xx = np.mgrid[0:side, 0:side].astype(np.float32) / side
    f1, f2, p = rng.uniform(2, 8), rng.uniform(2, 8), rng.uniform(0, 2 * np.pi)
    base = 90 + 40 * np.sin(2 * np.pi * f1 * xx + p) * np.cos(2 * np.pi * f2 * yy)
    base += rng.normal(0, 12, size=(side, side))
    if label:
        cy, cx, r = rng.uniform(0.25, 0.75, size=2).tolist() + [rng.uniform(0.06, 0.15)]
        base += 80 * (((yy - cy) ** 2 + (xx - cx) ** 2) < r * r)
    return label, np.clip(base, 0, 255).astype(np.uint8)


def _write_pngs(root: str, start: int, stop: int, side: int, seed: int) -> None:
    from PIL import Image

    for i in range(start, stop):
        path = Path(root) / f"class_{i % 2}" / f"img_{i:06d}.png"
        if path.is_file():  # a kept folder (--keep-images) is reused: the same seed writes the same image
            continue
        _, pixels = synthetic_png(i, side, seed)
        Image.fromarray(pixels).save(path.with_name(f".{path.name}"), format="PNG", compress_level=3)
        os.replace(path.with_name(f".{path.name}"), path)  # a file is there complete or not at all


def make_png_folder(root: Path, n: int, side: int, *, seed: int = 0, workers: int = 0) -> Path:
    """Write ``n`` generated PNGs (:func:`synthetic_png`) under ``root/class_0`` and ``root/class_1``, in parallel."""
    for c in (0, 1):
        (root / f"class_{c}").mkdir(parents=True, exist_ok=True)
    workers = workers or default_workers()
    step = max(1, min(500, n // (workers * 4) or 1))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        starts = range(0, n, step)
        stops = [min(n, a + step) for a in starts]
        k = len(starts)
        list(pool.map(_write_pngs, [str(root)] * k, starts, stops, [side] * k, [seed] * k))
    return root


def linked_subset(source: Path, dest: Path, n: int) -> Path:
    """A folder of the first ``n`` images of a generated folder, as hard links (no second copy on disk)."""
    for c in (0, 1):
        (dest / f"class_{c}").mkdir(parents=True, exist_ok=True)
    for i in range(n):
        name = f"class_{i % 2}/img_{i:06d}.png"
        if not (dest / name).exists():
            os.link(source / name, dest / name)
    return dest


CHILD = r"""
import json, resource, sys, time
from pathlib import Path
from medassist.data.image_cache import decode_images
from medassist.data.images import read_image_folder
cfg = json.loads(sys.argv[1])
t0 = time.perf_counter()  # after the imports: the data's own start-up
out = {}
if cfg["what"] == "decode":
    paths = sorted(p for p in Path(cfg["folder"]).rglob("*.png"))
    d = decode_images(paths, size=cfg["size"], channels=1, name="bench", source=cfg["folder"], workers=cfg["workers"],
                      progress=False)
    out = {"images": len(paths), "seconds": d.seconds, "workers": d.workers}
elif cfg["what"] == "startup":
    data = read_image_folder(cfg["folder"], size=cfg["size"], channels=1, progress=False)
    out = {"images": sum(len(s) for s in data.splits.values()), "seconds": time.perf_counter() - t0}
elif cfg["what"] in ("read", "monai"):
    from medassist.bench import data as bench
    out = bench.read_measure(cfg) if cfg["what"] == "read" else bench.monai_measure(cfg)
elif cfg["what"] == "step":
    from medassist.bench.data import step_measure
    out = step_measure(cfg)
else:
    from medassist.bench.data import train_measure
    out = train_measure(cfg)
out["peak_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("RESULT " + json.dumps(out), flush=True)
"""


def _child(what: str, cache: Path, **kw: Any) -> dict[str, Any]:
    env = {**os.environ, CACHE_ENV: str(cache)}
    proc = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps({"what": what, **kw})], capture_output=True, text=True, env=env
    )
    if proc.returncode != 0:
        raise MedAssistError(f"the benchmark's '{what}' process failed:\n{proc.stderr[-3000:]}")
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _open_folder(cfg: dict[str, Any]) -> Any:
    from medassist.data.images import read_image_folder
    from medassist.train.engine import seed_everything

    seed_everything(cfg["seed"])
    return read_image_folder(cfg["folder"], size=cfg["size"], channels=1, progress=False)


def step_measure(cfg: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: the median time of ``repeats`` training steps (after 2 warm-up steps) on batches read
    from the (cached) folder."""
    import torch

    from medassist.models import create_model
    from medassist.train.data import ImageBatcher

    train = _open_folder(cfg).splits["train"]
    model = create_model(cfg["model"], num_classes=2, in_channels=1, image_size=cfg["size"])
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    batcher, y = ImageBatcher(train.images), torch.as_tensor(train.labels)
    times = []
    gen = torch.Generator().manual_seed(cfg["seed"])
    for k, idx in enumerate(batcher.order(cfg["batch_size"], generator=gen)):
        if k >= 2 + cfg["repeats"]:
            break
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(batcher.batch(idx)), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
        if k >= 2:
            times.append(time.perf_counter() - t0)
    return {"step_s": float(np.median(times)), "steps": len(times)}


def _epoch_order(n: int, batch_size: int, seed: int) -> list[np.ndarray]:
    perm = np.random.default_rng(seed).permutation(n)
    return [perm[a : a + batch_size] for a in range(0, n, batch_size)]


def read_measure(cfg: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: seconds to read one epoch of shuffled batches of every image from the medassist cache."""
    from medassist.data.disk_images import DiskImages
    from medassist.train.data import ImageBatcher

    t0 = time.perf_counter()
    batcher = ImageBatcher(DiskImages(_open_folder(cfg).splits["train"].images.path))  # every row of the file
    opened = time.perf_counter() - t0
    for idx in _epoch_order(len(batcher), cfg["batch_size"], cfg["seed"]):
        batcher.batch(idx)
    return {"open_s": opened, "epoch_s": time.perf_counter() - t0 - opened, "images": len(batcher)}


def monai_measure(cfg: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: MONAI's ``PersistentDataset`` over the same files (PIL reader, resize to ``size``), its
    cache built with ``workers`` DataLoader processes (``first``) or read back: one epoch of shuffled batches."""
    import torch
    from monai.data import DataLoader, PersistentDataset
    from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, Resized

    paths = sorted(str(p) for p in Path(cfg["folder"]).rglob("*.png"))
    transform = Compose(
        [
            LoadImaged(keys="image", reader="PILReader", image_only=True),
            EnsureChannelFirstd(keys="image", channel_dim="no_channel"),
            Resized(keys="image", spatial_size=(cfg["size"], cfg["size"]), mode="bilinear"),
        ]
    )
    ds = PersistentDataset([{"image": p} for p in paths], transform=transform, cache_dir=cfg["cache_dir"])
    t0 = time.perf_counter()
    if cfg["first"]:
        loader = DataLoader(ds, batch_size=cfg["batch_size"], num_workers=cfg["workers"])
        n = sum(len(b["image"]) for b in loader)
    else:
        n = 0
        for idx in _epoch_order(len(ds), cfg["batch_size"], cfg["seed"]):
            n += len(torch.stack([torch.as_tensor(ds[int(i)]["image"]) for i in idx]))
    return {"seconds": time.perf_counter() - t0, "images": n}


def train_measure(cfg: dict[str, Any]) -> dict[str, Any]:
    """In a fresh process: open the (cached) folder, train for ``train_seconds`` with the engine, then validate on
    the whole validation split; the process's peak memory is the measurement."""
    from medassist.config import TrainConfig
    from medassist.models import create_model
    from medassist.train import fit

    data = _open_folder(cfg)
    train, val = data.splits["train"], data.splits["val"]
    model = create_model(cfg["model"], num_classes=2, in_channels=1, image_size=cfg["size"])
    tcfg = TrainConfig(epochs=1, batch_size=cfg["batch_size"], time_budget=cfg["train_seconds"], seed=cfg["seed"])
    t0 = time.perf_counter()
    result = fit(model, train, val, tcfg, num_classes=2, progress=False, desc="bench")
    return {
        "images": sum(len(s) for s in data.splits.values()),
        "train_and_val_s": time.perf_counter() - t0,
        "val_images": len(val),
        "val_auc": float(result.best_score),
        "array_gb": sum(s.images.nbytes for s in data.splits.values()) / 1e9,
    }


def _verdict(name: str, value: float) -> str:
    op, target, _ = TARGETS[name]
    ok = value >= target if op == ">=" else value <= target
    return "met" if ok else "missed"


def run_data_benchmark(cfg: DataBenchConfig) -> Path:
    """Generate (or take) the folders, run every measurement in its own process, and write one table."""
    run = Run.create(cfg.out, "bench-data", to_dict(cfg), kind="bench_data")
    with run:
        work = Path(cfg.workdir) if cfg.workdir else run.dir / "images"
        folders = _folders(cfg, work)
        largest = max(folders)
        cache = run.dir / "cache"
        rows: list[dict[str, Any]] = []

        def row(measure: str, n: int, value: float, unit: str, target: str = "", **more: Any) -> None:
            rows.append({"measurement": measure, "images": n, "value": value, "unit": unit, **more})
            if target:
                rows[-1]["target"] = f"{TARGETS[target][0]} {TARGETS[target][1]:g}"
                rows[-1]["verdict"] = _verdict(target, value)

        folder = str(folders[largest])
        one = _child("decode", cache / "one", folder=folder, size=cfg.image_size, workers=1)
        every = _child("decode", cache / "all", folder=folder, size=cfg.image_size, workers=0)
        rate1, rate_all = one["images"] / one["seconds"], every["images"] / every["seconds"]
        row("decode, 1 process", largest, rate1, "images/s")
        row(f"decode, {every['workers']} process{'es' if every['workers'] != 1 else ''}", largest, rate_all, "images/s")
        row("decode speed-up", largest, rate_all / rate1, "x", "decode_speedup")
        for n, path in sorted(folders.items()):
            first = _child("startup", cache / f"n{n}", folder=str(path), size=cfg.image_size)
            second = _child("startup", cache / f"n{n}", folder=str(path), size=cfg.image_size)
            row("data start-up, first run (decode into the cache)", n, first["seconds"], "s")
            row("data start-up, second run (open the cache)", n, second["seconds"], "s", "second_startup_s")
        if cfg.compare_monai:
            _compare_monai(cfg, folders[min(folders)], cache, row)
        common = {"size": cfg.image_size, "model": cfg.model, "batch_size": cfg.batch_size, "seed": cfg.seed}
        step = _child("step", cache / f"n{largest}", folder=folder, repeats=cfg.step_repeats, **common)
        row(f"{cfg.model} training step, {cfg.batch_size} images", largest, step["step_s"], "s", "step_s")
        peaks = {}
        for n, path in sorted(folders.items()):
            t = _child("train", cache / f"n{n}", folder=str(path), train_seconds=cfg.train_seconds, **common)
            peaks[n] = t["peak_kb"] / 1024**2
            row("peak memory, training then validating", n, peaks[n], "GB", "peak_memory_gb")
            row("the images as one uint8 array (not held)", n, t["array_gb"], "GB")
        if len(peaks) > 1:
            ratio = peaks[largest] / peaks[min(peaks)]
            row("peak memory, largest N over smallest", largest, ratio, "x", "peak_memory_ratio")
        df = pd.DataFrame(rows)
        run.write_table("bench_data", df)
        run.write_json("metrics.json", {"rows": rows, "targets": {k: list(v) for k, v in TARGETS.items()}})
        text = readable_table(df, headers=True, max_columns=None)
        source = cfg.folder or f"generated {cfg.side}x{cfg.side} grayscale PNGs"
        (run.dir / "report.md").write_text(
            f"# Data benchmark ({source}, decoded to {cfg.image_size} px, {os.cpu_count()} CPU cores)\n\n{text}\n"
        )
        print(text)
        if not cfg.folder and not cfg.keep_images:
            shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(cache, ignore_errors=True)
    return run.dir


def _compare_monai(cfg: DataBenchConfig, folder: Path, cache: Path, row: Any) -> None:
    """MONAI's PersistentDataset against the medassist cache on the smallest folder: building the cache, and one
    epoch of shuffled batches read back in a later process (the medassist cache was built by the start-up rows)."""
    n = sum(1 for _ in folder.rglob("*.png"))
    kw = {"folder": str(folder), "size": cfg.image_size, "batch_size": cfg.batch_size, "seed": cfg.seed}
    ours = _child("read", cache / f"n{n}", **kw)
    row("one epoch of shuffled batches read, medassist cache", n, ours["epoch_s"], "s")
    store = cache / "monai"
    build = _child("monai", cache / "monai-unused", first=True, workers=default_workers(), cache_dir=str(store), **kw)
    row(f"MONAI PersistentDataset: cache built ({default_workers()} loader processes)", n, build["seconds"], "s")
    again = _child("monai", cache / "monai-unused", first=False, workers=0, cache_dir=str(store), **kw)
    row("one epoch of shuffled batches read, MONAI PersistentDataset", n, again["seconds"], "s")


def _folders(cfg: DataBenchConfig, work: Path) -> dict[int, Path]:
    """N -> folder: the user's folder, or generated images (the largest N written once, the others linked)."""
    if cfg.folder:
        root = Path(cfg.folder)
        if not root.is_dir():
            raise MedAssistError(f"folder not found: {root}")
        return {sum(1 for p in root.rglob("*") if p.is_file()): root}
    if not cfg.n or min(cfg.n) < 20:
        raise MedAssistError(f"n must list numbers of images of at least 20 each, got {cfg.n}")
    largest = max(cfg.n)
    t0 = time.perf_counter()
    full = make_png_folder(work / f"n{largest}", largest, cfg.side, seed=cfg.seed)
    if cfg.progress:
        print(f"generated {largest} PNGs of {cfg.side}x{cfg.side} in {time.perf_counter() - t0:.0f} s", file=sys.stderr)
    return {n: full if n == largest else linked_subset(full, work / f"n{n}", n) for n in sorted(set(cfg.n))}
