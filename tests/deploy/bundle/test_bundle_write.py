"""write_bundle: argument checks, nothing half-written, and an earlier bundle replaced only by a complete one."""

from __future__ import annotations

import os

import pytest
from bundle_helpers import IMAGE_LABELS, IMAGE_PRE, SIZE, image_arguments

from medassist.deploy import bundle_write
from medassist.deploy.bundle import BundleError, load_bundle, write_bundle

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
    "thresholds per label": ({"threshold": [0.3]}, r"has 1 thresholds for 2 labels; give one per label"),
    "threshold out of range": ({"threshold": [0.3, 1.0]}, r"has threshold \[0\.3, 1\.0\]; give a probability"),
    "NaN metric": ({"metrics": {"auc": float("nan")}}, r"metrics\['auc'\] is nan, which JSON cannot hold"),
    "labels vs model": ({"labels": ["a", "b", "c"]}, r"the model .*gray\.onnx returns logits of shape .* 3 labels"),
    "missing model": ({"model_path": "absent.onnx"}, r"the model file absent\.onnx does not exist"),
    "reserved extra": ({"extra_files": {"manifest.json": __file__}}, r"'manifest\.json' is the name of a file the"),
    "text without vocab": (
        {"kind": "text", "preprocessing": {"tokenizer": "word", "vocab_file": "vocab.json", "max_len": 8}},
        r"a text bundle with the word tokenizer needs its vocabulary; pass extra_files=\{'vocab\.json'",
    ),
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
    monkeypatch.setattr(bundle_write, "write_manifest", failing_manifest)
    with pytest.raises(OSError, match="No space left on device"):
        write_bundle(tmp_path / "out", **image_arguments(image_model))
    assert os.listdir(tmp_path) == []


def test_existing_bundle_survives_a_failed_rewrite_and_is_replaced_by_a_good_one(
    image_model, image_bundle, copy_of, monkeypatch
) -> None:
    bundle = copy_of(image_bundle)
    before = {p.name: p.read_bytes() for p in bundle.iterdir()}
    with monkeypatch.context() as patch:
        patch.setattr(bundle_write, "write_manifest", failing_manifest)
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
