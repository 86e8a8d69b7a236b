"""What the service's answers rest on: the class-activation output of an exported model equals captum's Grad-CAM of
the fp32 model; a WordPiece bundle tokenises as the text study did; temperature scaling and the abstention rule
do what they state; micro-batching gathers concurrent requests and answers each its own."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from serve_bundles import IMAGE_SIZE, image_model, make_image_bundle, make_text_bundle

from medassist.deploy.bundle import load_bundle
from medassist.deploy.bundle_predict import normalise_cam
from medassist.deploy.calibrate import (
    choose_abstention,
    confidence_and_error,
    fit_temperature,
    risk_coverage,
    selective_summary,
    threshold_after_temperature,
)
from medassist.deploy.export import CAM_OUTPUT, cam_parts, export_onnx
from medassist.explain.gradcam import grad_cam
from medassist.serve.batching import MicroBatcher


def test_exported_cam_is_captums_grad_cam_of_the_fp32_model(tmp_path) -> None:
    import onnxruntime as ort
    from captum.attr import LayerAttribution

    model = image_model(seed=3)
    x = torch.randn(8, 1, IMAGE_SIZE, IMAGE_SIZE)
    path = export_onnx(model, (x[:1],), tmp_path / "m.onnx", cam=True)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["logits", CAM_OUTPUT]
    logits, cam = session.run(None, {"images": x.numpy()})
    targets = logits.argmax(1)
    with torch.no_grad():
        assert np.abs(logits - model(x).numpy()).max() < 1e-4
    reference = grad_cam(model, model.features, x, torch.as_tensor(targets))  # (N, H, W) in [0, 1]
    with_evidence = 0
    for i, k in enumerate(targets):
        mine = np.maximum(cam[i, k], 0.0)  # Grad-CAM's ReLU, then the same bilinear upsampling and min-max
        up = LayerAttribution.interpolate(torch.from_numpy(mine)[None, None], (IMAGE_SIZE, IMAGE_SIZE), "bilinear")
        up = _minmax(up[0, 0].numpy().astype(np.float64))
        assert np.abs(up - reference[i]).max() < 1e-4
        with_evidence += int(up.max() > 0)
    assert with_evidence >= 2  # the comparison is not of empty maps
    # The bundle's own normalisation of the same map (before upsampling) is what the overlay shows.
    assert np.abs(normalise_cam(cam[0, targets[0]]) - _minmax(np.maximum(cam[0, targets[0]], 0))).max() < 1e-6


def _minmax(a: np.ndarray) -> np.ndarray:
    span = a.max() - a.min()
    return np.zeros_like(a) if span <= 1e-9 else (a - a.min()) / span


def test_models_without_a_gap_head_export_without_cam(tmp_path) -> None:
    from medassist.models import create_model

    plain = create_model("cnn", num_classes=2, in_channels=1).eval()
    example = torch.zeros(1, 1, IMAGE_SIZE, IMAGE_SIZE)
    assert cam_parts(plain, example) is None
    import onnx

    path = export_onnx(plain, (example,), tmp_path / "p.onnx", cam=True)
    assert [o.name for o in onnx.load(str(path)).graph.output] == ["logits"]


def test_bundle_predicts_with_cam_temperature_and_abstention(tmp_path) -> None:
    bundle = load_bundle(make_image_bundle(tmp_path / "a", temperature=2.0))
    images = np.random.default_rng(0).integers(0, 256, (3, 1, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
    preds = bundle.predict_images(images, cam=True)
    assert all(p.cam is not None and p.cam.shape == (7, 7) and 0 <= p.cam.min() <= p.cam.max() <= 1 for p in preds)
    model = image_model()
    with torch.no_grad():
        x = torch.from_numpy((images / 255.0 - 0.5) / 0.5).float()
        want = torch.softmax(model(x) / 2.0, dim=1).numpy()
    got = np.array([list(p.probabilities.values()) for p in preds])
    assert np.abs(got - want).max() < 1e-5  # the temperature divides the logits
    cautious = load_bundle(make_image_bundle(tmp_path / "b", min_confidence=1.01))
    assert all(p.abstained and p.reason == "uncertain: refer to a clinician" for p in cautious.predict_images(images))


def test_wordpiece_bundle_tokenises_as_the_text_study() -> None:
    pytest.importorskip("transformers")
    from serve_bundles import tokenizer_json

    from medassist.deploy.tokenizer import WordPiece
    from medassist.text import hf_encode_batch, load_minilm_tokenizer

    texts = ["Small LEFT pleural effusion, no pneumothorax.", "Cardiomegaly. Mild edema; " * 30, "ok"]
    wp = WordPiece.from_bytes(tokenizer_json().read_bytes(), "tokenizer.json")
    assert wp.encode_batch(texts, max_len=64) == hf_encode_batch(load_minilm_tokenizer(), texts, max_len=64)


def test_text_bundle_predicts_reports(tmp_path) -> None:
    bundle = load_bundle(make_text_bundle(tmp_path / "t"))
    (one,) = bundle.predict_texts(["Mild pulmonary edema."])
    assert set(one.probabilities) == {"effusion", "edema", "cardiomegaly"} and not one.abstained


def test_temperature_scaling_recovers_the_temperature() -> None:
    rng = np.random.default_rng(0)
    true = rng.normal(0, 3, (4000, 3))
    p = np.exp(true) / np.exp(true).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in p])
    assert abs(fit_temperature(true * 2.5, y, "multi-class") - 2.5) < 0.15  # over-confident logits, scaled back
    z = rng.normal(0, 2, (4000, 2))
    y_ml = (rng.random((4000, 2)) < 1 / (1 + np.exp(-z))).astype(float)
    assert abs(fit_temperature(z * 0.5, y_ml, "multi-label") - 0.5) < 0.05


def test_threshold_after_temperature_keeps_every_decision() -> None:
    z = np.linspace(-6, 6, 241)[:, None]
    t, temp = 0.3, 1.7
    before = 1 / (1 + np.exp(-z)) >= t
    after = 1 / (1 + np.exp(-z / temp)) >= threshold_after_temperature(t, temp)
    assert (before == after).all()


def test_abstention_is_the_lowest_threshold_meeting_the_target() -> None:
    conf = np.array([0.99, 0.98, 0.97, 0.9, 0.8, 0.7, 0.6])
    wrong = np.array([False, False, False, True, False, True, False])
    # Accepting down to 0.9: 1 error in 4 (25%); down to 0.97: none; so a 10% target keeps the top three.
    assert choose_abstention(conf, wrong, 0.10) == 0.97
    assert choose_abstention(conf, wrong, 0.30) == 0.6  # 2 in 7 = 28.6%: everything accepted
    assert choose_abstention(np.array([0.9]), np.array([True]), 0.02) > 1.0  # nothing meets it: refer all
    curve = risk_coverage(conf, wrong)
    assert curve["coverage"][-1] == 1.0 and abs(curve["risk"][-1] - 2 / 7) < 1e-12
    s = selective_summary(conf, wrong, 0.97, n_boot=200, seed=0)
    assert s["accepted"] == 3 and s["coverage"] == 3 / 7 and s["accepted_error"] == 0.0
    assert s["coverage_ci95"][0] <= 3 / 7 <= s["coverage_ci95"][1]


def test_multilabel_confidence_is_the_smallest_margin() -> None:
    p = np.array([[0.9, 0.1], [0.55, 0.05]])
    conf, wrong = confidence_and_error(p, np.array([[1, 0], [0, 0]]), "multi-label", [0.5, 0.5])
    assert np.allclose(conf, [0.8, 0.1]) and wrong.tolist() == [False, True]


def test_micro_batcher_gathers_concurrent_requests() -> None:
    calls: list[int] = []

    def run(items):
        calls.append(len(items))
        return [item * 10 for item in items]

    async def main(max_batch: int) -> list[int]:
        batcher = MicroBatcher(run, max_batch=max_batch, max_wait_ms=20, name="t")
        await batcher.start()
        try:
            return await asyncio.gather(*(batcher.submit(i) for i in range(10)))
        finally:
            await batcher.stop()

    assert asyncio.run(main(4)) == [i * 10 for i in range(10)] and calls == [4, 4, 2]
    calls.clear()
    assert asyncio.run(main(1)) == [i * 10 for i in range(10)] and calls == [1] * 10


def test_micro_batcher_gives_a_batch_error_to_each_request() -> None:
    def run(items):
        raise ValueError("bad batch")

    async def main() -> list[object]:
        batcher = MicroBatcher(run, max_batch=8, max_wait_ms=5, name="t")
        return await asyncio.gather(*(batcher.submit(i) for i in range(3)), return_exceptions=True)

    assert all(isinstance(r, ValueError) for r in asyncio.run(main()))
