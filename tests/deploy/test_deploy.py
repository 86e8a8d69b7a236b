"""Deployment: ONNX export parity, int8 agreement, pruning that shrinks, distillation, selection (the deploy study end
to end: test_deploy_image.py and test_deploy_text.py)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from helpers import blobs
from medassist.cli import main
from medassist.config import TrainConfig
from medassist.deploy.distill import TeacherBatcher, distillation_step, ensemble_logits
from medassist.deploy.export import ExportableTextRNN, OrtModel, export_onnx, logits_of, parity, reverse_within_length
from medassist.deploy.prune import add_magnitude_masks, load_sparse, prune_channels, remove_masks, save_sparse
from medassist.deploy.quantize import quantize_dynamic_int8, quantize_static_int8
from medassist.deploy.variants import select_variant
from medassist.errors import MedAssistError
from medassist.models import create_model
from medassist.studies.deploy import DeployConfig
from medassist.train import Labelled, TokenBatcher, fit, to_tensor


@pytest.fixture(scope="module")
def trained_cnn() -> tuple[torch.nn.Module, np.ndarray, np.ndarray]:
    """A small CNN trained on blobs (so its logits are not all near zero), with train and test images."""
    train, test = blobs(256, size=12, seed=1), blobs(200, size=12, seed=3)
    torch.manual_seed(0)
    model = create_model("cnn_gap", num_classes=2, width=8)
    fit(
        model,
        train,
        blobs(64, size=12, seed=2),
        TrainConfig(epochs=3, batch_size=32, lr=3e-3),
        num_classes=2,
        progress=False,
    )
    return model.eval(), train.images, test.images


def test_onnx_export_parity_image(trained_cnn, tmp_path: Path) -> None:
    model, _, test = trained_cnn
    path = export_onnx(model, (to_tensor(test[:1]),), tmp_path / "m.onnx")
    ref, got = logits_of(model, test), logits_of(OrtModel(path), test)
    p = parity(ref, got, "multi-class")
    assert p["max_abs_logit_diff"] < 1e-4
    assert p["label_agreement"] == 1.0


@pytest.mark.parametrize(
    "kwargs",
    [{}, {"num_layers": 2}, {"pooling": "last"}, {"bidirectional": False, "pooling": "last"}],
)
@pytest.mark.parametrize("name", ["bilstm", "gru"])
def test_exportable_rnn_equals_packed_model_on_padded_batches(name: str, kwargs: dict, tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model(name, num_classes=3, vocab_size=40, embed_dim=8, hidden=6, **kwargs).eval()
    rng = np.random.default_rng(0)
    batch = TokenBatcher([list(rng.integers(2, 40, rng.integers(1, 15))) for _ in range(9)])
    ids, mask = batch.inputs(torch.arange(9))  # ragged lengths: padding in most rows
    with torch.no_grad():
        ref = model(ids, mask)
        assert torch.allclose(ExportableTextRNN(model)(ids, mask.long()), ref, atol=1e-5)
    path = export_onnx(model, (ids[:1, :5], mask[:1, :5]), tmp_path / "rnn.onnx", text=True)
    assert np.abs(OrtModel(path)(ids, mask) - ref.numpy()).max() < 1e-4  # other batch size and length


def test_reverse_within_length_is_an_involution() -> None:
    x = torch.arange(2 * 5, dtype=torch.float32).view(2, 5, 1)
    lengths = torch.tensor([3, 5])
    r = reverse_within_length(x, lengths)
    assert r[0, :, 0].tolist() == [2.0, 1.0, 0.0, 3.0, 4.0]  # padding (positions 3, 4) stays in place
    assert r[1, :, 0].tolist() == [9.0, 8.0, 7.0, 6.0, 5.0]
    assert torch.equal(reverse_within_length(r, lengths), x)


def test_static_int8_agrees_with_fp32_and_shrinks(trained_cnn, tmp_path: Path) -> None:
    model, train, test = trained_cnn
    fp32 = export_onnx(model, (to_tensor(test[:1]),), tmp_path / "m.onnx")
    int8 = quantize_static_int8(fp32, tmp_path / "m.int8.onnx", train[:128])
    agreement = parity(logits_of(model, test), logits_of(OrtModel(int8), test), "multi-class")["label_agreement"]
    assert agreement >= 0.98
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size
    assert not list(tmp_path.glob("*.part"))  # no temporary files left behind


def test_dynamic_int8_text_model_agrees(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("bilstm", num_classes=4, vocab_size=500, embed_dim=32, hidden=32).eval()
    rng = np.random.default_rng(1)
    batch = TokenBatcher([list(rng.integers(2, 500, rng.integers(3, 30))) for _ in range(100)])
    ids, mask = batch.inputs(torch.arange(100))
    fp32 = export_onnx(model, (ids[:1], mask[:1]), tmp_path / "t.onnx", text=True)
    int8 = quantize_dynamic_int8(fp32, tmp_path / "t.int8.onnx")
    ref, got = logits_of(model, batch), logits_of(OrtModel(int8), batch)
    assert np.abs(ref - got).max() < 0.05  # int8 weights: small, bounded logit error
    assert int8.stat().st_size < 0.5 * fp32.stat().st_size  # the embedding table is int8 too


def test_channel_pruning_shrinks_and_still_runs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("cnn_gap", num_classes=2, width=16).eval()
    x = torch.randn(2, 1, 12, 12)
    counts = prune_channels(model, x[:1], 0.5)
    assert counts["params_after"] < 0.35 * counts["params_before"]  # conv weights scale with channels squared
    assert counts["macs_after"] < counts["macs_before"]
    assert model(x).shape == (2, 2)
    path = export_onnx(model, (x[:1],), tmp_path / "p.onnx")
    assert np.abs(OrtModel(path)(x) - model(x).detach().numpy()).max() < 1e-4
    with pytest.raises(MedAssistError, match="ratio must lie in"):
        prune_channels(model, x[:1], 1.5)


def test_magnitude_pruning_file_really_shrinks(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = create_model("cnn_gap", num_classes=2, width=16)
    dense = tmp_path / "dense.pt"
    torch.save(model.state_dict(), dense)
    params = add_magnitude_masks(model, 0.8)
    assert any(n.endswith("_mask") for n, _ in model.named_buffers())  # masks attached while fine-tuning
    sparsity = remove_masks(params)
    assert sparsity == pytest.approx(0.8, abs=0.01)
    assert not any(n.endswith("_mask") for n, _ in model.named_buffers())  # and gone afterwards
    path = save_sparse(model.state_dict(), tmp_path / "sparse.zip")
    assert path.stat().st_size < 0.35 * dense.stat().st_size
    loaded = load_sparse(path)
    assert set(loaded) == set(model.state_dict())
    for k, v in model.state_dict().items():
        assert torch.equal(loaded[k], v), k
    with pytest.raises(MedAssistError, match="amount must lie in"):
        add_magnitude_masks(model, 0.0)


def test_pruned_lstm_weights_reach_the_recurrence() -> None:
    torch.manual_seed(0)
    model = create_model("bilstm", num_classes=2, vocab_size=30, embed_dim=8, hidden=8).eval()
    ids, mask = torch.randint(2, 30, (2, 6)), torch.ones(2, 6, dtype=torch.bool)
    before = model(ids, mask)
    params = add_magnitude_masks(model, 0.9)
    remove_masks(params)
    for m, name in params:  # every tensor keeps its largest 10%, whatever its scale (embedding vs LSTM)
        assert (getattr(m, name) == 0).float().mean() == pytest.approx(0.9, abs=0.01), name
    assert not torch.allclose(model(ids, mask), before)  # the flat weights the LSTM kernel uses were updated


def test_distillation_step_matches_its_definition(trained_cnn) -> None:
    teacher, train, _ = trained_cnn
    t_logits = ensemble_logits([teacher], train[:16])
    assert torch.allclose(t_logits.exp().sum(1), torch.ones(16), atol=1e-5)  # averaged log-probabilities
    batcher = TeacherBatcher(train[:16], t_logits)
    images, t = batcher.inputs(torch.arange(16))
    y = torch.zeros(16, dtype=torch.long)
    loss, logits = distillation_step(2.0, 1.0)(lambda x: t, (images, t), y)  # student == teacher
    assert float(loss) == pytest.approx(0.0, abs=1e-6)
    loss_ce, _ = distillation_step(2.0, 0.0)(lambda x: t, (images, t), y)
    assert float(loss_ce) == pytest.approx(float(torch.nn.functional.cross_entropy(t, y)), rel=1e-5)
    assert not TeacherBatcher.augmentable  # stored teacher logits belong to unaugmented images


def test_distilled_student_trains_through_the_engine(trained_cnn) -> None:
    teacher, train, _ = trained_cnn
    labels = blobs(256, size=12, seed=1).labels
    kd = Labelled(TeacherBatcher(train, ensemble_logits([teacher], train)), labels)
    student = create_model("cnn_gap", num_classes=2, width=4)
    cfg = TrainConfig(epochs=2, batch_size=32, lr=3e-3)
    result = fit(
        student, kd, blobs(64, size=12, seed=2), cfg, num_classes=2, progress=False, step_fn=distillation_step(4.0, 0.7)
    )
    assert len(result.history) == 2 and np.isfinite(result.history.train_loss).all()


def _table(**cols) -> pd.DataFrame:
    base = {
        "variant": ["fp32 (PyTorch)", "fp32 (ONNX Runtime)", "fast", "faster"],
        "runtime": ["pytorch", "onnxruntime", "onnxruntime", "onnxruntime"],
        "latency_b1_median_ms": [1.0, 0.5, 0.2, 0.1],
        "size_mb": [4.0, 4.0, 1.0, 0.5],
        "val_accuracy": [0.9, 0.9, 0.899, 0.88],
        "val_auc": [0.95, 0.95, 0.949, 0.95],
        "test_accuracy_drop": [0.0, 0.0, 0.03, 0.0],
        "test_auc_drop": [0.0, 0.0, 0.0, 0.0],
    }
    return pd.DataFrame({**base, **cols})


def test_selection_uses_validation_never_test() -> None:
    cfg = DeployConfig()
    # 'faster' is best on test but loses 2 points of validation accuracy; 'fast' keeps validation within tolerance.
    assert select_variant(_table(), cfg) == "fast"
    strict = dataclasses.replace(cfg, max_accuracy_drop=0.0, max_auc_drop=0.0)
    assert select_variant(_table(), strict) == "fp32 (ONNX Runtime)"


def test_deploy_refuses_a_run_that_is_not_finished(tmp_path: Path, capsys) -> None:
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "status.json").write_text('{"status": "failed"}')
    assert main(["deploy", "--run", str(tmp_path / "run"), "--out", str(tmp_path)]) == 2
    assert "is failed, not complete" in capsys.readouterr().err
    assert main(["deploy", "--out", str(tmp_path)]) == 2
    assert "give the study run folder" in capsys.readouterr().err


def test_a_variant_is_under_trained_when_a_training_it_rests_on_was() -> None:
    from medassist.deploy.variants import Variant

    done, cut = {"training": "student distilled", "under_trained": False}, {"training": "x", "under_trained": True}
    assert Variant("int8", "quantization", "onnxruntime", []).training == "not retrained"
    assert Variant("student", "distillation", "pytorch", [], trainings=[done]).training == "complete"
    both = Variant("distilled + pruned", "distillation + pruning", "pytorch", [], trainings=[done, cut])
    assert both.under_trained and both.training == "under-trained"


def test_a_fine_tune_cut_by_its_budget_is_recorded_under_trained(monkeypatch) -> None:
    from types import SimpleNamespace

    from medassist.studies import deploy as study
    from medassist.train.engine import FitResult

    def fake_fit(model, *args, **kwargs) -> FitResult:  # the budget ended epoch 2 of 5, the best so far
        history = pd.DataFrame({"epoch": [1, 2], "val_auc": [0.8, 0.9]})
        return FitResult(history, 2, 0.9, model.state_dict(), budget_reached=True, planned_epochs=5)

    monkeypatch.setattr(study, "fit", fake_fit)
    source = SimpleNamespace(splits={"train": None, "val": None}, num_classes=2, task="multi-class")
    tcfg = TrainConfig(epochs=5, time_budget=30.0)
    hist, rec = study._train(DeployConfig(), torch.nn.Linear(2, 2), source, tcfg, "student alone", kind="student")
    assert rec["under_trained"] is True and rec["planned_epochs"] == 5 and rec["time_budget"] == 30.0
    assert hist.under_trained.all() and (hist.variant == "student alone").all()
    alone = study.Variant("student alone (PyTorch)", "small model", "pytorch", [], trainings=[rec])
    assert alone.training == "under-trained" and study._trainings([alone, alone]) == [rec]
