"""A sweep's search space, written in YAML, as Ray Tune domains.

Each key is a dotted option of the study (``train.lr``, ``train.weight_decay``, ``train.augment``) or one of the
trial's own keys (``model``: a registered model name, ``dropout``, ``model_kwargs.<name>``); each value is one
distribution::

    train.lr: {loguniform: [1.0e-4, 1.0e-2]}
    train.weight_decay: {choice: [0.0, 1.0e-4, 1.0e-3]}
    dropout: {uniform: [0.0, 0.5]}
    train.augment: {choice: [true, false]}
    model: {choice: [cnn_gap, resnet18]}
    train.batch_size: 128            # a plain value is fixed for every trial
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from medassist.config import load_yaml
from medassist.errors import MedAssistError

DISTRIBUTIONS = ("uniform", "loguniform", "choice", "randint", "grid")
TRIAL_KEYS = ("model", "dropout")  # keys of the trial itself; every other key is an option of the study


def _domain(key: str, spec: Any, where: str) -> Any:
    from ray import tune

    if not isinstance(spec, dict):
        return spec  # a fixed value
    if len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise MedAssistError(
            f"{where}: '{key}' must be a value or one distribution {{name: arguments}} with name one of "
            f"{', '.join(DISTRIBUTIONS)} (got {spec!r})"
        )
    kind, args = next(iter(spec.items()))
    if kind in ("choice", "grid"):
        if not isinstance(args, list) or not args:
            raise MedAssistError(f"{where}: '{key}': {kind} needs a non-empty list of values (got {args!r})")
        return tune.choice(args) if kind == "choice" else tune.grid_search(args)
    if not (isinstance(args, list) and len(args) == 2 and all(isinstance(a, (int, float)) for a in args)):
        raise MedAssistError(f"{where}: '{key}': {kind} needs [low, high] (got {args!r})")
    low, high = args
    if not low < high:
        raise MedAssistError(f"{where}: '{key}': {kind} needs low < high (got {low}, {high})")
    if kind == "loguniform" and low <= 0:
        raise MedAssistError(f"{where}: '{key}': loguniform needs low > 0 (got {low})")
    if kind == "randint":
        return tune.randint(int(low), int(high))
    return tune.uniform(low, high) if kind == "uniform" else tune.loguniform(low, high)


def load_space(path: str | Path, *, study_keys: set[str]) -> dict[str, Any]:
    """The search space of ``path`` as ``{dotted key: Ray Tune domain or fixed value}``.

    Args:
        path: the YAML file (a flat mapping of dotted keys).
        study_keys: the dotted options the study accepts; a key that is neither one of them (or below one of its
            sections) nor a trial key is refused with the keys it could be.
    """
    where = str(path)
    data = load_yaml(path)
    if not data:
        raise MedAssistError(f"{where}: the search space is empty; give at least one key, e.g. train.lr")
    space: dict[str, Any] = {}
    for key, spec in data.items():
        key = str(key)
        known = key in TRIAL_KEYS or key.startswith("model_kwargs.") or key in study_keys
        if not known:
            options = ", ".join(sorted(k for k in study_keys if k.startswith("train.")))
            raise MedAssistError(
                f"{where}: unknown key '{key}'; a key is a trial key ({', '.join(TRIAL_KEYS)}, model_kwargs.NAME) "
                f"or an option of the study, e.g. {options}"
            )
        space[key] = _domain(key, spec, where)
    return space


def split_params(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """A trial's sampled values as (the trial's own keys, the study's options as a nested mapping)."""
    own: dict[str, Any] = {}
    nested: dict[str, Any] = {}
    for key, value in params.items():
        if key in TRIAL_KEYS or key.startswith("model_kwargs."):
            own[key] = value
            continue
        node = nested
        parts = key.split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
        node[parts[-1]] = value
    return own, nested
