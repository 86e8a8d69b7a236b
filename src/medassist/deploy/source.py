"""What the deploy study compresses, measures and bundles: a trained model with its data
(:func:`medassist.studies.deploy_source.load_source` reads one back from a study's run folder)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from medassist.train import Labelled


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
