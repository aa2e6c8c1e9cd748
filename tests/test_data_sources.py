"""Data sources: local root resolution, vocab files, Hub wrappers."""

from __future__ import annotations

import pytest

from raft.data import sources as src


def test_resolve_data_dir(monkeypatch, tmp_path, data_dir):
    monkeypatch.delenv("RAFT_DATA_DIR", raising=False)
    assert src.resolve_data_dir(None) is None
    assert src.resolve_data_dir(tmp_path) == tmp_path.resolve()
    monkeypatch.setenv("RAFT_DATA_DIR", str(data_dir))
    assert src.resolve_data_dir(None) == data_dir.resolve()
    assert src.resolve_data_dir(tmp_path) == tmp_path.resolve()  # explicit beats the environment
    monkeypatch.setenv("RAFT_DATA_DIR", str(tmp_path / "typo"))
    with pytest.raises(FileNotFoundError, match=r"typo.*RAFT_DATA_DIR"):
        src.resolve_data_dir(None)
    with pytest.raises(FileNotFoundError, match="data_dir argument"):
        src.resolve_data_dir(tmp_path / "nope")


def test_env_var_reaches_loaders(monkeypatch, data_dir):
    from raft.data.glue import load_glue

    monkeypatch.setenv("RAFT_DATA_DIR", str(data_dir))
    d = load_glue("wnli")
    assert d.sources == {"train": "local", "test": "local"} and len(d.pool) == 476


def test_vocab(data_dir, tmp_path):
    vf = src.default_vocab_file(data_dir)
    assert vf is not None and vf.name == "bert-base-uncased-vocab.txt"
    vocab = src.read_vocab(vf)
    assert len(vocab) == 30522 and vocab["[CLS]"] == 101 and vocab["[PAD]"] == 0
    tok = src.bert_tokenizer_from_vocab(vf)
    assert tok("Hello World")["input_ids"] == [101, 7592, 2088, 102]
    assert tok.tokenize("Unaffable") == ["una", "##ffa", "##ble"]
    assert src.default_vocab_file(tmp_path) is None
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        src.read_vocab(tmp_path / "missing.txt")
    (tmp_path / "v.txt").write_text("a\nb\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"lacks the special token\(s\) \[PAD\] \[UNK\]"):
        src.bert_tokenizer_from_vocab(tmp_path / "v.txt")


def test_hub_wrapper_passes_ids(monkeypatch):
    import datasets

    calls = []
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: calls.append((a, k)) or "ok")
    assert src.load_hub_dataset(src.HUB_GLUE, "cola") == "ok"
    assert src.load_hub_dataset(src.HUB_SQUAD) == "ok"
    assert src.load_hub_dataset(src.HUB_WIKIPEDIA, src.HUB_WIKIPEDIA_CONFIG, split="train", streaming=True) == "ok"
    assert calls == [(("nyu-mll/glue", "cola"), {}), (("rajpurkar/squad",), {}),
                     (("wikimedia/wikipedia", "20231101.en"), {"split": "train", "streaming": True})]
    assert src.HUB_TOKENIZER == "google-bert/bert-base-uncased"


def test_hub_errors_say_why(monkeypatch):
    import datasets

    def boom(*a, **k):
        raise OSError("offline")

    monkeypatch.setattr(datasets, "load_dataset", boom)
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    with pytest.raises(src.DataSourceError) as e:
        src.load_hub_dataset(src.HUB_SQUAD, why="no local folder /x/squad/v1.1")
    msg = str(e.value)
    assert "rajpurkar/squad" in msg and "HF_DATASETS_OFFLINE" in msg and "/x/squad/v1.1" in msg
