"""The CPU cost of the device layer on the inference path, in one process: a recurrent model's batch-1 forward pass
under the plain ``torch.autocast`` call it replaced, under ``Accelerator.autocast()``, and with ``Accelerator.put``
on its inputs; 20 interleaved rounds of 100 calls after warm-up, medians.

    .venv/bin/python scripts/device_overhead.py
"""

import time

import numpy as np
import torch

from medassist.models import create_model
from medassist.train.device import Accelerator

torch.manual_seed(0)
torch.set_num_threads(2)
model = create_model("bilstm", num_classes=14, vocab_size=5000).eval()
ids, mask = torch.randint(1, 5000, (1, 60)), torch.ones(1, 60, dtype=torch.bool)
acc = Accelerator()


def plain() -> None:
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=False):
        model(ids, mask)


def accelerator() -> None:
    with torch.no_grad(), acc.autocast():
        model(ids, mask)


def accelerator_put() -> None:
    with torch.no_grad(), acc.autocast():
        model(acc.put(ids), acc.put(mask))


ways = {"torch.autocast": plain, "Accelerator.autocast": accelerator, "Accelerator.autocast + put": accelerator_put}
for _ in range(50):
    for f in ways.values():
        f()
medians: dict[str, list[float]] = {k: [] for k in ways}
for _ in range(20):
    for name, f in ways.items():
        times = []
        for _ in range(100):
            t0 = time.perf_counter()
            f()
            times.append(time.perf_counter() - t0)
        medians[name].append(float(np.median(times)))
base = np.median(medians["torch.autocast"])
for name, v in medians.items():
    print(f"{name:28s} {1000 * np.median(v):.4f} ms  {np.median(v) / base:.3f}x")
