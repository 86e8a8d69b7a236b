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

The description format and its checks live in :mod:`medassist.deploy.bundle_spec`, the manifest in
:mod:`medassist.deploy.manifest`, the model's checks and runs in :mod:`medassist.deploy.bundle_model`; the constants
are re-exported here.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from medassist.data.images import load_image
from medassist.deploy.bundle_model import check_batch_size, logits_output, open_model, pad_rows, run
from medassist.deploy.bundle_spec import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    DESCRIPTION_FILE,
    IMAGE_PREPROCESSING,
    KIND_WITH_ARTICLE,
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
    file_name_problem,
    plain_json,
)
from medassist.deploy.manifest import MANIFEST_FORMAT, read_manifest, verified_bytes, write_json

# Under its old private name, which the tests patch to make writing fail half-way; write_bundle calls it by this name.
from medassist.deploy.manifest import write_manifest as _write_manifest
from medassist.errors import DataError, MedAssistError
from medassist.text.vocab import Vocab, check_texts

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


@dataclass(frozen=True)
class Prediction:
    """The prediction for one input.

    Attributes:
        label: multi-class: the most probable label. Multi-label: every label whose probability is at least the
            bundle's threshold, in the bundle's label order; possibly empty.
        probabilities: each label's probability, in the bundle's label order.
        latency_ms: wall time of the ONNX Runtime run(s) of the call that made this prediction; every prediction of
            one batch call shares the batch's time.
    """

    label: str | list[str]
    probabilities: dict[str, float]
    latency_ms: float

    def ranked(self) -> list[tuple[str, float]]:
        """(label, probability) pairs, most probable first (ties keep the bundle's label order)."""
        return sorted(self.probabilities.items(), key=lambda item: -item[1])

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; probabilities most probable first."""
        label = list(self.label) if isinstance(self.label, list) else self.label
        return {"label": label, "probabilities": dict(self.ranked()), "latency_ms": self.latency_ms}


# ----------------------------------------------------------------------------------------------------------------
# Loading and predicting
# ----------------------------------------------------------------------------------------------------------------


class Bundle:
    """A verified bundle with an ONNX Runtime session; create it with :func:`load_bundle`.

    Attributes:
        path: the bundle folder.
        meta: the description (bundle.json).
        labels: the class or label names, in the order of the model's outputs.
        kind: "image" or "text".
        task: "multi-class" or "multi-label".
        threshold: multi-label: a label is predicted when its probability is at least this.
        session: the ONNX Runtime session.
        vocab: the word vocabulary of a text bundle, else None.
    """

    def __init__(
        self, path: Path, meta: dict[str, Any], session: ort.InferenceSession, vocab: Vocab | None = None
    ) -> None:
        self.path = path
        self.meta = meta
        self.labels: list[str] = list(meta["labels"])
        self.kind: str = meta["kind"]
        self.task: str = meta["task"]
        self.threshold = float(meta["threshold"])
        self.session = session
        self.vocab = vocab
        self._preprocessing: dict[str, Any] = meta["preprocessing"]
        self._input_names = [i.name for i in session.get_inputs()]
        self._output_name = logits_output(session).name
        first = session.get_inputs()[0].shape
        # A model exported without a dynamic batch axis runs exactly that many inputs at a time.
        self._static_batch = first[0] if isinstance(first[0], int) else None
        self._static_len = first[1] if self.kind == "text" and isinstance(first[1], int) else None

    def __repr__(self) -> str:
        return f"Bundle({str(self.path)!r}, kind={self.kind!r}, task={self.task!r}, labels={self.labels})"

    @property
    def image_size(self) -> int:
        """Height and width of the model's input images."""
        return int(self._preprocessing["image_size"])

    @property
    def channels(self) -> int:
        """Channels of the model's input images (1 grayscale, 3 RGB)."""
        return int(self._preprocessing["channels"])

    @property
    def max_len(self) -> int:
        """Texts are truncated to this many tokens."""
        return int(self._preprocessing["max_len"])

    # -- images ------------------------------------------------------------------------------------------------

    def predict_image_file(self, path: str | os.PathLike[str]) -> Prediction:
        """Predict one PNG, JPEG or DICOM file, read and resized like :func:`medassist.data.images.load_image`.

        A grayscale file is repeated into RGB for a 3-channel model; an RGB file whose three channels are identical
        (grayscale saved as RGB) is reduced to one for a 1-channel model. A real colour image is refused by a
        grayscale model, since turning it grey would feed the model something unlike what it learnt from.

        Raises:
            DataError: the file is missing, not an image, or a colour image for a grayscale model.
            BundleError: this is a text bundle.
        """
        self._require("image", "predict_image_file", "predict_text or predict_text_file")
        image = load_image(path, size=self.image_size, channels=None)  # (C, S, S) uint8
        return self.predict_images(self._match_channels(image, Path(path)))[0]

    def _match_channels(self, image: np.ndarray, path: Path) -> np.ndarray:
        have, want = image.shape[0], self.channels
        if have == want:
            return image
        if want == 3:  # grayscale into an RGB model: the usual way ImageNet-style models read X-rays
            return np.repeat(image, 3, axis=0)
        if (image[1:] == image[:1]).all():  # grayscale stored as RGB
            return image[:1]
        raise DataError(
            f"{path} is a colour image (3 channels) but the model of bundle {self.path} reads grayscale images "
            f"(1 channel); give a grayscale image of the kind the model was trained on."
        )

    def predict_images(self, images: np.ndarray, *, batch_size: int = 32) -> list[Prediction]:
        """Predict uint8 pixel arrays of shape (N, C, H, W), or one image of shape (C, H, W).

        Args:
            images: pixels 0-255 with the model's channels and image size.
            batch_size: images per ONNX Runtime run.

        Raises:
            DataError: not a uint8 array, NaN values, wrong number of dimensions, channels or size, or no images.
            BundleError: this is a text bundle.
        """
        self._require("image", "predict_images", "predict_texts")
        check_batch_size(batch_size)
        images = self._check_images(images)
        pre = self._preprocessing
        c = self.channels
        mean = np.asarray(pre["mean"], dtype=np.float32).reshape(-1, 1, 1) * np.ones((c, 1, 1), np.float32)
        std = np.asarray(pre["std"], dtype=np.float32).reshape(-1, 1, 1) * np.ones((c, 1, 1), np.float32)
        x = (images.astype(np.float32) * np.float32(pre["scale"]) - mean) / std  # (N, C, S, S)
        name = self._input_names[0]
        feeds = [{name: np.ascontiguousarray(x[i : i + n])} for i, n in self._chunks(len(x), batch_size)]
        return self._predict(feeds)

    def _check_images(self, images: object) -> np.ndarray:
        expected = f"(N, {self.channels}, {self.image_size}, {self.image_size})"
        if not isinstance(images, np.ndarray):
            raise DataError(f"images must be a numpy uint8 array of shape {expected}, got {type(images).__name__}")
        if images.dtype != np.uint8:
            has_nan = images.dtype.kind in "fc" and bool(np.isnan(images).any())
            raise DataError(
                f"images must be uint8 pixels 0-255, got dtype {images.dtype}{' with NaN values' if has_nan else ''}; "
                "give the pixels as read from the image files (medassist.data.images.load_image does)."
            )
        if images.ndim == 3:
            images = images[None]
        if images.ndim != 4:
            raise DataError(f"images must have shape {expected} or one image (C, H, W); got shape {images.shape}")
        if images.shape[0] == 0:
            raise DataError(f"no images to predict: the array has shape {images.shape}")
        if images.shape[1] != self.channels:
            raise DataError(
                f"images have shape {images.shape}: {images.shape[1]} channel(s), but the model of bundle {self.path} "
                f"reads {self.channels}; expected {expected}"
            )
        if images.shape[2:] != (self.image_size, self.image_size):
            raise DataError(
                f"images have shape {images.shape}: {images.shape[2]}x{images.shape[3]} pixels, but the model of "
                f"bundle {self.path} reads {self.image_size}x{self.image_size}; expected {expected}. Resize them "
                f"(load_image(path, size={self.image_size}) does)."
            )
        return images

    # -- texts -------------------------------------------------------------------------------------------------

    def predict_text(self, text: str) -> Prediction:
        """Predict one report.

        Raises:
            DataError: the text is not a string, or is empty or only whitespace.
            BundleError: this is an image bundle.
        """
        self._require("text", "predict_text", "predict_image_file")
        if isinstance(text, str) and not text.strip():
            raise DataError("the report text is empty (or only whitespace); give the text to classify")
        return self.predict_texts([text])[0]

    def predict_text_file(self, path: str | os.PathLike[str]) -> Prediction:
        """Predict the report in a UTF-8 text file (a byte-order mark is allowed).

        Raises:
            DataError: the file is missing, not UTF-8, or empty.
            BundleError: this is an image bundle.
        """
        self._require("text", "predict_text_file", "predict_image_file")
        path = Path(path)
        if not path.is_file():
            raise DataError(f"file not found: {path}")
        data = path.read_bytes()
        try:
            text = data.decode("utf-8-sig")
        except UnicodeDecodeError as err:
            raise DataError(
                f"{path} is not UTF-8 text ({err.reason} at byte {err.start}); save the report as UTF-8"
            ) from None
        if not text.strip():
            raise DataError(f"{path} is empty (or only whitespace); give a file with the report text")
        return self.predict_text(text)

    def predict_texts(self, texts: Sequence[str], *, batch_size: int = 32) -> list[Prediction]:
        """Predict reports; each is tokenised, truncated to ``max_len`` tokens and padded per batch.

        Raises:
            DataError: a text that is not a string, is empty or only whitespace, or no texts at all.
            BundleError: this is an image bundle.
        """
        self._require("text", "predict_texts", "predict_images")
        check_batch_size(batch_size)
        texts = check_texts(texts)
        if not texts:
            raise DataError("no texts to predict; give at least one report")
        assert self.vocab is not None  # load_bundle loads it for every text bundle
        ids = self.vocab.encode_batch(texts, max_len=self.max_len)
        ids_name, mask_name = self._input_names
        feeds = []
        for i, n in self._chunks(len(ids), batch_size):
            chunk = ids[i : i + n]
            width = self._static_len or max(len(row) for row in chunk)
            input_ids = np.zeros((n, width), dtype=np.int64)  # (B, T), 0 = padding
            mask = np.zeros((n, width), dtype=np.int64)  # (B, T), 1 = real token
            for j, row in enumerate(chunk):
                input_ids[j, : len(row)] = row
                mask[j, : len(row)] = 1
            feeds.append({ids_name: input_ids, mask_name: mask})
        return self._predict(feeds)

    # -- shared ------------------------------------------------------------------------------------------------

    def _require(self, kind: str, method: str, instead: str) -> None:
        if self.kind != kind:
            a_kind = KIND_WITH_ARTICLE[kind]
            raise BundleError(
                f"bundle {self.path} predicts from {self.kind}s, not {kind}s: {method} needs {a_kind} bundle. "
                f"Use {instead}, or load {a_kind} bundle."
            )

    def _chunks(self, n: int, batch_size: int) -> list[tuple[int, int]]:
        """(start, size) of each run; a static batch axis sets the size (:meth:`_predict` pads the last run)."""
        size = self._static_batch or batch_size
        return [(i, min(size, n - i)) for i in range(0, n, size)]

    def _predict(self, feeds: list[dict[str, np.ndarray]]) -> list[Prediction]:
        parts, seconds = [], 0.0
        for feed in feeds:
            n = len(next(iter(feed.values())))
            if self._static_batch is not None and n < self._static_batch:
                feed = {k: pad_rows(v, self._static_batch) for k, v in feed.items()}
            start = time.perf_counter()
            logits = run(self.session, [self._output_name], feed, f"bundle {self.path}: {self.meta['model_file']}")
            seconds += time.perf_counter() - start
            parts.append(logits[:n])
        logits = np.concatenate(parts).astype(np.float64)  # (N, K)
        if logits.ndim != 2 or logits.shape[1] != len(self.labels) or not np.isfinite(logits).all():
            raise BundleError(
                f"bundle {self.path}: the model returned logits of shape {logits.shape}"
                f"{'' if np.isfinite(logits).all() else ' with NaN or infinite values'}; expected "
                f"(N, {len(self.labels)}) finite numbers. {REEXPORT.capitalize()}."
            )
        if self.task == "multi-class":
            z = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = z / z.sum(axis=1, keepdims=True)
        else:
            probs = 0.5 * (1.0 + np.tanh(0.5 * logits))  # the sigmoid, without overflow for large |logits|
        latency_ms = seconds * 1000.0
        out = []
        for row in probs:
            probabilities = {name: float(p) for name, p in zip(self.labels, row, strict=True)}
            if self.task == "multi-class":
                label: str | list[str] = self.labels[int(np.argmax(row))]
            else:
                label = [name for name, p in probabilities.items() if p >= self.threshold]
            out.append(Prediction(label=label, probabilities=probabilities, latency_ms=latency_ms))
        return out


def load_bundle(path: str | os.PathLike[str], *, threads: int = 0) -> Bundle:
    """Verify a bundle folder and open its model with ONNX Runtime.

    Before the model runs: manifest.json and bundle.json must exist and parse; every file the manifest lists must
    exist with its listed size and SHA-256; bundle.json, the model and the vocabulary must be listed; the format,
    version, kind, task, labels and preprocessing must be known and complete; ONNX Runtime must open the model, its
    inputs must agree with the preprocessing and its output with the number of labels (checked on one dummy input).

    Args:
        path: the bundle folder.
        threads: ONNX Runtime intra-op threads; 0 lets ONNX Runtime choose.

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
    for name in needed:
        if name not in files:
            raise BundleError(
                f"bundle {path}: {name} is not listed in {MANIFEST_FILE}, so it cannot be verified; {REEXPORT}"
            )
    vocab = None
    if meta["kind"] == "text":
        try:
            vocab = Vocab.load(path / meta["preprocessing"]["vocab_file"])
        except DataError as err:
            raise BundleError(f"bundle {path}: {err}; {REEXPORT}") from None
    model = meta["model_file"]
    session = open_model(contents[model], meta, vocab, threads=threads, where=f"bundle {path}: {model}", fix=REEXPORT)
    return Bundle(path, meta, session, vocab)


# ----------------------------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------------------------


def write_bundle(
    out_dir: str | os.PathLike[str],
    *,
    model_path: str | os.PathLike[str],
    kind: str,
    task: str,
    labels: Sequence[str],
    preprocessing: Mapping[str, Any],
    metrics: Mapping[str, Any],
    info: Mapping[str, Any] | None = None,
    extra_files: Mapping[str, str | os.PathLike[str]] | None = None,
    threshold: float = 0.5,
    name: str | None = None,
) -> Path:
    """Write a bundle folder: the model, the extra files, bundle.json and manifest.json.

    The bundle is built in a temporary sibling folder, its model opened and run once with ONNX Runtime, and only
    then moved to ``out_dir``; an earlier bundle there is replaced only after the new one is complete, and survives
    any failure. A folder at ``out_dir`` that is not a bundle is never replaced.

    Args:
        out_dir: the bundle folder to create or replace.
        model_path: a self-contained ONNX model (copied to model.onnx).
        kind: "image" or "text".
        task: "multi-class" or "multi-label".
        labels: the class or label names, in the order of the model's outputs.
        preprocessing: image: image_size, channels, scale, mean, std (mean and std a number or one per channel);
            text: tokenizer ("word"), vocab_file, max_len.
        metrics: test metrics of the model (JSON numbers, nested dicts and lists allowed).
        info: provenance (source run, variant, ...); the creation time and medassist version are added unless
            given.
        extra_files: more files to ship, file name -> path; a word-tokenizer text bundle needs its vocab_file here.
        threshold: multi-label: a label is predicted when its probability is at least this.
        name: the bundle's name; by default the folder's name.

    Returns:
        ``out_dir``.

    Raises:
        BundleError: invalid arguments, a model that does not match them, or a destination that is not a bundle.
    """
    from medassist import __version__

    out_dir = Path(out_dir)
    if out_dir.name in ("", ".."):  # "." or "..": the folder needs a name to build its sibling beside it
        out_dir = out_dir.resolve()
    where = f"cannot write bundle {out_dir}"
    model_path = Path(model_path)
    if not model_path.is_file():
        raise BundleError(f"{where}: the model file {model_path} does not exist; export the model to ONNX first")
    extras = {str(k): Path(v) for k, v in (extra_files or {}).items()}
    for file_name, source in extras.items():
        problem = file_name_problem(file_name)
        if problem is None and file_name in (MODEL_FILE, DESCRIPTION_FILE, MANIFEST_FILE):
            problem = "is the name of a file the bundle writes itself; give the file another name"
        if problem is not None:
            raise BundleError(f"{where}: the extra file name {file_name!r} {problem}")
        if not source.is_file():
            raise BundleError(f"{where}: the extra file {source} (for {file_name}) does not exist")
    provenance = {"created": datetime.now(UTC).isoformat(timespec="seconds"), "medassist_version": __version__}
    try:
        meta: dict[str, Any] = {
            "format": BUNDLE_FORMAT,
            "version": BUNDLE_VERSION,
            "name": name if name is not None else out_dir.name,
            "kind": kind,
            "task": task,
            "labels": list(labels) if isinstance(labels, Sequence) and not isinstance(labels, str) else labels,
            "model_file": MODEL_FILE,
            "preprocessing": plain_json(dict(preprocessing), "preprocessing")
            if isinstance(preprocessing, Mapping)
            else preprocessing,
            "threshold": plain_json(threshold, "threshold"),
            "metrics": plain_json(metrics, "metrics"),
            "info": plain_json({**provenance, **(info or {})}, "info"),
        }
    except Invalid as err:
        raise BundleError(f"{where}: {err}") from None
    try:
        check_description(meta)
    except Invalid as err:
        raise BundleError(f"{where}: its {DESCRIPTION_FILE} would be invalid: it {err}") from None
    vocab = None
    if kind == "text":
        vocab_file = meta["preprocessing"]["vocab_file"]
        if vocab_file not in extras:
            raise BundleError(
                f"{where}: a text bundle with the word tokenizer needs its vocabulary; pass "
                f"extra_files={{{vocab_file!r}: <path of the file written by Vocab.save>}}"
            )
        try:
            vocab = Vocab.load(extras[vocab_file])
        except DataError as err:
            raise BundleError(f"{where}: {err}") from None
    _check_destination(out_dir, where)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(4)}.part"
    tmp.mkdir()
    try:
        shutil.copyfile(model_path, tmp / MODEL_FILE)
        for file_name, source in extras.items():
            shutil.copyfile(source, tmp / file_name)
        write_json(tmp / DESCRIPTION_FILE, meta)
        _write_manifest(tmp, [MODEL_FILE, DESCRIPTION_FILE, *extras])
        open_model(
            (tmp / MODEL_FILE).read_bytes(),
            meta,
            vocab,
            threads=0,
            where=f"{where}: the model {model_path}",
            fix="export the model so it matches kind, preprocessing and labels",
        )
        _move_into_place(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out_dir


def _check_destination(out_dir: Path, where: str) -> None:
    """Refuse to replace anything but an earlier bundle (or an empty folder)."""
    if out_dir.is_symlink() or (out_dir.exists() and not out_dir.is_dir()):
        raise BundleError(f"{where}: {out_dir} exists and is not a folder; choose another path or remove it")
    if out_dir.is_dir() and any(out_dir.iterdir()):
        if not ((out_dir / MANIFEST_FILE).is_file() or (out_dir / DESCRIPTION_FILE).is_file()):
            raise BundleError(
                f"{where}: the folder exists and is not a bundle (it has no {MANIFEST_FILE}); only an earlier bundle "
                "is replaced. Choose a new or empty folder."
            )


def _move_into_place(tmp: Path, out_dir: Path) -> None:
    """Rename the finished ``tmp`` to ``out_dir``, keeping an earlier bundle until the new one is in place."""
    if not out_dir.exists():
        os.rename(tmp, out_dir)
        return
    # Python has no atomic exchange of two folders; the earlier bundle is moved aside, then restored on failure.
    old = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(4)}.old"
    os.rename(out_dir, old)
    try:
        os.rename(tmp, out_dir)
    except BaseException:
        os.rename(old, out_dir)
        raise
    shutil.rmtree(old, ignore_errors=True)
