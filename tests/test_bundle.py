"""The deployable bundle: write, verify, predict (as PyTorch does), refuse anything altered; `medassist predict`."""

from __future__ import annotations

import json
import os
import re
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from torch import nn

from medassist.cli import main
from medassist.deploy import bundle as bundle_module
from medassist.deploy.bundle import Bundle, BundleError, load_bundle, write_bundle
from medassist.errors import DataError, MedAssistError
from medassist.models import create_model
from medassist.text.vocab import Vocab
from medassist.train.data import to_tensor

SIZE = 12
IMAGE_PRE = {"image_size": SIZE, "channels": 1, "scale": 1 / 255, "mean": 0.5, "std": 0.5}
IMAGE_LABELS = ["normal", "pneumonia"]
TEXT_LABELS = ["effusion", "edema", "cardiomegaly"]
MAX_LEN = 6
REPORTS = [
    "No acute cardiopulmonary process.",
    "Small left pleural effusion with mild edema.",
    "The heart is enlarged; cardiomegaly without effusion.",
    "Mild pulmonary edema.",
]

# ----------------------------------------------------------------------------------------------------------------
# Tiny models, exported once per module
# ----------------------------------------------------------------------------------------------------------------


class TinyText(nn.Module):
    """Embedding, mean over real tokens, linear head: logits (B, K) from input_ids and attention_mask (B, T)."""

    def __init__(self, vocab_size: int, num_labels: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab_size, 8, padding_idx=0)
        self.head = nn.Linear(8, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        mask = attention_mask.unsqueeze(-1).float()  # (B, T, 1)
        pooled = (self.embed(input_ids) * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, 8)
        return self.head(pooled)  # (B, K)


def export_onnx(*args, **kwargs) -> None:
    """The legacy exporter (fast), without its deprecation warnings."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(*args, dynamo=False, **kwargs)


def export_image_model(path: Path, in_channels: int) -> nn.Module:
    torch.manual_seed(0)
    model = create_model("cnn_gap", num_classes=2, in_channels=in_channels, width=4).eval()
    export_onnx(
        model,
        (torch.zeros(1, in_channels, SIZE, SIZE),),
        path,
        input_names=["image"],
        output_names=["logits"],
        dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
    )
    return model


@pytest.fixture(scope="module")
def image_model(tmp_path_factory) -> tuple[nn.Module, Path]:
    path = tmp_path_factory.mktemp("onnx") / "gray.onnx"
    return export_image_model(path, in_channels=1), path


@pytest.fixture(scope="module")
def image_bundle(image_model, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "xray"
    return write_bundle(
        out,
        model_path=image_model[1],
        kind="image",
        task="multi-class",
        labels=IMAGE_LABELS,
        preprocessing=IMAGE_PRE,
        metrics={"auc": 0.9, "per_class": {"normal": {"f1": 0.8}}},
        info={"source_run": "runs/image-test"},
    )


@pytest.fixture(scope="module")
def image(image_bundle) -> Bundle:
    return load_bundle(image_bundle)


@pytest.fixture(scope="module")
def text_model(tmp_path_factory) -> tuple[nn.Module, Vocab, Path, Path]:
    folder = tmp_path_factory.mktemp("text")
    vocab = Vocab.build(REPORTS, min_freq=1)
    vocab_path = vocab.save(folder / "vocab.json")
    torch.manual_seed(0)
    model = TinyText(len(vocab), len(TEXT_LABELS)).eval()
    ids = torch.ones(1, 4, dtype=torch.long)
    axes = {0: "batch", 1: "tokens"}
    export_onnx(
        model,
        (ids, torch.ones_like(ids)),
        folder / "text.onnx",
        input_names=["tokens", "mask"],  # not the usual names: the bundle must read them from the model
        output_names=["logits"],
        dynamic_axes={"tokens": axes, "mask": axes, "logits": {0: "batch"}},
    )
    return model, vocab, vocab_path, folder / "text.onnx"


@pytest.fixture(scope="module")
def text_bundle(text_model, tmp_path_factory) -> Path:
    _, _, vocab_path, onnx_path = text_model
    return write_bundle(
        tmp_path_factory.mktemp("bundles") / "reports",
        model_path=onnx_path,
        kind="text",
        task="multi-label",
        labels=TEXT_LABELS,
        preprocessing={"tokenizer": "word", "vocab_file": "vocab.json", "max_len": MAX_LEN},
        metrics={"macro_f1": 0.5},
        extra_files={"vocab.json": vocab_path},
    )


@pytest.fixture(scope="module")
def text(text_bundle) -> Bundle:
    return load_bundle(text_bundle)


@pytest.fixture
def copy_of(tmp_path) -> Callable[[Path], Path]:
    """A private copy of a module-wide bundle, for tests that damage it."""
    return lambda bundle: Path(shutil.copytree(bundle, tmp_path / bundle.name))


def pixels(n: int, *, channels: int = 1, seed: int = 0) -> np.ndarray:
    """uint8 (N, C, SIZE, SIZE) holding 0 and 255, so DICOM min-max scaling leaves the values unchanged."""
    x = np.random.default_rng(seed).integers(0, 256, (n, channels, SIZE, SIZE)).astype(np.uint8)
    x[:, :, 0, 0], x[:, :, 0, 1] = 0, 255
    return x


def save_dicom8(path: Path, gray: np.ndarray) -> Path:
    """Write an 8-bit MONOCHROME2 DICOM of ``gray`` (H, W) uint8."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = gray.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = gray.tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def torch_image_probs(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.softmax(model(to_tensor(x)), dim=1).numpy()  # (N, K)


def probs(predictions) -> np.ndarray:
    return np.array([list(p.probabilities.values()) for p in predictions])


def rewrite_manifest(bundle: Path) -> None:
    """Make the manifest agree with the files again, as someone who edits a bundle by hand might."""
    names = list(json.loads((bundle / "manifest.json").read_text())["files"])
    bundle_module._write_manifest(bundle, names)


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key].update(value)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


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
    dicom = save_dicom8(tmp_path / "xray.dcm", x[0, 0])
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
    assert set(manifest["files"]) == {"model.onnx", "bundle.json"}
    assert manifest["files"]["model.onnx"]["bytes"] == (image_bundle / "model.onnx").stat().st_size


def test_threads_are_passed_to_onnx_runtime(image_bundle) -> None:
    bundle = load_bundle(image_bundle, threads=1)
    assert bundle.session.get_session_options().intra_op_num_threads == 1
    with pytest.raises(MedAssistError, match=r"threads must be 0 .* got -1"):
        load_bundle(image_bundle, threads=-1)


# ----------------------------------------------------------------------------------------------------------------
# Verification: every altered bundle is refused, naming the file
# ----------------------------------------------------------------------------------------------------------------


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def replace_bytes(path: Path, old: bytes, new: bytes) -> None:
    data = path.read_bytes()
    assert data.count(old) == 1
    path.write_bytes(data.replace(old, new))


def drop_from_manifest(name: str) -> Callable[[Path], None]:
    def mutate(bundle: Path) -> None:
        manifest = json.loads((bundle / "manifest.json").read_text())
        del manifest["files"][name]
        (bundle / "manifest.json").write_text(json.dumps(manifest))

    return mutate


DAMAGE = {
    "tampered model": (
        lambda b: flip_byte(b / "model.onnx"),
        r"model\.onnx does not match its SHA-256 in manifest\.json .* changed after export",
    ),
    "truncated model": (
        lambda b: (b / "model.onnx").write_bytes((b / "model.onnx").read_bytes()[:100]),
        r"model\.onnx is truncated \(100 bytes, the manifest lists \d+\)",
    ),
    "appended model": (
        lambda b: (b / "model.onnx").write_bytes((b / "model.onnx").read_bytes() + b"x"),
        r"model\.onnx has \d+ bytes but the manifest lists \d+",
    ),
    "missing model": (lambda b: (b / "model.onnx").unlink(), r"model\.onnx is listed in manifest\.json but missing"),
    "edited bundle.json": (
        lambda b: replace_bytes(b / "bundle.json", b'"threshold": 0.5', b'"threshold": 0.9'),
        r"bundle\.json does not match its SHA-256",
    ),
    "model not in manifest": (drop_from_manifest("model.onnx"), r"model\.onnx is not listed in manifest\.json"),
    "bundle.json not in manifest": (drop_from_manifest("bundle.json"), r"bundle\.json is not listed in manifest\.json"),
    "no manifest": (lambda b: (b / "manifest.json").unlink(), r"has no manifest\.json: it is not a medassist bundle"),
    "manifest not JSON": (
        lambda b: (b / "manifest.json").write_text("{"),
        r"manifest\.json is not valid JSON",
    ),
    "manifest escapes folder": (
        lambda b: edit_json(b / "manifest.json", files={"../x": {"sha256": "0" * 64, "bytes": 1}}),
        r"the entry '\.\./x' is not a plain file name",
    ),
}


@pytest.mark.parametrize("damage", DAMAGE.values(), ids=DAMAGE.keys())
def test_damaged_image_bundle_is_refused(damage, image_bundle, copy_of) -> None:
    mutate, message = damage
    bundle = copy_of(image_bundle)
    mutate(bundle)
    with pytest.raises(BundleError, match=message) as exc:
        load_bundle(bundle)
    assert str(bundle) in str(exc.value)
    assert "re-export the bundle with `medassist deploy`" in str(exc.value)


def test_text_bundle_without_its_vocabulary_is_refused(text_bundle, copy_of) -> None:
    bundle = copy_of(text_bundle)
    (bundle / "vocab.json").unlink()
    with pytest.raises(BundleError, match=r"vocab\.json is listed in manifest\.json but missing"):
        load_bundle(bundle)
    drop_from_manifest("vocab.json")(bundle)
    with pytest.raises(BundleError, match=r"vocab\.json is not listed in manifest\.json, so it cannot be verified"):
        load_bundle(bundle)


def test_missing_folder_and_file_instead_of_folder(tmp_path, image_bundle) -> None:
    with pytest.raises(BundleError, match=r"bundle .*nowhere does not exist"):
        load_bundle(tmp_path / "nowhere")
    with pytest.raises(BundleError, match=r"model\.onnx is a file, not a bundle folder"):
        load_bundle(image_bundle / "model.onnx")


# A description edited by hand with the manifest rewritten to match: the checksums pass, the checks after them not.
INCONSISTENT = {
    "unknown kind": ({"kind": "audio"}, r"bundle\.json has kind 'audio'; known kinds: image, text"),
    "newer version": ({"version": 2}, r"has version 2, newer than this medassist reads \(1\); upgrade medassist"),
    "unknown task": ({"task": "regression"}, r"has task 'regression'; known tasks"),
    "labels vs outputs": (
        {"labels": ["a", "b", "c"]},
        r"model\.onnx returns logits of shape \['batch', 2\], but bundle\.json has 3 labels",
    ),
    "channels vs input": (
        {"preprocessing": {"channels": 3}},
        r"model\.onnx takes input image of shape \['batch', 1, 12, 12\], but bundle\.json describes .*channels 3",
    ),
    "size vs input": ({"preprocessing": {"image_size": 28}}, r"bundle\.json describes \(B, 1, 28, 28\)"),
    "unknown preprocessing key": ({"preprocessing": {"resize": "bicubic"}}, r"unknown preprocessing key\(s\) resize"),
    "missing preprocessing key": ({"preprocessing": None}, r"has preprocessing None; give a dict"),
}


@pytest.mark.parametrize("change", INCONSISTENT.values(), ids=INCONSISTENT.keys())
def test_inconsistent_description_is_refused(change, image_bundle, copy_of) -> None:
    changes, message = change
    bundle = copy_of(image_bundle)
    edit_json(bundle / "bundle.json", **changes)
    rewrite_manifest(bundle)
    with pytest.raises(BundleError, match=message) as exc:
        load_bundle(bundle)
    assert str(bundle) in str(exc.value)


def test_model_that_does_not_parse_is_refused(image_bundle, copy_of) -> None:
    bundle = copy_of(image_bundle)
    (bundle / "model.onnx").write_bytes(b"\x08\x07 this is not a protobuf \xff\xff\xff")
    rewrite_manifest(bundle)
    with pytest.raises(BundleError, match=r"model\.onnx is not an ONNX model \(it does not parse"):
        load_bundle(bundle)


def test_model_with_external_data_is_refused(image_model, tmp_path) -> None:
    import onnx

    model = onnx.load(image_model[1])
    onnx.save_model(model, tmp_path / "split.onnx", save_as_external_data=True, location="w.bin", size_threshold=0)
    with pytest.raises(BundleError, match=r"split\.onnx keeps \d+ weight tensor\(s\) .* in external data files"):
        write_bundle(
            tmp_path / "b",
            model_path=tmp_path / "split.onnx",
            kind="image",
            task="multi-class",
            labels=IMAGE_LABELS,
            preprocessing=IMAGE_PRE,
            metrics={},
        )
    assert not (tmp_path / "b").exists()


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


# ----------------------------------------------------------------------------------------------------------------
# write_bundle: argument checks, and nothing half-written
# ----------------------------------------------------------------------------------------------------------------

BAD_ARGUMENTS = {
    "kind": ({"kind": "audio"}, r"bundle\.json would be invalid: it has kind 'audio'; known kinds: image, text"),
    "task": ({"task": "ranking"}, r"has task 'ranking'; known tasks: multi-class, multi-label"),
    "no labels": ({"labels": []}, r"has labels \[\]; give a non-empty list of label names"),
    "one class": ({"labels": ["normal"]}, r"a multi-class model needs at least two"),
    "duplicate labels": ({"labels": ["a", "a"]}, r"with duplicates; give each label once"),
    "missing key": (
        {"preprocessing": {"image_size": SIZE, "channels": 1}},
        r"lacks preprocessing key\(s\) scale, mean, std \(an image bundle needs",
    ),
    "std per channel": (
        {"preprocessing": {**IMAGE_PRE, "std": [0.5, 0.5]}},
        r"has std \[0\.5, 0\.5\]; give one number",
    ),
    "threshold": ({"threshold": 1.5}, r"has threshold 1\.5; give a probability between 0 and 1"),
    "NaN metric": ({"metrics": {"auc": float("nan")}}, r"metrics\['auc'\] is nan, which JSON cannot hold"),
    "labels vs model": ({"labels": ["a", "b", "c"]}, r"the model .*gray\.onnx returns logits of shape .* 3 labels"),
    "missing model": ({"model_path": "absent.onnx"}, r"the model file absent\.onnx does not exist"),
    "reserved extra": ({"extra_files": {"manifest.json": __file__}}, r"'manifest\.json' is the name of a file the"),
    "text without vocab": (
        {"kind": "text", "preprocessing": {"tokenizer": "word", "vocab_file": "vocab.json", "max_len": 8}},
        r"a text bundle with the word tokenizer needs its vocabulary; pass extra_files=\{'vocab\.json'",
    ),
}


def image_arguments(image_model, **changes) -> dict:
    return {
        "model_path": image_model[1],
        "kind": "image",
        "task": "multi-class",
        "labels": IMAGE_LABELS,
        "preprocessing": IMAGE_PRE,
        "metrics": {"auc": np.float32(0.75)},  # numpy numbers are stored as plain JSON numbers
        **changes,
    }


@pytest.mark.parametrize("case", BAD_ARGUMENTS.values(), ids=BAD_ARGUMENTS.keys())
def test_write_bundle_refuses_bad_arguments_and_leaves_nothing(case, image_model, tmp_path) -> None:
    changes, message = case
    with pytest.raises(BundleError, match=message) as exc:
        write_bundle(tmp_path / "out", **image_arguments(image_model, **changes))
    assert str(exc.value).startswith(f"cannot write bundle {tmp_path / 'out'}")
    assert os.listdir(tmp_path) == []


def failing_manifest(*args, **kwargs) -> None:
    raise OSError("No space left on device")


def test_failure_after_the_model_copy_leaves_no_folder(image_model, tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(bundle_module, "_write_manifest", failing_manifest)
    with pytest.raises(OSError, match="No space left on device"):
        write_bundle(tmp_path / "out", **image_arguments(image_model))
    assert os.listdir(tmp_path) == []


def test_existing_bundle_survives_a_failed_rewrite_and_is_replaced_by_a_good_one(
    image_model, image_bundle, copy_of, monkeypatch
) -> None:
    bundle = copy_of(image_bundle)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    with monkeypatch.context() as patch:
        patch.setattr(bundle_module, "_write_manifest", failing_manifest)
        with pytest.raises(OSError, match="No space left on device"):
            write_bundle(bundle, **image_arguments(image_model, labels=["healthy", "sick"]))
    with pytest.raises(BundleError, match=r"3 labels"):  # fails in the model check, after everything is written
        write_bundle(bundle, **image_arguments(image_model, labels=["a", "b", "c"]))
    assert {p.name: p.read_bytes() for p in bundle.iterdir()} == before
    assert sorted(os.listdir(bundle.parent)) == [bundle.name]
    assert load_bundle(bundle).labels == IMAGE_LABELS

    write_bundle(bundle, **image_arguments(image_model, labels=["healthy", "sick"]))
    assert load_bundle(bundle).labels == ["healthy", "sick"]
    assert sorted(os.listdir(bundle.parent)) == [bundle.name]  # no .part or .old folders left


def test_write_bundle_never_replaces_a_folder_that_is_not_a_bundle(image_model, tmp_path) -> None:
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(BundleError, match=r"the folder exists and is not a bundle \(it has no manifest\.json\)"):
        write_bundle(tmp_path / "out", **image_arguments(image_model))
    assert os.listdir(tmp_path / "out") == ["notes.txt"]


# ----------------------------------------------------------------------------------------------------------------
# medassist predict
# ----------------------------------------------------------------------------------------------------------------


def test_cli_predict_prints_label_probabilities_and_latency(image, image_bundle, tmp_path, capsys) -> None:
    x = pixels(1, seed=7)
    Image.fromarray(x[0, 0]).save(tmp_path / "xray.png")
    assert main(["predict", str(image_bundle), str(tmp_path / "xray.png"), "--threads", "1"]) == 0
    out = capsys.readouterr().out
    expected = image.predict_images(x)[0]
    assert f"label: {expected.label}\n" in out
    lines = re.findall(r"^  (\w+)\s+([0-9.]+)$", out, flags=re.MULTILINE)
    assert [name for name, _ in lines] == [name for name, _ in expected.ranked()]  # most probable first
    assert [float(p) for _, p in lines] == pytest.approx([p for _, p in expected.ranked()], abs=1e-4)
    assert re.search(r"^latency: [0-9.]+ ms$", out, flags=re.MULTILINE)


def test_cli_predict_json(image_bundle, text_bundle, tmp_path, capsys) -> None:
    save_dicom8(tmp_path / "scan.dcm", pixels(1)[0, 0])
    assert main(["predict", str(image_bundle), str(tmp_path / "scan.dcm"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["label"] in IMAGE_LABELS and out["latency_ms"] > 0 and out["input"].endswith("scan.dcm")
    assert list(out["probabilities"].values()) == sorted(out["probabilities"].values(), reverse=True)
    assert sum(out["probabilities"].values()) == pytest.approx(1.0)

    assert main(["predict", str(text_bundle), "--text", "Small effusion.", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["task"] == "multi-label" and out["threshold"] == 0.5 and isinstance(out["label"], list)
    assert set(out["probabilities"]) == set(TEXT_LABELS)


def test_cli_predict_text_file(text, text_bundle, tmp_path, capsys) -> None:
    report = tmp_path / "report.txt"
    report.write_text("Mild pulmonary edema.\n", encoding="utf-8-sig")  # a byte-order mark is fine
    assert main(["predict", str(text_bundle), str(report)]) == 0
    out = capsys.readouterr().out
    expected = text.predict_text("Mild pulmonary edema.\n")
    assert f"labels (probability >= 0.5): {', '.join(expected.label) or 'none'}\n" in out
    assert all(name in out for name in TEXT_LABELS) and "latency: " in out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            ["report.txt"],
            r"report\.txt is not UTF-8 text \(invalid continuation byte at byte 3\); save the report as UTF-8",
        ),
        (["report.txt", "--text", "Edema."], r"give either an INPUT file or --text, not both"),
        ([], r"nothing to predict: give an INPUT file"),
        (["empty.txt"], r"empty\.txt is empty \(or only whitespace\)"),
        (["--text", " "], r"the report text is empty"),
    ],
    ids=["not UTF-8", "both", "neither", "empty file", "blank text"],
)
def test_cli_predict_text_errors(extra, message, text_bundle, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    Path("report.txt").write_bytes(b"Dr \xe9dema (latin-1)")
    Path("empty.txt").write_text("\n")
    assert main(["predict", str(text_bundle), *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("medassist: error: ") and re.search(message, err)


def test_cli_predict_image_errors(image_bundle, copy_of, capsys) -> None:
    assert main(["predict", str(image_bundle), "--text", "Edema."]) == 2
    assert re.search(
        r"is an image bundle; give an image file \(PNG, JPEG or DICOM\), not --text", capsys.readouterr().err
    )
    bundle = copy_of(image_bundle)
    flip_byte(bundle / "model.onnx")
    assert main(["predict", str(bundle), "x.png"]) == 2
    assert re.search(r"medassist: error: bundle .*model\.onnx does not match its SHA-256", capsys.readouterr().err)


def test_cli_predict_help(capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: medassist predict") and "--json" in out and "--threads" in out
