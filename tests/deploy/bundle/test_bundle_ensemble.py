"""The text ensemble as a bundle: the TF-IDF model saved as data, read back by scikit-learn, averaged with the ONNX
model's probabilities in one answer, and refused when its file or its entry is wrong."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from bundle_helpers import MAX_LEN, REPORTS, TEXT_LABELS, probs, rewrite_manifest

from medassist.deploy.bundle import BundleError, load_bundle, write_bundle
from medassist.deploy.ensemble import TfidfEnsemble, TfidfPart, WithTexts, mix, save_tfidf
from medassist.deploy.export import probs_from_logits as link
from medassist.errors import DataError
from medassist.models.tfidf import TfidfLogReg
from medassist.train.data import TokenBatcher

TEXTS = REPORTS * 6 + ["Stable cardiomegaly.", "Bilateral effusions, larger on the right.", "Clear lungs."] * 4
MULTI_LABEL = np.array([[int(w in t.lower()) for w in ("effusion", "edema", "cardiomegaly")] for t in TEXTS])


def _fitted(task: str, features: str = "word+char") -> TfidfLogReg:
    labels = MULTI_LABEL if task == "multi-label" else MULTI_LABEL.argmax(1) + MULTI_LABEL.any(1)  # 4 classes
    return TfidfLogReg(C=4.0, features=features, min_df=1).fit(TEXTS, labels, num_classes=4)


@pytest.mark.parametrize("task", ["multi-label", "multi-class"])
def test_the_tfidf_file_gives_the_models_own_probabilities(task: str, tmp_path) -> None:
    model = _fitted(task)
    part = TfidfPart.load(save_tfidf(model, tmp_path / "tfidf.npz"))
    new = ["Small right effusion and edema.", "Enlarged heart, cardiomegaly.", "zzz unseen words only"]
    assert part.task == task and part.num_labels == (3 if task == "multi-label" else 4)
    assert np.allclose(part.probs(new), model.predict_proba(new), atol=1e-5)
    with np.load(tmp_path / "tfidf.npz", allow_pickle=False) as f:  # plain arrays: nothing to unpickle
        assert {"coef", "intercept", "terms0", "idf0", "terms1", "idf1", "settings"} == set(f.files)


@pytest.mark.parametrize("task", ["multi-label", "multi-class"])
def test_mixed_logits_give_the_weighted_average_of_the_probabilities(task: str) -> None:
    rng = np.random.default_rng(0)
    p_tfidf = link(rng.normal(size=(5, 3)), task)
    z = rng.normal(size=(5, 3)) * 3
    for w in (0.0, 0.3, 1.0):
        assert np.allclose(link(mix(p_tfidf, z, w, task), task), w * p_tfidf + (1 - w) * link(z, task), atol=1e-6)


def test_a_damaged_tfidf_file_is_refused_with_its_name(tmp_path) -> None:
    bad = tmp_path / "tfidf.npz"
    bad.write_bytes(b"not an npz")
    with pytest.raises(DataError, match="tfidf.npz is not a TF-IDF file"):
        TfidfPart.load(bad)


@pytest.fixture(scope="module")
def ensemble_bundle(text_model, tmp_path_factory):
    _, _, vocab_path, onnx_path = text_model
    folder = tmp_path_factory.mktemp("ensemble")
    tfidf = save_tfidf(_fitted("multi-label"), folder / "tfidf.npz")
    bundle = write_bundle(
        folder / "bundle",
        model_path=onnx_path,
        kind="text",
        task="multi-label",
        labels=TEXT_LABELS,
        preprocessing={"tokenizer": "word", "vocab_file": "vocab.json", "max_len": MAX_LEN},
        metrics={"macro_f1": 0.5},
        extra_files={"vocab.json": vocab_path, "tfidf.npz": tfidf},
        ensemble={"tfidf_file": "tfidf.npz", "tfidf_weight": 0.3},
    )
    return bundle, tfidf


def test_an_ensemble_bundle_gives_one_answer_from_both_models(ensemble_bundle, text_model) -> None:
    path, tfidf = ensemble_bundle
    model, vocab, _, _ = text_model
    bundle = load_bundle(path)
    assert "tfidf.npz" in json.loads((path / "manifest.json").read_text())["files"]
    texts = ["Small left pleural effusion.", "Mild edema, no effusion.", "Cardiomegaly."]
    got = probs(bundle.predict_texts(texts))
    # The same average the deploy study measures: the PyTorch model beside the TF-IDF, through TfidfEnsemble.
    batcher = WithTexts(TokenBatcher(vocab.encode_batch(texts, max_len=MAX_LEN)), texts)
    with torch.no_grad():
        z = TfidfEnsemble(model, TfidfPart.load(tfidf), 0.3)(*batcher.inputs(torch.arange(3))).numpy()
    assert np.allclose(got, link(z, "multi-label"), atol=1e-4)
    assert np.allclose(got, probs(load_bundle(path).predict_texts(texts)))  # deterministic
    assert "ensemble: each probability is 0.3 x" in (path / "model_card.md").read_text()


def test_an_ensemble_bundle_refuses_a_changed_or_missing_tfidf_file(ensemble_bundle, copy_of) -> None:
    bundle = copy_of(ensemble_bundle[0])
    with open(bundle / "tfidf.npz", "ab") as fh:
        fh.write(b"x")
    with pytest.raises(BundleError, match="tfidf.npz"):
        load_bundle(bundle)
    (bundle / "tfidf.npz").unlink()
    with pytest.raises(BundleError, match="tfidf.npz"):
        load_bundle(bundle)


def test_an_ensemble_entry_is_checked(ensemble_bundle, copy_of) -> None:
    bundle = copy_of(ensemble_bundle[0])
    meta = json.loads((bundle / "bundle.json").read_text())
    meta["ensemble"]["tfidf_weight"] = 1.5
    (bundle / "bundle.json").write_text(json.dumps(meta))
    rewrite_manifest(bundle)
    with pytest.raises(BundleError, match="tfidf_weight 1.5"):
        load_bundle(bundle)


def test_writing_an_ensemble_needs_a_matching_tfidf_model(text_model, tmp_path) -> None:
    _, _, vocab_path, onnx_path = text_model
    args = {
        "model_path": onnx_path,
        "kind": "text",
        "task": "multi-label",
        "labels": TEXT_LABELS,
        "preprocessing": {"tokenizer": "word", "vocab_file": "vocab.json", "max_len": MAX_LEN},
        "metrics": {},
        "ensemble": {"tfidf_file": "tfidf.npz", "tfidf_weight": 0.5},
    }
    with pytest.raises(BundleError, match="needs its TF-IDF model"):
        write_bundle(tmp_path / "a", extra_files={"vocab.json": vocab_path}, **args)
    four_classes = save_tfidf(_fitted("multi-class"), tmp_path / "mc.npz")
    with pytest.raises(BundleError, match="multi-class with 4 labels"):
        write_bundle(tmp_path / "b", extra_files={"vocab.json": vocab_path, "tfidf.npz": four_classes}, **args)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
