"""The model to deploy, read back from a finished study run folder with the data it was trained on.

An image study run gives its selected model (``models/model.*``) and, as distillation teachers, the best of the
other models it trained; a text study run gives its selected recurrent model with the word vocabulary it reads, its
Transformer, its ensemble and its frozen encoder.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from safetensors.torch import load_file
from torch import nn

from medassist.deploy.source import Source
from medassist.errors import MedAssistError
from medassist.models import create_model
from medassist.studies.runs import open_run
from medassist.train import ImageBatcher, Labelled, TokenBatcher


def load_source(run_dir: str | Path, *, data_dir: str = "", n_teachers: int = 3, progress: bool = True) -> Source:
    """Read the model to deploy and its data from an image or text study run folder."""
    run = open_run(
        run_dir, kinds=("image", "text"), expect="deploy takes an image or a text study run (medassist image/text)"
    )
    study = run.config
    study.progress = progress
    if run.kind == "text":
        return _text_source(run.dir, run.metrics, study, run.data(study), study.recurrent)
    if data_dir:
        study.data_dir = data_dir
    return _image_source(run.dir, run.data(study), n_teachers=n_teachers)


def _unit_model(run_dir: Path, unit: str, **build: Any) -> tuple[nn.Module, dict[str, Any]]:
    result = json.loads((run_dir / "units" / unit / "result.json").read_text())
    model = create_model(result["model"], **build, **result["model_kwargs"])
    model.load_state_dict(load_file(str(run_dir / "units" / unit / "best.safetensors")))
    return model.eval(), result


def _image_source(run_dir: Path, data: Any, *, n_teachers: int) -> Source:
    meta = json.loads((run_dir / "models" / "model.json").read_text())
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
