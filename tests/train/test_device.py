"""The device decision: resolution and refusal, what a run records, device-independent checkpoints, step functions
that keep to the model's device, and (marked ``gpu``, skipped without CUDA) training on a GPU."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from helpers import blobs
from medassist.cli import main
from medassist.config import DeviceOptions, TrainConfig, option
from medassist.errors import MedAssistError
from medassist.models import create_model
from medassist.run import Run
from medassist.train import device as device_mod
from medassist.train import fit
from medassist.train.device import (
    Accelerator,
    current,
    on_device,
    resolve,
    resolve_device,
    state_to_cpu,
    use,
)

TORCH = torch.__version__
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_auto_is_the_cpu_on_a_machine_without_accelerators(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "mps_available", lambda: False)
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve("auto", "32") == Accelerator(torch.device("cpu"), "32")


def test_auto_prefers_cuda_then_mps(monkeypatch) -> None:
    monkeypatch.delenv(device_mod.AUTO_ENV)  # the suite's own setting (conftest): auto means the CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(MedAssistError, match=r"--device cuda:2: this machine has 2 CUDA device\(s\), cuda:0 to cuda:1"):
        resolve_device("cuda:2")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert resolve_device("cuda") == torch.device("cuda", 1)  # under torchrun: the rank's own GPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "mps_available", lambda: True)
    assert resolve_device("auto") == torch.device("mps")


def test_the_suite_runs_on_the_cpu_on_a_gpu_machine(monkeypatch) -> None:
    """C9: outside tests marked gpu, --device auto is the CPU even where CUDA is visible (conftest sets it)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto") == torch.device("cpu")


def test_cuda_n_under_torchrun_is_refused(monkeypatch) -> None:
    """P7: cuda:N would put every rank on GPU N."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(MedAssistError, match="--device cuda:1 under torchrun would put every rank on one GPU"):
        resolve_device("cuda:1")


def test_bf16_needs_a_native_gpu_and_is_checked_on_the_gpu_asked_for(monkeypatch) -> None:
    """P5: a GPU that only emulates bfloat16 (compute capability below 8.0) is refused; the capability read is the
    asked device's, not the current one's."""
    asked = []
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: asked.append(d) or (7, 0))
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda d: "Tesla V100")
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what torch says with emulation
    why = device_mod.precision_refusal(torch.device("cuda", 1), "bf16-mixed")
    assert "Tesla V100 has no native bfloat16" in why and asked == [torch.device("cuda", 1)]
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda d: (9, 0))
    assert device_mod.precision_refusal(torch.device("cuda", 0), "bf16-mixed") == ""


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_dp_sgd_refuses_mixed_precision(precision: str) -> None:
    """P10: per-example clipping in a low precision weakens the (epsilon, delta) claim."""
    with use(Accelerator(torch.device("cpu"), precision)), pytest.raises(MedAssistError, match="DP-SGD runs at"):
        _fit(TrainConfig(epochs=1, batch_size=32), privacy=object())


def test_a_cuda_session_that_fell_back_to_the_cpu_is_refused() -> None:
    """P3: onnxruntime-gpu lists CUDA but falls back to the CPU when its libraries do not load."""
    from medassist.deploy.bundle_model import check_session_provider

    class FellBack:
        def get_providers(self) -> list[str]:
            return ["CPUExecutionProvider"]

    with pytest.raises(MedAssistError, match="offers CUDAExecutionProvider but could not start it"):
        check_session_provider(FellBack(), "cuda")
    check_session_provider(FellBack(), "cpu")


def test_the_gan_discriminator_is_loss_scaled_at_16_mixed(tmp_path) -> None:
    """P4: at float16 the discriminator's step has a gradient scaler of its own, saved in the checkpoint."""
    from medassist.synth.gan import Discriminator, GANStep, Generator

    torch.manual_seed(0)
    step = GANStep(Discriminator(width=8))
    with use(Accelerator(torch.device("cpu"), "16-mixed")):
        fit(
            Generator(image_size=12, latent_dim=8, width=8),
            blobs(64, seed=1),
            blobs(32, seed=2),
            TrainConfig(epochs=1, batch_size=32, monitor="val_loss"),
            num_classes=2,
            progress=False,
            step_fn=step,
            validate=lambda m: {"loss": 0.0},
            checkpoint=tmp_path / "ckpt.pt",
        )
    assert step.scaler is not None and step.scaler.get_scale() > 0
    assert "scaler" in torch.load(tmp_path / "ckpt.pt", weights_only=False)["step_state"]


@pytest.mark.parametrize(
    ("device", "precision", "message"),
    [
        ("cuda", "32", f"--device cuda: no CUDA device is visible (torch {TORCH}"),
        ("cuda:1", "32", "--device cuda:1: no CUDA device is visible"),
        ("mps", "32", "--device mps: no Apple MPS device is available"),
        ("tpu", "32", "--device tpu: unknown device; choose auto, cpu, cuda, cuda:N or mps"),
        ("cpu", "16-mixed", "--precision 16-mixed: float16 autocast needs a CUDA or MPS device"),
        ("cpu", "64", "--precision 64: unknown precision; choose 32, bf16-mixed, 16-mixed"),
    ],
)
def test_what_the_machine_lacks_is_refused(monkeypatch, device: str, precision: str, message: str) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(device_mod, "mps_available", lambda: False)
    with pytest.raises(MedAssistError) as err:
        resolve(device, precision)
    assert message in str(err.value)


def test_bf16_is_refused_on_a_cpu_without_native_bfloat16(monkeypatch) -> None:
    monkeypatch.setattr(device_mod, "cpu_bf16_supported", lambda: False)
    with pytest.raises(MedAssistError, match="--precision bf16-mixed: this CPU has no native bfloat16"):
        resolve("cpu", "bf16-mixed")
    monkeypatch.setattr(device_mod, "cpu_bf16_supported", lambda: True)
    assert resolve("cpu", "bf16-mixed").amp_dtype == torch.bfloat16


@pytest.mark.parametrize("command", [["image"], ["text"], ["synth"], ["all"], ["bench", "medmnist"], ["bench", "text"]])
def test_a_study_on_a_missing_gpu_exits_2_at_once_and_writes_nothing(monkeypatch, tmp_path, capsys, command) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = [*command, "--profile", "debug", "--out", str(tmp_path), "--device", "cuda"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"--device cuda: no CUDA device is visible (torch {TORCH}); use --device cpu" in err
    assert "Traceback" not in err and not any(tmp_path.iterdir())


def test_every_study_and_benchmark_takes_device_and_precision() -> None:
    from medassist.bench.medmnist import BenchConfig
    from medassist.bench.synth import SynthBenchConfig
    from medassist.bench.text import TextBenchConfig
    from medassist.deploy.config import DeployConfig
    from medassist.studies.fairness import FairnessConfig
    from medassist.studies.image_config import ImageStudyConfig
    from medassist.studies.pipeline import PipelineConfig
    from medassist.studies.synth_config import SynthStudyConfig
    from medassist.studies.text_setup import TextStudyConfig
    from medassist.studies.tune import TuneConfig

    for cls in (
        ImageStudyConfig,
        TextStudyConfig,
        SynthStudyConfig,
        DeployConfig,
        FairnessConfig,
        PipelineConfig,
        TuneConfig,
        BenchConfig,
        TextBenchConfig,
        SynthBenchConfig,
    ):
        cfg = cls()
        assert (cfg.device, cfg.precision) == ("auto", "32"), cls.__name__
    assert "bf16" not in {f.name for f in dataclasses.fields(TrainConfig)}  # folded into --precision


def test_the_pipeline_hands_its_device_to_every_part(tmp_path) -> None:
    from medassist.studies.pipeline import PARTS, Pipeline, PipelineConfig, _configure

    cfg = PipelineConfig(device="cuda:1", precision="bf16-mixed")
    pipe = Pipeline(tmp_path, cfg)
    for part in PARTS:
        pipe.part(part.name)["run"] = part.name
    for part in PARTS:
        sub = _configure(part, cfg, pipe)
        assert (sub.device, sub.precision) == ("cuda:1", "bf16-mixed"), part.name


@dataclass
class _TinyConfig(DeviceOptions):
    out: str = option("runs", "")


@on_device
def _tiny_study(cfg: _TinyConfig) -> Path:
    assert current().device == torch.device("cpu")  # current while the study runs
    with Run.create(cfg.out, "tiny", dataclasses.asdict(cfg)) as run:
        run.write_metrics({"auc": 0.5})
    return run.dir


def test_a_run_records_its_device_in_config_and_metrics(tmp_path) -> None:
    run_dir = _tiny_study(_TinyConfig(out=str(tmp_path)))
    assert current().device == torch.device("cpu") and current().precision == "32"  # reset after the study
    text = (run_dir / "config.yaml").read_text()
    assert text.startswith("# computed on cpu, precision 32, torch")
    assert yaml.safe_load(text)["device"] == "cpu"  # 'auto' recorded as what it resolved to
    acc = json.loads((run_dir / "metrics.json").read_text())["accelerator"]
    assert acc["device"] == "cpu" and acc["precision"] == "32" and acc["torch"] == TORCH
    assert acc["peak_rss_gb"] > 0 and acc["peak_gpu_memory_gb"] is None
    assert json.loads((run_dir / "metrics.json").read_text())["auc"] == 0.5


def _fit(cfg: TrainConfig, **kw):
    torch.manual_seed(cfg.seed)
    model = create_model("cnn_gap", num_classes=2, in_channels=1, width=8)
    return model, fit(model, blobs(96, seed=1), blobs(48, seed=2), cfg, num_classes=2, progress=False, **kw)


def _tensors(obj):
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def test_a_checkpoint_from_a_gpu_run_resumes_on_the_cpu(tmp_path) -> None:
    """Checkpoints hold CPU tensors; the CUDA random state a GPU run adds is skipped on the CPU, and the resumed run
    ends with the numbers of an uninterrupted one."""
    cfg = TrainConfig(epochs=3, batch_size=32, augment=True, ema=0.9, seed=7)
    _, full = _fit(cfg)
    ckpt = tmp_path / "ckpt.pt"
    _fit(dataclasses.replace(cfg, epochs=1), checkpoint=ckpt)
    state = torch.load(ckpt, map_location="meta", weights_only=False)  # what a machine without the GPU reads
    assert {t.device.type for t in _tensors(state)} == {"meta"}
    state = torch.load(ckpt, weights_only=False)
    assert {t.device.type for t in _tensors(state)} == {"cpu"}
    state["rng"]["cuda"] = torch.zeros(16, dtype=torch.uint8)  # as a CUDA run writes it
    torch.save(state, ckpt)
    _, resumed = _fit(cfg, checkpoint=ckpt, resume=True)
    cols = ["epoch", "train_loss", "val_loss", "val_auc"]
    np.testing.assert_allclose(resumed.history[cols].to_numpy(), full.history[cols].to_numpy(), rtol=1e-6)


def test_state_to_cpu_copies_and_keeps_module_versions() -> None:
    model = torch.nn.BatchNorm1d(3)
    state = model.state_dict()
    copied = state_to_cpu(state)
    assert copied["weight"].data_ptr() != state["weight"].data_ptr()
    assert copied._metadata == state._metadata  # type: ignore[attr-defined]
    torch.nn.BatchNorm1d(3).load_state_dict(copied)


def test_fp16_training_scales_its_gradients() -> None:
    """The GradScaler path of 16-mixed, run on the CPU (where PyTorch has float16 autocast) past resolve()."""
    with use(Accelerator(torch.device("cpu"), "16-mixed")):
        model, res = _fit(TrainConfig(epochs=3, batch_size=32, lr=3e-3, grad_norms=True))
    assert res.best_score > 0.9 and (res.grad_norms["grad_norm"] > 0).all()
    assert all(p.dtype == torch.float32 for p in model.parameters())  # the weights stay float32


# --- step functions keep to the model's device --------------------------------------------------------------------
# On PyTorch's meta device every tensor has a device but no data: a step that creates a tensor on the CPU and mixes
# it with the model's (noise, a timestep, an index, a weight) fails there, as it would on a GPU.


def _meta(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    return tuple(t.to("meta") for t in tensors)


def test_the_default_and_weighted_steps_stay_on_the_model_device() -> None:
    from medassist.fairness.mitigate import weighted_step

    model = create_model("cnn_gap", num_classes=2, in_channels=1, width=8).to("meta")
    x, y, w = _meta(torch.zeros(4, 1, 12, 12), torch.tensor([0, 1, 0, 1]), torch.ones(4))
    loss, logits = weighted_step("multi-class")(model, (x, w), y)
    assert loss.device.type == "meta" and logits.shape == (4, 2)


def test_the_gan_step_with_diffaugment_stays_on_the_model_device() -> None:
    from medassist.synth.gan import Discriminator, GANStep, Generator

    g = Generator(image_size=28, latent_dim=8, width=16).to("meta")
    step = GANStep(Discriminator(width=16), augment=("translation", "cutout")).to(torch.device("meta"))
    x, y = _meta(torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 0, 1]))
    loss, _, logs = step(g, (x,), y)
    assert loss.device.type == "meta" and logs["d_real"].device.type == "meta"


def test_the_vae_and_diffusion_steps_stay_on_the_model_device() -> None:
    from medassist.synth.diffusion import ConditionalDiffusion, diffusion_step
    from medassist.synth.vae import ConditionalVAE, VAEStep

    x, y = _meta(torch.zeros(4, 1, 28, 28), torch.tensor([0, 1, 0, 1]))
    loss, _, _ = VAEStep()(ConditionalVAE(latent_dim=4, width=8).to("meta"), (x,), y)
    assert loss.device.type == "meta"
    diffusion = ConditionalDiffusion(image_size=28, channels=(8, 16), timesteps=10).to("meta")
    loss, _ = diffusion_step(diffusion, (x,), y)
    assert loss.device.type == "meta"


def test_the_distillation_and_multitask_steps_stay_on_the_model_device() -> None:
    from medassist.deploy.distill import distillation_step
    from medassist.studies.text import multitask_step

    model = create_model("cnn_gap", num_classes=2, in_channels=1, width=8).to("meta")
    x, teacher, y = _meta(torch.zeros(4, 1, 12, 12), torch.zeros(4, 2), torch.tensor([0, 1, 0, 1]))
    loss, _ = distillation_step(2.0, 0.5)(model, (x, teacher), y)
    assert loss.device.type == "meta"

    class TwoHeads(torch.nn.Module):  # the multi-task model's outputs: (findings (B, K), abnormal (B,))
        def __init__(self) -> None:
            super().__init__()
            self.findings, self.abnormal = torch.nn.Linear(5, 3), torch.nn.Linear(5, 1)

        def forward(self, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return self.findings(h), self.abnormal(h).squeeze(1)

    h, yl = _meta(torch.zeros(4, 5), torch.zeros(4, 3))
    loss, _ = multitask_step(0)(TwoHeads().to("meta"), (h,), yl)
    assert loss.device.type == "meta"


# --- service, sweeps, env --------------------------------------------------------------------------------------


def test_serve_refuses_a_provider_the_machine_lacks_before_reading_bundles(monkeypatch) -> None:
    import onnxruntime as ort

    from medassist.serve.app import serve
    from medassist.serve.config import ServeConfig

    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    with pytest.raises(MedAssistError, match="--provider cuda: ONNX Runtime .* has no CUDAExecutionProvider"):
        serve(["no/such/bundle"], ServeConfig(provider="cuda"))
    with pytest.raises(MedAssistError, match="--provider rocm: unknown provider"):
        serve(["no/such/bundle"], ServeConfig(provider="rocm"))


def test_sweep_trials_reserve_gpus_only_on_cuda() -> None:
    from medassist.studies.tune import TuneConfig, trial_resources

    with pytest.raises(MedAssistError, match="--gpus-per-trial 0 with --device cuda:0: Ray hides every GPU"):
        trial_resources(TuneConfig(device="cuda:0", gpus_per_trial=0))  # P6

    assert trial_resources(TuneConfig(device="cpu")) == {"cpu": 1.0}
    assert trial_resources(TuneConfig(device="cuda:0")) == {"cpu": 1.0, "gpu": 1.0}
    assert trial_resources(TuneConfig(device="cuda:0", gpus_per_trial=0.25)) == {"cpu": 1.0, "gpu": 0.25}
    with pytest.raises(MedAssistError, match="--gpus-per-trial 0.5: the sweep runs on cpu; give --device cuda"):
        trial_resources(TuneConfig(device="cpu", gpus_per_trial=0.5))


def test_env_says_what_this_machine_offers(capsys, tmp_path) -> None:
    assert main(["env", "--data-dir", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert f"torch {TORCH}" in out and "devices (--device auto picks" in out
    assert "  cpu " in out and "--precision 32" in out and "fairlearn" in out
    assert f"data directory: {tmp_path}" in out


# --- on a GPU ---------------------------------------------------------------------------------------------------


@pytest.mark.gpu
@needs_cuda
def test_training_on_cuda_matches_the_cpu_and_resumes_there(tmp_path) -> None:
    cfg = TrainConfig(epochs=3, batch_size=32, lr=3e-3, seed=1)
    _, on_cpu = _fit(cfg)
    ckpt = tmp_path / "ckpt.pt"
    with use(resolve("cuda", "32")):
        model, on_gpu = _fit(cfg, checkpoint=ckpt)
    assert next(model.parameters()).is_cuda
    assert abs(on_gpu.best_score - on_cpu.best_score) < 0.02  # the last digits differ (other kernels)
    assert {t.device.type for t in _tensors(torch.load(ckpt, weights_only=False))} == {"cpu"}
    _, resumed = _fit(dataclasses.replace(cfg, epochs=4), checkpoint=ckpt, resume=True)  # on the CPU
    assert len(resumed.history) == 4


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_trains_on_cuda(precision: str) -> None:
    with use(resolve("cuda", precision)) as accel:
        _, res = _fit(TrainConfig(epochs=4, batch_size=32, lr=3e-3))
        assert accel.peak_memory_gb() > 0
    assert res.best_score > 0.9
