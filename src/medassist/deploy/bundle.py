"""The deployable bundle: one ONNX model and what it needs to predict, every file checked against a manifest.

A bundle is a folder::

    model.onnx      one self-contained ONNX model (no external data)
    bundle.json     what the model is: kind, task, labels, preprocessing, threshold, test metrics, provenance
    vocab.json      the word vocabulary (text bundles with the word tokenizer only)
    manifest.json   the size and SHA-256 of every other file

:func:`write_bundle` builds a bundle in a temporary sibling folder and moves it into place only once it is complete
and its model has been opened and run. :func:`load_bundle` verifies every file against the manifest, the description
against the format, and the model's inputs and outputs against the description before anything is predicted, so an
incomplete copy, a truncated download or an edited file is refused with the file named. The manifest guards against
accidents, not against an attacker, who could rewrite it as well.

Image models take one float32 input (B, C, H, W) normalised as ``(pixel * scale - mean) / std``; text models take
``input_ids`` and ``attention_mask`` (B, T) int64 (id 0 is padding). Both return logits (B, K), turned into
probabilities by a softmax (multi-class) or a sigmoid per label (multi-label).

This module verifies and opens a bundle (:func:`load_bundle`) and is the public face of the others: the description
format and its checks live in :mod:`medassist.deploy.bundle_spec`, the manifest in :mod:`medassist.deploy.manifest`,
the model's checks and runs in :mod:`medassist.deploy.bundle_model`, predicting in
:mod:`medassist.deploy.bundle_predict` and :mod:`medassist.deploy.prediction`, writing in
:mod:`medassist.deploy.bundle_write`; their names are re-exported here.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from medassist.deploy.bundle_model import open_model
from medassist.deploy.bundle_predict import Bundle
from medassist.deploy.bundle_spec import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    DESCRIPTION_FILE,
    IMAGE_PREPROCESSING,
    KINDS,
    MANIFEST_FILE,
    MODEL_FILE,
    REEXPORT,
    TASKS,
    TEXT_PREPROCESSING,
    TOKENIZERS,
    VOCAB_FILE,
    BundleError,
    Invalid,
    check_description,
)
from medassist.deploy.bundle_write import write_bundle
from medassist.deploy.ensemble import TfidfPart
from medassist.deploy.manifest import MANIFEST_FORMAT, read_manifest, verified_bytes
from medassist.deploy.prediction import Prediction
from medassist.deploy.tokenizer import WordPiece
from medassist.errors import DataError, MedAssistError
from medassist.text.vocab import Vocab

__all__ = [
    "BUNDLE_FORMAT",
    "BUNDLE_VERSION",
    "DESCRIPTION_FILE",
    "IMAGE_PREPROCESSING",
    "KINDS",
    "MANIFEST_FILE",
    "MANIFEST_FORMAT",
    "MODEL_FILE",
    "TASKS",
    "TEXT_PREPROCESSING",
    "TOKENIZERS",
    "VOCAB_FILE",
    "Bundle",
    "BundleError",
    "Prediction",
    "load_bundle",
    "write_bundle",
]


def load_bundle(path: str | os.PathLike[str], *, threads: int = 0, spin: bool = True, provider: str = "cpu") -> Bundle:
    """Verify a bundle folder and open its model with ONNX Runtime.

    Before the model runs: manifest.json and bundle.json must exist and parse; every file the manifest lists must
    exist with its listed size and SHA-256; bundle.json, the model and the vocabulary must be listed; the format,
    version, kind, task, labels and preprocessing must be known and complete; ONNX Runtime must open the model, its
    inputs must agree with the preprocessing and its output with the number of labels (checked on one dummy input).

    Args:
        path: the bundle folder.
        threads: ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose.
        spin: whether idle intra-op threads spin-wait for work (ONNX Runtime's default: the lowest latency for one
            caller). A service turns it off, so that waiting model threads leave the CPUs to its request handling.
        provider: ONNX Runtime's execution provider, ``cpu`` or ``cuda`` (onnxruntime-gpu on an NVIDIA GPU).

    Returns:
        The verified bundle.

    Raises:
        BundleError: anything missing, altered or inconsistent, named with the file and what to do.
    """
    if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
        raise MedAssistError(f"threads must be 0 (ONNX Runtime's choice) or a positive whole number, got {threads!r}")
    path = Path(path)
    if not path.exists():
        raise BundleError(f"bundle {path} does not exist; give the folder written by `medassist deploy`")
    if not path.is_dir():
        raise BundleError(
            f"{path} is a file, not a bundle folder; give the folder that holds {MODEL_FILE}, {DESCRIPTION_FILE} and "
            f"{MANIFEST_FILE}"
        )
    files = read_manifest(path)
    if DESCRIPTION_FILE not in files:
        raise BundleError(
            f"bundle {path}: {DESCRIPTION_FILE} is not listed in {MANIFEST_FILE}, so it cannot be verified; {REEXPORT}"
        )
    contents = {name: verified_bytes(path, name, entry) for name, entry in files.items()}
    where = f"bundle {path}: {DESCRIPTION_FILE}"
    try:
        meta = json.loads(contents[DESCRIPTION_FILE].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise BundleError(f"{where} is not valid JSON ({err}); {REEXPORT}") from None
    try:
        check_description(meta)
    except Invalid as err:
        raise BundleError(f"{where} {err}; {err.fix or REEXPORT}") from None
    needed = [meta["model_file"]] + ([meta["preprocessing"]["vocab_file"]] if meta["kind"] == "text" else [])
    needed += [meta["ensemble"]["tfidf_file"]] if "ensemble" in meta else []
    for name in needed:
        if name not in files:
            raise BundleError(
                f"bundle {path}: {name} is not listed in {MANIFEST_FILE}, so it cannot be verified; {REEXPORT}"
            )
    vocab: Vocab | WordPiece | None = None
    if meta["kind"] == "text":
        vocab_file = meta["preprocessing"]["vocab_file"]
        try:
            if meta["preprocessing"]["tokenizer"] == "wordpiece":
                vocab = WordPiece.from_bytes(contents[vocab_file], f"bundle {path}: {vocab_file}")
            else:
                vocab = Vocab.load(path / vocab_file)
        except DataError as err:
            raise BundleError(f"bundle {path}: {err}; {REEXPORT}") from None
    tfidf = _ensemble_part(path, meta, contents) if "ensemble" in meta else None
    model = meta["model_file"]
    session = open_model(
        contents[model],
        meta,
        vocab,
        threads=threads,
        spin=spin,
        where=f"bundle {path}: {model}",
        fix=REEXPORT,
        provider=provider,
    )
    return Bundle(path, meta, session, vocab, tfidf)


def _ensemble_part(path: Path, meta: dict, contents: dict[str, bytes]) -> TfidfPart:
    """The verified TF-IDF model of an ensemble bundle, checked against its labels and task."""
    name = meta["ensemble"]["tfidf_file"]
    try:
        part = TfidfPart(contents[name], f"bundle {path}: {name}")
    except DataError as err:
        raise BundleError(f"{err}; {REEXPORT}") from None
    if part.num_labels != len(meta["labels"]) or part.task != meta["task"]:
        raise BundleError(
            f"bundle {path}: {name} is a {part.task} model with {part.num_labels} labels, but bundle.json has a "
            f"{meta['task']} task with {len(meta['labels'])}; {REEXPORT}"
        )
    return part
