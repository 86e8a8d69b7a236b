"""Dataclass configs, YAML loading and dotted overrides (``train.lr=3e-4``).

Every field carries its help text in ``metadata["help"]``; the command line is generated from these classes.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, TypeVar

import yaml

from medassist.errors import MedAssistError

T = TypeVar("T")


def option(default: Any, help: str) -> Any:  # noqa: A002 - mirrors argparse
    """A dataclass field with a default and a help text."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class AugmentConfig:
    """Random augmentation applied to each training batch (none at evaluation)."""

    flip: float = option(0.5, "probability of a horizontal flip")
    rotation: float = option(10.0, "largest rotation, in degrees")
    shift: float = option(0.1, "largest translation, as a fraction of the image side")
    scale: float = option(0.1, "largest zoom in or out, as a fraction (0.1 = 90% to 110%)")
    brightness: float = option(0.1, "largest brightness change, in normalised intensity units")
    contrast: float = option(0.1, "largest contrast change, as a fraction")


DEVICE_HELP = "where to train and predict: auto (CUDA, else MPS, else CPU) | cpu | cuda | cuda:N | mps"
PRECISION_HELP = (
    "32 (float32) | bf16-mixed (bfloat16 autocast: CUDA with bf16, or a CPU with native bf16) | "
    "16-mixed (float16 autocast with gradient scaling: CUDA or MPS)"
)


@dataclass
class RunOptions:
    """The options every command that makes a run folder shares, spelled the same on each: where the folder goes
    and whether to show progress. A study config inherits them (``class MyStudyConfig(RunOptions)``)."""

    out: str = option("runs", "folder in which the run folder is made")
    progress: bool = option(True, "show progress bars")


@dataclass
class DeviceOptions:
    """The options of every command that trains or predicts with PyTorch: the device and the precision."""

    device: str = option("auto", DEVICE_HELP)
    precision: str = option("32", PRECISION_HELP)


@dataclass
class TrainConfig:
    """How one model is trained: optimiser, schedule, regularisation, stopping, reproducibility."""

    epochs: int = option(30, "maximum number of epochs")
    min_steps: int = option(
        0, "at least this many optimisation steps: a small data set gets more epochs than `epochs` (0 = off)"
    )
    batch_size: int = option(128, "images per training step")
    min_batches: int = option(
        0,
        "a small data set takes a smaller batch (never below 8) so that an epoch has at least this many steps "
        "(0 = off); applied before `min_steps`",
    )
    optimizer: str = option("adam", "adam | adamw | sgd")
    lr: float = option(1e-3, "initial learning rate")
    momentum: float = option(0.9, "SGD momentum")
    betas: list[float] = option([0.9, 0.999], "Adam/AdamW betas (a GAN's generator trains with 0.0, 0.9)")
    weight_decay: float = option(0.0, "L2 weight decay (decoupled for adamw)")
    scheduler: str = option("none", "none | step | cosine | onecycle | plateau")
    warmup: float = option(0.3, "onecycle: the share of the steps over which the learning rate rises to lr")
    layer_decay: float = option(
        1.0,
        "layer-wise learning-rate decay: each layer trains at this factor of the learning rate of the layer above "
        "it, the head at lr (1 = off; for models that list their layers, e.g. minilm)",
    )
    milestones: list[float] = option(
        [0.5, 0.75], "step schedule: fractions of the epochs at which lr is multiplied by gamma"
    )
    gamma: float = option(0.1, "step/plateau schedule: lr multiplier")
    early_stopping: bool = option(
        False, "stop when the monitored validation metric has not improved for `patience` epochs"
    )
    patience: int = option(5, "epochs without improvement before early stopping")
    monitor: str = option("val_auc", "validation metric that selects the best epoch: val_auc | val_accuracy | val_loss")
    class_weights: bool = option(False, "weight the loss by inverse class frequency (imbalanced data)")
    augment: bool = option(False, "apply random augmentation to training batches")
    augmentation: AugmentConfig = field(default_factory=AugmentConfig, metadata={"help": "augmentation settings"})
    label_smoothing: float = option(0.0, "label smoothing of the cross-entropy loss")
    prior_bias: bool = option(
        False, "multi-label: start the output layer's bias (model.head) at each label's training log-odds"
    )
    time_budget: float = option(0.0, "stop training after this many seconds (0 = no limit); checked after every step")
    budget_schedule: bool = option(
        False,
        "onecycle/cosine with a time budget: pace the schedule by elapsed time as well as by steps, so that the "
        "learning rate has annealed when the budget ends, however fast the machine is",
    )
    ema: float = option(
        0.0,
        "decay of an exponential moving average of the weights, updated after every step (e.g. 0.999; 0 = off): "
        "the average is what is validated, selected and returned",
    )
    grad_norms: bool = option(False, "record per-layer gradient norms every epoch (grad_norms.csv)")
    seed: int = option(0, "random seed (same seed, same numbers on CPU)")
    threads: int = option(0, "CPU threads for PyTorch (0 = all cores)")


def _hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _coerce(value: Any, hint: Any, where: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, with an error that names the key."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(value, inner[0], where)
    if dataclasses.is_dataclass(hint):
        if not isinstance(value, dict):
            raise MedAssistError(f"config key '{where}' must be a mapping, got {value!r}")
        return from_dict(hint, value, prefix=f"{where}.")
    if origin is list:
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if isinstance(value, dict):
            raise MedAssistError(f"config key '{where}' must be a list, got {value!r}")
        if not isinstance(value, (list, tuple)):
            value = [value]  # a single value given for a list option
        return [_coerce(v, args[0], where) for v in value]
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "on", "false", "no", "0", "off"):
            return value.lower() in ("true", "yes", "1", "on")
        raise MedAssistError(f"config key '{where}' must be true or false, got {value!r}")
    if hint in (int, float, str):
        try:
            if hint is int and isinstance(value, float) and not value.is_integer():
                raise ValueError
            return hint(value)
        except (TypeError, ValueError):
            raise MedAssistError(f"config key '{where}' must be {hint.__name__}, got {value!r}") from None
    return value


def from_dict(cls: type[T], data: dict[str, Any], *, prefix: str = "") -> T:
    """Build the dataclass ``cls`` from a nested dict; unknown keys are errors that list the known ones."""
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - names)
    if unknown:
        raise MedAssistError(f"unknown config key '{prefix}{unknown[0]}'; known keys here: {', '.join(sorted(names))}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for k, v in data.items():
        f = fields[k]
        if isinstance(v, dict) and dataclasses.is_dataclass(hints[k]) and f.default_factory is not dataclasses.MISSING:
            # A partial mapping updates the field's own default (e.g. a study's training recipe), not a blank one.
            v = merge(to_dict(f.default_factory()), v)
        kwargs[k] = _coerce(v, hints[k], f"{prefix}{k}")
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """A dataclass config as a plain nested dict."""
    return dataclasses.asdict(obj)


def apply_overrides(data: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML scalars) to a nested dict."""
    out = yaml.safe_load(yaml.safe_dump(data)) or {}
    for item in overrides:
        if "=" not in item:
            raise MedAssistError(f"override '{item}' must look like key.sub=value")
        key, raw = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        for p in parts[:-1]:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise MedAssistError(f"override '{item}': '{p}' is not a section")
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else ""
    return out


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping, with a clear error for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise MedAssistError(f"config file not found: {path}")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise MedAssistError(f"config file {path} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise MedAssistError(f"config file {path} must hold a mapping of keys to values")
    return data


def merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """Recursively merge ``update`` into a copy of ``base``."""
    out = dict(base)
    for k, v in update.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


# Top-level keys that say where a run lives, where its data is read from and how it reports progress, not what it
# computes: a resumed run may give them other values than the run was started with.
RESUME_FREE_KEYS = ("resume", "progress", "out", "data_dir", "download")


def flatten(data: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as ``{"section.key": value}`` (lists are values, not sections)."""
    out: dict[str, Any] = {}
    for k, v in data.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{key}."))
        else:
            out[key] = v
    return out


def config_differences(
    saved: dict[str, Any], given: dict[str, Any], *, ignore: tuple[str, ...] = RESUME_FREE_KEYS
) -> list[tuple[str, Any, Any]]:
    """``(key, saved value, given value)`` for every key present in both configs whose values differ.

    Keys whose top-level section is in ``ignore`` are skipped; a key present in one config only (a field added or
    removed since the run was saved) is not a difference.
    """
    a, b = flatten(saved), flatten(given)
    return [(k, a[k], b[k]) for k in a if k in b and k.split(".", 1)[0] not in ignore and not _same_value(a[k], b[k])]


def _same_value(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    return a == b


def profile_path(study: str, profile: str) -> Path:
    """Path of a shipped config profile, e.g. ``image/quick``."""
    path = Path(str(resources.files("medassist") / "configs" / study / f"{profile}.yaml"))
    if not path.is_file():
        known = sorted(p.stem for p in path.parent.glob("*.yaml"))
        raise MedAssistError(f"unknown profile '{profile}' for {study}; shipped profiles: {', '.join(known)}")
    return path
