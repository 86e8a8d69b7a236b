"""``medassist env``: what this machine offers a run — devices and the precisions each supports, threads, library
versions, the data directory. The first command a new user runs."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata
from typing import Any

import torch

from medassist.train.device import PRECISIONS, cpu_bf16_supported, mps_available, precision_refusal, resolve_device

LIBRARIES = (
    ("medassist", "this toolkit"),
    ("torch", "training engine, models"),
    ("numpy", "arrays"),
    ("scikit-learn", "TF-IDF baseline, metrics"),
    ("monai", "diffusion model, Fréchet distance"),
    ("transformers", "MiniLM encoder and tokenizer"),
    ("onnx", "export"),
    ("onnxruntime", "deployed inference"),
    ("onnxruntime-gpu", "deployed inference on CUDA"),
    ("captum", "Grad-CAM"),
    ("fairlearn", "subgroup audit, mitigation"),
    ("opacus", "DP-SGD"),
    ("sdv", "synthetic patient records"),
    ("fastapi", "point-of-care service"),
    ("ray", "sweeps"),
    ("mlflow", "tracking"),
    ("weasyprint", "PDF report"),
)


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def devices() -> list[dict[str, Any]]:
    """One entry per device a run can use: its ``--device`` name, what it is, and which precisions it runs."""
    out = []
    cpu = torch.device("cpu")
    out.append(
        {
            "device": "cpu",
            "name": platform.processor() or platform.machine(),
            "detail": f"{os.cpu_count()} cores, PyTorch uses {torch.get_num_threads()} threads, "
            f"{torch.backends.cpu.get_cpu_capability()}, native bfloat16: {'yes' if cpu_bf16_supported() else 'no'}",
            "precisions": [p for p in PRECISIONS if not precision_refusal(cpu, p)],
        }
    )
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            dev = torch.device("cuda", i)
            props = torch.cuda.get_device_properties(dev)
            out.append(
                {
                    "device": f"cuda:{i}",
                    "name": props.name,
                    "detail": f"{props.total_memory / 2**30:.1f} GB, compute capability {props.major}.{props.minor}",
                    "precisions": [p for p in PRECISIONS if not precision_refusal(dev, p)],
                }
            )
    if mps_available():
        mps = torch.device("mps")
        out.append(
            {
                "device": "mps",
                "name": "Apple MPS",
                "detail": "",
                "precisions": [p for p in PRECISIONS if not precision_refusal(mps, p)],
            }
        )
    return out


def onnx_providers() -> list[str]:
    """ONNX Runtime's execution providers here ([] without ONNX Runtime)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return []
    return list(ort.get_available_providers())


def describe_env(data_dir: str | None = None) -> str:
    """The text ``medassist env`` prints."""
    from medassist.data import available, resolve_data_dir

    lines = [
        f"medassist {_version('medassist') or '?'} on Python {platform.python_version()} ({sys.platform}, "
        f"{platform.machine()})",
        f"torch {torch.__version__}"
        + (f", CUDA {torch.version.cuda}" if torch.version.cuda else ", no CUDA in this build")
        + (f", cuDNN {torch.backends.cudnn.version()}" if torch.cuda.is_available() else ""),
        "",
        f"devices (--device auto picks {resolve_device('auto')}):",
    ]
    for d in devices():
        detail = f"; {d['detail']}" if d["detail"] else ""
        lines.append(f"  {d['device']:8s} {d['name']}{detail}")
        lines.append(f"  {'':8s} --precision {' | '.join(d['precisions'])}")
    providers = onnx_providers()
    lines += ["", f"ONNX Runtime providers (medassist serve --provider): {', '.join(providers) or 'none'}", ""]
    lines.append("libraries:")
    for dist, role in LIBRARIES:
        version = _version(dist)
        if version or dist != "onnxruntime-gpu":
            lines.append(f"  {dist:16s} {version or 'not installed':14s} {role}")
    root = resolve_data_dir(data_dir)
    have = available(root) if root.is_dir() else []
    lines += [
        "",
        f"data directory: {root}" + ("" if root.is_dir() else " (does not exist yet)"),
        f"  MedMNIST files present: {', '.join(have) or 'none'} (medassist data list)",
    ]
    return "\n".join(lines)
