"""Data-parallel training under torch.distributed.run: 2 CPU processes agree with one process on the combined batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import blobs
from medassist.config import TrainConfig
from medassist.models import create_model
from medassist.train import fit
from medassist.train.distributed import Ranks, all_sum, shard

HERE = Path(__file__).parents[1] / "support"  # ddp_worker.py


def _torchrun(out: Path, *extra: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run(
        [*cmd, str(HERE / "ddp_worker.py"), str(out), *extra], env=env, capture_output=True, text=True, timeout=300
    )


def test_shards_cover_the_batch_once_and_one_process_is_unchanged() -> None:
    idx = torch.arange(10)
    parts = [shard(idx, Ranks(rank, 2, rank)) for rank in (0, 1)]
    assert sorted(torch.cat(parts).tolist()) == list(range(10)) and len(parts[0]) == len(parts[1])
    assert torch.equal(shard(idx, Ranks()), idx) and all_sum([1.0, 2.0], Ranks()) == [1.0, 2.0]


@pytest.mark.process
def test_two_processes_train_as_one_on_the_combined_batch(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = _torchrun(out)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0 = torch.load(out / "weights-rank0.pt")
    w1 = torch.load(out / "weights-rank1.pt")
    assert all(torch.equal(w0[k], w1[k]) for k in w0)  # the ranks end with the same weights
    # One process on the combined batches, same seed and recipe: plain SGD, so equal weights mean equal gradients.
    torch.manual_seed(0)
    cfg = TrainConfig(epochs=3, batch_size=32, optimizer="sgd", momentum=0.0, lr=0.05, seed=0, threads=1)
    model = create_model("cnn", num_classes=2, in_channels=1, image_size=12)
    single = fit(model, blobs(64, seed=1), blobs(32, seed=2), cfg, num_classes=2, progress=False)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(w0[k], v, rtol=1e-4, atol=1e-5)
    history = json.loads((out / "history-rank0.json").read_text())
    assert [round(h["train_loss"], 4) for h in history] == [round(x, 4) for x in single.history["train_loss"]]
    # Only rank 0 wrote a run folder, with its checkpoint.
    runs = list(out.glob("ddp-*"))
    assert len(runs) == 1 and json.loads((runs[0] / "status.json").read_text())["status"] == "complete"


@pytest.mark.process
def test_a_failing_rank_fails_the_job(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    proc = _torchrun(out, "1")
    assert proc.returncode != 0 and "rank 1 fails on purpose" in proc.stderr
    assert not (out / "weights-rank0.pt").exists()
    for run in out.glob("ddp-*"):
        assert json.loads((run / "status.json").read_text())["status"] == "failed"


@pytest.mark.parametrize("world", [1])
def test_one_process_is_the_default(world: int) -> None:
    from medassist.train.distributed import ranks

    assert ranks().world_size == world and ranks().is_main
