"""GLUE data layer: local readers, the paper's split protocol, metrics, errors, Hub path."""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from raft.data import glue
from raft.data.glue import GlueFormatError, load_glue, read_glue_tsv, sample, split_pool_dev
from raft.data.metrics import glue_metrics

# (task, file under glue/, rows) -- the counts of /work/shared/data/README.md
README_ROWS = [
    ("cola", "CoLA/train.tsv", 8551), ("cola", "CoLA/dev.tsv", 1043),
    ("sst2", "SST-2/train.tsv", 67349), ("sst2", "SST-2/dev.tsv", 872),
    ("mrpc", "MRPC/train.tsv", 3668), ("mrpc", "MRPC/dev.tsv", 408),
    ("stsb", "STS-B/train.tsv", 5749), ("stsb", "STS-B/dev.tsv", 1500),
    ("rte", "RTE/train.tsv", 2490), ("rte", "RTE/dev.tsv", 277),
    ("wnli", "WNLI/train.tsv", 635), ("wnli", "WNLI/dev.tsv", 71),
    ("qnli", "QNLI/dev.tsv", 5463), ("qnli", "QNLI/train_subset.tsv", 9999),
    ("mnli", "MNLI/dev_matched.tsv", 9815), ("mnli", "MNLI/dev_mismatched.tsv", 9832),
    ("mnli", "MNLI/train_subset.tsv", 9999),
    ("qqp", "QQP/train_subset.tsv", 9999), ("qqp", "QQP/train_rows.tsv", 23497),
]


@pytest.mark.parametrize("task,rel,rows", README_ROWS, ids=[r[1] for r in README_ROWS])
def test_local_row_counts_match_readme(data_dir, task, rel, rows):
    cols = read_glue_tsv(task, data_dir / "glue" / rel)
    assert len(cols["label"]) == rows
    assert set(cols) == {"text_a", "text_b", "label", "idx"}
    assert all(isinstance(t, str) and t for t in cols["text_a"])
    if task in ("cola", "sst2"):
        assert all(b is None for b in cols["text_b"])
    else:
        assert all(isinstance(b, str) for b in cols["text_b"])


def test_local_quirks(data_dir):
    g = data_dir / "glue"
    # MRPC: BOM + CRLF must not leak into header detection or the last column
    mrpc = read_glue_tsv("mrpc", g / "MRPC/train.tsv")
    assert not any(t.endswith("\r") for t in mrpc["text_b"])
    assert mrpc["label"][:2] == [1, 0] and set(mrpc["label"]) == {0, 1}
    # CoLA: no header, label column 2, sentence column 4
    cola = read_glue_tsv("cola", g / "CoLA/train.tsv")
    assert cola["text_a"][0].startswith("Our friends won't buy this analysis")
    assert cola["label"][0] == 1
    # QQP train_rows: first row has its label glued on with a space
    rows = read_glue_tsv("qqp", g / "QQP/train_rows.tsv")
    assert rows["text_b"][0] == "Which level of prepration is enough for the exam jlpt5?"
    assert rows["label"][0] == 0 and rows["idx"][0] == 133273
    # MNLI: label names -> Hub ids (entailment 0, neutral 1, contradiction 2)
    mnli = read_glue_tsv("mnli", g / "MNLI/dev_matched.tsv")
    assert mnli["label"][:2] == [1, 2]
    # RTE / QNLI names -> Hub ids (entailment 0, not_entailment 1)
    rte = read_glue_tsv("rte", g / "RTE/train.tsv")
    assert rte["label"][:2] == [1, 0]
    stsb = read_glue_tsv("stsb", g / "STS-B/train.tsv")
    assert stsb["label"][:2] == [5.0, 3.8] and stsb["text_a"][0] == "A plane is taking off."


def test_paper_sizes_and_columns(data_dir):
    rte = load_glue("rte", data_dir)
    assert (len(rte.pool), len(rte.dev), len(rte.tests["test"])) == (1867, 623, 277)
    cola = load_glue("cola", data_dir)
    assert (len(cola.pool), len(cola.dev), len(cola.tests["test"])) == (6413, 2138, 1043)
    sst2 = load_glue("sst2", data_dir)
    assert (len(sst2.pool), len(sst2.dev)) == (50511, 16838)
    for task, (pool, dev) in {"mrpc": (2751, 917), "stsb": (4311, 1438)}.items():
        d = load_glue(task, data_dir)
        assert (len(d.pool), len(d.dev)) == (pool, dev)
    assert rte.pool.column_names == ["text_a", "text_b", "label", "idx"]
    assert rte.sources == {"train": "local", "test": "local"} and not rte.partial_data and rte.data_notes == []
    assert rte.label_names == ["entailment", "not_entailment"] and rte.num_labels == 2
    stsb = load_glue("stsb", data_dir)
    assert stsb.is_regression and stsb.num_labels == 1 and isinstance(stsb.pool[0]["label"], float)
    assert stsb.sizes == {"pool": 4311, "dev_part": 1438, "test": {"test": 1500}}


def test_partial_tasks_are_labelled(data_dir):
    mnli = load_glue("mnli", data_dir)
    assert set(mnli.tests) == {"matched", "mismatched"}
    assert (len(mnli.tests["matched"]), len(mnli.tests["mismatched"])) == (9815, 9832)
    assert mnli.sources == {"train": "local-subset", "test": "local"} and mnli.partial_data
    assert (len(mnli.pool), len(mnli.dev)) == (7499, 2500)
    qnli = load_glue("qnli", data_dir)
    assert qnli.partial_data and qnli.sources["train"] == "local-subset" and qnli.data_notes
    qqp = load_glue("qqp", data_dir)
    assert qqp.sources == {"train": "local-subset", "test": "held-out"} and qqp.partial_data
    assert len(qqp.tests["test"]) == 23497 - 627
    assert any("held-out" in n for n in qqp.data_notes)
    # the held-out QQP test shares no question pair with the training subset
    train_pairs = set(zip(qqp.pool["text_a"], qqp.pool["text_b"])) | set(zip(qqp.dev["text_a"], qqp.dev["text_b"]))
    test_pairs = set(zip(qqp.tests["test"]["text_a"], qqp.tests["test"]["text_b"]))
    assert not train_pairs & test_pairs
    meta = qqp.metadata()
    assert meta["sources"]["test"] == "held-out" and meta["partial_data"] is True


def test_split_determinism_and_disjointness(data_dir):
    a = load_glue("rte", data_dir)
    glue.clear_cache()
    b = load_glue("rte", data_dir)
    assert a.pool["idx"] == b.pool["idx"] and a.dev["idx"] == b.dev["idx"]
    pool, dev = set(a.pool["idx"]), set(a.dev["idx"])
    assert not pool & dev and len(pool | dev) == 2490
    # content-level: RTE train and dev (test) share no sentence pair
    train_pairs = set(zip(a.pool["text_a"], a.pool["text_b"])) | set(zip(a.dev["text_a"], a.dev["text_b"]))
    assert not train_pairs & set(zip(a.tests["test"]["text_a"], a.tests["test"]["text_b"]))
    # the definition: default_rng(96).permutation == Dataset.shuffle(seed=96), first int(0.75 n) = pool
    full = glue.load_local_tables("rte", data_dir)["train"]
    shuffled = full.shuffle(seed=96)
    k = int(len(full) * 0.75)
    assert a.pool["idx"] == shuffled.select(range(k))["idx"]
    assert a.dev["idx"] == shuffled.select(range(k, len(full)))["idx"]
    p2, d2 = split_pool_dev(full, seed=97)
    assert p2["idx"] != a.pool["idx"]


def test_sampling(data_dir):
    d = load_glue("rte", data_dir)
    t1, v1 = sample(d, 100, seed=2022)
    t2, v2 = sample(d, 100, seed=2022)
    t3, v3 = sample(d, 100, seed=49)
    assert len(t1) == len(v1) == 100
    assert t1["idx"] == t2["idx"] and v1["idx"] == v2["idx"]
    assert t1["idx"] != t3["idx"] and v1["idx"] != v3["idx"]
    assert set(t1["idx"]) <= set(d.pool["idx"]) and set(v1["idx"]) <= set(d.dev["idx"])
    # the authors' sampler: random.seed(seed); random.sample(range(len(part)), n)
    random.seed(2022)
    expected = random.sample(range(len(d.pool)), 100)
    assert t1["idx"] == d.pool.select(expected)["idx"]
    # any N >= 1; full data; errors
    t, v = sample(d, 1, seed=0)
    assert len(t) == len(v) == 1
    t, v = sample(d, None, seed=0)
    assert (len(t), len(v)) == (1867, 623)
    assert len(sample(d, "full", seed=0)[0]) == 1867
    t, v = sample(d, 624, seed=0)  # N above the dev part: the whole dev part (authors' rule)
    assert len(t) == 624 and v["idx"] == d.dev["idx"]
    with pytest.raises(ValueError, match=r"n=5000 is larger than the rte train pool \(1,867 examples\); use N <= 1,867"):
        sample(d, 5000, seed=0)
    with pytest.raises(ValueError, match=">= 1"):
        sample(d, 0, seed=0)


def test_whole_dev_part_when_n_reaches_it(data_dir):
    d = load_glue("rte", data_dir)
    t, v = sample(d, 1000, seed=2022)
    assert len(t) == 1000 and len(set(t["idx"])) == 1000 and set(t["idx"]) <= set(d.pool["idx"])
    assert t["idx"] == d.pool.select(random.Random(2022).sample(range(1867), 1000))["idx"]
    assert v["idx"] == d.dev["idx"] and len(v) == 623  # the whole dev part, in its order
    t623, v623 = sample(d, 623, seed=2022)  # N == dev part: whole, in order
    assert v623["idx"] == d.dev["idx"] and len(t623) == 623
    t622, v622 = sample(d, 622, seed=2022)  # N < dev part: sampled as before
    assert v622["idx"] == d.dev.select(random.Random(2022).sample(range(623), 622))["idx"] != d.dev["idx"][:622]
    assert sample(d, 1867, seed=1)[1]["idx"] == d.dev["idx"]  # N == pool is allowed
    with pytest.raises(ValueError, match=r"n=1868 is larger than the rte train pool \(1,867 examples\)"):
        sample(d, 1868, seed=1)
    assert [glue.whole_dev_part(623, n) for n in (622, 623, 1000, "full", None)] == [False, True, True, False, False]


def test_check_n():
    glue.check_n(10, 10, "rte")
    with pytest.raises(ValueError) as e:
        glue.check_n(5000, 1867, "rte")
    assert str(e.value) == "n=5000 is larger than the rte train pool (1,867 examples); use N <= 1,867 or 'full'"


def test_split_sizes_match_load_glue(data_dir):
    for task in glue.GLUE_TASKS:
        d = load_glue(task, data_dir)
        sizes = glue.split_sizes(task, data_dir)
        assert sizes == {"pool": len(d.pool), "dev_part": len(d.dev), "source": d.sources["train"]}, task
    assert glue.split_sizes("rte", data_dir) == {"pool": 1867, "dev_part": 623, "source": "local"}
    assert glue.split_sizes("mnli", data_dir)["source"] == "local-subset"


def test_split_sizes_without_datasets_or_hub(data_dir, monkeypatch, tmp_path):
    import subprocess
    import sys

    from raft.data import sources

    def no_hub(*a, **k):
        raise AssertionError("split_sizes must not call the Hub")

    monkeypatch.setattr(sources, "load_hub_dataset", no_hub)
    monkeypatch.delenv("RAFT_DATA_DIR", raising=False)
    for task in glue.GLUE_TASKS:
        n = glue.TASK_INFO[task].full_train_size
        assert glue.split_sizes(task) == {"pool": int(0.75 * n), "dev_part": n - int(0.75 * n), "source": "hub"}
    assert glue.split_sizes("rte") == {"pool": 1867, "dev_part": 623, "source": "hub"}
    (tmp_path / "glue").mkdir()  # a root without the task folder: the Hub's sizes too
    assert glue.split_sizes("cola", tmp_path) == {"pool": 6413, "dev_part": 2138, "source": "hub"}
    code = ("import sys; from raft.data import glue; "
            f"glue.split_sizes('rte', {str(data_dir)!r}); assert 'datasets' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_unknown_task_lists_known_ones(data_dir):
    with pytest.raises(ValueError) as e:
        load_glue("sst-5", data_dir)
    for t in ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"):
        assert t in str(e.value)
    with pytest.raises(ValueError, match="known tasks"):
        glue_metrics("squad", [1], [1])


def test_missing_file_names_path_and_layout(tmp_path):
    d = tmp_path / "glue" / "RTE"
    d.mkdir(parents=True)
    (d / "train.tsv").write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n", encoding="utf-8")
    with pytest.raises(FileNotFoundError) as e:
        load_glue("rte", tmp_path)
    assert str(d / "dev.tsv") in str(e.value) and "RTE/{train,dev}.tsv" in str(e.value)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_glue("rte", tmp_path / "nope")


def test_corrupt_rows_are_errors(tmp_path):
    p = tmp_path / "train.tsv"
    p.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tentailment\n1\tonly two fields\n", encoding="utf-8")
    with pytest.raises(GlueFormatError, match=r"train.tsv:3: corrupt row with 2"):
        read_glue_tsv("rte", p)
    p.write_text("index\tsentence1\tsentence2\tlabel\n0\ta\tb\tmaybe\n", encoding="utf-8")
    with pytest.raises(GlueFormatError, match=r"train.tsv:2: bad rte label 'maybe'"):
        read_glue_tsv("rte", p)
    p.write_text("sentence\tlabel\n", encoding="utf-8")
    with pytest.raises(GlueFormatError, match="no data rows"):
        read_glue_tsv("sst2", p)
    p.write_text("text\tlabel\nfoo\t1\n", encoding="utf-8")
    with pytest.raises(GlueFormatError, match="lacks column"):
        read_glue_tsv("sst2", p)


# ---------------------------------------------------------------------------------------
# Hub path (datasets.load_dataset stubbed)
# ---------------------------------------------------------------------------------------
def _fake_hub(calls):
    from datasets import Dataset, DatasetDict

    def fake_load_dataset(path, name=None, **kwargs):
        calls.append((path, name, kwargs))
        if name == "mnli":
            cols = {"premise": ["p0", "p1", "p2", "p3"], "hypothesis": ["h0", "h1", "h2", "h3"],
                    "label": [0, 1, 2, 0], "idx": [0, 1, 2, 3]}
            return DatasetDict(train=Dataset.from_dict(cols), validation_matched=Dataset.from_dict(cols),
                               validation_mismatched=Dataset.from_dict(cols), test_matched=Dataset.from_dict(cols))
        if name == "sst2":
            cols = {"sentence": [f"s{i}" for i in range(8)], "label": [i % 2 for i in range(8)], "idx": list(range(8))}
            return DatasetDict(train=Dataset.from_dict(cols), validation=Dataset.from_dict(cols))
        cols = {"sentence1": [f"a{i}" for i in range(8)], "sentence2": [f"b{i}" for i in range(8)],
                "label": [i % 2 for i in range(8)], "idx": list(range(8))}
        return DatasetDict(train=Dataset.from_dict(cols), validation=Dataset.from_dict(cols),
                           test=Dataset.from_dict(cols))

    return fake_load_dataset


def test_hub_used_when_no_local_root(monkeypatch):
    import datasets

    calls = []
    monkeypatch.delenv("RAFT_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", _fake_hub(calls))
    d = load_glue("rte")
    assert calls[-1][:2] == ("nyu-mll/glue", "rte")
    assert d.sources == {"train": "hub", "test": "hub"} and not d.partial_data
    assert (len(d.pool), len(d.dev), len(d.tests["test"])) == (6, 2, 8)
    assert d.pool.column_names == ["text_a", "text_b", "label", "idx"]
    m = load_glue("mnli")
    assert calls[-1][:2] == ("nyu-mll/glue", "mnli") and set(m.tests) == {"matched", "mismatched"}
    assert m.pool[0]["text_a"].startswith("p")
    s = load_glue("sst2")
    assert calls[-1][:2] == ("nyu-mll/glue", "sst2") and s.pool[0]["text_b"] is None


def test_hub_used_when_task_missing_locally(monkeypatch, tmp_path):
    import datasets

    calls = []
    (tmp_path / "glue").mkdir()
    monkeypatch.setattr(datasets, "load_dataset", _fake_hub(calls))
    d = load_glue("wnli", tmp_path)
    assert calls == [("nyu-mll/glue", "wnli", {})]
    assert d.sources["train"] == "hub" and any("loaded from the Hub" in n for n in d.data_notes)


def test_hub_failure_is_explained(monkeypatch):
    import datasets

    def boom(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.delenv("RAFT_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", boom)
    from raft.data.sources import DataSourceError

    with pytest.raises(DataSourceError, match="nyu-mll/glue.*no network"):
        load_glue("rte")


# ---------------------------------------------------------------------------------------
# Metrics (hand-computed)
# ---------------------------------------------------------------------------------------
def test_glue_metrics_hand_computed():
    # CoLA: TP=1 FP=1 TN=2 FN=0 -> MCC = (1*2 - 1*0) / sqrt(2*1*3*2)
    m = glue_metrics("cola", [1, 1, 0, 0], [1, 0, 0, 0])
    assert m["matthews_correlation"] == pytest.approx(2 / math.sqrt(12))
    assert m["score"] == m["matthews_correlation"]
    assert glue_metrics("cola", [1, 1, 1, 1], [1, 0, 1, 0])["score"] == 0.0
    # STS-B: pearson = 6.5 / sqrt(5 * 8.75), spearman = 1
    m = glue_metrics("stsb", [1.0, 2.0, 3.0, 4.0], [1.0, 2.0, 3.0, 5.0])
    assert m["pearson"] == pytest.approx(6.5 / math.sqrt(5 * 8.75))
    assert m["spearman"] == pytest.approx(1.0)
    assert m["score"] == pytest.approx((m["pearson"] + 1.0) / 2)
    assert glue_metrics("stsb", np.array([[1.0], [2.0], [3.0]]), [3.0, 2.0, 1.0])["spearman"] == pytest.approx(-1)
    # MRPC: acc 3/4, P 2/3, R 1 -> F1 0.8
    m = glue_metrics("mrpc", [1, 0, 1, 1], [1, 0, 0, 1])
    assert m == pytest.approx({"accuracy": 0.75, "f1": 0.8, "score": 0.775})
    # QQP from logits
    m = glue_metrics("qqp", np.array([[0.1, 0.9], [2.0, 1.0], [0.0, 1.0]]), [1, 0, 0])
    assert m["accuracy"] == pytest.approx(2 / 3) and m["f1"] == pytest.approx(2 / 3)
    # accuracy tasks
    for task in ("sst2", "mnli", "qnli", "rte", "wnli"):
        m = glue_metrics(task, [0, 1, 1, 0, 1], [0, 1, 0, 0, 0])
        assert m == pytest.approx({"accuracy": 0.6, "score": 0.6})
    with pytest.raises(ValueError, match="3 predictions but 2 labels"):
        glue_metrics("rte", [0, 1, 1], [0, 1])


def test_tokenize(data_dir):
    from raft.data.sources import bert_tokenizer_from_vocab

    tok = bert_tokenizer_from_vocab(data_dir / "vocab" / "bert-base-uncased-vocab.txt")
    d = load_glue("rte", data_dir)
    enc = glue.tokenize(d.pool.select(range(4)), tok, max_length=32)
    assert {"input_ids", "attention_mask", "token_type_ids", "label", "idx"} <= set(enc.column_names)
    assert all(len(x) <= 32 and x[0] == tok.cls_token_id for x in enc["input_ids"])
    assert max(enc["token_type_ids"][0]) == 1
