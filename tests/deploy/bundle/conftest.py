"""Fixtures of the bundle tests: a tiny image model and a tiny text model, exported to ONNX and written as bundles
once per test module."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from bundle_helpers import (
    IMAGE_LABELS,
    IMAGE_PRE,
    MAX_LEN,
    REPORTS,
    TEXT_LABELS,
    TinyText,
    export_image_model,
    export_onnx,
)
from torch import nn

from medassist.deploy.bundle import Bundle, load_bundle, write_bundle
from medassist.text.vocab import Vocab


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
