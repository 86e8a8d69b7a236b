"""The strict-device check: the mistakes a GPU run would meet, caught on a machine without a GPU.

With ``MEDASSIST_STRICT_DEVICE=1``, ``--device cpu`` (and ``auto`` on a CPU machine) resolves to a stand-in
accelerator, :data:`DEVICE` (``cpu:0``). Every study then runs as it would on a GPU: models, batches and the tensors
made with ``device=`` go to the stand-in, and checkpoints, predictions and figures must come back with ``.cpu()``.
The arithmetic is the CPU's, so the numbers are those of a plain CPU run; what changes is that a
:class:`StrictDeviceMode` watches every PyTorch call and raises :class:`StrictDeviceError` where CUDA would:

- a call that combines a tensor on the device with a CPU tensor that is not a 0-dim scalar
  ("Expected all tensors to be on the same device");
- a tensor on the device turned into NumPy (``.numpy()``, ``np.asarray``) without ``.cpu()``;
- a tensor on the device pickled into a file (``torch.save``): the project's files hold CPU tensors;
- a random draw made on the device from a CPU generator;
- a gradient from one side assigned to a parameter on the other.

Each tensor carries a mark of where it is: on the device, on the host (made on the CPU under the check: data read
from NumPy, a factory without ``device=``, ``.cpu()``), or unknown (made where the check does not look: in another
thread, or by autograd's backward pass and the hooks it calls, which run outside the mode). A call's results are on the
device when an input is or when it was asked for ``device=cpu:0``; ``.to(cpu:0)`` marks a copy, ``.cpu()`` and
``.to("cpu")`` return a copy on the host, and ``tensor.device`` answers ``cpu:0`` for a tensor on the device, so that
``torch.zeros(..., device=x.device)`` lands where ``x`` is. Only a device tensor meeting a host tensor is an error:
an unknown tensor meets either without one, so the check reports nothing false, and sees less where tensors are
unknown. The marks and checks cost Python time per call: this is a test mode (``pytest -m strictdevice``), never a
way to train.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch.overrides import TorchFunctionMode

ENV = "MEDASSIST_STRICT_DEVICE"
DEVICE = torch.device("cpu", 0)
"""The stand-in accelerator: the CPU under another name (``cpu:0``), as distinct from ``cpu`` as ``cuda:0`` is."""
_MARK = "_medassist_on_device"
_UNKNOWN = torch.device("cpu")
"""What ``x.device`` answers for a tensor made where the check does not look (a gradient hook's, say): "cpu", but
recognised (by identity) in ``device=x.device`` and ``.to(x.device)``, whose results are then as unknown as ``x``."""


class StrictDeviceError(RuntimeError):
    """A device mistake that a GPU run would fail on (raised only under the strict-device check)."""


def enabled() -> bool:
    """True when ``MEDASSIST_STRICT_DEVICE=1``: the CPU resolves to the stand-in :data:`DEVICE`."""
    return os.environ.get(ENV, "") == "1"


def is_stand_in(device: torch.device) -> bool:
    return device.type == "cpu" and device.index == 0


_DEVICE, _HOST, _UNSEEN = "device", "host", "unseen"  # _UNSEEN: asked for where an unknown tensor is


def _where(t: object) -> str | None:
    """Where a tensor is known to be: ``"device"``, ``"host"``, or None (made where the check does not look)."""
    return getattr(t, _MARK, None) if isinstance(t, torch.Tensor) else None


def on_device(t: object) -> bool:
    """True for a tensor on the stand-in device."""
    return _where(t) == _DEVICE


def on_host(t: object) -> bool:
    """True for a tensor known to be on the CPU (made there under the check, or brought back with ``.cpu()``)."""
    return _where(t) == _HOST


def _mark(t: Any, where: str | None) -> Any:
    if isinstance(t, torch.Tensor):
        if where is not None:
            setattr(t, _MARK, where)
        elif hasattr(t, _MARK):
            delattr(t, _MARK)
    return t


def _describe(t: torch.Tensor) -> str:
    return f"{'cpu:0 (the device)' if on_device(t) else 'cpu'} tensor of shape {tuple(int(n) for n in t.shape)}"


def _name(func: Any) -> str:
    owner = getattr(func, "__self__", None)
    if type(owner).__name__ == "getset_descriptor":  # a Tensor property's __get__ or __set__
        return f"{owner.__name__}.{func.__name__}"
    return getattr(func, "__name__", str(func))


def _target(func: Any, args: tuple, kwargs: dict) -> str | None:
    """Where ``func`` is asked to put its result (``device=``, ``.to(...)``, ``.cpu()``); None where not asked."""
    name = _name(func)
    if name == "cpu":
        return _HOST
    if any(a is _UNKNOWN for a in (*args, *kwargs.values())):  # x.device of a tensor of unknown place
        return _UNSEEN
    if name == "to":
        if len(args) > 1 and isinstance(args[1], torch.Tensor):  # to(other): where other is
            return _where(args[1])
        device = torch._C._nn._parse_to(*args[1:], **{k: v for k, v in kwargs.items() if k != "copy"})[0]
    else:
        device = kwargs.get("device")
    if device is None:
        return None
    device = torch.device(device)
    if device.type != "cpu":  # the meta device of the shape tests, say: not this check's business
        return None
    return _DEVICE if is_stand_in(device) else _HOST


# Calls that may take CPU and device tensors together, as on CUDA: copies between the two, indexing a device tensor
# with CPU indices, writes into a device tensor, PyTorch's own bookkeeping, and packed sequences.
_MIXED_ALLOWED = {
    "copy_",
    "to",
    "cpu",
    "__getitem__",
    "__setitem__",
    "_has_compatible_shallow_copy_type",
    "backward",
    "data.__set__",
    "grad.__set__",
    # packed sequences keep their lengths and batch sizes on the CPU, as CUDA wants them
    "_pack_padded_sequence",
    "_pad_packed_sequence",
    "lstm",
    "gru",
    "rnn_tanh",
    "rnn_relu",
}

_SHAPE_OF = {"view_as", "reshape_as", "expand_as"}


class StrictDeviceMode(TorchFunctionMode):
    """The check itself (see the module's text); enter it with :func:`strict`."""

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        name = _name(func)
        if name == "device.__get__":
            where = _where(args[0])
            return DEVICE if where == _DEVICE else _UNKNOWN if where is None else func(*args, **kwargs)
        _refuse_host_copies(name, args)
        if name in _SHAPE_OF:  # x.view_as(other) reads other's shape only: the result is where x is
            return _mark(func(*args, **kwargs), _where(args[0]))
        inputs = _tensors((*args, *kwargs.values()))
        target = _target(func, args, kwargs)
        _refuse_mixing(name, inputs, args, kwargs, target)

        out = func(*args, **kwargs)

        if name == "data.__set__":  # param.data = tensor (Module.to): the parameter is where its new data is
            _mark(args[0], _where(args[1]))
            return out
        if name in ("grad.__get__", "data.__get__"):  # a gradient is where its parameter is
            return _mark(out, _where(args[0]))
        if name in ("to", "cpu") and target is not None:
            if target == _UNSEEN:
                return out
            if out is args[0] and _where(out) != target:  # a "copy" that is the tensor itself: make it one
                out = out.clone()
            return _mark(out, target)
        if name == "__deepcopy__":
            return _mark(out, _where(args[0]))
        if inputs and out is inputs[0] and _where(out) is not None:  # in place: a tensor does not move
            return out
        where = target or _propagated(inputs)
        if where not in (None, _UNSEEN):
            for t in _tensors((out,)):
                _mark(t, where)
        return out


def _tensors(values: tuple) -> list[torch.Tensor]:
    """The tensors among ``values`` and inside the lists and tuples among them (foreach ops, ``cat``, an LSTM's
    state), two levels down: what a call's arguments and results hold, without pytree's cost on every call."""
    out = []
    for v in values:
        if isinstance(v, torch.Tensor):
            out.append(v)
        elif isinstance(v, (list, tuple)):
            for w in v:
                if isinstance(w, torch.Tensor):
                    out.append(w)
                elif isinstance(w, (list, tuple)):
                    out.extend(x for x in w if isinstance(x, torch.Tensor))
    return out


def _propagated(inputs: list[torch.Tensor]) -> str | None:
    """Where a call's results are: on the device if an input is; else on the host if an input is, or if it had no
    tensor input (a factory without ``device=``: the CPU); else unknown."""
    places = {_where(t) for t in inputs}
    if _DEVICE in places:
        return _DEVICE
    if _HOST in places or not inputs:
        return _HOST
    return None


def _refuse_host_copies(name: str, args: tuple) -> None:
    """A device tensor turned into NumPy or pickled into a file without ``.cpu()``."""
    if name in ("numpy", "__array__") and on_device(args[0]):
        raise StrictDeviceError(
            f"{_describe(args[0])} turned into NumPy without .cpu() (on CUDA: can't convert cuda:0 device type "
            "tensor to numpy); call .cpu() first"
        )
    if name == "__reduce_ex__" and on_device(args[0]):
        raise StrictDeviceError(
            f"{_describe(args[0])} pickled (torch.save): files hold CPU tensors, so that a run saved on a GPU loads "
            "on a machine without one; save a copy made with .cpu() (train.device.to_cpu)"
        )


def _refuse_mixing(name: str, inputs: list[torch.Tensor], args: tuple, kwargs: dict, target: str | None) -> None:
    """A call that CUDA would refuse for the places of its tensors."""
    device_side = next((t for t in inputs if on_device(t)), None)
    if name not in _MIXED_ALLOWED and device_side is not None:
        stray = [t for t in inputs if on_host(t) and t.dim() > 0]  # a 0-dim CPU tensor mixes, as on CUDA
        if stray:
            raise StrictDeviceError(
                f"{name}: a {_describe(device_side)} combined with a {_describe(stray[0])} (on CUDA: Expected all "
                "tensors to be on the same device); move the CPU tensor with accel.put(...) or .to(x.device)"
            )
    if name == "grad.__set__" and args[1] is not None and {_where(args[0]), _where(args[1])} == {_DEVICE, _HOST}:
        raise StrictDeviceError(f"a gradient {_describe(args[1])} assigned to a {_describe(args[0])}")
    if target == _DEVICE and isinstance(kwargs.get("generator"), torch.Generator):
        raise StrictDeviceError(
            f"{name}: a draw on the device from a CPU generator (on CUDA: Expected a 'cuda' device type for "
            "generator); draw on the CPU and move the result, or give the device a generator of its own"
        )
    if name == "__getitem__" and on_host(args[0]) and args[0].dim() > 0 and device_side is not None:
        raise StrictDeviceError(
            f"a {_describe(args[0])} indexed with indices on the device (on CUDA: indices should be either on "
            "cpu or on the same device as the indexed tensor); index with CPU indices"
        )


_ORIGINAL_PARAMETER_NEW = torch.nn.Parameter.__new__
_ORIGINAL_FROM_NUMPY = torch.from_numpy


def _parameter_new(cls: type, data: torch.Tensor | None = None, requires_grad: bool = True) -> torch.nn.Parameter:
    """``nn.Parameter(t)`` is where ``t`` is (a deep-copied or pruned layer on the device stays there)."""
    return _mark(_ORIGINAL_PARAMETER_NEW(cls, data, requires_grad), _where(data))


def _from_numpy(array: Any) -> torch.Tensor:
    """``torch.from_numpy``, which no mode sees: a tensor on the host."""
    return _mark(_ORIGINAL_FROM_NUMPY(array), _HOST)


_ACTIVE = False


@contextlib.contextmanager
def strict() -> Iterator[None]:
    """Run the block under the check (once: a study inside a study is checked by the outer mode)."""
    global _ACTIVE
    if _ACTIVE:
        yield
        return
    _ACTIVE = True
    torch.nn.Parameter.__new__ = _parameter_new  # type: ignore[method-assign]
    torch.from_numpy = _from_numpy
    try:
        with StrictDeviceMode():
            yield
    finally:
        torch.nn.Parameter.__new__ = _ORIGINAL_PARAMETER_NEW  # type: ignore[method-assign]
        torch.from_numpy = _ORIGINAL_FROM_NUMPY
        _ACTIVE = False
