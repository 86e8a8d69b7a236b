"""The training engine: learning, determinism, best-epoch copy, early stopping, schedules, checkpoint/resume."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from helpers import blobs
from medassist.config import AugmentConfig, TrainConfig
from medassist.errors import MedAssistError
from medassist.models import create_model
from medassist.train import fit, predict_proba
from medassist.train.augment import augment_batch
from medassist.train.losses import class_weights

TRAIN, VAL = blobs(128, seed=1), blobs(64, seed=2)


def _fit(cfg: TrainConfig, model_name: str = "cnn_gap", **kw):
    torch.manual_seed(cfg.seed)
    extra = {"width": 8} if model_name == "cnn_gap" else {"image_size": 12}
    model = create_model(model_name, num_classes=2, in_channels=1, **extra)
    return model, fit(model, TRAIN, VAL, cfg, num_classes=2, progress=False, **kw)


def test_learns_separable_data() -> None:
    model, res = _fit(TrainConfig(epochs=6, batch_size=32, lr=3e-3))
    assert res.best_score > 0.95
    assert list(res.history.columns[:7]) == [
        "epoch",
        "train_loss",
        "train_accuracy",
        "val_accuracy",
        "val_auc",
        "val_macro_f1",
        "val_loss",
    ]
    assert res.history["train_loss"].iloc[-1] < res.history["train_loss"].iloc[0]


def test_same_seed_same_numbers() -> None:
    cfg = TrainConfig(epochs=2, batch_size=32, augment=True, seed=3)
    _, a = _fit(cfg)
    _, b = _fit(cfg)
    cols = ["train_loss", "val_loss", "val_auc"]
    np.testing.assert_array_equal(a.history[cols].to_numpy(), b.history[cols].to_numpy())
    _, c = _fit(dataclasses.replace(cfg, seed=4))
    assert not np.array_equal(a.history[cols].to_numpy(), c.history[cols].to_numpy())


def test_best_state_is_a_copy_of_the_best_epoch() -> None:
    model, res = _fit(TrainConfig(epochs=4, batch_size=32, monitor="val_loss"))
    best = res.history["val_loss"].idxmin() + 1
    assert res.best_epoch == best
    assert res.best_score == pytest.approx(res.history["val_loss"].min())
    # the model holds the best weights and reproduces the best validation loss
    from medassist.evaluate.metrics import METRICS

    probs = predict_proba(model, VAL.images)
    assert METRICS["loss"](VAL.labels, probs) == pytest.approx(res.best_score, rel=1e-5)


def test_early_stopping_stops() -> None:
    # lr 0 on a model without BatchNorm cannot improve after the first epoch: patience 2 stops at epoch 3
    _, res = _fit(TrainConfig(epochs=10, lr=0.0, early_stopping=True, patience=2, monitor="val_loss"), "cnn")
    assert res.stopped_early and len(res.history) == 3
    assert res.history["stop_reason"].iloc[-1] == "early_stopping"


@pytest.mark.parametrize("scheduler", ["step", "cosine", "onecycle", "plateau"])
@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd"])
def test_optimizers_and_schedules(optimizer: str, scheduler: str) -> None:
    _, res = _fit(
        TrainConfig(epochs=4, batch_size=64, optimizer=optimizer, scheduler=scheduler, lr=1e-2, weight_decay=1e-4)
    )
    lrs = res.history["lr"].to_numpy()
    assert np.isfinite(res.history["train_loss"]).all()
    if scheduler in ("step", "cosine", "onecycle"):
        assert lrs[-1] < lrs[0] or scheduler == "onecycle"


def test_resume_gives_the_same_history(tmp_path) -> None:
    cfg = TrainConfig(epochs=4, batch_size=32, augment=True, seed=5)
    _, full = _fit(cfg)
    ckpt = tmp_path / "ckpt.pt"
    _fit(dataclasses.replace(cfg, epochs=2), checkpoint=ckpt)
    _, resumed = _fit(cfg, checkpoint=ckpt, resume=True)
    cols = ["epoch", "train_loss", "val_loss", "val_auc"]
    np.testing.assert_allclose(resumed.history[cols].to_numpy(), full.history[cols].to_numpy(), rtol=1e-6)


def test_grad_norms_per_layer() -> None:
    _, res = _fit(TrainConfig(epochs=2, grad_norms=True))
    g = res.grad_norms
    assert set(g["epoch"]) == {1, 2}
    assert (g["grad_norm"] > 0).all()
    assert "head.2" in set(g["layer"])


def test_time_budget_stops() -> None:
    _, res = _fit(TrainConfig(epochs=50, batch_size=8, time_budget=0.2))
    assert res.budget_reached and len(res.history) < 50


@pytest.mark.parametrize("name", ["onecycle", "cosine"])
def test_paced_schedule_follows_steps_like_torch(name: str) -> None:
    # Without time pressure the paced schedule is torch's schedule, stepped per batch.
    from medassist.train.optim import PacedSchedule

    total, lr = 40, 1e-2
    p1, p2 = [torch.nn.Parameter(torch.zeros(1))], [torch.nn.Parameter(torch.zeros(1))]
    o1, o2 = torch.optim.SGD(p1, lr=lr), torch.optim.SGD(p2, lr=lr)
    ref = (
        torch.optim.lr_scheduler.OneCycleLR(o1, max_lr=lr, total_steps=total, anneal_strategy="cos")
        if name == "onecycle"
        else torch.optim.lr_scheduler.CosineAnnealingLR(o1, T_max=total - 1)
    )
    paced = PacedSchedule(o2, name, total, budget=1e9, clock=lambda: 0.0)
    for _ in range(total):
        assert o2.param_groups[0]["lr"] == pytest.approx(o1.param_groups[0]["lr"], rel=1e-6, abs=1e-12)
        o1.step(), o2.step(), ref.step(), paced.step()


def test_paced_schedule_anneals_within_the_budget() -> None:
    # 500 planned epochs cannot run in 1.5 s: the plain onecycle is still warming up when the budget stops it,
    # the paced one has annealed to (almost) nothing. (Its peak on the way is checked with a fake clock below: on a
    # busy machine the budget may end within the first epoch.)
    cfg = TrainConfig(epochs=500, batch_size=16, scheduler="onecycle", lr=1e-2, time_budget=1.0)
    _, plain = _fit(cfg)
    _, paced = _fit(dataclasses.replace(cfg, budget_schedule=True))
    assert plain.budget_reached and paced.budget_reached
    assert plain.history["lr"].iloc[-1] < 1e-2 / 5  # warm-up starts at lr / 25
    assert paced.history["lr"].iloc[-1] < 1e-2 * 0.05


def test_paced_schedule_peaks_then_anneals_by_the_clock() -> None:
    """Paced by a clock that runs out at a tenth of the planned steps, onecycle still warms up to its peak and then
    anneals to (almost) nothing by the end of the budget (a fake clock: no dependence on the machine's speed)."""
    from medassist.train.optim import PacedSchedule

    now = [0.0]
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1e-2)
    paced = PacedSchedule(opt, "onecycle", total_steps=10_000, budget=100.0, clock=lambda: now[0])
    lrs = []
    for _ in range(1_000):  # 1,000 of the 10,000 planned steps, 0.1 s each: the 100 s budget ends with them
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        now[0] += 0.1
        paced.step()
    assert lrs[0] < 1e-2 / 20  # the warm-up starts at lr / 25
    assert max(lrs) > 1e-2 * 0.99  # the peak is reached on the way
    assert lrs[-1] < 1e-2 * 0.01


def test_budget_schedule_without_a_schedule_trains_at_constant_lr() -> None:
    _, res = _fit(TrainConfig(epochs=2, scheduler="none", time_budget=60, budget_schedule=True))
    assert (res.history["lr"] == 1e-3).all()


def test_paced_schedule_refuses_other_schedules() -> None:
    with pytest.raises(MedAssistError, match="budget_schedule needs scheduler onecycle or cosine"):
        _fit(TrainConfig(epochs=2, scheduler="step", time_budget=5, budget_schedule=True))


def test_class_weights_inverse_frequency() -> None:
    w = class_weights(np.array([0, 0, 0, 1]), 2)
    assert w[1] / w[0] == pytest.approx(3.0)


def test_augment_is_seeded_and_bounded() -> None:
    x = torch.rand(4, 1, 12, 12) * 2 - 1
    a = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    b = augment_batch(x, AugmentConfig(), torch.Generator().manual_seed(0))
    assert torch.equal(a, b) and a.shape == x.shape
    assert a.min() >= -1 and a.max() <= 1 and not torch.equal(a, x)


def test_bad_settings_are_clear() -> None:
    with pytest.raises(MedAssistError, match="unknown optimizer 'rmsprop'"):
        _fit(TrainConfig(epochs=1, optimizer="rmsprop"))
    with pytest.raises(MedAssistError, match="unknown monitor"):
        _fit(TrainConfig(epochs=1, monitor="val_f2"))
    with pytest.raises(MedAssistError, match="training diverged.*lower the learning rate"):
        _fit(TrainConfig(epochs=1, lr=1e30, optimizer="sgd"))


def test_token_batcher_buckets_and_pads() -> None:
    from medassist.train import TokenBatcher

    ids = [[5] * n for n in (3, 9, 4, 8, 2, 7, 5, 6)]
    b = TokenBatcher(ids, pool=2)
    seen = []
    for idx in b.order(2, generator=torch.Generator().manual_seed(0)):
        x, mask = b.inputs(idx)
        assert x.shape == mask.shape and x.shape[1] == max(len(ids[i]) for i in idx.tolist())  # dynamic padding
        assert (x[~mask] == 0).all() and mask.sum() == sum(len(ids[i]) for i in idx.tolist())
        seen += idx.tolist()
    assert sorted(seen) == list(range(8))
    with pytest.raises(MedAssistError, match="sequence 1 has no tokens"):
        TokenBatcher([[1], []])


class _BagOfWords(torch.nn.Module):
    def __init__(self, vocab: int, k: int) -> None:
        super().__init__()
        self.emb = torch.nn.EmbeddingBag(vocab, k, mode="sum")

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:  # (B, T), (B, T) -> (B, K)
        return self.emb(ids, per_sample_weights=mask.float())


def test_multilabel_text_training_and_order_preserving_prediction() -> None:
    """Token batches, multi-label loss and metrics: label k is present when token k+2 appears."""
    from medassist.train import Labelled, TokenBatcher

    rng = np.random.default_rng(0)
    ids, labels = [], []
    for _ in range(200):
        n = int(rng.integers(3, 12))
        seq = rng.integers(5, 30, n).tolist()
        y = rng.integers(0, 2, 3)
        seq += [k + 2 for k in range(3) if y[k]]
        ids.append(seq)
        labels.append(y)
    labels = np.array(labels)
    train, val = Labelled(TokenBatcher(ids[:150]), labels[:150]), Labelled(TokenBatcher(ids[150:]), labels[150:])
    model = _BagOfWords(30, 3)
    res = fit(
        model,
        train,
        val,
        TrainConfig(epochs=15, batch_size=16, lr=0.1),
        num_classes=3,
        task="multi-label",
        progress=False,
    )
    assert res.best_score > 0.95 and "val_micro_f1" in res.history
    probs = predict_proba(model, val.batcher, task="multi-label")
    assert probs.shape == (50, 3)
    # predictions come back in input order although evaluation batches are sorted by length
    with torch.no_grad():
        one_by_one = [
            torch.sigmoid(model(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.bool)))[0].numpy()
            for s in ids[150:]
        ]
    np.testing.assert_allclose(probs, np.array(one_by_one), rtol=1e-5, atol=1e-6)


def test_prior_bias_starts_the_head_at_the_label_frequencies() -> None:
    from medassist.train.losses import init_prior_bias

    labels = np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0], [1, 0, 0]])  # frequencies 0.75, 0.25, 0 (clipped)
    model = create_model("bilstm", num_classes=3, vocab_size=10)
    init_prior_bias(model, labels)
    freq = torch.sigmoid(model.head.bias.detach()).numpy()
    np.testing.assert_allclose(freq, [0.75, 0.25, 1e-4], rtol=1e-4)
    with pytest.raises(MedAssistError, match="linear layer with 3 outputs"):
        init_prior_bias(torch.nn.Sequential(torch.nn.Linear(4, 3)), labels)


def test_min_steps_gives_a_small_data_set_more_epochs():
    from medassist.config import TrainConfig
    from medassist.train.engine import with_min_steps

    cfg = TrainConfig(epochs=4, batch_size=32, min_steps=100)
    assert with_min_steps(cfg, steps_per_epoch=15).epochs == 7  # ceil(100 / 15)
    assert with_min_steps(cfg, steps_per_epoch=50).epochs == 4  # enough steps already
    assert with_min_steps(TrainConfig(epochs=4), steps_per_epoch=1).epochs == 4  # off by default


def test_ema_averages_the_weights_without_changing_the_training(tmp_path) -> None:
    # One step per epoch (the whole training set in a batch), so each epoch's raw weights are one step's.
    cfg = TrainConfig(epochs=3, batch_size=len(TRAIN.labels), optimizer="sgd", lr=0.1, monitor="val_loss")
    raw: list[dict[str, torch.Tensor]] = []
    torch.manual_seed(0)
    model = create_model("cnn", num_classes=2, in_channels=1, image_size=12)
    snap = lambda _row: raw.append({k: v.clone() for k, v in model.state_dict().items()})  # noqa: E731
    plain = fit(model, TRAIN, VAL, cfg, num_classes=2, progress=False, on_epoch=snap)
    ckpt = tmp_path / "ema.pt"
    _, averaged = _fit(dataclasses.replace(cfg, ema=0.5), "cnn", checkpoint=ckpt)
    state = torch.load(ckpt, weights_only=False)
    for k, v in raw[-1].items():  # the moving average leaves the optimiser's path alone
        torch.testing.assert_close(state["model"][k], v)
    for k in raw[0]:  # e1 = p1, e2 = (e1 + p2) / 2, e3 = (e2 + p3) / 2
        expected = ((raw[0][k] + raw[1][k]) / 2 + raw[2][k]) / 2
        torch.testing.assert_close(state["ema"][f"module.{k}"], expected)
    assert not np.allclose(plain.history["val_loss"], averaged.history["val_loss"])  # validation saw the average
    with pytest.raises(MedAssistError, match="ema is a decay"):
        _fit(dataclasses.replace(cfg, ema=1.0), "cnn")


class _Layered(torch.nn.Module):
    """Three linear layers that list themselves, input side first (as MiniLMClassifier does)."""

    def __init__(self, listed: int = 3) -> None:
        super().__init__()
        self.layers = torch.nn.ModuleList(torch.nn.Linear(2, 2) for _ in range(3))
        self.listed = listed

    def layer_groups(self) -> list[list[torch.nn.Parameter]]:
        return [list(m.parameters()) for m in self.layers[: self.listed]]


def test_layer_decay_gives_each_layer_its_own_rate_and_onecycle_keeps_the_ratios() -> None:
    from medassist.train.optim import build_optimizer, build_scheduler

    cfg = TrainConfig(optimizer="adamw", lr=1e-3, layer_decay=0.5, scheduler="onecycle", warmup=0.1, epochs=1)
    opt = build_optimizer(_Layered(), cfg)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([2.5e-4, 5e-4, 1e-3])
    sched = build_scheduler(opt, cfg, steps_per_epoch=100)
    peaks = [[], [], []]
    for _ in range(100):
        for i, g in enumerate(opt.param_groups):
            peaks[i].append(g["lr"])
        opt.step(), sched.step()
    # Each group peaks at its own rate, after 10% of the steps (the warm-up), not 30% (the default).
    assert [max(p) for p in peaks] == pytest.approx([2.5e-4, 5e-4, 1e-3], rel=1e-3)
    assert int(np.argmax(peaks[2])) in (9, 10)
    # Off by default: one group at lr.
    assert [g["lr"] for g in build_optimizer(_Layered(), TrainConfig(lr=1e-3)).param_groups] == [1e-3]


def test_layer_decay_refuses_a_model_that_does_not_list_all_its_layers() -> None:
    from medassist.train.optim import build_optimizer

    cfg = TrainConfig(layer_decay=0.8)
    with pytest.raises(MedAssistError, match="misses trainable parameters"):
        build_optimizer(_Layered(listed=2), cfg)
    with pytest.raises(MedAssistError, match="does not list its layers"):
        build_optimizer(torch.nn.Linear(2, 2), cfg)
    with pytest.raises(MedAssistError, match=r"in \(0, 1\]"):
        build_optimizer(_Layered(), TrainConfig(layer_decay=1.5))
    with pytest.raises(MedAssistError, match="warmup"):
        from medassist.train.optim import build_scheduler

        build_scheduler(build_optimizer(_Layered(), TrainConfig()), TrainConfig(scheduler="onecycle", warmup=0), 10)


@pytest.mark.parametrize("total", [1, 2, 3, 10, 20])
def test_onecycle_runs_however_few_the_steps(total: int) -> None:
    # A warm-up of exactly one step would make torch's onecycle divide by zero (10% of 10 steps).
    from medassist.train.optim import build_optimizer, build_scheduler

    cfg = TrainConfig(scheduler="onecycle", warmup=0.1, epochs=1, lr=1e-2)
    opt = build_optimizer(_Layered(), cfg)
    sched = build_scheduler(opt, cfg, steps_per_epoch=total)
    for _ in range(total):
        opt.step(), sched.step()
        assert all(np.isfinite(g["lr"]) for g in opt.param_groups)
