"""SQuAD v1.1 data layer: reader, offline article split, features, postprocessing, EM/F1."""

from __future__ import annotations

import json

import numpy as np
import pytest

from raft.data import squad
from raft.data.metrics import normalize_answer, squad_metrics
from raft.data.squad import load_squad, read_squad_json, sample


@pytest.fixture(scope="module")
def sq(data_dir):
    return load_squad(data_dir)


@pytest.fixture(scope="module")
def tokenizer(data_dir):
    from raft.data.sources import bert_tokenizer_from_vocab

    return bert_tokenizer_from_vocab(data_dir / "vocab" / "bert-base-uncased-vocab.txt")


def test_dev_rows_match_readme(data_dir):
    cols = read_squad_json(data_dir / "squad" / "v1.1" / "dev-v1.1.json")
    assert len(cols["id"]) == 10570 and len(set(cols["id"])) == 10570
    assert len(set(cols["title"])) == 48 and len(set(cols["context"])) == 2067
    first = {k: v[0] for k, v in cols.items()}
    assert first["title"] == "Super_Bowl_50"
    assert first["answers"]["text"][0] == "Denver Broncos"
    start = first["answers"]["answer_start"][0]
    assert first["context"][start:start + len("Denver Broncos")] == "Denver Broncos"


def test_offline_split_by_article(sq):
    assert sq.sources == {"train": "local-subset", "test": "held-out"} and sq.partial_data
    assert sq.data_notes and "by article" in sq.data_notes[0]
    assert sq.sizes == {"pool": 3670, "dev_part": 1224, "test": {"test": 5676}}
    test = sq.tests["test"]
    assert len(sq.pool) + len(sq.dev) + len(test) == 10570
    # test articles are disjoint from the training side; pool/dev/test ids disjoint
    assert not (set(sq.pool["title"]) | set(sq.dev["title"])) & set(test["title"])
    assert len(set(test["title"])) == 24
    pool, dev, tst = set(sq.pool["id"]), set(sq.dev["id"]), set(test["id"])
    assert not pool & dev and not pool & tst and not dev & tst
    assert sq.split_info["test_articles"] == 24 and sq.split_info["seed"] == 96


def test_split_determinism_and_sampling(data_dir, sq):
    again = load_squad(data_dir)
    assert again.pool["id"] == sq.pool["id"] and again.tests["test"]["id"] == sq.tests["test"]["id"]
    t1, d1 = sample(sq, 100, seed=2022)
    t2, d2 = sample(sq, 100, seed=2022)
    t3, _ = sample(sq, 100, seed=53)
    assert t1["id"] == t2["id"] and d1["id"] == d2["id"] and t1["id"] != t3["id"]
    assert set(t1["id"]) <= set(sq.pool["id"]) and set(d1["id"]) <= set(sq.dev["id"])
    full_t, full_d = sample(sq, None, seed=1)
    assert (len(full_t), len(full_d)) == (3670, 1224)
    t, d = sample(sq, 2000, seed=0)  # N above the dev part (1,224): the whole dev part, in order
    assert len(t) == 2000 and d["id"] == sq.dev["id"]
    assert sample(sq, 1223, seed=0)[1]["id"] != sq.dev["id"][:1223]  # below it: sampled
    with pytest.raises(ValueError, match=r"n=3671 is larger than the squad train pool \(3,670 examples\)"):
        sample(sq, 3671, seed=0)


def test_split_sizes_match_load_squad(data_dir, sq, monkeypatch):
    assert squad.split_sizes(data_dir) == {"pool": 3670, "dev_part": 1224, "source": "local-subset"}
    assert squad.split_sizes(data_dir) == {"pool": len(sq.pool), "dev_part": len(sq.dev), "source": sq.sources["train"]}
    # the article choice is shared with split_by_article
    titles = read_squad_json(data_dir / "squad" / "v1.1" / "dev-v1.1.json")["title"]
    assert squad.offline_test_titles(titles) == set(sq.tests["test"]["title"])
    d = load_squad(data_dir, offline_test_fraction=0.25)
    assert squad.split_sizes(data_dir, offline_test_fraction=0.25) == {
        "pool": len(d.pool), "dev_part": len(d.dev), "source": "local-subset"}

    from raft.data import sources

    def no_hub(*a, **k):
        raise AssertionError("split_sizes must not call the Hub")

    monkeypatch.setattr(sources, "load_hub_dataset", no_hub)
    monkeypatch.delenv("RAFT_DATA_DIR", raising=False)
    assert squad.split_sizes() == {"pool": 65699, "dev_part": 21900, "source": "hub"}  # 87,599 official


def test_split_sizes_with_local_train_file(tmp_path):
    _squad_json(tmp_path / "squad/v1.1/dev-v1.1.json", [_article("A", 1), _article("B", 2)])
    _squad_json(tmp_path / "squad/v1.1/train-v1.1.json", [_article(t, 3) for t in "CDEFG"])
    d = load_squad(tmp_path)
    assert squad.split_sizes(tmp_path) == {"pool": len(d.pool), "dev_part": len(d.dev), "source": "local"}


def test_other_test_fraction(data_dir):
    d = load_squad(data_dir, offline_test_fraction=0.25)
    assert len(set(d.tests["test"]["title"])) == 12


def _squad_json(path, articles):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": "1.1", "data": articles}), encoding="utf-8")


def _article(title, n):
    ctx = f"{title} is a city. It has {n} bridges."
    return {"title": title, "paragraphs": [{"context": ctx, "qas": [
        {"id": f"{title}-{i}", "question": f"How many bridges in {title}?",
         "answers": [{"text": str(n), "answer_start": ctx.index(str(n))}]} for i in range(4)]}]}


def test_local_train_file_uses_official_protocol(tmp_path):
    _squad_json(tmp_path / "squad/v1.1/dev-v1.1.json", [_article("A", 1), _article("B", 2)])
    _squad_json(tmp_path / "squad/v1.1/train-v1.1.json", [_article(t, 3) for t in "CDEFG"])
    d = load_squad(tmp_path)
    assert d.sources == {"train": "local", "test": "local"} and not d.partial_data
    assert d.sizes == {"pool": 15, "dev_part": 5, "test": {"test": 8}}


def test_missing_and_broken_files(tmp_path):
    (tmp_path / "squad/v1.1").mkdir(parents=True)
    with pytest.raises(FileNotFoundError) as e:
        load_squad(tmp_path)
    assert str(tmp_path / "squad/v1.1/dev-v1.1.json") in str(e.value)
    (tmp_path / "squad/v1.1/dev-v1.1.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="not an official SQuAD JSON"):
        load_squad(tmp_path)


def test_hub_used_when_no_local_root(monkeypatch):
    import datasets
    from datasets import Dataset, DatasetDict

    calls = []
    rows = {"id": [str(i) for i in range(8)], "title": ["t"] * 8, "context": ["c d"] * 8,
            "question": ["q"] * 8, "answers": [{"text": ["d"], "answer_start": [2]}] * 8}

    def fake(path, name=None, **kw):
        calls.append((path, name, kw))
        return DatasetDict(train=Dataset.from_dict(rows), validation=Dataset.from_dict(rows))

    monkeypatch.delenv("RAFT_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake)
    d = load_squad()
    assert calls == [("rajpurkar/squad", None, {})]
    assert d.sources == {"train": "hub", "test": "hub"} and not d.partial_data
    assert d.sizes == {"pool": 6, "dev_part": 2, "test": {"test": 8}}


# ---------------------------------------------------------------------------------------
# Features and postprocessing
# ---------------------------------------------------------------------------------------
def _oracle_logits(examples, features, seq_len):
    """Logits peaking at the gold answer's first/last token of every window containing it."""
    by_id = {e["id"]: e for e in examples}
    S, E = [], []
    for f in features:
        ex = by_id[f["example_id"]]
        a0 = ex["answers"]["answer_start"][0]
        a1 = a0 + len(ex["answers"]["text"][0])
        s, e = np.zeros(seq_len), np.zeros(seq_len)
        offs = f["offset_mapping"]
        starts = [k for k, o in enumerate(offs) if o is not None and o[0] <= a0 < o[1]]
        ends = [k for k, o in enumerate(offs) if o is not None and o[0] < a1 <= o[1]]
        if starts and ends:
            s[starts[0]] = 10.0
            e[ends[-1]] = 10.0
        S.append(s)
        E.append(e)
    return np.array(S), np.array(E)


def test_features_roundtrip(sq, tokenizer):
    ex = sq.pool.select(range(60))
    train = squad.tokenize_train(ex, tokenizer)
    assert len(train) >= 60
    assert set(train.column_names) == {"input_ids", "token_type_ids", "attention_mask", "start_positions",
                                       "end_positions"}
    assert all(len(x) == 384 for x in train["input_ids"])
    # a training window that contains the answer decodes to it
    hits = 0
    for f in train.select(range(20)):
        if f["start_positions"] > 0:
            span = tokenizer.decode(f["input_ids"][f["start_positions"]: f["end_positions"] + 1])
            hits += 1
            assert span.strip()
    assert hits > 10
    evalf = squad.tokenize_eval(ex, tokenizer)
    assert "example_id" in evalf.column_names and "offset_mapping" in evalf.column_names
    S, E = _oracle_logits(ex, evalf, 384)
    preds = squad.postprocess_predictions(ex, evalf, S, E)
    assert set(preds) == set(ex["id"])
    m = squad_metrics(preds, squad.references(ex))
    assert m["exact_match"] == 100.0 and m["f1"] == 100.0 and m["score"] == m["f1"]


def test_long_contexts_make_several_windows(sq, tokenizer):
    ex = sq.pool.select(range(40))
    f = squad.tokenize_eval(ex, tokenizer, max_seq_length=128, doc_stride=32)
    assert len(f) > len(ex) and all(len(x) == 128 for x in f["input_ids"])
    S, E = _oracle_logits(ex, f, 128)
    preds = squad.postprocess_predictions(ex, f, S, E)
    assert squad_metrics(preds, squad.references(ex))["exact_match"] == 100.0


def test_query_truncation_and_stride_check(tokenizer):
    from datasets import Dataset

    q = " ".join(["why"] * 100) + "?"
    ex = Dataset.from_dict({"id": ["x"], "title": ["t"], "context": ["the answer is here ."], "question": [q],
                            "answers": [{"text": ["here"], "answer_start": [14]}]})
    f = squad.prepare_train_features(ex[:], tokenizer, max_seq_length=128, doc_stride=32, max_query_length=64)
    ids = f["input_ids"][0]
    first_sep = ids.index(tokenizer.sep_token_id)
    assert first_sep == 65  # [CLS] + 64 question tokens
    assert tokenizer.decode(ids[f["start_positions"][0]: f["end_positions"][0] + 1]) == "here"
    with pytest.raises(ValueError, match="doc_stride=128 must be smaller"):
        squad.prepare_train_features(ex[:], tokenizer, max_seq_length=128, doc_stride=128)


def test_postprocess_respects_max_answer_length():
    examples = {"id": ["a"], "context": ["one two three"]}
    features = {"example_id": ["a"], "offset_mapping": [[None, (0, 3), (4, 7), (8, 13), None]]}
    start = np.array([[0, 5, 0, 0, 9]], dtype=float)
    end = np.array([[9, 0, 0, 4, 0]], dtype=float)
    assert squad.postprocess_predictions(examples, features, start, end) == {"a": "one two three"}
    assert squad.postprocess_predictions(examples, features, start, end, max_answer_length=1) == {"a": "one"}
    end2 = np.array([[9, 1, -1, -1, 0]], dtype=float)  # best end is outside the context
    assert squad.postprocess_predictions(examples, features, start, end2) == {"a": "one"}


# ---------------------------------------------------------------------------------------
# Official EM / F1
# ---------------------------------------------------------------------------------------
def test_normalisation_edge_cases():
    assert normalize_answer("The Cat!") == "cat"
    assert normalize_answer("  New   York  ") == "new york"
    assert normalize_answer("an apple a day") == "apple day"
    assert normalize_answer("banana, theatre; another") == "banana theatre another"
    assert normalize_answer("U.S.") == "us"
    assert normalize_answer("the") == ""
    assert normalize_answer("Ça va—très bien") == "ça va—très bien"  # only ASCII punctuation is removed


def test_squad_metrics_hand_computed():
    refs = {"1": ["Denver Broncos", "Broncos"], "2": ["red dog house"], "3": ["the Eiffel Tower"], "4": ["42"]}
    preds = {"1": "the Broncos.", "2": "the big red dog", "3": "eiffel  tower", "4": "forty two"}
    m = squad_metrics(preds, refs)
    # EM: 1, 0, 1, 0 -> 50 %; F1: 1, 2/3 (P=R=2/3), 1, 0 -> (2 + 2/3) / 4
    assert m["exact_match"] == pytest.approx(50.0)
    assert m["f1"] == pytest.approx(100 * (2 + 2 / 3) / 4)
    assert m["score"] == m["f1"]
    # a missing prediction counts 0; single-string references accepted
    m = squad_metrics({"a": "x"}, {"a": "x", "b": ["y"]})
    assert m["exact_match"] == 50.0 and m["f1"] == 50.0
    with pytest.raises(ValueError, match="unknown ids"):
        squad_metrics({"zzz": "x"}, {"a": ["x"]})
    # the empty string against an article-only reference: both normalise to "" -> EM 1, F1 0
    m = squad_metrics({"a": ""}, {"a": ["the"]})
    assert m["exact_match"] == 100.0 and m["f1"] == 0.0
