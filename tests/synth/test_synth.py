"""The synthetic-data pieces on tiny tensors: generators through the one engine, fidelity, privacy, DP-SGD."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import blobs
from medassist.config import TrainConfig
from medassist.errors import DataError, MedAssistError
from medassist.synth import fidelity, privacy
from medassist.synth.common import check_image_size
from medassist.train.data import ImageBatcher, to_tensor
from medassist.train.engine import Labelled, fit

SIZE = 12
CFG = TrainConfig(epochs=1, batch_size=16, monitor="val_loss")


def _data(n: int = 48) -> tuple[Labelled, torch.Tensor, torch.Tensor]:
    s = blobs(n, size=SIZE, seed=1)
    x = to_tensor(s.images)
    return Labelled(ImageBatcher(x), s.labels), x, torch.from_numpy(s.labels)


def _vae():
    from medassist.synth.vae import ConditionalVAE, VAEStep, vae_validation

    _, x, y = _data()
    return (
        ConditionalVAE(num_classes=2, image_size=SIZE, latent_dim=4, width=8),
        VAEStep(warmup_steps=2, free_bits=0.1),
        vae_validation(x, y),
    )


def _gan():
    from medassist.synth.gan import Discriminator, GANStep, Generator

    return (
        Generator(num_classes=2, image_size=SIZE, latent_dim=8, width=16),
        GANStep(Discriminator(num_classes=2, width=16)),
        (lambda m: {"loss": 0.0}),
    )


def _diffusion():
    from medassist.synth.diffusion import ConditionalDiffusion, diffusion_step, diffusion_validation

    _, x, y = _data()
    return (
        ConditionalDiffusion(num_classes=2, image_size=SIZE, channels=(8, 16, 16)),
        diffusion_step,
        diffusion_validation(x[:8], y[:8]),
    )


@pytest.mark.parametrize(
    "build,logs",
    [
        (_vae, ["train_recon", "train_kl", "val_active_units"]),
        (_gan, ["train_d_loss", "train_d_real", "train_d_fake"]),
        (_diffusion, ["val_loss"]),
    ],
)
def test_each_generator_trains_through_fit_and_samples_the_asked_classes(build, logs) -> None:
    torch.manual_seed(0)
    model, step, validate = build()
    train, _, _ = _data()
    before = [p.detach().clone() for p in model.parameters()]
    res = fit(model, train, train, CFG, num_classes=2, progress=False, step_fn=step, validate=validate)
    assert set(logs) <= set(res.history.columns)
    assert np.isfinite(res.history["train_loss"]).all()
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    y = torch.tensor([0, 1, 1, 0, 1])
    kw = {"steps": 2} if hasattr(model, "unet") else {}
    x = model.generate(y, torch.Generator().manual_seed(0), **kw)
    assert x.shape == (5, 1, SIZE, SIZE) and x.min() >= -1 and x.max() <= 1


def test_gan_discriminator_travels_in_the_checkpoint(tmp_path) -> None:
    torch.manual_seed(0)
    g, step, validate = _gan()
    train, _, _ = _data()
    fit(
        g,
        train,
        train,
        CFG,
        num_classes=2,
        progress=False,
        step_fn=step,
        validate=validate,
        checkpoint=tmp_path / "c.pt",
    )
    saved = torch.load(tmp_path / "c.pt", weights_only=False)["step_state"]
    for k, v in step.d.state_dict().items():
        assert torch.equal(saved["discriminator"][k], v)
    _, fresh, _ = _gan()
    fresh.load_state_dict(saved)
    assert fresh.opt_d.state_dict()["state"]  # Adam moments restored


def test_minibatch_std_lets_the_discriminator_see_a_batch_of_copies() -> None:
    from medassist.synth.gan import Discriminator

    torch.manual_seed(0)
    _, x, y = _data(8)
    copies = x[:1].expand(8, -1, -1, -1)
    for mbstd in (False, True):
        d = Discriminator(num_classes=2, width=16, minibatch_std=mbstd).eval()
        with torch.no_grad():
            alone, among_copies, among_others = d(x[:1], y[:1]), d(copies, y[:1].expand(8)), d(x, y)
        if mbstd:  # the same image scores differently beside copies of itself than beside other images
            assert not torch.allclose(among_copies[0], among_others[0])
            assert torch.allclose(alone, among_copies[:1])  # one image or its copies: no spread either way
        else:
            assert torch.allclose(among_copies[0], among_others[0]) and torch.allclose(alone, among_others[:1])


def test_diffaugment_shifts_and_cuts_out_and_lets_gradients_through() -> None:
    from medassist.synth.gan import GANStep, diff_augment

    torch.manual_seed(0)
    x = (torch.arange(4 * 16 * 16, dtype=torch.float32).view(4, 1, 16, 16) + 1).requires_grad_()
    shifted = diff_augment(x, ("translation",))
    assert shifted.shape == x.shape
    for i in range(4):  # every pixel of a shifted image comes from that image
        assert set(shifted[i].flatten().tolist()) <= set(x[i].flatten().tolist())
    assert not torch.equal(shifted, x)  # 4 images, each of 25 shifts: all unshifted has chance 1/390625
    cut = diff_augment(x, ("cutout",))
    assert ((cut == 0).flatten(1).sum(1) == 8 * 8).all()  # one half-size square per image
    cut.sum().backward()
    assert x.grad is not None and (x.grad.flatten(1).sum(1) == 16 * 16 - 64).all()
    with pytest.raises(MedAssistError, match="unknown DiffAugment"):
        GANStep(_gan()[1].d, augment=("flip",))


def test_a_validate_hook_needs_a_monitor_it_gives() -> None:
    model, step, _ = _gan()
    train, _, _ = _data()
    with pytest.raises(MedAssistError, match="val_frechet_distance"):
        fit(
            model,
            train,
            train,
            CFG,
            num_classes=2,
            progress=False,
            step_fn=step,
            validate=lambda m: {"frechet_distance": 1.0},
        )


def test_frechet_distance_is_zero_for_a_set_against_itself_and_grows_with_noise() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(300, 6, generator=g, dtype=torch.float64)
    assert fidelity.frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    d = [
        fidelity.frechet_distance(a, a + s * torch.randn(a.shape, generator=g, dtype=torch.float64))
        for s in (0.1, 0.5, 1.0)
    ]
    assert 0 < d[0] < d[1] < d[2]


def test_precision_recall_density_coverage() -> None:
    g = torch.Generator().manual_seed(0)
    real, same = torch.randn(400, 4, generator=g), torch.randn(400, 4, generator=g)
    ok = fidelity.prdc(real, same)
    assert ok["precision"] > 0.8 and ok["recall"] > 0.8 and ok["coverage"] > 0.8
    far = fidelity.prdc(real, same + 10)
    assert far["precision"] == far["recall"] == far["coverage"] == 0.0
    collapsed = fidelity.prdc(real, real[:1].repeat(400, 1) + 1e-3 * same)  # one mode: realistic, not diverse
    assert collapsed["coverage"] < 0.1 and collapsed["recall"] < 0.1


def test_dcr_and_attack_are_chance_for_one_distribution_and_certain_for_a_copy() -> None:
    g = torch.Generator().manual_seed(0)
    train, holdout, other = (torch.randn(300, 5, generator=g) for _ in range(3))
    fair = privacy.distance_attack(other, train, holdout, n_boot=200)
    assert abs(fair["auc"] - 0.5) < 0.08 and fair["auc_lo"] < 0.5 < fair["auc_hi"]
    copy = privacy.distance_attack(train.clone(), train, holdout, n_boot=200)
    assert copy["auc"] > 0.99
    assert privacy.dcr_summary(train.clone(), train, holdout)["share_below_holdout_p5"] == 1.0
    assert privacy.dcr_summary(other, train, holdout)["share_below_holdout_p5"] < 0.15


def test_opacus_reports_a_finite_epsilon_near_its_target() -> None:
    from medassist.synth.dp import OpacusPrivacy
    from medassist.synth.vae import ConditionalVAE, VAEStep, vae_validation

    torch.manual_seed(0)
    train, x, y = _data()
    hook = OpacusPrivacy(target_epsilon=8.0, delta=1 / 48)
    model = ConditionalVAE(num_classes=2, image_size=SIZE, latent_dim=4, width=8)
    fit(
        model,
        train,
        train,
        CFG,
        num_classes=2,
        progress=False,
        step_fn=VAEStep(schedule="none"),
        validate=vae_validation(x, y),
        privacy=hook,
    )
    assert np.isfinite(hook.epsilon()) and 0 < hook.epsilon() <= 8.0 * 1.01
    assert hook.noise_multiplier > 0


def test_opacus_refuses_batchnorm_and_an_unreachable_epsilon() -> None:
    from medassist.synth.dp import OpacusPrivacy, check_reachable
    from medassist.synth.gan import GANStep

    with pytest.raises(MedAssistError, match="cannot reach epsilon"):
        check_reachable(0.01, 1e-5, n_samples=100, batch_size=50, epochs=10)
    g, _, validate = _gan()
    train, _, _ = _data()
    with pytest.raises(MedAssistError, match="GroupNorm"):
        fit(
            g,
            train,
            train,
            CFG,
            num_classes=2,
            progress=False,
            step_fn=GANStep(_gan()[1].d),
            validate=validate,
            privacy=OpacusPrivacy(target_epsilon=8, delta=1e-3),
        )


@pytest.mark.parametrize("size", [30, 6])
def test_an_image_size_the_networks_cannot_take_is_refused(size: int) -> None:
    with pytest.raises(DataError, match=f"image size {size}"):
        check_image_size(size)


def test_train_generator_records_whether_its_budget_left_it_under_trained(tmp_path, monkeypatch) -> None:
    import pandas as pd

    from medassist.run import Run
    from medassist.synth import train as synth_train
    from medassist.train.engine import FitResult

    def fake_fit(model, *args, **kwargs) -> FitResult:  # the budget ended epoch 2 of 5, the best so far
        history = pd.DataFrame({"epoch": [1, 2], "val_loss": [2.0, 1.0]})
        return FitResult(history, 2, 1.0, model.state_dict(), budget_reached=True, planned_epochs=5)

    monkeypatch.setattr(synth_train, "fit", fake_fit)
    run = Run.create(tmp_path, "synth-fake", {})
    train, _, _ = _data(16)
    _, rec = synth_train.train_generator(
        run, "gan", lambda: torch.nn.Linear(2, 2), train, CFG, step_fn=None, validate=None, num_classes=2,
        progress=False,
    )  # fmt: skip
    assert rec["under_trained"] is True and rec["planned_epochs"] == 5 and rec["budget_reached"] is True
    assert run.read_json("units/gan/result.json")["under_trained"] is True
