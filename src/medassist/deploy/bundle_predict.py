"""A verified bundle in use: its inputs checked and prepared as the model was trained (pixels normalised, reports
tokenised and padded per batch), run with ONNX Runtime, and turned into :class:`~medassist.deploy.prediction.Prediction`
objects. Bundles are opened and verified by :func:`medassist.deploy.bundle.load_bundle`."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from medassist.data.image_file import load_image
from medassist.deploy.bundle_model import check_batch_size, logits_output, pad_rows, run_many
from medassist.deploy.bundle_spec import KIND_WITH_ARTICLE, REEXPORT, BundleError
from medassist.deploy.ensemble import TfidfPart, mix
from medassist.deploy.prediction import Prediction, to_predictions
from medassist.errors import DataError
from medassist.text.vocab import Vocab, check_texts


class Bundle:
    """A verified bundle with an ONNX Runtime session; create it with :func:`~medassist.deploy.bundle.load_bundle`.

    Attributes:
        path: the bundle folder.
        meta: the description (bundle.json).
        labels: the class or label names, in the order of the model's outputs.
        kind: "image" or "text".
        task: "multi-class" or "multi-label".
        threshold: multi-label: a label is predicted when its probability is at least this: one number, or one per
            label (chosen on the validation split by the study).
        session: the ONNX Runtime session.
        vocab: the tokenizer of a text bundle (word vocabulary or WordPiece), else None.
        temperature: divides the logits before the softmax or sigmoid (fitted on validation; 1 = none).
        min_confidence: the older case-level rule: below this confidence a prediction abstains, or None.
        abstain_rule: the per-finding (multi-label) or per-class (multi-class) rule chosen on validation (see
            :mod:`medassist.deploy.abstention`), or None.
        cam_output: the model's class-activation output (image bundles that have one), or None.
        tfidf: an ensemble bundle's TF-IDF model, whose probabilities are averaged with the network's at weight
            ``tfidf_weight`` (:func:`medassist.deploy.ensemble.mix`); None for one model.
    """

    def __init__(
        self,
        path: Path,
        meta: dict[str, Any],
        session: ort.InferenceSession,
        vocab: Vocab | None = None,
        tfidf: TfidfPart | None = None,
    ) -> None:
        self.path = path
        self.meta = meta
        self.labels: list[str] = list(meta["labels"])
        self.kind: str = meta["kind"]
        self.task: str = meta["task"]
        t = meta["threshold"]
        self.threshold: float | list[float] = [float(x) for x in t] if isinstance(t, list) else float(t)
        self.session = session
        self.vocab = vocab
        self.temperature = float(meta.get("temperature", 1.0))
        rule = meta.get("abstain")
        per_finding = bool(rule) and "rule" in rule
        self.abstain_rule: dict[str, Any] | None = rule if per_finding else None
        self.min_confidence: float | None = float(rule["min_confidence"]) if rule and not per_finding else None
        self.cam_output: str | None = meta.get("cam_output")
        self.tfidf = tfidf
        self.tfidf_weight = float(meta["ensemble"]["tfidf_weight"]) if tfidf is not None else 0.0
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
    def image_shape(self) -> tuple[int, int]:
        """Height and width a segmentation model reads images at."""
        h, w = self._preprocessing["image_shape"]
        return int(h), int(w)

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
        return self.predict_images(self.prepare_image_file(path))[0]

    def prepare_image_file(self, path: str | os.PathLike[str]) -> np.ndarray:
        """The model's uint8 input (C, S, S) for one PNG, JPEG or DICOM file, read as :meth:`predict_image_file`
        reads it (same checks and errors)."""
        self._require("image", "prepare_image_file", "predict_text or predict_text_file")
        image = load_image(path, size=self.image_size, channels=None)  # (C, S, S) uint8
        return self._match_channels(image, Path(path))

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

    def predict_images(self, images: np.ndarray, *, batch_size: int = 32, cam: bool = False) -> list[Prediction]:
        """Predict uint8 pixel arrays of shape (N, C, H, W), or one image of shape (C, H, W).

        Args:
            images: pixels 0-255 with the model's channels and image size.
            batch_size: images per ONNX Runtime run.
            cam: also return each image's class-activation map of its predicted class (``Prediction.cam``), from
                the same model run; needs a bundle with a ``cam_output``.

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
        if cam and self.cam_output is None:
            raise BundleError(
                f"bundle {self.path} has no class-activation output, so it gives no heatmap; re-export it with "
                "`medassist deploy` (a model with global average pooling before its linear head exports one)"
            )
        return self._predict(feeds, cam=cam)

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
        return self._predict(self.text_feeds(ids, batch_size), texts=texts)

    def text_feeds(self, ids: Sequence[Sequence[int]], batch_size: int) -> list[dict[str, np.ndarray]]:
        """The model inputs of tokenised texts: runs of ``batch_size``, each padded to its longest text."""
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
        return feeds

    # -- segmentation ------------------------------------------------------------------------------------------

    def segment_image(self, image: np.ndarray, *, spacing: tuple[float, float] | None = None) -> Any:
        """The :class:`~medassist.deploy.segmentation.Segmentation` of one uint8 image (C, H, W) of any size: the
        model reads it at the shape it was trained at, the mask comes back at the image's own size."""
        from medassist.deploy.segmentation import segment

        self._require("segmentation", "segment_image", "predict_images or predict_texts")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
            raise DataError(
                f"give one uint8 image of shape (C, H, W) with 1 or 3 channels, not {image.dtype} {image.shape}"
            )
        return segment(self, self._match_channels(image, Path("the image")), spacing=spacing)

    def segment_image_file(self, path: str | os.PathLike[str]) -> Any:
        """Segment one PNG, JPEG, TIFF or DICOM file (a DICOM's pixel spacing gives the area in mm²)."""
        from medassist.data.image_file import pixel_spacing, read_pixels

        self._require("segmentation", "segment_image_file", "predict_image_file or predict_text_file")
        pixels = read_pixels(path)
        image = pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)
        return self.segment_image(np.ascontiguousarray(image), spacing=pixel_spacing(path))

    # -- detection ---------------------------------------------------------------------------------------------

    def detect_image(self, image: np.ndarray) -> Any:
        """The :class:`~medassist.deploy.detection.Detection` of one uint8 image (C, H, W) of any size: boxes in
        the image's own pixels and each class's count."""
        from medassist.deploy.detection import detect

        self._require("detection", "detect_image", "predict_images or segment_image")
        image = np.asarray(image)
        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[0] not in (1, 3):
            raise DataError(
                f"give one uint8 image of shape (C, H, W) with 1 or 3 channels, not {image.dtype} {image.shape}"
            )
        return detect(self, self._match_channels(image, Path("the image")))

    def detect_image_file(self, path: str | os.PathLike[str]) -> Any:
        """Detect in one PNG, JPEG, TIFF or DICOM file."""
        from medassist.data.image_file import read_pixels

        self._require("detection", "detect_image_file", "predict_image_file or segment_image_file")
        pixels = read_pixels(path)
        return self.detect_image(np.ascontiguousarray(pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)))

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

    def _predict(
        self, feeds: list[dict[str, np.ndarray]], *, cam: bool = False, texts: list[str] | None = None
    ) -> list[Prediction]:
        parts, maps, seconds = [], [], 0.0
        outputs = [self._output_name] + ([self.cam_output] if cam else [])
        for feed in feeds:
            n = len(next(iter(feed.values())))
            if self._static_batch is not None and n < self._static_batch:
                feed = {k: pad_rows(v, self._static_batch) for k, v in feed.items()}
            start = time.perf_counter()
            out = run_many(self.session, outputs, feed, f"bundle {self.path}: {self.meta['model_file']}")
            seconds += time.perf_counter() - start
            parts.append(out[0][:n])
            if cam:
                maps.append(out[1][:n])
        logits = np.concatenate(parts).astype(np.float64)  # (N, K)
        if logits.ndim != 2 or logits.shape[1] != len(self.labels) or not np.isfinite(logits).all():
            raise BundleError(
                f"bundle {self.path}: the model returned logits of shape {logits.shape}"
                f"{'' if np.isfinite(logits).all() else ' with NaN or infinite values'}; expected "
                f"(N, {len(self.labels)}) finite numbers. {REEXPORT.capitalize()}."
            )
        if self.tfidf is not None and texts is not None:  # an ensemble: one answer from both models
            start = time.perf_counter()
            logits = mix(self.tfidf.probs(texts), logits, self.tfidf_weight, self.task)
            seconds += time.perf_counter() - start
        predictions = to_predictions(
            logits,
            task=self.task,
            labels=self.labels,
            threshold=self.threshold,
            latency_ms=seconds * 1000.0,
            temperature=self.temperature,
            min_confidence=self.min_confidence,
            rule=self.abstain_rule,
        )
        if not cam:
            return predictions
        cams = np.concatenate(maps)  # (N, K, h, w)
        return [
            dataclasses.replace(p, cam=normalise_cam(c[self.labels.index(str(p.label))]))  # image tasks: one label
            for p, c in zip(predictions, cams, strict=True)
        ]


def normalise_cam(cam: np.ndarray) -> np.ndarray:
    """A class-activation map (h, w) with its negative evidence removed and scaled to [0, 1] (as Grad-CAM's ReLU and
    :func:`medassist.explain.grad_cam`'s min-max do); a map without positive evidence is all zero."""
    cam = np.maximum(np.asarray(cam, dtype=np.float64), 0.0)
    low, high = cam.min(), cam.max()
    if high - low <= 1e-6 * max(high, 1e-12):
        return np.zeros(cam.shape, dtype=np.float32)
    return ((cam - low) / (high - low)).astype(np.float32)
