"""Models by name: ``create_model("resnet18", num_classes=2, in_channels=1)``."""

from __future__ import annotations

from medassist.models import baselines, efficientnet, resnet  # noqa: F401  (registers the models)
from medassist.models.registry import count_parameters, create_model, list_models, register_model

__all__ = ["count_parameters", "create_model", "list_models", "register_model"]
