"""Transformer report classifiers: a small encoder trained from scratch, and pretrained all-MiniLM-L6-v2.

Inputs are right-padded: ``input_ids`` (B, T) with 0 at padding and ``attention_mask`` (B, T), True for real
tokens. ``transformer_small`` reads word ids from :class:`medassist.text.Vocab` (``TOKENIZER = "word"``);
``minilm`` reads WordPiece ids from :func:`medassist.text.load_minilm_tokenizer` (``TOKENIZER = "minilm"``).
"""

from __future__ import annotations

import torch
from torch import nn

from medassist.errors import MedAssistError
from medassist.models.registry import register_model
from medassist.models.text_rnn import masked_mean, sequence_lengths
from medassist.text.hf import load_minilm_encoder


def _check_length(input_ids: torch.Tensor, max_len: int, model: str) -> None:
    if input_ids.shape[1] > max_len:
        raise MedAssistError(
            f"{model} reads at most {max_len} tokens, got a batch of {input_ids.shape[1]}; "
            f"encode the texts with max_len <= {max_len}"
        )


class SmallTransformer(nn.Module):
    """Word + learned position embeddings -> pre-norm Transformer encoder -> masked mean pooling -> linear.

    Sized for a few thousand reports trained from scratch (PadChest's stemmed Spanish, which no pretrained
    English model reads).

    Args:
        num_classes: number of logits K.
        vocab_size: ``len(vocab)`` of the :class:`~medassist.text.Vocab` the ids come from.
        d_model: embedding and model width.
        nhead: attention heads.
        num_layers: encoder layers.
        dim_feedforward: hidden width of each feed-forward block.
        max_len: longest sequence (number of learned positions).
        dropout: inside the encoder, on the embeddings and before the head.
        pad_id: the padding id, whose embedding stays zero.
    """

    TOKENIZER = "word"

    def __init__(
        self,
        *,
        num_classes: int,
        vocab_size: int,
        d_model: int = 128,
        nhead: int = 4,
        num_layers: int = 2,
        dim_feedforward: int = 256,
        max_len: int = 512,
        dropout: float = 0.1,
        pad_id: int = 0,
    ) -> None:
        super().__init__()
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, d_model, padding_idx=pad_id)
        self.pos = nn.Embedding(max_len, d_model)
        self.drop = nn.Dropout(dropout)
        layer = nn.TransformerEncoderLayer(
            d_model,
            nhead,
            dim_feedforward,
            dropout,
            activation="gelu",
            batch_first=True,
            norm_first=True,
        )
        # Nested tensors would drop padded positions and return zeros there, a different code path in eval mode
        # than in training; off, every mode computes the same thing.
        self.encoder = nn.TransformerEncoder(
            layer, num_layers, norm=nn.LayerNorm(d_model), enable_nested_tensor=False
        )  # the final norm, since pre-norm layers leave their output unnormalised
        self.head = nn.Linear(d_model, num_classes)

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Its parameters by depth for layer-wise learning rates: embeddings, each layer, the final norm and head."""
        groups = [[*self.embed.parameters(), *self.pos.parameters()]]
        groups += [list(layer.parameters()) for layer in self.encoder.layers]
        return groups + [[*self.encoder.norm.parameters(), *self.head.parameters()]]

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, K)."""
        _check_length(input_ids, self.max_len, "transformer_small")
        mask = attention_mask.bool()  # (B, T)
        sequence_lengths(mask)  # a sequence of padding only would attend to nothing and give NaN
        positions = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        x = self.drop(self.embed(input_ids) + self.pos(positions))  # (B, T, C)
        x = self.encoder(x, src_key_padding_mask=~mask)  # (B, T, C)
        return self.head(self.drop(masked_mean(x, mask)))  # (B, C) -> (B, K)


class MiniLMClassifier(nn.Module):
    """Pretrained all-MiniLM-L6-v2 (a 6-layer BERT, 22.7M parameters) -> masked mean pooling -> dropout -> linear.

    The pooling is sentence-transformers' (mean of the last hidden states over real tokens) without its final
    L2 normalisation, which a linear head does not need.

    Args:
        num_classes: number of logits K.
        dropout: before the head (the encoder keeps its own dropout of 0.1).
        freeze_encoder: train the head only; the encoder then also stays in eval mode (no dropout).
        attention_dropout: dropout on the attention probabilities while fine-tuning. Off by default: PyTorch's fused
            attention kernel then runs in training too, and a step takes about 13% less time on 2 CPU cores
            (0.58 s against 0.67 s for 16 Open-i reports); the encoder's hidden dropout (0.1) stays.
    """

    TOKENIZER = "minilm"

    def __init__(
        self, *, num_classes: int, dropout: float = 0.1, freeze_encoder: bool = False, attention_dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.encoder = load_minilm_encoder(attention_dropout=attention_dropout)
        self.freeze_encoder = freeze_encoder
        if freeze_encoder:
            self.encoder.requires_grad_(False)
        self.max_len = self.encoder.config.max_position_embeddings
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(self.encoder.config.hidden_size, num_classes)
        self.train()

    def train(self, mode: bool = True) -> MiniLMClassifier:
        super().train(mode)
        if self.freeze_encoder:
            self.encoder.eval()
        return self

    def layer_groups(self) -> list[list[nn.Parameter]]:
        """Its parameters by depth for layer-wise learning rates: the embeddings, each of the 6 layers, the head."""
        bert = self.encoder
        groups = [list(bert.embeddings.parameters())]
        groups += [list(layer.parameters()) for layer in bert.encoder.layer]
        return groups + [list(self.head.parameters())]

    def embed(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Sentence embeddings (B, 384): sentence-transformers' all-MiniLM-L6-v2 output before normalisation."""
        _check_length(input_ids, self.max_len, "minilm")
        mask = attention_mask.bool()  # (B, T)
        sequence_lengths(mask)
        hidden = self.encoder(input_ids=input_ids, attention_mask=mask.long()).last_hidden_state  # (B, T, 384)
        return masked_mean(hidden, mask)  # (B, 384)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Logits (B, K)."""
        return self.head(self.drop(self.embed(input_ids, attention_mask)))  # (B, K)


@register_model("transformer_small")
def transformer_small(
    *,
    num_classes: int,
    vocab_size: int,
    dropout: float = 0.1,
    in_channels: int | None = None,
    d_model: int = 128,
    nhead: int = 4,
    num_layers: int = 2,
    dim_feedforward: int = 256,
    max_len: int = 512,
    pad_id: int = 0,
) -> SmallTransformer:
    """2-layer pre-norm Transformer encoder (width 128, 4 heads) trained from scratch; word ids.

    ``in_channels`` is ignored (the image factories' argument).
    """
    return SmallTransformer(
        num_classes=num_classes,
        vocab_size=vocab_size,
        d_model=d_model,
        nhead=nhead,
        num_layers=num_layers,
        dim_feedforward=dim_feedforward,
        max_len=max_len,
        dropout=dropout,
        pad_id=pad_id,
    )


@register_model("minilm")
def minilm(
    *,
    num_classes: int,
    dropout: float = 0.1,
    freeze_encoder: bool = False,
    attention_dropout: float = 0.0,
    in_channels: int | None = None,
    vocab_size: int | None = None,
) -> MiniLMClassifier:
    """Pretrained all-MiniLM-L6-v2 with a linear head; WordPiece ids from ``load_minilm_tokenizer``.

    ``in_channels`` and ``vocab_size`` are ignored (MiniLM brings its own 30,522-token vocabulary).
    """
    return MiniLMClassifier(
        num_classes=num_classes, dropout=dropout, freeze_encoder=freeze_encoder, attention_dropout=attention_dropout
    )
