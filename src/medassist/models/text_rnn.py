"""Recurrent report classifiers: a (bi)LSTM or GRU over word embeddings, with masked mean + max pooling.

Inputs are right-padded: ``input_ids`` (B, T) with 0 at padding and ``attention_mask`` (B, T), True for real
tokens. These models read word ids from :class:`medassist.text.Vocab` (``TOKENIZER = "word"``).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from medassist.errors import MedAssistError
from medassist.models.registry import register_model

_CELLS: dict[str, type[nn.RNNBase]] = {"lstm": nn.LSTM, "gru": nn.GRU}
_POOLINGS = ("meanmax", "last")


def sequence_lengths(attention_mask: torch.Tensor) -> torch.Tensor:
    """Number of real tokens per sequence, (B,); raises if a sequence has none (it has nothing to pool)."""
    lengths = attention_mask.sum(1)  # (B,)
    if lengths.numel() and int(lengths.min()) == 0:
        empty = torch.nonzero(lengths == 0).flatten().tolist()
        raise MedAssistError(f"sequences {empty[:10]} of the batch have no tokens; drop empty reports")
    return lengths


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``x`` (B, T, D) over the time steps where ``mask`` (B, T) is True -> (B, D)."""
    m = mask.unsqueeze(-1).to(x.dtype)  # (B, T, 1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)  # (B, D)


class TextRNN(nn.Module):
    """Embedding -> dropout -> packed LSTM/GRU -> pooling over time -> dropout -> linear.

    Padding never enters the recurrence (the sequence is packed), so extra padding leaves the logits unchanged.

    Args:
        num_classes: number of finding logits K.
        vocab_size: ``len(vocab)`` of the :class:`~medassist.text.Vocab` the ids come from.
        embed_dim: word embedding size.
        hidden: hidden size of each direction.
        num_layers: stacked recurrent layers (dropout between them when more than one).
        bidirectional: also read the report backwards; the outputs are then 2 * hidden wide.
        cell: "lstm" or "gru".
        dropout: on the embeddings, between recurrent layers, and before the head(s).
        pad_id: the padding id, whose embedding stays zero.
        pooling: "meanmax" (masked mean and max over time, concatenated) or "last" (the last real state of the
            forward direction and, if bidirectional, the first state of the backward one): with "last" the
            loss reaches early words only through the recurrence, the setting of the vanishing-gradient analysis.
        aux_head: add a second head with one "abnormal" logit; ``forward`` then returns ``(logits, abnormal)``.
    """

    TOKENIZER = "word"

    def __init__(
        self,
        *,
        num_classes: int,
        vocab_size: int,
        embed_dim: int = 128,
        hidden: int = 128,
        num_layers: int = 1,
        bidirectional: bool = True,
        cell: str = "lstm",
        dropout: float = 0.3,
        pad_id: int = 0,
        pooling: str = "meanmax",
        aux_head: bool = False,
    ) -> None:
        super().__init__()
        if cell not in _CELLS:
            raise MedAssistError(f"unknown cell '{cell}'; choose one of {', '.join(_CELLS)}")
        if pooling not in _POOLINGS:
            raise MedAssistError(f"unknown pooling '{pooling}'; choose one of {', '.join(_POOLINGS)}")
        self.cell, self.pooling = cell, pooling
        self.embed = nn.Embedding(vocab_size, embed_dim, padding_idx=pad_id)
        self.drop = nn.Dropout(dropout)
        self.rnn = _CELLS[cell](
            embed_dim,
            hidden,
            num_layers=num_layers,
            bidirectional=bidirectional,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,  # PyTorch warns about dropout after the last layer
        )
        width = hidden * (2 if bidirectional else 1)
        pooled = 2 * width if pooling == "meanmax" else width
        self.head = nn.Linear(pooled, num_classes)
        self.aux_head = nn.Linear(pooled, 1) if aux_head else None

    def forward(
        self, input_ids: torch.Tensor, attention_mask: torch.Tensor, return_states: bool = False
    ) -> torch.Tensor | tuple[Any, torch.Tensor]:
        """Logits (B, K), or ``(logits, abnormal_logit (B,))`` with the auxiliary head.

        With ``return_states=True`` returns ``(output, states)``: ``states`` (B, T, hidden * dirs) holds the
        RNN outputs h_t (zeros at padding), and ``torch.autograd.grad(loss, states)`` gives the total derivative
        dL/dh_t, through the recurrence included. This runs the recurrence step by step in Python (slower);
        it is meant for analysis in eval mode.
        """
        mask = attention_mask.bool()  # (B, T)
        lengths = sequence_lengths(mask)  # (B,)
        x = self.drop(self.embed(input_ids))  # (B, T, E)
        if return_states:
            outputs, states = self._stepwise(x, mask)  # (B, T, D) each, D = hidden * dirs; equal values
        else:
            outputs = self._packed(x, lengths)  # (B, T, D)
        pooled = self.drop(self._pool(outputs, mask, lengths))  # (B, 2D) or (B, D)
        logits = self.head(pooled)  # (B, K)
        out: Any = logits if self.aux_head is None else (logits, self.aux_head(pooled).squeeze(-1))  # aux: (B,)
        return (out, states) if return_states else out

    def _packed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        packed = pack_padded_sequence(x, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, _ = self.rnn(packed)
        states, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])  # (B, T, D)
        return states

    def _pool(self, states: torch.Tensor, mask: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if self.pooling == "meanmax":
            mean = masked_mean(states, mask)  # (B, D)
            mx = states.masked_fill(~mask.unsqueeze(-1), float("-inf")).amax(1)  # (B, D)
            return torch.cat([mean, mx], dim=1)  # (B, 2D)
        h = self.rnn.hidden_size
        last = states[torch.arange(states.shape[0]), lengths - 1, :h]  # (B, H) forward direction at its last token
        if not self.rnn.bidirectional:
            return last
        return torch.cat([last, states[:, 0, h:]], dim=1)  # (B, 2H) backward direction ends at t = 0

    def _stepwise(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The RNN unrolled by hand with ``self.rnn``'s weights: its outputs, and a leaf whose gradient is dL/dh_t.

        The gradient with respect to the output of ``nn.LSTM`` holds only the direct path from the loss, because
        the recurrence runs inside one operator. So the top layer is unrolled here, and each state is passed
        through ``h_t + (s_t - s_t.detach())``: the value is unchanged, the leaf ``s_t`` receives the gradient of
        everything downstream of h_t, and the parameters still get their usual gradients.
        """
        with torch.no_grad():  # the values of the states, for the leaf
            states = self._packed(x, mask.sum(1)).requires_grad_(True)  # (B, T, D) leaf
        h = self.rnn.hidden_size
        layer_in = x  # (B, T, E)
        for layer in range(self.rnn.num_layers):
            top = layer == self.rnn.num_layers - 1
            dirs = 2 if self.rnn.bidirectional else 1
            outs = [
                self._direction(layer_in, mask, layer, reverse, states[..., d * h : (d + 1) * h] if top else None)
                for d, reverse in enumerate((False, True)[:dirs])
            ]
            layer_in = torch.cat(outs, dim=-1)  # (B, T, D)
            if not top:
                layer_in = F.dropout(layer_in, self.rnn.dropout, self.training)
        return layer_in, states

    def _direction(
        self, x: torch.Tensor, mask: torch.Tensor, layer: int, reverse: bool, probe: torch.Tensor | None
    ) -> torch.Tensor:
        """One direction of one layer, step by step: outputs (B, T, H), zero at padding, as packing gives."""
        suffix = f"_l{layer}" + ("_reverse" if reverse else "")
        w_ih, w_hh = getattr(self.rnn, "weight_ih" + suffix), getattr(self.rnn, "weight_hh" + suffix)
        b_ih, b_hh = getattr(self.rnn, "bias_ih" + suffix), getattr(self.rnn, "bias_hh" + suffix)
        B, T, _ = x.shape
        gates_x = F.linear(x, w_ih, b_ih)  # (B, T, G*H), G = 4 (LSTM: i, f, g, o) or 3 (GRU: r, z, n)
        state = x.new_zeros(B, self.rnn.hidden_size)  # (B, H)
        cell_state = torch.zeros_like(state)  # (B, H), LSTM only
        outs: list[torch.Tensor] = [state] * T
        for t in range(T - 1, -1, -1) if reverse else range(T):
            gx, gh = gates_x[:, t], F.linear(state, w_hh, b_hh)  # (B, G*H)
            if self.cell == "lstm":
                i, f, g, o = (gx + gh).chunk(4, dim=1)  # (B, H) each
                new_c = torch.sigmoid(f) * cell_state + torch.sigmoid(i) * torch.tanh(g)
                new_h = torch.sigmoid(o) * torch.tanh(new_c)
            else:
                xr, xz, xn = gx.chunk(3, dim=1)
                hr, hz, hn = gh.chunk(3, dim=1)
                r, z = torch.sigmoid(xr + hr), torch.sigmoid(xz + hz)
                new_h = (1 - z) * torch.tanh(xn + r * hn) + z * state
                new_c = cell_state
            if probe is not None:
                new_h = new_h + (probe[:, t] - probe[:, t].detach())  # same value; routes dL/dh_t to the probe
            # At padding the state does not move: the forward pass keeps its last real state, and the backward
            # pass stays at zero until it reaches the last real token, exactly as with a packed sequence.
            real = mask[:, t].unsqueeze(1)  # (B, 1)
            state, cell_state = torch.where(real, new_h, state), torch.where(real, new_c, cell_state)
            outs[t] = torch.where(real, new_h, torch.zeros_like(new_h))  # (B, H)
        return torch.stack(outs, dim=1)  # (B, T, H)


# The constructors pass ``options`` (embed_dim, hidden, num_layers, bidirectional, pad_id, pooling) to TextRNN,
# which rejects unknown names; ``in_channels`` is the image factories' argument, accepted and ignored.


@register_model("bilstm")
def bilstm(
    *, num_classes: int, vocab_size: int, dropout: float = 0.3, in_channels: int | None = None, **options: Any
) -> TextRNN:
    """Bidirectional LSTM (hidden 128, embeddings 128) with mean + max pooling; word ids."""
    return TextRNN(num_classes=num_classes, vocab_size=vocab_size, dropout=dropout, cell="lstm", **options)


@register_model("gru")
def gru(
    *, num_classes: int, vocab_size: int, dropout: float = 0.3, in_channels: int | None = None, **options: Any
) -> TextRNN:
    """Bidirectional GRU, otherwise as ``bilstm``; word ids."""
    return TextRNN(num_classes=num_classes, vocab_size=vocab_size, dropout=dropout, cell="gru", **options)


@register_model("bilstm_multitask")
def bilstm_multitask(
    *, num_classes: int, vocab_size: int, dropout: float = 0.3, in_channels: int | None = None, **options: Any
) -> TextRNN:
    """``bilstm`` with a second head: ``forward`` returns ``(finding_logits (B, K), abnormal_logit (B,))``."""
    return TextRNN(
        num_classes=num_classes, vocab_size=vocab_size, dropout=dropout, cell="lstm", aux_head=True, **options
    )
