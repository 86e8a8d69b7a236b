"""The bundle predicts what the PyTorch model predicts, from arrays, image files and reports; inputs it cannot read
are refused."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from bundle_helpers import (
    IMAGE_LABELS,
    IMAGE_PRE,
    MAX_LEN,
    REPORTS,
    SIZE,
    export_image_model,
    export_onnx,
    image_arguments,
    pixels,
    probs,
    torch_image_probs,
)
from PIL import Image

from helpers import save_dicom
from medassist.deploy.bundle import BundleError, load_bundle, write_bundle
from medassist.errors import DataError, MedAssistError

# ----------------------------------------------------------------------------------------------------------------
# Round trips: the bundle predicts what the PyTorch model predicts
# ----------------------------------------------------------------------------------------------------------------


def test_image_bundle_matches_pytorch(image, image_model) -> None:
    x = pixels(5)
    predictions = image.predict_images(x, batch_size=2)  # three runs: 2 + 2 + 1
    np.testing.assert_allclose(probs(predictions), torch_image_probs(image_model[0], x), atol=1e-5)
    for p in predictions:
        assert p.label == max(p.probabilities, key=p.probabilities.get)
        assert list(p.probabilities) == IMAGE_LABELS and p.latency_ms > 0
    assert probs(image.predict_images(x[0])).shape == (1, 2)  # one (C, H, W) image


def test_png_and_dicom_files_give_the_array_prediction(image, image_model, tmp_path) -> None:
    x = pixels(1, seed=3)
    png = tmp_path / "xray.png"
    Image.fromarray(x[0, 0]).save(png)
    dicom = save_dicom(tmp_path / "xray.dcm", x[0, 0])
    expected = torch_image_probs(image_model[0], x)
    for file in (png, dicom):
        np.testing.assert_allclose(probs([image.predict_image_file(file)]), expected, atol=1e-5)


def test_grayscale_saved_as_rgb_is_reduced_but_colour_is_refused(image, tmp_path) -> None:
    gray = pixels(1, seed=4)[0, 0]
    rgb_gray = tmp_path / "gray_as_rgb.png"
    Image.fromarray(np.stack([gray] * 3, axis=-1)).save(rgb_gray)
    assert image.predict_image_file(rgb_gray).probabilities == image.predict_images(gray[None]).pop().probabilities
    colour = tmp_path / "colour.png"
    Image.fromarray(np.stack([gray, 255 - gray, gray // 2], axis=-1)).save(colour)
    with pytest.raises(DataError, match=r"colour\.png is a colour image \(3 channels\) but .* reads grayscale images"):
        image.predict_image_file(colour)


def test_grayscale_file_is_repeated_for_an_rgb_model(tmp_path) -> None:
    model = export_image_model(tmp_path / "rgb.onnx", in_channels=3)
    bundle = load_bundle(
        write_bundle(
            tmp_path / "rgb",
            model_path=tmp_path / "rgb.onnx",
            kind="image",
            task="multi-class",
            labels=IMAGE_LABELS,
            preprocessing={**IMAGE_PRE, "channels": 3, "mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
            metrics={},
        )
    )
    gray = pixels(1, seed=5)
    Image.fromarray(gray[0, 0]).save(tmp_path / "gray.png")
    expected = torch_image_probs(model, np.repeat(gray, 3, axis=1))
    np.testing.assert_allclose(probs([bundle.predict_image_file(tmp_path / "gray.png")]), expected, atol=1e-5)


def test_model_with_a_static_batch_axis_runs_in_batches_of_its_size(image_model, tmp_path) -> None:
    export_onnx(image_model[0], (torch.zeros(1, 1, SIZE, SIZE),), tmp_path / "static.onnx", input_names=["x"])
    bundle = load_bundle(
        write_bundle(tmp_path / "b", **image_arguments(image_model, model_path=tmp_path / "static.onnx"))
    )
    assert bundle.session.get_inputs()[0].shape == [1, 1, SIZE, SIZE]
    x = pixels(3)
    np.testing.assert_allclose(probs(bundle.predict_images(x)), torch_image_probs(image_model[0], x), atol=1e-5)


def test_text_bundle_matches_pytorch_with_truncation(text, text_model) -> None:
    model, vocab = text_model[:2]
    assert len(vocab.encode(REPORTS[2])) > MAX_LEN  # one report is cut to max_len tokens
    for report in REPORTS:
        ids = torch.tensor([vocab.encode(report)[:MAX_LEN]])
        with torch.no_grad():
            expected = torch.sigmoid(model(ids, torch.ones_like(ids))).numpy()
        prediction = text.predict_text(report)
        np.testing.assert_allclose(probs([prediction]), expected, atol=1e-5)
        assert prediction.label == [name for name, p in prediction.probabilities.items() if p >= text.threshold]


def test_text_batches_are_padded_without_changing_predictions(text) -> None:
    batch = probs(text.predict_texts(REPORTS, batch_size=3))
    one_by_one = probs([text.predict_text(r) for r in REPORTS])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-6)


def test_bundle_files_describe_the_model(image_bundle) -> None:
    meta = json.loads((image_bundle / "bundle.json").read_text())
    assert meta["format"] == "medassist-bundle" and meta["version"] == 1 and meta["name"] == "xray"
    assert meta["labels"] == IMAGE_LABELS and meta["preprocessing"] == IMAGE_PRE and meta["metrics"]["auc"] == 0.9
    assert {"created", "medassist_version", "source_run"} <= set(meta["info"])
    manifest = json.loads((image_bundle / "manifest.json").read_text())
    assert set(manifest["files"]) == {"model.onnx", "bundle.json", "model_card.md"}  # the model card is covered
    assert manifest["files"]["model.onnx"]["bytes"] == (image_bundle / "model.onnx").stat().st_size


def test_threads_are_passed_to_onnx_runtime(image_bundle) -> None:
    bundle = load_bundle(image_bundle, threads=1)
    assert bundle.session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(MedAssistError, match=r"threads must be 0 .* got -1"):
        load_bundle(image_bundle, threads=-1)


# ----------------------------------------------------------------------------------------------------------------
# Inputs the bundle refuses
# ----------------------------------------------------------------------------------------------------------------

BAD_ARRAYS = {
    "2-D": (np.zeros((SIZE, SIZE), np.uint8), r"must have shape \(N, 1, 12, 12\) or one image .* got shape \(12, 12\)"),
    "channels": (np.zeros((2, 3, SIZE, SIZE), np.uint8), r"shape \(2, 3, 12, 12\): 3 channel\(s\), but .* reads 1"),
    "size": (np.zeros((2, 1, 10, 10), np.uint8), r"10x10 pixels, but the model .* reads 12x12; expected"),
    "float": (np.zeros((1, 1, SIZE, SIZE), np.float32), r"must be uint8 pixels 0-255, got dtype float32;"),
    "NaN": (np.full((1, 1, SIZE, SIZE), np.nan), r"got dtype float64 with NaN values"),
    "empty": (np.zeros((0, 1, SIZE, SIZE), np.uint8), r"no images to predict: the array has shape \(0, 1, 12, 12\)"),
    "list": ([[0] * SIZE] * SIZE, r"must be a numpy uint8 array of shape \(N, 1, 12, 12\), got list"),
}


@pytest.mark.parametrize("case", BAD_ARRAYS.values(), ids=BAD_ARRAYS.keys())
def test_bad_image_arrays_are_refused(case, image) -> None:
    array, message = case
    with pytest.raises(DataError, match=message):
        image.predict_images(array)


def test_non_image_file_is_refused_naming_it(image, tmp_path) -> None:
    fake = tmp_path / "scan.png"
    fake.write_text("Findings: no acute disease.")
    with pytest.raises(DataError, match=r"scan\.png is not a readable PNG, JPEG or DICOM image"):
        image.predict_image_file(fake)
    with pytest.raises(DataError, match=r"file not found: .*absent\.png"):
        image.predict_image_file(tmp_path / "absent.png")


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ("", r"the report text is empty \(or only whitespace\)"),
        (" \n\t ", r"the report text is empty \(or only whitespace\)"),
        (["Mild edema.", "  "], r"text at position 1 is empty"),
        ([], r"no texts to predict"),
        ([None], r"text at position 0 is NoneType"),
    ],
    ids=["empty", "whitespace", "whitespace in a batch", "no texts", "None"],
)
def test_empty_texts_are_refused(texts, message, text) -> None:
    with pytest.raises(DataError, match=message):
        text.predict_text(texts) if isinstance(texts, str) else text.predict_texts(texts)


def test_text_and_image_bundles_refuse_each_others_inputs(image, text, tmp_path) -> None:
    with pytest.raises(BundleError, match=r"predicts from images, not texts: predict_text needs a text bundle"):
        image.predict_text("Mild edema.")
    with pytest.raises(BundleError, match=r"predicts from texts, not images: predict_images needs an image bundle"):
        text.predict_images(pixels(1))
    with pytest.raises(BundleError, match=r"predicts from texts, not images: predict_image_file needs an image"):
        text.predict_image_file(tmp_path / "x.png")


def test_per_label_thresholds_decide_each_label() -> None:
    """A bundle's per-label thresholds (chosen on validation by the study) decide each label on its own."""
    import numpy as np

    from medassist.deploy.prediction import to_predictions

    logits = np.log(np.array([[0.3, 0.6]]) / (1 - np.array([[0.3, 0.6]])))  # probabilities 0.3 and 0.6
    (one,) = to_predictions(logits, task="multi-label", labels=["a", "b"], threshold=0.5, latency_ms=1.0)
    (per,) = to_predictions(logits, task="multi-label", labels=["a", "b"], threshold=[0.25, 0.7], latency_ms=1.0)
    assert one.label == ["b"] and per.label == ["a"]
