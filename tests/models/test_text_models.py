"""Text models: shapes for any batch length, padding invariance, gradients, MiniLM's real weights, TF-IDF."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from torch import nn

from medassist.errors import DataError, MedAssistError
from medassist.explain.gradients import hidden_state_gradient_norms, layer_gradient_norms
from medassist.models import count_parameters, create_model, list_models
from medassist.models.text_rnn import TextRNN
from medassist.models.tfidf import TfidfLogReg
from medassist.text import TEXT_TOKENIZER, hf_encode_batch, load_minilm_tokenizer, minilm_dir

V, K = 40, 3  # tiny vocabulary and label count: these tests check wiring, not accuracy
WORD_MODELS = ["bilstm", "gru", "bilstm_multitask", "transformer_small"]
TEXT_MODELS = [*WORD_MODELS, "minilm"]
MINILM_IDS = (1000, 3000)  # ordinary WordPiece ids, away from [PAD]/[CLS]/[SEP]


@contextlib.contextmanager
def no_network() -> Iterator[None]:
    """Make any attempt to open a connection fail, to prove that loading is offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to use the network")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


@pytest.fixture(scope="module")
def minilm_model() -> nn.Module:
    """One MiniLM for the module (loading it is the slow part); tests that train it work on a copy."""
    torch.manual_seed(0)
    with no_network():
        return create_model("minilm", num_classes=K, dropout=0.1)


def build(name: str, request: pytest.FixtureRequest, **kwargs: object) -> nn.Module:
    if name == "minilm":
        return request.getfixturevalue("minilm_model")
    torch.manual_seed(0)
    return create_model(name, num_classes=K, vocab_size=V, dropout=0.1, **kwargs)


def batch(lengths: list[int], *, total: int | None = None, name: str = "bilstm", seed: int = 0):
    """Right-padded ids (B, T) and mask (B, T) for sequences of the given lengths; T = ``total`` or the longest."""
    low, high = MINILM_IDS if name == "minilm" else (2, V)
    g = torch.Generator().manual_seed(seed)
    T = total or max(lengths)
    ids = torch.zeros(len(lengths), T, dtype=torch.long)
    mask = torch.zeros(len(lengths), T, dtype=torch.bool)
    for i, n in enumerate(lengths):
        ids[i, :n] = torch.randint(low, high, (n,), generator=g)
        mask[i, :n] = True
    return ids, mask


def logits_of(out: torch.Tensor | tuple[torch.Tensor, ...]) -> torch.Tensor:
    return out[0] if isinstance(out, tuple) else out


def test_every_text_model_is_registered_with_its_tokenizer() -> None:
    assert set(TEXT_TOKENIZER) == set(TEXT_MODELS) and set(TEXT_MODELS) <= set(list_models())
    for name in WORD_MODELS:
        assert type(create_model(name, num_classes=K, vocab_size=V)).TOKENIZER == TEXT_TOKENIZER[name] == "word"
    assert TEXT_TOKENIZER["minilm"] == "minilm"  # its class is checked in test_minilm_loads_real_weights


@pytest.mark.parametrize("name", TEXT_MODELS)
@pytest.mark.parametrize("T", [1, 6, 17])
def test_forward_shape_for_any_length(name: str, T: int, request: pytest.FixtureRequest) -> None:
    model = build(name, request).eval()
    ids, mask = batch([T, max(1, T - 3), 1], name=name)
    with torch.no_grad():
        assert logits_of(model(ids, mask)).shape == (3, K)


@pytest.mark.parametrize("name", ["bilstm", "gru", "transformer_small", "minilm"])
def test_extra_padding_does_not_change_the_logits(name: str, request: pytest.FixtureRequest) -> None:
    model = build(name, request).eval()
    ids, mask = batch([7, 4, 1], name=name)
    ids_pad, mask_pad = batch([7, 4, 1], total=12, name=name)
    assert torch.equal(ids_pad[:, :7], ids)
    with torch.no_grad():
        torch.testing.assert_close(model(ids_pad, mask_pad), model(ids, mask), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name", TEXT_MODELS)
def test_backward_reaches_every_trainable_parameter(name: str, request: pytest.FixtureRequest) -> None:
    model = build(name, request).train()
    ids, mask = batch([5, 3], name=name)
    out = model(ids, mask)
    loss = sum(o.sum() for o in out) if isinstance(out, tuple) else out.sum()
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    model.zero_grad(set_to_none=True)  # the MiniLM fixture is shared
    assert not missing, f"parameters without gradient: {missing[:5]}"


@pytest.mark.parametrize("name", WORD_MODELS)
def test_no_inplace_activations(name: str) -> None:
    model = create_model(name, num_classes=K, vocab_size=V)
    assert not [n for n, m in model.named_modules() if getattr(m, "inplace", False)]


def test_multitask_returns_finding_and_abnormal_logits(request: pytest.FixtureRequest) -> None:
    findings, abnormal = build("bilstm_multitask", request)(*batch([5, 2, 3]))
    assert findings.shape == (3, K) and abnormal.shape == (3,)


def test_in_channels_is_ignored_and_vocab_size_required() -> None:
    create_model("bilstm", num_classes=K, in_channels=3, vocab_size=V)
    with pytest.raises(TypeError, match="vocab_size"):
        create_model("transformer_small", num_classes=K)


def test_user_errors() -> None:
    with pytest.raises(MedAssistError, match="unknown cell 'rnn'"):
        TextRNN(num_classes=K, vocab_size=V, cell="rnn")
    ids, mask = batch([3, 2])
    mask[1] = False
    with pytest.raises(MedAssistError, match=r"sequences \[1\].*no tokens"):
        create_model("gru", num_classes=K, vocab_size=V)(ids, mask)
    model = create_model("transformer_small", num_classes=K, vocab_size=V, max_len=8)
    with pytest.raises(MedAssistError, match="at most 8 tokens"):
        model(*batch([9]))


# --- hidden states and their gradients (the vanishing-gradient analysis) ---


@pytest.mark.parametrize(
    "name,kwargs,width",
    [
        ("bilstm", {"hidden": 8}, 16),
        ("gru", {"hidden": 8, "bidirectional": False}, 8),
        ("bilstm", {"hidden": 8, "num_layers": 2, "pooling": "last"}, 16),
        ("gru", {"hidden": 8, "num_layers": 2, "pooling": "last"}, 16),
    ],
)
def test_return_states_matches_the_packed_rnn(name: str, kwargs: dict, width: int) -> None:
    """The step-by-step pass used for states gives the packed (cuDNN-style) pass's logits and outputs."""
    torch.manual_seed(0)
    model = create_model(name, num_classes=K, vocab_size=V, **kwargs).eval()
    ids, mask = batch([6, 2, 4], total=8)
    logits, states = model(ids, mask, return_states=True)
    assert states.shape == (3, 8, width) and states.requires_grad
    torch.testing.assert_close(logits, model(ids, mask), atol=1e-6, rtol=0)
    torch.testing.assert_close(states, model._packed(model.embed(ids), mask.sum(1)), atol=1e-6, rtol=0)
    assert not states[~mask].any()  # zeros at padding


def test_state_gradients_match_an_independent_lstm_cell_loop() -> None:
    """dL/dh_t includes the path through the recurrence: compare with nn.LSTMCell and retain_grad."""
    torch.manual_seed(0)
    model = create_model("bilstm", num_classes=K, vocab_size=V, embed_dim=6, hidden=5, bidirectional=False).eval()
    ids, mask = batch([12])
    logits, states = model(ids, mask, return_states=True)
    (grad,) = torch.autograd.grad(logits.sum(), states)  # (1, T, H)

    cell = nn.LSTMCell(6, 5)
    cell.load_state_dict({k.removesuffix("_l0"): v for k, v in model.rnn.state_dict().items()})
    x = model.embed(ids)[0]  # (T, E)
    h, c, hs = torch.zeros(1, 5), torch.zeros(1, 5), []
    for t in range(12):
        h, c = cell(x[t : t + 1], (h, c))
        h.retain_grad()
        hs.append(h)
    H = torch.cat(hs)  # (T, H)
    model.head(torch.cat([H.mean(0), H.amax(0)])).sum().backward()
    reference = torch.cat([h.grad for h in hs])  # (T, H)
    torch.testing.assert_close(grad[0], reference, atol=1e-6, rtol=1e-5)
    assert reference[0].abs().sum() > 0


def test_gradient_norms_are_a_masked_mean_over_sequences() -> None:
    torch.manual_seed(0)
    model = create_model("bilstm", num_classes=K, vocab_size=V, hidden=8).eval()
    ids, mask = batch([8, 4], seed=1)
    loss_fn = lambda out: out.sum()  # noqa: E731  (eval mode: each sequence's gradient is its own)
    both = hidden_state_gradient_norms(model, ids, mask, loss_fn)
    long = hidden_state_gradient_norms(model, ids[:1], mask[:1], loss_fn)
    short = hidden_state_gradient_norms(model, ids[1:, :4], mask[1:, :4], loss_fn)
    assert both.shape == (8,) and np.isfinite(both).all() and (both >= 0).all()
    np.testing.assert_allclose(both[:4], (long[:4] + short) / 2, rtol=1e-5)
    np.testing.assert_allclose(both[4:], long[4:], rtol=1e-5)
    padded = hidden_state_gradient_norms(model, *batch([8, 4], total=10, seed=1), loss_fn)
    np.testing.assert_allclose(padded[:8], both, rtol=1e-5)
    assert np.isnan(padded[8:]).all()  # no sequence reaches these steps


def test_lstm_gradients_vanish_towards_early_words() -> None:
    """With the loss on the last state only, ||dL/dh_t|| shrinks with the distance from the end, but not to 0."""
    torch.manual_seed(0)
    model = create_model("bilstm", num_classes=K, vocab_size=V, bidirectional=False, pooling="last").train()
    norms = hidden_state_gradient_norms(model, *batch([30]), lambda out: out.sum())
    assert norms.shape == (30,) and np.isfinite(norms).all()
    assert 0 < norms[0] < 1e-2 * norms[-1]  # 0 everywhere but t = T-1 would mean the recurrence is skipped
    assert model.training  # mode restored
    assert all(p.grad is None for p in model.parameters())


def test_gradient_norms_refuse_models_without_states(request: pytest.FixtureRequest) -> None:
    with pytest.raises(MedAssistError, match="cannot return its hidden states"):
        hidden_state_gradient_norms(build("transformer_small", request), *batch([3]), lambda out: out.sum())


def test_layer_gradient_norms() -> None:
    model = create_model("gru", num_classes=K, vocab_size=V, hidden=8)
    model(*batch([5, 3])).sum().backward()
    norms = layer_gradient_norms(model)
    assert set(norms) == {"embed", "rnn", "head"} and all(v > 0 for v in norms.values())
    expected = torch.cat([p.grad.flatten() for p in model.head.parameters()]).norm()
    assert norms["head"] == pytest.approx(float(expected), rel=1e-6)


# --- MiniLM ---


def test_minilm_loads_real_weights(minilm_model: nn.Module) -> None:
    assert type(minilm_model).TOKENIZER == "minilm"
    stored = load_file(minilm_dir() / "model.safetensors")
    for key in ("embeddings.word_embeddings.weight", "encoder.layer.5.output.dense.weight"):
        assert torch.equal(minilm_model.encoder.state_dict()[key], stored[key])
    assert count_parameters(minilm_model) == 22_565_376 + 384 * K + K  # BERT without its unused pooler


def test_minilm_embeddings_know_similar_sentences(minilm_model: nn.Module) -> None:
    tokenizer = load_minilm_tokenizer()
    texts = [
        "There is a small left pleural effusion.",
        "Small effusion in the left pleural space.",
        "The invoice was paid by credit card yesterday.",
    ]
    ids = hf_encode_batch(tokenizer, texts)
    T = max(map(len, ids))
    input_ids = torch.tensor([seq + [0] * (T - len(seq)) for seq in ids])  # (3, T) padded as the engine does
    with torch.no_grad():
        emb = minilm_model.eval().embed(input_ids, input_ids != 0)  # (3, 384)
    sim = torch.nn.functional.cosine_similarity(emb[:, None], emb[None], dim=-1)  # (3, 3)
    assert sim[0, 1] > 0.7 and sim[0, 2] < 0.3  # random weights would not separate these


def test_minilm_frozen_head_trains() -> None:
    with no_network():
        model = create_model("minilm", num_classes=K, freeze_encoder=True)
    assert count_parameters(model, trainable_only=True) == 384 * K + K
    model.train()
    assert model.head.training and not model.encoder.training  # no dropout in a frozen encoder
    model.drop.eval()  # so the loss change is the optimiser's alone
    ids, mask = batch([6, 4, 5], name="minilm")
    target = torch.tensor([[1.0, 0, 1], [0, 1, 0], [1, 1, 0]])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    losses = []
    for _ in range(2):
        loss = nn.functional.binary_cross_entropy_with_logits(model(ids, mask), target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[1] < losses[0]
    assert all(p.grad is None for p in model.encoder.parameters())


# --- TF-IDF + logistic regression ---

FILLER = "the study shows lungs heart size within normal limits and no acute osseous abnormality".split()
KEYWORDS = ["effusion", "cardiomegaly", "pneumothorax"]


def keyword_corpus(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Four filler words; "effusion" makes label 0, "cardiomegaly" label 1; label 2 is never positive."""
    rng = np.random.default_rng(seed)
    texts, labels = [], np.zeros((n, 3), dtype=np.int64)
    for i in range(n):
        words = list(rng.choice(FILLER, 4))
        for k, keyword in enumerate(KEYWORDS[:2]):
            if rng.random() < 0.5:
                words.insert(int(rng.integers(0, len(words))), keyword)
                labels[i, k] = 1
        texts.append(" ".join(words))
    return texts, labels


def one_keyword_corpus(n: int, seed: int) -> tuple[list[str], np.ndarray]:
    """Six filler words and one keyword, whose index is the class."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 3, n)
    texts = []
    for k in y:
        words = list(rng.choice(FILLER, 6))
        words.insert(int(rng.integers(0, 6)), KEYWORDS[k])
        texts.append(" ".join(words))
    return texts, y


def test_tfidf_multilabel_learns_keywords_and_keeps_constant_labels() -> None:
    texts, labels = keyword_corpus(200, seed=0)
    model = TfidfLogReg().fit(texts, labels)
    test_texts, test_labels = keyword_corpus(40, seed=100)
    proba = model.predict_proba(test_texts)
    assert proba.shape == (40, 3)
    np.testing.assert_array_equal(proba[:, :2] > 0.5, test_labels[:, :2] == 1)
    assert model.constant_labels_ == [2] and (proba[:, 2] == 0).all()


def test_tfidf_multiclass() -> None:
    texts, y = one_keyword_corpus(100, seed=0)
    model = TfidfLogReg(class_weight="balanced").fit(texts, y, num_classes=4)
    test_texts, test_y = one_keyword_corpus(40, seed=100)
    proba = model.predict_proba(test_texts)
    assert proba.shape == (40, 4) and np.allclose(proba.sum(1), 1)
    assert (proba[:, 3] == 0).all()  # a class never seen in training
    np.testing.assert_array_equal(proba.argmax(1), test_y)


def test_tfidf_errors_and_round_trip(tmp_path: Path) -> None:
    texts, labels = keyword_corpus(30, seed=0)
    with pytest.raises(DataError, match="shape"):
        TfidfLogReg().fit(texts, labels[:10])
    with pytest.raises(DataError, match="two classes"):
        TfidfLogReg().fit(texts, np.zeros(30))
    with pytest.raises(MedAssistError, match="not fitted"):
        TfidfLogReg().predict_proba(texts)
    model = TfidfLogReg().fit(texts, labels)
    path = model.save(tmp_path / "tfidf.joblib")
    np.testing.assert_array_equal(TfidfLogReg.load(path).predict_proba(texts), model.predict_proba(texts))
    path.write_bytes(b"not a pickle")
    with pytest.raises(DataError, match="tfidf.joblib"):
        TfidfLogReg.load(path)


def test_multitask_loss_is_the_mean_over_findings_and_the_abnormal_output() -> None:
    import torch.nn.functional as F

    from medassist.studies.text import multitask_step

    findings = torch.tensor([[2.0, -1.0, 0.5], [-0.3, 1.0, -2.0]])
    abnormal = torch.tensor([0.7, -1.2])
    y = torch.tensor([[1, 0, 1], [0, 1, 0]])  # label 0 is 'normal': case 0 normal, case 1 abnormal
    loss, logits = multitask_step(0)(lambda *_: (findings, abnormal), (), y)
    per_output = torch.cat(
        [
            F.binary_cross_entropy_with_logits(findings, y.float(), reduction="none"),
            F.binary_cross_entropy_with_logits(abnormal, torch.tensor([0.0, 1.0]), reduction="none")[:, None],
        ],
        dim=1,
    )
    assert torch.allclose(loss, per_output.mean())
    assert logits is findings


def test_minilm_lists_every_parameter_by_depth_for_layer_decay(minilm_model: nn.Module) -> None:
    from medassist.config import TrainConfig
    from medassist.train.optim import build_optimizer

    groups = minilm_model.layer_groups()
    assert len(groups) == 8  # embeddings, 6 layers, head
    opt = build_optimizer(minilm_model, TrainConfig(optimizer="adamw", lr=1e-4, layer_decay=0.5))
    rates = [g["lr"] for g in opt.param_groups]
    assert rates == pytest.approx([1e-4 * 0.5**k for k in range(7, -1, -1)])
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(minilm_model.parameters()))


def test_the_small_transformer_lists_every_parameter_by_depth() -> None:
    from medassist.config import TrainConfig
    from medassist.train.optim import build_optimizer

    model = create_model("transformer_small", num_classes=K, vocab_size=50, num_layers=2)
    opt = build_optimizer(model, TrainConfig(lr=1e-3, layer_decay=0.5))
    assert [g["lr"] for g in opt.param_groups] == pytest.approx(
        [1.25e-4, 2.5e-4, 5e-4, 1e-3]
    )  # embeddings, 2 layers, head
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))
