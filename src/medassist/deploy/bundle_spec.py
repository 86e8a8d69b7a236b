"""The bundle's description format (bundle.json) and the checks every description must pass.

:func:`check_description` names the first problem of a description as an :class:`Invalid`; the caller
(:mod:`medassist.deploy.bundle`) adds which bundle it is and what to do, and raises it as a ``BundleError``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from medassist.deploy.abstention import check_rule
from medassist.errors import MedAssistError

BUNDLE_FORMAT = "medassist-bundle"
BUNDLE_VERSION = 1
MODEL_FILE = "model.onnx"
DESCRIPTION_FILE = "bundle.json"
MANIFEST_FILE = "manifest.json"
VOCAB_FILE = "vocab.json"
KINDS = ("image", "text", "segmentation", "detection")
TASKS = ("multi-class", "multi-label", "segmentation", "detection")
OWN_TASK = ("segmentation", "detection")  # a kind that is its own task
# "word": the study's word vocabulary (vocab.json); "wordpiece": a `tokenizers` fast tokenizer (tokenizer.json).
TOKENIZERS = ("word", "wordpiece")
# Every key is required: a key this version does not know could change what the model expects, so it is refused.
IMAGE_PREPROCESSING = ("image_size", "channels", "scale", "mean", "std")
TEXT_PREPROCESSING = ("tokenizer", "vocab_file", "max_len")
# A segmentation network reads images at the shape it was trained at (height, width), padded to ``multiple``.
SEGMENTATION_PREPROCESSING = ("image_shape", "channels", "scale", "mean", "std", "multiple")
# A detector reads an image with its longer side ``image_size`` (0: as it is), scaled by ``scale`` (its network
# normalises), padded to ``multiple``; ``detector`` rebuilds MONAI's post-processing of its maps (anchors, NMS).
DETECTION_PREPROCESSING = ("image_size", "channels", "scale", "multiple", "detector")
DETECTOR_KEYS = ("model", "backbone", "width", "anchor_sizes")
PREPROCESSING = {
    "image": IMAGE_PREPROCESSING,
    "text": TEXT_PREPROCESSING,
    "segmentation": SEGMENTATION_PREPROCESSING,
    "detection": DETECTION_PREPROCESSING,
}

# A text bundle's optional ensemble: the TF-IDF model file (medassist.deploy.ensemble) and its weight in the average.
ENSEMBLE_KEYS = ("tfidf_file", "tfidf_weight")

KIND_WITH_ARTICLE = {
    "image": "an image",
    "text": "a text",
    "segmentation": "a segmentation",
    "detection": "a detection",
}
REEXPORT = "re-export the bundle with `medassist deploy`"


class BundleError(MedAssistError):
    """A bundle that is missing, incomplete, altered or inconsistent, or asked for what it cannot do."""


class Invalid(Exception):
    """A problem in a description; the caller adds which bundle and, unless ``fix`` is given, what to do."""

    def __init__(self, problem: str, fix: str | None = None) -> None:
        super().__init__(problem)
        self.fix = fix


def check_description(meta: Any) -> None:
    """Raise :class:`Invalid` naming the first problem of a bundle.json dict."""
    if not isinstance(meta, dict):
        raise Invalid(f"is a JSON {type(meta).__name__}, not an object")
    if meta.get("format") != BUNDLE_FORMAT:
        raise Invalid(f"has format {meta.get('format')!r}, not {BUNDLE_FORMAT!r}: it is not a medassist bundle")
    version = meta.get("version")
    if not is_count(version) or version < 1:
        raise Invalid(f"has version {version!r}; expected {BUNDLE_VERSION}")
    if version > BUNDLE_VERSION:
        raise Invalid(
            f"has version {version}, newer than this medassist reads ({BUNDLE_VERSION})",
            fix="upgrade medassist to read it",
        )
    for key in ("name", "model_file"):
        if not isinstance(meta.get(key), str) or not meta[key]:
            raise Invalid(f"has no '{key}' (a non-empty string)")
    problem = file_name_problem(meta["model_file"])
    if problem is not None:
        raise Invalid(f"has model_file {meta['model_file']!r}, which {problem}")
    kind, task = meta.get("kind"), meta.get("task")
    if kind not in KINDS:
        raise Invalid(f"has kind {kind!r}; known kinds: {', '.join(KINDS)}")
    if task not in TASKS:
        raise Invalid(f"has task {task!r}; known tasks: {', '.join(TASKS)}")
    if (kind in OWN_TASK or task in OWN_TASK) and kind != task:
        raise Invalid(
            f"has kind {kind!r} with task {task!r}; a segmentation or detection bundle has its kind as its task, no "
            "other has either"
        )
    labels = meta.get("labels")
    if not isinstance(labels, list) or not labels:
        raise Invalid(f"has labels {labels!r}; give a non-empty list of label names in the model's output order")
    if not all(isinstance(label, str) and label.strip() for label in labels):
        raise Invalid(f"has labels {labels!r}; every label must be a non-empty string")
    if len(set(labels)) != len(labels):
        raise Invalid(f"has labels {labels!r} with duplicates; give each label once")
    if task == "multi-class" and len(labels) < 2:
        raise Invalid(f"has one label {labels!r} for a multi-class task; a multi-class model needs at least two")
    threshold = meta.get("threshold")
    values = threshold if isinstance(threshold, list) else [threshold]
    if not values or not all(_is_number(t) and 0.0 < t < 1.0 for t in values):
        raise Invalid(f"has threshold {threshold!r}; give a probability between 0 and 1 (exclusive), or one per label")
    if isinstance(threshold, list) and len(threshold) != len(labels):
        raise Invalid(f"has {len(threshold)} thresholds for {len(labels)} labels; give one per label")
    for key in ("metrics", "info"):
        if not isinstance(meta.get(key, {}), dict):
            raise Invalid(f"has {key} {meta.get(key)!r}; give a dict")
    _check_calibration(meta)
    _check_preprocessing(meta.get("preprocessing"), kind)
    if "ensemble" in meta:
        _check_ensemble(meta["ensemble"], kind, meta["preprocessing"])


def _check_ensemble(ens: Any, kind: str, pre: dict[str, Any]) -> None:
    """The TF-IDF model averaged with the network's probabilities (text bundles only)."""
    if kind != "text":
        raise Invalid(f"has an ensemble, which only a text bundle can have (this one is {kind})")
    if not isinstance(ens, dict) or sorted(ens) != sorted(ENSEMBLE_KEYS):
        raise Invalid(f"has ensemble {ens!r}; give {{'tfidf_file': a file name, 'tfidf_weight': a number in [0, 1]}}")
    problem = file_name_problem(ens["tfidf_file"])
    if problem is not None or ens["tfidf_file"] in (DESCRIPTION_FILE, MANIFEST_FILE, MODEL_FILE, pre["vocab_file"]):
        raise Invalid(f"has ensemble tfidf_file {ens['tfidf_file']!r}; give a file name of its own, e.g. 'tfidf.npz'")
    if not (_is_number(ens["tfidf_weight"]) and 0.0 <= ens["tfidf_weight"] <= 1.0):
        raise Invalid(f"has ensemble tfidf_weight {ens['tfidf_weight']!r}; give a number in [0, 1]")


def _check_calibration(meta: dict[str, Any]) -> None:
    """The optional temperature (divides the logits) and abstention rule (refer below a confidence)."""
    if "temperature" in meta and not (_is_number(meta["temperature"]) and meta["temperature"] > 0):
        raise Invalid(f"has temperature {meta['temperature']!r}; give a positive number (1 leaves the logits alone)")
    if "abstain" in meta:
        rule = meta["abstain"]
        if isinstance(rule, dict) and "rule" in rule:  # per finding or per class
            problem = check_rule(rule, meta["labels"], meta["task"])
            if problem:
                raise Invalid(f"has an abstain rule that {problem}")
        elif not isinstance(rule, dict) or not _is_number(rule.get("min_confidence")) or rule["min_confidence"] < 0:
            raise Invalid(f"has abstain {rule!r}; give {{'min_confidence': a number >= 0, ...}} or a per-finding rule")
    if "cam_output" in meta and meta["cam_output"] is not None and not isinstance(meta["cam_output"], str):
        raise Invalid(f"has cam_output {meta['cam_output']!r}; give the name of the model's class-activation output")


def _check_preprocessing(pre: Any, kind: str) -> None:
    if not isinstance(pre, dict):
        raise Invalid(f"has preprocessing {pre!r}; give a dict")
    keys = PREPROCESSING[kind]
    a_kind = KIND_WITH_ARTICLE[kind]
    missing = [k for k in keys if k not in pre]
    if missing:
        raise Invalid(f"lacks preprocessing key(s) {', '.join(missing)} ({a_kind} bundle needs {', '.join(keys)})")
    unknown = [k for k in pre if k not in keys]
    if unknown:
        raise Invalid(f"has unknown preprocessing key(s) {', '.join(unknown)} ({a_kind} bundle has {', '.join(keys)})")
    if kind == "segmentation":
        shape = pre["image_shape"]
        if not (isinstance(shape, list) and len(shape) == 2 and all(is_count(v) and v > 0 for v in shape)):
            raise Invalid(f"has image_shape {shape!r}; give [height, width] in pixels")
        if not is_count(pre["multiple"]) or pre["multiple"] < 1:
            raise Invalid(f"has multiple {pre['multiple']!r}; give the positive number the sides are padded to")
    if kind == "detection":
        det = pre["detector"]
        if not isinstance(det, dict) or sorted(det) != sorted(DETECTOR_KEYS):
            raise Invalid(f"has detector {det!r}; give {', '.join(DETECTOR_KEYS)}")
        if not is_count(pre["image_size"]) or not is_count(pre["multiple"]) or pre["multiple"] < 1:
            raise Invalid(f"has image_size {pre['image_size']!r} or multiple {pre['multiple']!r}; give pixel counts")
        if pre["channels"] not in (1, 3) or isinstance(pre["channels"], bool):
            raise Invalid(f"has channels {pre['channels']!r}; give 1 (grayscale) or 3 (RGB)")
        if not _is_number(pre["scale"]) or pre["scale"] <= 0:
            raise Invalid(f"has scale {pre['scale']!r}; give a positive number (1/255 maps pixels to 0-1)")
    elif kind in ("image", "segmentation"):
        if kind == "image" and (not is_count(pre["image_size"]) or pre["image_size"] < 1):
            raise Invalid(f"has image_size {pre['image_size']!r}; give a positive whole number of pixels")
        if pre["channels"] not in (1, 3) or isinstance(pre["channels"], bool):
            raise Invalid(f"has channels {pre['channels']!r}; give 1 (grayscale) or 3 (RGB)")
        if not _is_number(pre["scale"]) or pre["scale"] <= 0:
            raise Invalid(f"has scale {pre['scale']!r}; give a positive number (1/255 maps pixels to 0-1)")
        for key in ("mean", "std"):
            values = pre[key] if isinstance(pre[key], list) else [pre[key]]
            if (
                len(values) not in (1, pre["channels"])
                or not all(_is_number(v) for v in values)
                or (key == "std" and not all(v > 0 for v in values))
            ):
                raise Invalid(
                    f"has {key} {pre[key]!r}; give one number or one per channel ({pre['channels']})"
                    + (", all positive" if key == "std" else "")
                )
    else:
        if pre["tokenizer"] not in TOKENIZERS:
            raise Invalid(f"has tokenizer {pre['tokenizer']!r}; known tokenizers: {', '.join(TOKENIZERS)}")
        if not is_count(pre["max_len"]) or pre["max_len"] < 1:
            raise Invalid(f"has max_len {pre['max_len']!r}; give a positive whole number of tokens")
        problem = file_name_problem(pre["vocab_file"])
        if problem is not None or pre["vocab_file"] in (DESCRIPTION_FILE, MANIFEST_FILE, MODEL_FILE):
            raise Invalid(f"has vocab_file {pre['vocab_file']!r}; give a file name such as {VOCAB_FILE!r}")


def file_name_problem(name: object) -> str | None:
    """Why ``name`` cannot be a file of a bundle (a plain name inside the folder), or None."""
    if not isinstance(name, str) or not name or name in (".", "..") or "/" in name or "\\" in name:
        return "is not a plain file name inside the bundle folder"
    return None


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def is_count(value: object) -> bool:
    """Whether ``value`` is a whole number >= 0 (not a bool)."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def plain_json(value: Any, where: str) -> Any:
    """``value`` with numpy scalars and arrays as Python numbers and lists; refuses NaN and what JSON cannot hold."""
    if isinstance(value, np.generic | np.ndarray):
        value = value.tolist()
    if isinstance(value, Mapping):
        return {str(k): plain_json(v, f"{where}[{k!r}]") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain_json(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, float) and not math.isfinite(value):
        raise Invalid(f"{where} is {value}, which JSON cannot hold; store None for a value that is undefined")
    if value is None or isinstance(value, str | int | float):
        return value
    raise Invalid(f"{where} is a {type(value).__name__} ({value!r}); give numbers, strings, lists or dicts")
