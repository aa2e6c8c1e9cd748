"""`raft prepare-corpus`: cleaning, document split, packing, tokenizers, Hub fallback, errors."""

from __future__ import annotations

import argparse
import gzip
import json

import numpy as np
import pytest

from raft import settings
from raft.data import corpus
from raft.data.corpus import CorpusError, prepare_corpus, split_documents


def _run_cli(argv):
    parser = argparse.ArgumentParser()
    corpus.add_arguments(parser)
    return corpus.main(parser.parse_args(argv))


@pytest.fixture(scope="module")
def tiny(data_dir, tmp_path_factory):
    """12 real Wikipedia articles, 25 % validation, through the CLI entry point."""
    out = tmp_path_factory.mktemp("corpus") / "out"
    rc = _run_cli(["--output", str(out), "--source", "wikiextractor", "--data-dir", str(data_dir),
                   "--max-documents", "12", "--validation-fraction", "0.25", "--seed", "3", "--seq-len", "128"])
    assert rc == 0
    return out


def test_outputs_and_stats(tiny):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    stats = json.loads((tiny / "stats.json").read_text())
    assert stats["source"] == "local" and stats["tokenizer_kind"] == "vocab-file" and stats["seq_len"] == 128
    assert stats["train"]["documents"] == 9 and stats["validation"]["documents"] == 3
    for split in ("train", "validation"):
        s = stats[split]
        assert s["sequences"] > 0 and s["tokens"] == s["sequences"] * 126 + s["dropped_tokens"]
        assert 0 <= s["dropped_tokens"] < 126 and s["words"] > 0
        ds = load_from_disk(str(tiny / split))
        assert ds.column_names == ["input_ids"] and len(ds) == s["sequences"]
    tok = AutoTokenizer.from_pretrained(str(tiny / "tokenizer"))
    assert tok.cls_token_id == 101 and tok.sep_token_id == 102 and len(tok) == 30522
    assert not (tiny / ".work").exists()


def test_sequences_exactly_cls_126_sep(tiny):
    from datasets import load_from_disk

    for split in ("train", "validation"):
        arr = np.asarray(load_from_disk(str(tiny / split))["input_ids"])
        assert arr.ndim == 2 and arr.shape[1] == 128
        assert (arr[:, 0] == 101).all() and (arr[:, -1] == 102).all()
        inner = arr[:, 1:-1]
        assert not np.isin(inner, [0, 101, 102, 103]).any()  # no padding / specials inside


def test_packing_and_document_split_exact(tiny, data_dir):
    """Rebuild the expected packing independently: validation documents (and only they) make up
    the validation sequences, in order; training sequences never contain validation text."""
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    files = corpus.wikiextractor_files(data_dir / "corpus" / "wikipedia-en")
    docs = []
    for f in files:
        for d in corpus.iter_wikiextractor_file(f):
            if d["text"].strip():
                docs.append(d["text"])
            if len(docs) == 12:
                break
        if len(docs) == 12:
            break
    train_idx, val_idx = split_documents(12, 0.25, seed=3)
    assert len(val_idx) == 3 and not set(train_idx) & set(val_idx)
    tok = AutoTokenizer.from_pretrained(str(tiny / "tokenizer"))
    ids = [tok(t, add_special_tokens=False)["input_ids"] for t in docs]
    for split, idx in (("train", train_idx), ("validation", val_idx)):
        stream = np.concatenate([ids[i] for i in idx])
        n = len(stream) // 126
        expected = stream[: n * 126].reshape(n, 126)
        got = np.asarray(load_from_disk(str(tiny / split))["input_ids"])[:, 1:-1]
        np.testing.assert_array_equal(got, expected)
    # no 32-token window of a validation document occurs in the training stream
    train_stream = np.asarray(load_from_disk(str(tiny / "train"))["input_ids"])[:, 1:-1].ravel()
    train_bytes = train_stream.astype(np.int32).tobytes()
    for i in val_idx:
        doc = np.asarray(ids[i], dtype=np.int32)
        for start in range(0, len(doc) - 32, max(1, (len(doc) - 32) // 10)):
            assert doc[start: start + 32].tobytes() not in train_bytes


def test_split_documents():
    tr, va = split_documents(1000, 0.01, seed=0)
    assert len(va) == 10 and len(tr) == 990 and not set(tr) & set(va)
    tr2, va2 = split_documents(1000, 0.01, seed=0)
    assert (va == va2).all()
    assert not (split_documents(1000, 0.01, seed=1)[1] == va).all()
    assert len(split_documents(5, 0.01, seed=0)[1]) == 1  # at least one validation document
    with pytest.raises(CorpusError, match="too few"):
        split_documents(1, 0.01, seed=0)
    with pytest.raises(CorpusError, match="empty corpus"):
        split_documents(0, 0.01, seed=0)


def _write_wikiextractor(root, docs_per_file, gz_flags):
    k = 0
    for j, (docs, gz) in enumerate(zip(docs_per_file, gz_flags)):
        sub = root / ("AA" if j % 2 == 0 else "AB")
        sub.mkdir(parents=True, exist_ok=True)
        text = ""
        for title, paras in docs:
            text += f'<doc id="{k}" url="https://en.wikipedia.org/wiki?curid={k}" title="{title}">\n{title}\n\n'
            text += "\n\n".join(paras) + "\n</doc>\n"
            k += 1
        name = sub / f"wiki_{j:02d}"
        if gz:
            with gzip.open(str(name) + ".gz", "wt", encoding="utf-8") as f:
                f.write(text)
        else:
            name.write_text(text, encoding="utf-8")


def test_wikiextractor_cleaning(tmp_path):
    _write_wikiextractor(tmp_path / "wiki", [
        [("Alpha", ["Alpha is the first letter.", "  Second paragraph.  "]), ("Empty", [])],
        [("Beta", ["Beta follows alpha."])],
    ], [False, True])
    files = corpus.wikiextractor_files(tmp_path / "wiki")
    assert [f.name for f in files] == ["wiki_00", "wiki_01.gz"]
    docs = [d for f in files for d in corpus.iter_wikiextractor_file(f)]
    assert [d["title"] for d in docs] == ["Alpha", "Empty", "Beta"]
    assert docs[0]["text"] == "Alpha is the first letter.\nSecond paragraph."  # title line and tags gone
    assert docs[1]["text"] == ""
    assert corpus.clean_text('<doc id="1">\nA\n\n  b  \n</doc>\n') == "A\nb"


def test_small_synthetic_corpus_and_trained_tokenizer(tmp_path):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    para = "the quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat " * 12
    docs = [(f"Doc{i}", [para + f"number {i}.", para]) for i in range(10)] + [("Empty", [])]
    _write_wikiextractor(tmp_path / "wiki", [docs[:6], docs[6:]], [True, False])
    stats = prepare_corpus(tmp_path / "out", settings.Corpus(source="wikiextractor", path=tmp_path / "wiki",
                                                             vocab_size=120, seq_len=32, validation_fraction=0.2,
                                                             seed=0))
    assert stats["tokenizer_kind"] == "trained" and stats["tokenizer"]["vocab_size"] <= 120
    assert stats["empty_documents_dropped"] == 1
    assert stats["train"]["documents"] == 8 and stats["validation"]["documents"] == 2
    tok = AutoTokenizer.from_pretrained(str(tmp_path / "out" / "tokenizer"))
    arr = np.asarray(load_from_disk(str(tmp_path / "out" / "train"))["input_ids"])
    assert arr.shape[1] == 32 and (arr[:, 0] == tok.cls_token_id).all() and (arr[:, -1] == tok.sep_token_id).all()
    assert tok.convert_ids_to_tokens(int(arr[0, 1])) == "the"
    # rerun into the same folder replaces the outputs
    stats2 = prepare_corpus(tmp_path / "out", settings.Corpus(source="wikiextractor", path=tmp_path / "wiki",
                                                              vocab_size=120, seq_len=32, validation_fraction=0.2,
                                                              seed=0))
    assert stats2["train"] == stats["train"]


def test_text_source(tmp_path, data_dir):
    body = "\n".join(f"line {i} of a plain text document about rivers and mountains ." for i in range(40))
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "a.txt").write_text(f"{body}\n\n{body}\n\n\n{body}\n", encoding="utf-8")
    with gzip.open(tmp_path / "txt" / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write(body + "\n")
    stats = prepare_corpus(tmp_path / "out", settings.Corpus(
        source="text", path=tmp_path / "txt", vocab_file=data_dir / "vocab" / "bert-base-uncased-vocab.txt",
        seq_len=64, validation_fraction=0.25))
    assert stats["source"] == "local" and stats["input"]["files"] == 2
    assert stats["train"]["documents"] + stats["validation"]["documents"] == 4


def test_hub_fallback_when_no_local_corpus(monkeypatch, tmp_path, data_dir):
    import datasets
    from datasets import Dataset

    calls = []
    text = "Paris is the capital of France.\n\nIt lies on the Seine river and has many museums. " * 20

    def fake(path, name=None, **kw):
        calls.append((path, name, kw))
        return Dataset.from_dict({"id": [str(i) for i in range(50)], "title": ["T"] * 50,
                                  "text": [text + str(i) for i in range(50)]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    empty_root = tmp_path / "root"
    empty_root.mkdir()
    stats = prepare_corpus(tmp_path / "out", settings.Corpus(
        source="wikiextractor", max_documents=8, vocab_file=data_dir / "vocab" / "bert-base-uncased-vocab.txt",
        validation_fraction=0.25), data_dir=empty_root)
    assert calls == [("wikimedia/wikipedia", "20231101.en", {"split": "train", "streaming": True})]
    assert stats["source"] == "hub" and "fallback" in stats["input"]
    assert str(empty_root / "corpus" / "wikipedia-en") in stats["input"]["fallback"]
    assert stats["train"]["documents"] + stats["validation"]["documents"] == 8
    # explicit hub source with another dataset id / config
    calls.clear()
    prepare_corpus(tmp_path / "out2", settings.Corpus(
        source="hub", hub_dataset="some/corpus", hub_config="en", max_documents=4,
        vocab_file=data_dir / "vocab" / "bert-base-uncased-vocab.txt", validation_fraction=0.25))
    assert calls[0][:2] == ("some/corpus", "en")


def test_errors(tmp_path, data_dir):
    vocab = data_dir / "vocab" / "bert-base-uncased-vocab.txt"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        prepare_corpus(tmp_path / "o", settings.Corpus(source="wikiextractor", path=tmp_path / "nowhere",
                                                       vocab_file=vocab))
    (tmp_path / "w" / "AA").mkdir(parents=True)
    (tmp_path / "w" / "AA" / "wiki_00").write_text('<doc id="1" url="u" title="T">\nT\n\n', encoding="utf-8")
    with pytest.raises(CorpusError, match=r"wiki_00:3: file ends inside a <doc>"):
        prepare_corpus(tmp_path / "o", settings.Corpus(source="wikiextractor", path=tmp_path / "w", vocab_file=vocab))
    (tmp_path / "w" / "AA" / "wiki_00").write_text('<doc id="1" url="u" title="T">\nT\n</doc>\n', encoding="utf-8")
    with pytest.raises(CorpusError, match="empty corpus"):
        prepare_corpus(tmp_path / "o", settings.Corpus(source="wikiextractor", path=tmp_path / "w", vocab_file=vocab))
    (tmp_path / "w" / "AA" / "wiki_00").write_text(
        '<doc id="1" url="u" title="T">\nT\n\nshort text.\n</doc>\n<doc id="2" url="u" title="U">\nU\n\nmore.\n</doc>\n',
        encoding="utf-8")
    with pytest.raises(CorpusError, match="fewer than one sequence"):
        prepare_corpus(tmp_path / "o", settings.Corpus(source="wikiextractor", path=tmp_path / "w", vocab_file=vocab,
                                                       validation_fraction=0.5))
    # CLI: clear message, exit code 1
    assert _run_cli(["--output", str(tmp_path / "o"), "--path", str(tmp_path / "nowhere"),
                     "--vocab-file", str(vocab)]) == 1
    with pytest.raises(FileNotFoundError, match="does not exist"):
        prepare_corpus(tmp_path / "o", settings.Corpus(vocab_file=vocab), data_dir=tmp_path / "missing-root")


def test_cli_registered(capsys):
    from raft.cli import COMMANDS

    assert COMMANDS["prepare-corpus"][0] == "raft.data.corpus"
    parser = argparse.ArgumentParser()
    corpus.add_arguments(parser)
    a = parser.parse_args(["--output", "x", "--source", "hub", "--hub-dataset", "d", "--hub-config", "c",
                           "--vocab-size", "100", "--seq-len", "64", "--validation-fraction", "0.05",
                           "--max-documents", "3", "--seed", "1", "--num-proc", "2", "--data-dir", "r",
                           "--path", "p"])
    assert (a.vocab_size, a.seq_len, a.num_proc, a.max_documents) == (100, 64, 2, 3)
    assert corpus.main(parser.parse_args(["--output", "x", "--vocab-file", "v", "--vocab-size", "3"])) == 1
    assert "give either a vocab file or a vocab size, not both" in capsys.readouterr().err


def test_flags_and_stats_settings_come_from_settings(monkeypatch, tiny, tmp_path, data_dir):
    """The corpus flags and their defaults are `settings.Corpus`'s; stats.json's ``settings``
    block is the settings given (a Hub dataset other than Wikipedia, left with the default
    config, is loaded without a config, as before the settings had a default)."""
    import dataclasses

    import datasets
    from datasets import Dataset

    parser = argparse.ArgumentParser()
    corpus.add_arguments(parser)
    a = parser.parse_args(["--output", "x"])
    assert a.seq_len == settings.Corpus().seq_len
    assert settings.from_args(settings.Corpus, a) == settings.Corpus()
    for f in dataclasses.fields(settings.Corpus):
        assert parser.get_default(f.name) == f.default, f.name
    assert {"--source", "--path", "--text-unit", "--hub-dataset", "--hub-config", "--max-documents", "--vocab-file",
            "--vocab-size", "--seq-len", "--validation-fraction", "--seed"} <= set(parser._option_string_actions)
    # the CLI run of the `tiny` fixture
    cli = settings.Corpus(source="wikiextractor", max_documents=12, validation_fraction=0.25, seed=3, seq_len=128)
    assert json.loads((tiny / "stats.json").read_text())["settings"] == settings.as_record(cli)

    calls = []

    def fake(path, name=None, **kw):
        calls.append((path, name))
        return Dataset.from_dict({"text": ["Rivers flow into the sea. " * 40 + str(i) for i in range(8)]})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    given = settings.Corpus(source="hub", hub_dataset="some/corpus", max_documents=8, seq_len=64,
                            vocab_file=str(data_dir / "vocab" / "bert-base-uncased-vocab.txt"),
                            validation_fraction=0.25)
    stats = prepare_corpus(tmp_path / "out", given)
    written = json.loads((tmp_path / "out" / "stats.json").read_text())
    assert written["settings"] == stats["settings"] == settings.as_record(given)
    assert written["settings"]["hub_config"] == settings.Corpus().hub_config
    assert calls == [("some/corpus", None)] and written["input"]["hub_config"] is None


def test_num_proc_gives_identical_output(tmp_path, data_dir):
    from datasets import load_from_disk

    vocab = data_dir / "vocab" / "bert-base-uncased-vocab.txt"
    outs = []
    for n in (1, 2):
        out = tmp_path / f"n{n}"
        prepare_corpus(out, settings.Corpus(source="wikiextractor", max_documents=6, vocab_file=vocab,
                                            validation_fraction=0.2), data_dir=data_dir, num_proc=n)
        outs.append({s: np.asarray(load_from_disk(str(out / s))["input_ids"]) for s in ("train", "validation")})
    for s in ("train", "validation"):
        np.testing.assert_array_equal(outs[0][s], outs[1][s])


def test_hub_full_download_path(monkeypatch, tmp_path, data_dir):
    """Without --max-documents the Hub dataset is loaded whole and cleaned/filtered on disk."""
    import datasets
    from datasets import Dataset

    calls = []
    text = "Rivers flow into the sea.\n\nMountains are tall and old. " * 30

    def fake(path, name=None, **kw):
        calls.append((path, name, kw))
        texts = [f"{text} {i}" if i % 5 else "   \n\n  " for i in range(20)]
        return Dataset.from_dict({"title": ["T"] * 20, "text": texts})

    monkeypatch.setattr(datasets, "load_dataset", fake)
    stats = prepare_corpus(tmp_path / "out", settings.Corpus(
        source="hub", vocab_file=data_dir / "vocab" / "bert-base-uncased-vocab.txt", validation_fraction=0.25))
    assert calls == [("wikimedia/wikipedia", "20231101.en", {"split": "train", "streaming": False})]
    assert stats["empty_documents_dropped"] == 4
    assert stats["train"]["documents"] == 12 and stats["validation"]["documents"] == 4
    assert stats["input"]["streaming"] is False


def test_hub_tokenizer_when_no_vocab(monkeypatch, tmp_path, data_dir):
    import transformers

    from raft.data.sources import bert_tokenizer_from_vocab

    calls = []

    def fake_from_pretrained(name, *a, **k):
        calls.append(name)
        return bert_tokenizer_from_vocab(data_dir / "vocab" / "bert-base-uncased-vocab.txt")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", fake_from_pretrained)
    root = tmp_path / "root"
    (root / "corpus").mkdir(parents=True)
    (root / "corpus" / "wikipedia-en").symlink_to(data_dir / "corpus" / "wikipedia-en")
    stats = prepare_corpus(tmp_path / "out", settings.Corpus(max_documents=3, validation_fraction=0.34), data_dir=root)
    assert calls == ["google-bert/bert-base-uncased"]
    assert stats["tokenizer_kind"] == "hub" and stats["source"] == "local"
