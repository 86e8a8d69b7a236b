"""Models by name: ``create_model("resnet18", num_classes=2, in_channels=1)``."""

from __future__ import annotations

from medassist.models import (  # noqa: F401  (registers the models)
    baselines,
    detection,
    efficientnet,
    resnet,
    segmentation,
    text_rnn,
    text_transformer,
)
from medassist.models.registry import count_parameters, create_model, list_models, register_model


def image_models() -> list[str]:
    """Registered models that take images (the others read token ids)."""
    from medassist.models.detection import DETECTION_MODELS
    from medassist.models.segmentation import SEGMENTATION_MODELS
    from medassist.text import TEXT_TOKENIZER

    return [
        n
        for n in list_models()
        if n not in TEXT_TOKENIZER and n not in SEGMENTATION_MODELS and n not in DETECTION_MODELS
    ]


__all__ = ["image_models", "count_parameters", "create_model", "list_models", "register_model"]
