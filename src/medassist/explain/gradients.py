"""Gradient norms for the vanishing-gradient analysis of recurrent text models."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from medassist.errors import MedAssistError


def hidden_state_gradient_norms(
    model: nn.Module,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    loss_fn: Callable[[Any], torch.Tensor],
) -> np.ndarray:
    """||dL/dh_t|| per time step t, averaged over the sequences that have a real token at t.

    The model runs in eval mode (no dropout) and is put back in its previous mode afterwards; the gradient is
    taken with respect to the hidden states only, so no parameter's ``.grad`` changes.

    Args:
        model: a :class:`~medassist.models.text_rnn.TextRNN` (any model whose forward accepts
            ``return_states=True`` and returns ``(output, states (B, T, D))`` with states in the graph).
        input_ids: (B, T) token ids, right-padded with 0.
        attention_mask: (B, T), True for real tokens.
        loss_fn: maps the model's output (logits, or the tuple of a multi-task model) to a scalar loss.

    Returns:
        (T,) norms; NaN at a time step that no sequence reaches (padding only).
    """
    if "return_states" not in inspect.signature(model.forward).parameters:
        raise MedAssistError(
            f"{type(model).__name__} cannot return its hidden states; use a recurrent text model (bilstm, gru)"
        )
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), input_ids.device)
    try:
        with torch.enable_grad():
            output, states = model(input_ids.to(device), attention_mask.to(device), return_states=True)
            loss = loss_fn(output)
            (grad,) = torch.autograd.grad(loss, states)  # (B, T, D) dL/dh_t
    finally:
        model.train(was_training)
    mask = attention_mask.bool().to(grad.device)  # (B, T)
    norms = grad.norm(dim=-1) * mask  # (B, T)
    count = mask.sum(0)  # (T,)
    mean = norms.sum(0).double() / count.double()  # (T,); 0/0 = NaN where no sequence has a token
    return mean.detach().cpu().numpy()


def layer_gradient_norms(model: nn.Module) -> dict[str, float]:
    """L2 norm of the gradients of each module's own parameters (after ``loss.backward()``).

    Modules without parameters, or whose parameters have no gradient, are left out; the model itself, if it
    holds parameters directly, is listed as ``"(root)"``.
    """
    norms: dict[str, float] = {}
    for name, module in model.named_modules():
        grads = [p.grad for p in module.parameters(recurse=False) if p.grad is not None]
        if grads:
            norms[name or "(root)"] = float(torch.sqrt(sum(g.double().pow(2).sum() for g in grads)))
    return norms
