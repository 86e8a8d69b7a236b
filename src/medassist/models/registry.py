"""One registry of models by name, and the one factory that builds them."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from medassist.errors import MedAssistError

ModelFn = Callable[..., nn.Module]
_REGISTRY: dict[str, ModelFn] = {}


def register_model(name: str) -> Callable[[ModelFn], ModelFn]:
    """Register a model constructor under ``name``.

    The constructor takes keyword arguments only: ``num_classes``, ``in_channels``, ``dropout`` and its own.
    """

    def wrap(fn: ModelFn) -> ModelFn:
        if name in _REGISTRY:
            raise ValueError(f"model '{name}' is registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def list_models() -> list[str]:
    """Names of all registered models."""
    return sorted(_REGISTRY)


def create_model(name: str, *, num_classes: int, in_channels: int = 1, dropout: float = 0.0, **kwargs) -> nn.Module:
    """Build the registered model ``name``.

    Args:
        name: a name from :func:`list_models`.
        num_classes: number of output logits.
        in_channels: image channels (1 for grayscale, 3 for RGB).
        dropout: dropout probability before the classifier (0 disables it).
        **kwargs: model-specific options (see each constructor).
    """
    if name not in _REGISTRY:
        raise MedAssistError(f"unknown model '{name}'; known models: {', '.join(list_models())}")
    model = _REGISTRY[name](num_classes=num_classes, in_channels=in_channels, dropout=dropout, **kwargs)
    model.medassist_name = name  # type: ignore[attr-defined]
    return model


def count_parameters(model: nn.Module, *, trainable_only: bool = False) -> int:
    """Number of (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
