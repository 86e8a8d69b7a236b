"""Where training and prediction run: one device decision per run, resolved and refused in one place.

``--device auto|cpu|cuda|cuda:N|mps`` and ``--precision 32|bf16-mixed|16-mixed`` become an :class:`Accelerator`
(:func:`resolve`). A study runs inside :func:`on_device`, which makes it the current accelerator; :func:`fit`
and :func:`predict_proba` read it (:func:`current`) to move the model and the batches, to autocast, and to scale
fp16 gradients. A device or precision the machine lacks is refused before any work starts.

On the CPU with precision 32 nothing moves and nothing is cast: the numbers are those of a run without a device.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import functools
import os
import platform
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

import torch

from medassist.errors import MedAssistError
from medassist.train import strict

PRECISIONS = ("32", "bf16-mixed", "16-mixed")


def _torch_build() -> str:
    cuda = torch.version.cuda
    return f"torch {torch.__version__}" + (f", CUDA {cuda}" if cuda else "")


def mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _local_rank() -> int:
    return int(os.environ.get("LOCAL_RANK", "0"))


AUTO_ENV = "MEDASSIST_AUTO_DEVICE"
"""When set (e.g. ``cpu``), what ``--device auto`` means on this machine; the test suite sets ``cpu`` so that a GPU
workstation runs the same suite as a CPU machine (the tests marked ``gpu`` ask for CUDA themselves)."""


def resolve_device(spec: str) -> torch.device:
    """``auto | cpu | cuda | cuda:N | mps`` as a device this machine has, or a :class:`MedAssistError` that says
    what is missing. Under torchrun, ``cuda`` (and ``auto`` on a CUDA node) is the rank's ``LOCAL_RANK`` GPU, and
    ``cuda:N`` is refused (it would put every rank on GPU N). Under the strict-device check
    (:mod:`medassist.train.strict`) the CPU is its stand-in accelerator ``cpu:0``."""
    name = (spec or "auto").strip().lower()
    if name == "auto":
        name = os.environ.get(AUTO_ENV, "").strip().lower() or "auto"
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "mps" if mps_available() else "cpu"
    if name in ("cpu", "cpu:0"):
        return strict.DEVICE if strict.enabled() else torch.device("cpu")
    if name == "mps":
        if not mps_available():
            raise MedAssistError(
                f"--device mps: no Apple MPS device is available ({_torch_build()} on {platform.system()}); "
                "use --device cpu"
            )
        return torch.device("mps")
    if name == "cuda" or name.startswith("cuda:"):
        if not torch.cuda.is_available():
            raise MedAssistError(f"--device {spec}: no CUDA device is visible ({_torch_build()}); use --device cpu")
        count = torch.cuda.device_count()
        distributed = int(os.environ.get("WORLD_SIZE", "1")) > 1
        if name == "cuda":
            index = _local_rank() if distributed else torch.cuda.current_device()
        elif distributed:
            raise MedAssistError(
                f"--device {spec} under torchrun would put every rank on one GPU; give --device cuda, and each "
                "rank trains on its LOCAL_RANK GPU (CUDA_VISIBLE_DEVICES chooses which GPUs the job sees)"
            )
        else:
            try:
                index = int(name.split(":", 1)[1])
            except ValueError:
                raise MedAssistError(f"--device {spec}: a CUDA device is cuda or cuda:N, N a number") from None
        if not 0 <= index < count:
            raise MedAssistError(
                f"--device {spec}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}"
            )
        return torch.device("cuda", index)
    raise MedAssistError(f"--device {spec}: unknown device; choose auto, cpu, cuda, cuda:N or mps")


def cpu_bf16_supported() -> bool:
    """True if this CPU runs bfloat16 natively (AVX512-BF16 or AMX) in oneDNN. Elsewhere bf16 autocast is emulated,
    slower than fp32, and oneDNN has no bf16 LSTM at all."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(check()) if check is not None else False
    except RuntimeError:
        return False


def bf16_unsupported_reason() -> str:
    """Why bf16 autocast is not used on this CPU."""
    return (
        f"this CPU has no native bfloat16 (AVX512-BF16 or AMX; it offers {torch.backends.cpu.get_cpu_capability()}), "
        "where autocast is emulated and slower than fp32, and oneDNN has no bf16 LSTM"
    )


def precision_refusal(device: torch.device, precision: str) -> str:
    """Why ``precision`` cannot run on ``device`` ('' when it can)."""
    if precision not in PRECISIONS:
        return f"--precision {precision}: unknown precision; choose {', '.join(PRECISIONS)}"
    if precision == "32":
        return ""
    if device.type == "cpu":
        if precision == "16-mixed":
            return "--precision 16-mixed: float16 autocast needs a CUDA or MPS device; on the CPU use 32 or bf16-mixed"
        if not cpu_bf16_supported():
            return f"--precision bf16-mixed: {bf16_unsupported_reason()}; use --precision 32"
    if device.type == "cuda" and precision == "bf16-mixed" and not cuda_bf16_native(device):
        name = torch.cuda.get_device_name(device)
        return (
            f"--precision bf16-mixed: {name} has no native bfloat16 (it needs compute capability 8.0, Ampere, or "
            "later; older GPUs emulate it, slower than float32); use --precision 16-mixed or 32"
        )
    return ""


def cuda_bf16_native(device: torch.device) -> bool:
    """True if the CUDA device asked for (not the current one) runs bfloat16 natively: compute capability 8.0
    (Ampere) or later. ``torch.cuda.is_bf16_supported()`` also counts emulation (a T4 or V100 passes)."""
    return torch.cuda.get_device_capability(device)[0] >= 8


@dataclass(frozen=True)
class Accelerator:
    """A resolved device and precision: what every model of a run trains and predicts with."""

    device: torch.device = torch.device("cpu")
    precision: str = "32"

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """The autocast dtype (None at precision 32)."""
        return {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}.get(self.precision)

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def moves(self) -> bool:
        """True when the device is not the host's memory (CUDA, MPS, the strict check's stand-in): tensors go to it
        with :meth:`put` and come back with ``.cpu()`` before NumPy, a figure or a file sees them."""
        return self.device != torch.device("cpu")

    def autocast(self) -> contextlib.AbstractContextManager[Any]:
        """Autocast on the device's type at the run's precision (disabled at 32)."""
        return torch.autocast(
            self.device.type, dtype=self.amp_dtype or torch.bfloat16, enabled=self.amp_dtype is not None
        )

    def grad_scaler(self) -> torch.amp.GradScaler | None:
        """A gradient scaler for float16 (bfloat16 and float32 need none)."""
        return torch.amp.GradScaler(self.device.type) if self.precision == "16-mixed" else None

    def put(self, t: torch.Tensor) -> torch.Tensor:
        """``t`` on the device: as it is on the CPU; from pinned memory, without blocking, on CUDA."""
        if t.device == self.device:
            return t
        if self.is_cuda and t.device.type == "cpu":
            pinned = t if t.is_pinned() else t.pin_memory()  # a prefetched batch is pinned already
            return pinned.to(self.device, non_blocking=True)
        return t.to(self.device)

    def describe(self) -> dict[str, Any]:
        """What a run records: device, its name and memory, torch and CUDA versions, precision."""
        info: dict[str, Any] = {
            "device": str(self.device),
            "name": platform.processor() or platform.machine(),
            "memory_gb": None,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "precision": self.precision,
            "threads": torch.get_num_threads(),
        }
        if self.is_cuda:
            props = torch.cuda.get_device_properties(self.device)
            info.update(name=props.name, memory_gb=round(props.total_memory / 2**30, 1))
        elif self.device.type == "mps":
            info["name"] = "Apple MPS"
        return info

    def summary(self) -> str:
        """One line for a report's method section."""
        d = self.describe()
        where = d["device"] + (f" ({d['name']}, {d['memory_gb']} GB)" if d["memory_gb"] else "")
        cuda = f", CUDA {d['cuda']}" if self.is_cuda and d["cuda"] else ""
        return f"{where}, precision {d['precision']}, torch {d['torch']}{cuda}"

    def reset_peak_memory(self) -> None:
        if self.is_cuda:
            torch.cuda.reset_peak_memory_stats(self.device)

    def peak_memory_gb(self) -> float | None:
        """Peak GPU memory allocated since the last reset (None off CUDA)."""
        return torch.cuda.max_memory_allocated(self.device) / 2**30 if self.is_cuda else None


def resolve(device: str = "auto", precision: str = "32") -> Accelerator:
    """The :class:`Accelerator` of ``--device`` and ``--precision``; refuses what this machine lacks."""
    dev = resolve_device(device)
    why = precision_refusal(dev, str(precision))
    if why:
        raise MedAssistError(why)
    if dev.type == "cuda":
        # cuBLAS is deterministic only with a fixed workspace; set before the first cuBLAS call of the process.
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.cuda.set_device(dev)
    return Accelerator(dev, str(precision))


CPU = Accelerator()
_CURRENT: contextvars.ContextVar[Accelerator | None] = contextvars.ContextVar("medassist_accelerator", default=None)


def current() -> Accelerator:
    """The accelerator of the running study (the CPU at precision 32 outside one)."""
    return _CURRENT.get() or CPU


@contextlib.contextmanager
def use(accel: Accelerator) -> Iterator[Accelerator]:
    """Make ``accel`` the current accelerator inside the block."""
    token = _CURRENT.set(accel)
    try:
        yield accel
    finally:
        _CURRENT.reset(token)


R = TypeVar("R")


def on_device(run: Callable[..., R]) -> Callable[..., R]:
    """Run a study function ``run(cfg, ...)`` on ``cfg.device`` at ``cfg.precision``: resolved (or refused) before
    anything else, recorded in ``cfg`` as the device it resolved to, current while the study runs."""

    @functools.wraps(run)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> R:
        accel = resolve(cfg.device, cfg.precision)
        cfg = dataclasses.replace(cfg, device=str(accel.device))
        checked = strict.strict() if strict.is_stand_in(accel.device) else contextlib.nullcontext()
        with use(accel), checked:
            accel.reset_peak_memory()
            return run(cfg, *args, **kwargs)

    return wrapper


def to_cpu(obj: Any) -> Any:
    """``obj`` with every tensor in it (nested in dicts, lists and tuples) on the CPU: what a file holds, so that
    what a GPU run saves loads on a machine without one. Tensors already there are not copied."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().cpu()
    if isinstance(obj, dict):
        if not hasattr(obj, "_metadata"):
            return {k: to_cpu(v) for k, v in obj.items()}
        out = OrderedDict((k, to_cpu(v)) for k, v in obj.items())
        out._metadata = obj._metadata  # type: ignore[attr-defined]  # a module's state dict: its versions
        return out
    if isinstance(obj, (list, tuple)) and not hasattr(obj, "_fields"):
        return type(obj)(to_cpu(v) for v in obj)
    return obj


def state_to_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A copy of a state dict whose tensors are on the CPU (weights saved from any device load on any other)."""
    out = type(state)((k, v.detach().to("cpu", copy=True)) for k, v in state.items())  # type: ignore[call-arg]
    if hasattr(state, "_metadata"):  # module versions, which load_state_dict reads
        out._metadata = state._metadata  # type: ignore[attr-defined]
    return out
