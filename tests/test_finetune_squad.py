"""`raft finetune-squad`: tiny (2 x 64) BERT/RAFT models on a tiny SQuAD v1.1 file, CPU.

The data root is a tmp folder with only ``squad/v1.1/dev-v1.1.json`` (8 synthetic articles),
so the data layer's offline protocol applies: split by article into a held-out test part and
a training side (pool / dev part).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from raft.cli import main as cli
from raft.train import loop, runtime

NAMES = ["anna", "peter", "maria", "john", "paul", "laura", "george", "helen"]
CITIES = ["paris", "london", "berlin", "madrid", "rome", "vienna", "prague", "dublin", "oslo", "athens"]
THINGS = ["music", "history", "physics", "painting", "chess", "poetry", "medicine", "football"]


def _article(a: int) -> dict:
    rng = np.random.default_rng(a)
    sentences, facts = [], []
    for k, name in enumerate(NAMES):
        city, thing, year = CITIES[rng.integers(len(CITIES))], THINGS[rng.integers(len(THINGS))], 1800 + int(rng.integers(200))
        s = f"{name.title()} was born in {city.title()} in {year} and later became famous for {thing}. "
        facts.append((len("".join(sentences)), name, city, thing, year, s))
        sentences.append(s)
    context = "".join(sentences)
    qas = []
    for k, (offset, name, city, thing, year, s) in enumerate(facts):
        if k % 2 == 0:
            q, ans = f"Where was {name.title()} born?", city.title()
        else:
            q, ans = f"What was {name.title()} famous for?", thing
        start = offset + s.index(ans)
        assert context[start:start + len(ans)] == ans
        qas.append({"id": f"a{a}q{k}", "question": q, "answers": [{"text": ans, "answer_start": start}] * 2})
    return {"title": f"Article {a}", "paragraphs": [{"context": context, "qas": qas}]}


@pytest.fixture(scope="module")
def squad_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("squad_root")
    d = root / "squad" / "v1.1"
    d.mkdir(parents=True)
    (d / "dev-v1.1.json").write_text(json.dumps({"version": "1.1", "data": [_article(a) for a in range(8)]}))
    return root


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


FAST = ["--epochs", "3", "--patience", "2", "--max-seq-length", "96", "--doc-stride", "24",
        "--max-query-length", "24", "--eval-batch-size", "64", "--lr", "1e-3", "--num-threads", "1"]


def run_squad(tmp_path, pretrained, root, *, n="8", seed=3, mode="full", extra=(), name="run"):
    out = tmp_path / name / "metrics.json"
    rc = cli(["finetune-squad", "--pretrained", str(pretrained), "--n", str(n), "--seed", str(seed), "--mode", mode,
              "--output", str(out), "--data-dir", str(root), *FAST, *extra])
    assert rc == 0
    return json.loads(out.read_text())


@pytest.mark.parametrize("variant,mode", [("raft", "frozen_rafs"), ("bert", "full")])
def test_squad_end_to_end(tiny_pretrained, squad_root, tmp_path, variant, mode):
    from raft.data import squad
    from raft.data.glue import sample
    from raft.data.metrics import squad_metrics
    from raft.modeling import load_pretrained
    from raft.train.finetune_squad import EvalPart, stack_ragged
    from transformers import AutoTokenizer

    m = run_squad(tmp_path, tiny_pretrained[variant], squad_root, mode=mode,
                  extra=["--save-model", str(tmp_path / "model")])
    for key in ("task", "variant", "n", "seed", "mode", "pretrained", "test", "selection_metric", "best_dev_score",
                "best_epoch", "dev_curve", "sizes", "sources", "partial_data", "data_notes",
                "trainable_parameters", "hyperparameters", "wall_time_s", "device", "rationals"):
        assert key in m
    assert (m["task"], m["variant"], m["n"], m["mode"]) == ("squad", variant, 8, mode)
    assert m["selection_metric"] == "f1"
    t = m["test"]["test"]
    assert set(t) == {"exact_match", "f1", "score"} and t["score"] == t["f1"]
    assert 0 <= t["exact_match"] <= t["f1"] <= 100
    scores = [p["score"] for p in m["dev_curve"]]
    assert m["best_epoch"] == int(np.argmax(scores)) + 1 and m["best_dev_score"] == max(scores)
    assert all(0 <= s <= 100 for s in scores) and all(math.isfinite(p["loss"]) for p in m["dev_curve"])
    s = m["sizes"]
    assert (s["pool"], s["dev_part"], s["train"], s["dev"], s["test"]) == (24, 8, 8, 8, {"test": 32})
    assert m["dev_sampling"] == "whole"  # N=8 == the dev part: kept whole, in order
    assert s["features"]["train"] > 8  # contexts are longer than one 96-token window
    assert m["sources"] == {"train": "local-subset", "test": "held-out"} and m["partial_data"] is True
    assert m["data_notes"] and "article" in m["data_notes"][0]
    assert m["hyperparameters"]["doc_stride"] == 24 and m["hyperparameters"]["max_seq_length"] == 96
    if variant == "raft":
        assert sorted(m["rationals"]) == ["layer.0", "layer.1"]  # no pooler in a QA model
    else:
        assert m["rationals"] == {}

    # the saved model (the restored best epoch) reproduces the best dev F1 and the test metrics
    model = load_pretrained(tmp_path / "model", "question-answering")
    tok = AutoTokenizer.from_pretrained(tmp_path / "model")
    data = squad.load_squad(squad_root)
    kw = {"max_seq_length": 96, "doc_stride": 24, "max_query_length": 24}
    rt = runtime.Runtime.create(torch.device("cpu"), "fp32")
    # predictions.json next to metrics.json: every test question's id -> the predicted text
    written = json.loads((tmp_path / "run" / "predictions.json").read_text())
    assert sorted(written) == sorted(data.tests["test"]["id"]) and all(isinstance(v, str) for v in written.values())
    assert squad_metrics(written, squad.references(data.tests["test"])) == t
    for ds, want in ((sample(data, 8, 3)[1], m["best_dev_score"]), (data.tests["test"], t["f1"])):
        part = EvalPart(ds, tok, **kw)
        out = loop.predict(model, part.encoded, batch_size=64, runtime=rt, outputs=("start_logits", "end_logits"),
                           ragged=("start_logits", "end_logits"), with_loss=False)
        preds = squad.postprocess_predictions(part.examples, part.meta, stack_ragged(out["start_logits"]),
                                              stack_ragged(out["end_logits"]))
        assert squad_metrics(preds, part.references)["f1"] == pytest.approx(want, abs=1e-9)
    assert preds == written  # the saved model's test predictions are the file's


def test_squad_same_seed_same_metrics(tiny_pretrained, squad_root, tmp_path):
    a = run_squad(tmp_path, tiny_pretrained["raft"], squad_root, name="a", extra=["--epochs", "2"])
    b = run_squad(tmp_path, tiny_pretrained["raft"], squad_root, name="b", extra=["--epochs", "2"])
    c = run_squad(tmp_path, tiny_pretrained["raft"], squad_root, seed=4, name="c", extra=["--epochs", "1"])
    assert a["test"] == b["test"] and a["rationals"] == b["rationals"]
    assert [p["score"] for p in a["dev_curve"]] == [p["score"] for p in b["dev_curve"]]
    assert a["train_ids_sha1"] == b["train_ids_sha1"] != c["train_ids_sha1"]
    assert a["rationals"] != c["rationals"]  # mode full trains the RAFs


def test_squad_n_above_the_dev_part(tiny_pretrained, squad_root, tmp_path):
    m = run_squad(tmp_path, tiny_pretrained["bert"], squad_root, n=9, extra=["--epochs", "1"])
    s = m["sizes"]
    assert (s["pool"], s["dev_part"], s["train"], s["dev"]) == (24, 8, 9, 8)
    assert m["dev_sampling"] == "whole" and m["partial_data"] is True  # partial: the offline split
    assert any(note.startswith("N=9 exceeds the dev part (8 examples)") for note in m["data_notes"])
    assert run_squad(tmp_path, tiny_pretrained["bert"], squad_root, n="full", name="full",
                     extra=["--epochs", "1"])["dev_sampling"] == "full"


def _fail(tmp_path, capsys, argv):
    out = tmp_path / "err" / "metrics.json"
    try:
        rc = cli(["finetune-squad", *argv, "--output", str(out)])
    except SystemExit as exc:
        rc = exc.code
    assert rc == 2 and not out.exists()
    return capsys.readouterr().err


def test_squad_errors(tiny_pretrained, squad_root, tmp_path, capsys):
    base = ["--seed", "1", "--data-dir", str(squad_root)]
    err = _fail(tmp_path, capsys, ["--pretrained", str(tmp_path / "missing"), "--n", "8", *base])
    assert "does not exist" in err
    err = _fail(tmp_path, capsys, ["--pretrained", str(tiny_pretrained["bert"]), "--n", "8", "--mode", "frozen_rafs", *base])
    assert "frozen_rafs" in err and "needs a RAFT model" in err
    err = _fail(tmp_path, capsys, ["--pretrained", str(tiny_pretrained["raft"]), "--n", "25", *base])
    assert "--n 25 is larger than the squad train pool (24 examples)" in err  # N above the dev part (8) alone is fine
    err = _fail(tmp_path, capsys, ["--pretrained", str(tiny_pretrained["raft"]), "--n", "8", *base,
                                   "--max-seq-length", "128", "--doc-stride", "128"])
    assert "--doc-stride 128" in err


def test_squad_no_lowercase_keeps_the_case(tiny_pretrained, squad_root, tmp_path):
    """--no-lowercase (the authors' run_squad.py without --do_lower_case): the text is tokenized
    cased against the uncased vocabulary; the record says so and the saved tokenizer keeps it (the
    zero-shot TriviaQA run reads that tokenizer)."""
    from transformers import AutoTokenizer

    m = run_squad(tmp_path, tiny_pretrained["bert"], squad_root, extra=["--epochs", "1", "--no-lowercase",
                                                                         "--save-model", str(tmp_path / "model")])
    assert m["hyperparameters"]["lowercase"] is False
    cased, uncased = (AutoTokenizer.from_pretrained(p) for p in (tmp_path / "model", tiny_pretrained["bert"]))
    assert uncased.tokenize("Where was Anna born?") == ["where", "was", "anna", "born", "?"]
    assert cased.tokenize("Where was Anna born?") != uncased.tokenize("Where was Anna born?")
    assert cased.tokenize("where was anna born?") == uncased.tokenize("where was anna born?")
    default = run_squad(tmp_path, tiny_pretrained["bert"], squad_root, extra=["--epochs", "1"], name="default")
    assert default["hyperparameters"]["lowercase"] is True
