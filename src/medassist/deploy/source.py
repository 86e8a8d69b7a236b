"""The model to deploy, read back from a finished study run folder with the data it was trained on.

An image study run gives its selected model (``models/model.*``) and, as distillation teachers, the best of the
other models it trained; a text study run gives its selected recurrent model with the word vocabulary it reads.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file
from torch import nn

from medassist.config import from_dict, load_yaml
from medassist.errors import MedAssistError
from medassist.models import create_model
from medassist.run import run_kind
from medassist.train import ImageBatcher, Labelled, TokenBatcher


@dataclass
class Source:
    """A trained model and its data, as the deploy study needs them.

    Attributes:
        kind: "image" or "text".
        name: data set name (for the run folder and the report).
        task: "multi-class" or "multi-label".
        labels: class or finding names.
        model: the fp32 model in eval mode.
        model_name, model_kwargs: how to build it again from the registry.
        splits: train, val and test as the engine's labelled batchers.
        preprocessing: what a bundle needs to turn a raw input into the model's input.
        extra_files: files that travel with the model (the vocabulary of a word model).
        images: image splits as uint8 arrays (image sources only; calibration and distillation use them).
        teachers: (unit name, model) pairs of the other trained models, best validation AUC first (image only).
        texts: the text data set and its study config, read once (text sources only).
        thresholds: multi-label: the per-label decision thresholds the study chose on validation for this model.
    """

    kind: str
    name: str
    task: str
    labels: list[str]
    model: nn.Module
    model_name: str
    model_kwargs: dict[str, Any]
    splits: dict[str, Labelled]
    preprocessing: dict[str, Any]
    run_dir: Path
    extra_files: dict[str, Path] = field(default_factory=dict)
    images: dict[str, np.ndarray] = field(default_factory=dict)
    teachers: list[tuple[str, nn.Module]] = field(default_factory=list)
    texts: tuple[Any, Any] | None = None
    thresholds: list[float] | None = None

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def example(self) -> tuple[torch.Tensor, ...]:
        """One training input at batch 1 (the model's positional arguments), for tracing and pruning graphs."""
        return self.splits["train"].batcher.inputs(torch.arange(1))


def _status(run_dir: Path) -> None:
    status_file = run_dir / "status.json"
    if not status_file.is_file():
        raise MedAssistError(f"{run_dir} is not a run folder (no status.json); give a finished image or text run")
    status = json.loads(status_file.read_text()).get("status")
    if status != "complete":
        raise MedAssistError(f"{run_dir} is {status}, not complete; finish it first (e.g. with --resume {run_dir})")


def load_source(run_dir: str | Path, *, data_dir: str = "", n_teachers: int = 3, progress: bool = True) -> Source:
    """Read the model to deploy and its data from an image or text study run folder."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise MedAssistError(f"run folder not found: {run_dir}")
    _status(run_dir)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    kind = run_kind(run_dir)
    if kind == "text":
        from medassist.studies.text_setup import TextStudyConfig, load_text_data

        study = from_dict(TextStudyConfig, load_yaml(run_dir / "config.yaml"))
        study.progress = progress
        return _text_source(run_dir, metrics, study, load_text_data(study), study.recurrent)
    if kind == "image":
        return _image_source(run_dir, data_dir=data_dir, n_teachers=n_teachers, progress=progress)
    raise MedAssistError(
        f"{run_dir} is a {kind or 'run of unknown kind'} run; deploy takes an image or a text study run "
        "(medassist image/text)"
    )


def _unit_model(run_dir: Path, unit: str, **build: Any) -> tuple[nn.Module, dict[str, Any]]:
    result = json.loads((run_dir / "units" / unit / "result.json").read_text())
    model = create_model(result["model"], **build, **result["model_kwargs"])
    model.load_state_dict(load_file(str(run_dir / "units" / unit / "best.safetensors")))
    return model.eval(), result


def _image_source(run_dir: Path, *, data_dir: str, n_teachers: int, progress: bool) -> Source:
    from medassist.studies.image import ImageStudyConfig, load_data

    meta = json.loads((run_dir / "models" / "model.json").read_text())
    study = from_dict(ImageStudyConfig, load_yaml(run_dir / "config.yaml"))
    study.progress = progress
    if data_dir:
        study.data_dir = data_dir
    data = load_data(study)
    build = {"num_classes": meta["num_classes"], "in_channels": meta["in_channels"]}
    model = create_model(meta["model"], **build, **meta["model_kwargs"])
    model.load_state_dict(load_file(str(run_dir / "models" / "model.safetensors")))
    images = {s: data.splits[s].images for s in ("train", "val", "test")}
    splits = {s: Labelled(ImageBatcher(images[s]), data.splits[s].labels.reshape(-1)) for s in images}
    n_full = len(images["train"])
    teachers = []
    for res_file in sorted((run_dir / "units").glob("*/result.json")):
        res = json.loads(res_file.read_text())
        if res["name"] == meta["unit"] or res["n_train"] < n_full:  # the model itself; size-curve models
            continue
        teachers.append((res["val"]["auc"], res["params"], res["name"]))
    teachers.sort(key=lambda t: (-t[0], -t[1]))
    norm = meta["normalisation"]
    return Source(
        kind="image",
        name=data.name,
        task="multi-class",
        labels=list(meta["class_names"]),
        model=model.eval(),
        model_name=meta["model"],
        model_kwargs=dict(meta["model_kwargs"]),
        splits=splits,
        preprocessing={
            "image_size": int(meta["image_size"]),
            "channels": int(meta["in_channels"]),
            "scale": float(norm["scale"]),
            "mean": float(norm["mean"]),
            "std": float(norm["std"]),
        },
        run_dir=run_dir,
        images=images,
        teachers=[(name, _unit_model(run_dir, name, **build)[0]) for _, _, name in teachers[:n_teachers]],
    )


def _token_splits(study: Any, data: Any, tokenizer: str, run_dir: Path) -> tuple[dict, dict, dict]:
    """The splits as token batchers for a ``word`` or ``wordpiece`` (MiniLM) model, the bundle's preprocessing and
    the files that travel with it."""
    extra = {}
    if tokenizer == "word":
        from medassist.text.vocab import Vocab

        extra["vocab.json"] = run_dir / "models" / "vocab.json"
        encode = Vocab.load(extra["vocab.json"]).encode_batch
        preprocessing = {"tokenizer": "word", "vocab_file": "vocab.json", "max_len": int(study.max_len)}
    else:
        from medassist.text import hf_encode_batch, load_minilm_tokenizer

        tok = load_minilm_tokenizer()
        encode = lambda texts, max_len: hf_encode_batch(tok, texts, max_len=max_len)  # noqa: E731
        # The bundle's tokenizer.json is written by the deploy study into its own run folder (extra_files).
        preprocessing = {"tokenizer": "wordpiece", "vocab_file": "tokenizer.json", "max_len": int(study.max_len)}
    splits = {}
    for s in ("train", "val", "test"):
        split = data.splits[s]
        splits[s] = Labelled(TokenBatcher(encode(split.texts, max_len=study.max_len)), split.labels)
    return splits, preprocessing, extra


def _text_source(run_dir: Path, metrics: dict[str, Any], study: Any, data: Any, arch: str) -> Source:
    from medassist.text import TEXT_TOKENIZER

    unit = metrics["best"].get(arch)
    if unit is None:
        raise MedAssistError(f"{run_dir}: the text run has no trained {arch} model to deploy")
    model, result = _unit_model(run_dir, unit, num_classes=data.num_labels, in_channels=1)
    splits, preprocessing, extra = _token_splits(study, data, TEXT_TOKENIZER[result["model"]], run_dir)
    return Source(
        kind="text",
        name=data.name,
        task=data.task,
        labels=list(data.label_names),
        model=model,
        model_name=result["model"],
        model_kwargs=dict(result["model_kwargs"]),
        splits=splits,
        preprocessing=preprocessing,
        run_dir=run_dir,
        extra_files=extra,
        texts=(study, data),
        thresholds=metrics.get("thresholds", {}).get(unit),
    )


def load_text_transformer(source: Source) -> Source | None:
    """The Transformer of the text study run ``source`` came from, read with the same reports; None if the run
    trained none."""
    study, data = source.texts
    metrics = json.loads((source.run_dir / "metrics.json").read_text())
    if study.transformer not in metrics.get("best", {}):
        return None
    return _text_source(source.run_dir, metrics, study, data, study.transformer)


FROZEN = "minilm_frozen_lr"
ENSEMBLE = "ensemble"


def load_frozen_encoder(source: Source, transformer: Source | None) -> Source | None:
    """The text run's frozen MiniLM + logistic regression as one network
    (:class:`~medassist.text.embed.FrozenEncoderClassifier`), reading MiniLM's WordPiece tokens (those of
    ``transformer`` when it is MiniLM); None if the run did not compare it."""
    from medassist.models.logreg import EmbeddingLogReg
    from medassist.text.embed import FrozenEncoderClassifier, load_sentence_encoder

    path = source.run_dir / "models" / f"{FROZEN}.joblib"
    if not path.is_file():
        return None
    study, data = source.texts
    head = EmbeddingLogReg.load(path)
    model = FrozenEncoderClassifier(load_sentence_encoder(), *head.weights())
    if transformer is not None and transformer.preprocessing["tokenizer"] == "wordpiece":
        splits, preprocessing = transformer.splits, transformer.preprocessing
    else:
        splits, preprocessing, _ = _token_splits(study, data, "wordpiece", source.run_dir)
    metrics = json.loads((source.run_dir / "metrics.json").read_text())
    return dataclasses.replace(
        source,
        model=model,
        model_name=FROZEN,
        model_kwargs={},
        splits=splits,
        preprocessing=preprocessing,
        extra_files={},
        thresholds=metrics.get("thresholds", {}).get(FROZEN),
    )


def load_ensemble(transformer: Source) -> tuple[Source, Any, float] | None:
    """The text run's ensemble: a source that reads the Transformer's tokens and the raw texts
    (:class:`~medassist.deploy.ensemble.WithTexts`), the tuned TF-IDF model and the TF-IDF weight chosen on
    validation; None if the run did not compare it."""
    from medassist.deploy.ensemble import WithTexts
    from medassist.models.tfidf import TfidfLogReg

    metrics = json.loads((transformer.run_dir / "metrics.json").read_text())
    chosen = metrics.get("chosen", {}).get(ENSEMBLE)
    if chosen is None:
        return None
    _, data = transformer.texts
    splits = {
        s: Labelled(WithTexts(split.batcher, data.splits[s].texts), split.labels)
        for s, split in transformer.splits.items()
    }
    tfidf = TfidfLogReg.load(transformer.run_dir / "models" / "tfidf.joblib")
    source = dataclasses.replace(
        transformer, model_name=ENSEMBLE, splits=splits, thresholds=metrics.get("thresholds", {}).get(ENSEMBLE)
    )
    return source, tfidf, float(chosen["tfidf_weight"])
