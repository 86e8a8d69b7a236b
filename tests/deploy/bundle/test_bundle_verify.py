"""Verification: every altered, incomplete or inconsistent bundle is refused, naming the file."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from bundle_helpers import IMAGE_LABELS, IMAGE_PRE, edit_json, flip_byte, rewrite_manifest

from medassist.deploy.bundle import BundleError, load_bundle, write_bundle


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
