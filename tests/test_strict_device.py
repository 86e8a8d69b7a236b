"""The strict-device check (medassist.train.strict): what it catches and lets through (default run), and every
study's debug profile, ``medassist all`` and the torchrun tests under it (marked ``strictdevice``: ``pytest -m
strictdevice``, which .ci/run runs)."""

from __future__ import annotations

import copy
import io
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import blobs
from medassist.cli import main
from medassist.config import TrainConfig
from medassist.models import create_model
from medassist.train import fit, strict
from medassist.train.device import resolve, to_cpu, use
from medassist.train.strict import DEVICE, StrictDeviceError, on_device

SUPPORT = Path(__file__).parent / "support"


def _net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.BatchNorm1d(3))


# --- what the check catches --------------------------------------------------------------------------------------


def test_a_cpu_input_to_a_model_on_the_device_fails_as_on_cuda() -> None:
    with strict.strict():
        net = _net().to(DEVICE)
        assert all(on_device(p) for p in net.parameters()) and next(net.parameters()).device == DEVICE
        with pytest.raises(
            StrictDeviceError, match="linear: a cpu:0 .* combined with a cpu tensor of shape \\(5, 4\\)"
        ):
            net(torch.ones(5, 4))
        out = net(torch.ones(5, 4).to(DEVICE))
        assert on_device(out) and on_device(out * torch.tensor(2.0))  # a 0-dim CPU scalar mixes, as on CUDA


def test_numpy_and_files_need_cpu_first() -> None:
    with strict.strict():
        net = _net().to(DEVICE)
        out = net(torch.ones(5, 4, device=DEVICE)).detach()
        with pytest.raises(StrictDeviceError, match="turned into NumPy without .cpu()"):
            out.numpy()
        with pytest.raises(StrictDeviceError, match="turned into NumPy"):
            np.asarray(out)
        with pytest.raises(StrictDeviceError, match="pickled \\(torch.save\\)"):
            torch.save(net.state_dict(), io.BytesIO())
        assert out.cpu().numpy().shape == (5, 3) and on_device(out)  # .cpu() copies; the original stays
        torch.save(to_cpu({"model": net.state_dict(), "step": [out]}), io.BytesIO())


def test_marks_follow_tensors_as_cuda_placement_does() -> None:
    with strict.strict():
        x = torch.ones(3).to(DEVICE)
        assert on_device(torch.zeros(2, device=x.device)) and not on_device(torch.zeros(2))
        assert strict.on_host(torch.from_numpy(np.zeros(2))) and strict.on_host(torch.zeros(2))
        with pytest.raises(StrictDeviceError, match="combined with a cpu tensor"):
            x + torch.from_numpy(np.zeros(3, np.float32))  # data read from NumPy is on the CPU
        assert on_device(torch.nn.Parameter(x.clone())) and on_device(copy.deepcopy(x))
        assert on_device(x.view(3, 1)) and on_device(x.float()) and not on_device(x.to("cpu"))
        with pytest.raises(StrictDeviceError, match="from a CPU generator"):
            torch.randn(3, device=DEVICE, generator=torch.Generator())
        with pytest.raises(StrictDeviceError, match="indexed with indices on the device"):
            torch.arange(5)[torch.tensor([0, 1]).to(DEVICE)]
        assert on_device(x[torch.tensor([0, 1])])  # CPU indices into a device tensor: allowed on CUDA
        net = _net().to(DEVICE)
        net(torch.ones(5, 4, device=DEVICE)).sum().backward()
        assert all(on_device(p.grad) for p in net.parameters())
        opt = torch.optim.Adam(net.parameters())
        opt.step()
        assert all(on_device(v) or v.dim() == 0 for s in opt.state.values() for v in s.values())
        net.cpu()
        assert not any(on_device(p) for p in net.parameters())
        net(torch.ones(5, 4))


def test_the_cpu_resolves_to_the_stand_in_only_when_asked(monkeypatch) -> None:
    assert resolve("cpu").device == torch.device("cpu")
    monkeypatch.setenv(strict.ENV, "1")
    accel = resolve("cpu")
    assert accel.device == DEVICE and accel.moves and not accel.is_cuda
    assert resolve("auto").device == DEVICE  # the suite's auto is the CPU (conftest)


def test_a_fit_on_the_stand_in_gives_the_cpu_numbers_and_a_cpu_checkpoint(tmp_path: Path) -> None:
    """C3: the optimiser's moments and the moving average are saved from the device; the checkpoint holds CPU
    tensors (torch.save of a device tensor fails under the check), and the numbers are the CPU's."""
    cfg = TrainConfig(epochs=2, batch_size=32, ema=0.9, seed=3, grad_norms=True)

    def run(accel, ckpt=None):
        torch.manual_seed(0)
        model = create_model("cnn_gap", num_classes=2, in_channels=1, width=8)
        with use(accel), strict.strict() if accel.device == DEVICE else _nothing():
            res = fit(model, blobs(64, seed=1), blobs(32, seed=2), cfg, num_classes=2, progress=False, checkpoint=ckpt)
        return res

    plain = run(resolve("cpu"))
    checked = run(type(resolve("cpu"))(DEVICE), tmp_path / "ckpt.pt")
    cols = ["train_loss", "train_accuracy", "val_loss", "val_auc"]
    assert plain.history[cols].equals(checked.history[cols])
    assert plain.grad_norms.equals(checked.grad_norms)
    state = torch.load(tmp_path / "ckpt.pt", weights_only=False)
    assert state["optimizer"]["state"] and state["ema"] is not None


class _nothing:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


# --- every study under the check -----------------------------------------------------------------------------------


def _statuses(run: Path) -> dict[str, str]:
    return {name: p["status"] for name, p in json.loads((run / "pipeline.json").read_text())["parts"].items()}


@pytest.mark.strictdevice
def test_medassist_all_debug_runs_under_the_check(real_data_dir: Path, tmp_path: Path) -> None:
    """Every part of the pipeline (text, image, synthetic images and records, both deploys, fairness) on the
    stand-in device. C4 and C5 (the VAE figure, the GAN membership attack) fail here."""
    argv = ["all", "--profile", "debug", "--out", str(tmp_path), "--progress", "false"]
    argv += ["--pdf", "false"]  # the data directory: MEDASSIST_DATA_DIR (real_data_dir checks it)
    assert main(argv) == 0
    (run,) = tmp_path.glob("all-*")
    assert set(_statuses(run).values()) == {"complete"}, _statuses(run)


@pytest.mark.strictdevice
def test_synth_study_runs_under_the_check(real_data_dir: Path, tmp_path: Path) -> None:
    """The synthetic-image study alone (as medassist all runs it): every generator, DP-SGD, the figures and the
    privacy attacks. C4 (the VAE's reconstruction figure fed CPU images) and C5 (the GAN's membership attack fed
    CPU images) fail here."""
    argv = ["synth", "--profile", "debug", "--subsample", "150", "--eval-samples", "150", "--out", str(tmp_path)]
    assert main([*argv, "--progress", "false", "--data-dir", str(real_data_dir)]) == 0


@pytest.mark.strictdevice
def test_segmentation_deploy_and_tabular_run_under_the_check(real_data_dir: Path, tmp_path: Path) -> None:
    """The segmentation study and its deploy (C6: the pruned network, fine-tuned on the device, is exported with a
    CPU example), and the tabular study."""
    common = ["--profile", "debug", "--progress", "false", "--data-dir", str(real_data_dir)]
    assert main(["segment", "--images", "drive", "--out", str(tmp_path / "seg"), *common]) == 0
    (seg,) = (tmp_path / "seg").iterdir()
    assert main(["deploy", "--run", str(seg), "--out", str(tmp_path / "dep"), *common]) == 0
    assert main(["tabular", "--out", str(tmp_path / "tab"), *common]) == 0


@pytest.mark.strictdevice
@pytest.mark.parametrize("command", [["bench", "medmnist"], ["bench", "text"]])
def test_the_benchmarks_of_the_gpu_check_run_under_the_check(real_data_dir: Path, tmp_path: Path, command) -> None:
    argv = [*command, "--profile", "debug", "--progress", "false", "--out", str(tmp_path)]
    assert main([*argv, "--data-dir", str(real_data_dir)] if command[1] == "medmnist" else argv) == 0


def _torchrun(out: Path, what: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK")}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    return subprocess.run(
        [*cmd, str(SUPPORT / "ddp_worker.py"), str(out), "-1", what],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.strictdevice
@pytest.mark.parametrize("what", ["classifier", "gan", "diffusion"])
def test_torchrun_trains_one_model_under_the_check(tmp_path: Path, what: str) -> None:
    """Two ranks on the stand-in device: a classifier, a GAN (C8: the step reads ``latent_dim`` through DDP's
    wrapper; the discriminator's gradients are averaged, so both ranks end with one discriminator) and a diffusion
    model (C8: ``timesteps``). Both ranks end with the same weights."""
    proc = _torchrun(tmp_path, what)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = (torch.load(tmp_path / f"weights-rank{r}.pt") for r in (0, 1))
    assert w0.keys() == w1.keys()
    assert all(torch.equal(w0[k], w1[k]) for k in w0), [k for k in w0 if not torch.equal(w0[k], w1[k])]
    if what == "gan":
        assert any(k.startswith("discriminator.") for k in w0)
