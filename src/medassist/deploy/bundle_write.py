"""Writing a bundle: the model, its description and the manifest, built in a temporary sibling folder and moved into
place only once complete and its model has been opened and run; an earlier bundle survives any failure."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from medassist.deploy.bundle_model import open_model
from medassist.deploy.bundle_spec import (
    BUNDLE_FORMAT,
    BUNDLE_VERSION,
    DESCRIPTION_FILE,
    MANIFEST_FILE,
    MODEL_FILE,
    BundleError,
    Invalid,
    check_description,
    file_name_problem,
    plain_json,
)
from medassist.deploy.ensemble import TfidfPart
from medassist.deploy.manifest import write_json, write_manifest
from medassist.deploy.model_card import MODEL_CARD_FILE, write_model_card
from medassist.deploy.tokenizer import WordPiece
from medassist.errors import DataError
from medassist.text.vocab import Vocab


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
    threshold: float | list[float] = 0.5,
    name: str | None = None,
    calibration: Mapping[str, Any] | None = None,
    ensemble: Mapping[str, Any] | None = None,
) -> Path:
    """Write a bundle folder: the model, the extra files, bundle.json, model_card.md and manifest.json.

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
        threshold: multi-label: a label is predicted when its probability is at least this (one number, or one per
            label in label order).
        name: the bundle's name; by default the folder's name.
        calibration: optional keys of bundle.json fitted on validation: temperature (divides the logits), abstain
            ({"min_confidence", "target_error"}) and cam_output (the name of an image model's class-activation output).
        ensemble: a text ensemble: {"tfidf_file": its file name among ``extra_files``, "tfidf_weight": w}; the
            bundle then answers with ``w`` times the TF-IDF's probabilities plus ``1 - w`` times the model's.

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
        if problem is None and file_name in (MODEL_FILE, DESCRIPTION_FILE, MANIFEST_FILE, MODEL_CARD_FILE):
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
            **plain_json(dict(calibration or {}), "calibration"),
            **({"ensemble": plain_json(dict(ensemble), "ensemble")} if ensemble is not None else {}),
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
            if meta["preprocessing"]["tokenizer"] == "wordpiece":
                vocab = WordPiece.from_bytes(extras[vocab_file].read_bytes(), str(extras[vocab_file]))
            else:
                vocab = Vocab.load(extras[vocab_file])
        except DataError as err:
            raise BundleError(f"{where}: {err}") from None
    if ensemble is not None:
        _check_ensemble_file(meta, extras, where)
    _check_destination(out_dir, where)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_dir.parent / f".{out_dir.name}.{secrets.token_hex(4)}.part"
    tmp.mkdir()
    try:
        shutil.copyfile(model_path, tmp / MODEL_FILE)
        for file_name, source in extras.items():
            shutil.copyfile(source, tmp / file_name)
        write_json(tmp / DESCRIPTION_FILE, meta)
        write_model_card(tmp, meta)
        write_manifest(tmp, [MODEL_FILE, DESCRIPTION_FILE, MODEL_CARD_FILE, *extras])
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


def _check_ensemble_file(meta: dict[str, Any], extras: dict[str, Path], where: str) -> None:
    """An ensemble's TF-IDF file must be shipped, readable, and predict the bundle's labels for its task."""
    name = meta["ensemble"]["tfidf_file"]
    if name not in extras:
        raise BundleError(f"{where}: an ensemble bundle needs its TF-IDF model; pass extra_files={{{name!r}: <path>}}")
    try:
        part = TfidfPart.load(extras[name])
    except DataError as err:
        raise BundleError(f"{where}: {err}") from None
    if part.num_labels != len(meta["labels"]) or part.task != meta["task"]:
        raise BundleError(
            f"{where}: the TF-IDF model {extras[name]} is {part.task} with {part.num_labels} labels, not "
            f"{meta['task']} with {len(meta['labels'])}"
        )


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
