"""`raft zeroshot`: tiny (2 x 64) fine-tuned models -- an MNLI head and a SQuAD head, saved as
``--save-model`` saves them -- scored on the SNLI / TriviaQA fixtures of test_data_zeroshot.py
(official formats) through the command line, in-process, on the CPU; and the zero-shot notebook
run on a synthetic results tree."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_data_zeroshot import hub_rows, write_snli_jsonl, write_triviaqa

from raft.cli import main as cli
from raft.data import triviaqa
from raft.train.runtime import resolve_precision

AUTO = resolve_precision("auto", torch.device("cpu"))  # what the records hold: bf16 where the CPU has it

MNLI_SOURCE = {"task": "mnli", "variant": "bert", "n": "full", "seed": 2022, "mode": "full",
               "sources": {"train": "local-subset", "test": "local"}, "partial_data": True,
               "data_notes": ["MNLI training data: a local sample"],
               "test": {"matched": {"accuracy": 0.4, "score": 0.4}},
               "hyperparameters": {"max_seq_length": 64, "eval_batch_size": 16}}
SQUAD_SOURCE = {"task": "squad", "variant": "raft", "n": "full", "seed": 5309, "mode": "frozen_rafs",
                "sources": {"train": "local", "test": "local"}, "partial_data": False, "data_notes": [],
                "test": {"test": {"exact_match": 10.0, "f1": 20.0, "score": 20.0}},
                "hyperparameters": {"max_seq_length": 64, "doc_stride": 16, "max_query_length": 16,
                                    "max_answer_length": 10, "n_best": 5, "eval_batch_size": 8}}
# MNLI labels in another order than GLUE's: the SNLI classes must be mapped by name
PERMUTED = {0: "contradiction", 1: "entailment", 2: "neutral"}


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def models(tiny_pretrained, tmp_path_factory) -> dict:
    """{"mnli", "mnli_permuted", "squad": model folder, "*_metrics": the fine-tuning record}."""
    from raft.data.tasks import TASK_INFO
    from raft.modeling import load_pretrained
    from raft.train.finetune import save_model
    from raft.train.finetune_setup import load_tokenizer
    from raft.train.finetune_glue import model_overrides

    root = tmp_path_factory.mktemp("finetuned")
    torch.manual_seed(0)
    labels = model_overrides(TASK_INFO["mnli"])
    permuted = {**labels, "id2label": PERMUTED, "label2id": {v: k for k, v in PERMUTED.items()}}
    made = {"mnli": ("bert", "sequence-classification", labels),
            "mnli_permuted": ("bert", "sequence-classification", permuted),
            "squad": ("raft", "question-answering", {"finetuning_task": "squad"})}
    out = {}
    for name, (variant, head, overrides) in made.items():
        save_model(load_pretrained(tiny_pretrained[variant], head, **overrides),
                   load_tokenizer(tiny_pretrained[variant]), root / name)
        out[name] = root / name
    for name, record in (("mnli", MNLI_SOURCE), ("squad", SQUAD_SOURCE)):
        out[f"{name}_metrics"] = root / f"{name}_metrics.json"
        out[f"{name}_metrics"].write_text(json.dumps(record))
    return out


@pytest.fixture(scope="module")
def data_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("zeroshot_data")
    write_snli_jsonl(root / "snli" / "snli_1.0_test.jsonl")
    return write_triviaqa(root)


def zeroshot(tmp_path, model, target, root, *extra, name="run"):
    out = tmp_path / name / "metrics.json"
    rc = cli(["zeroshot", "--model", str(model), "--target", target, "--output", str(out), "--data-dir", str(root),
              "--num-threads", "1", *extra])
    return rc, (json.loads(out.read_text()) if rc == 0 else None)


def test_snli_record(models, data_root, tmp_path):
    rc, m = zeroshot(tmp_path, models["mnli"], "snli", data_root, "--source-metrics", str(models["mnli_metrics"]))
    assert rc == 0
    assert (m["target"], m["source_task"], m["variant"], m["n"], m["seed"], m["mode"]) == (
        "snli", "mnli", "bert", "full", 2022, "full")
    t = m["test"]["test"]
    assert set(t) == {"accuracy", "score"} and t["score"] == t["accuracy"] and 0 <= t["accuracy"] <= 1
    assert m["sizes"] == {"rows": 5, "no_gold_label": 1, "test": {"test": 4}}  # the "-" row is left out
    assert m["sources"] == {"train": "local-subset", "test": "local"} and m["substitute"] is False
    assert m["partial_data"] is True  # the model was fine-tuned on a local subset of MNLI
    assert "fine-tuned model: MNLI training data: a local sample" in m["data_notes"]
    assert m["hyperparameters"] == {"max_seq_length": 64, "eval_batch_size": 16, "precision": AUTO,
                                    "from_source_metrics": ["max_seq_length"]}
    assert 1 <= m["distinct_predictions"]["test"] <= 3
    assert m["constant_predictions"] is (m["distinct_predictions"]["test"] == 1)
    assert m["source_test"] == MNLI_SOURCE["test"] and m["wall_time_s"] > 0 and m["device"].startswith("cpu")


def independent_accuracy(model_dir, root) -> float:
    """Accuracy of the model on the SNLI fixture, pair by pair: predicted label *name* vs gold name."""
    from transformers import AutoTokenizer

    from raft.data import snli
    from raft.modeling import load_pretrained

    model, tok = load_pretrained(model_dir, "sequence-classification").eval(), AutoTokenizer.from_pretrained(model_dir)
    cols, _ = snli.read_snli(root / "snli" / "snli_1.0_test.jsonl")
    hits = []
    with torch.no_grad():
        for a, b, y in zip(cols["text_a"], cols["text_b"], cols["label"]):
            logits = model(**tok(a, b, truncation=True, max_length=128, return_tensors="pt")).logits[0]
            hits.append(model.config.id2label[int(logits.argmax())] == snli.SNLI_LABELS[y])
    return float(np.mean(hits))


def test_snli_labels_go_through_the_models_label_names(models, data_root, tmp_path):
    for name in ("mnli", "mnli_permuted"):
        rc, m = zeroshot(tmp_path, models[name], "snli", data_root, "--seed", "1", name=name)
        assert rc == 0
        assert m["test"]["test"]["accuracy"] == pytest.approx(independent_accuracy(models[name], data_root))
        assert m["hyperparameters"]["max_seq_length"] == 128 and m["sources"] == {"test": "local"}
        assert m["n"] == "full" and m["partial_data"] is False
        assert any("no --source-metrics" in note for note in m["data_notes"])


def test_triviaqa_record(models, data_root, tmp_path):
    rc, m = zeroshot(tmp_path, models["squad"], "triviaqa", data_root, "--source-metrics", str(models["squad_metrics"]),
                     "--eval-batch-size", "4")
    assert rc == 0
    assert (m["target"], m["source_task"], m["variant"], m["seed"], m["mode"]) == (
        "triviaqa", "squad", "raft", 5309, "frozen_rafs")
    assert list(m["test"]) == ["triviaqa", "all_pairs", "has_ans"]  # TriviaQA's own EM/F1 first: the headline
    for t in m["test"].values():
        assert set(t) == {"exact_match", "f1", "score"} and t["score"] == t["f1"]
        assert 0 <= t["exact_match"] <= t["f1"] <= 100 and all(math.isfinite(v) for v in t.values())
    s = m["sizes"]
    assert (s["questions"], s["documents"], s["no_answer"]) == (2, 3, 1)
    assert s["test"] == {"triviaqa": 3, "all_pairs": 3, "has_ans": 2}  # the pair without an alias is predicted too
    assert s["features"]["test"] >= 3
    # predictions.json next to metrics.json: every pair's id -> the predicted text (a span of its context)
    predictions = json.loads((tmp_path / "run" / "predictions.json").read_text())
    data = triviaqa.load_triviaqa(data_root)
    contexts = dict(zip(data.test["id"], data.test["context"]))
    assert set(predictions) == set(contexts) and all(p in contexts[i] for i, p in predictions.items())
    assert triviaqa.score(predictions, data.test) == (m["test"], s["test"])  # the record's numbers are its
    assert m["substitute"] is False and m["sources"] == {"train": "local", "test": "local"} and not m["partial_data"]
    assert m["hyperparameters"] == {"max_seq_length": 64, "doc_stride": 16, "max_query_length": 16,
                                    "max_answer_length": 10, "n_best": 5, "eval_batch_size": 4, "precision": AUTO,
                                    "max_num_tokens": 800, "from_source_metrics": [
                                        "max_seq_length", "doc_stride", "max_query_length", "max_answer_length",
                                        "n_best"]}
    assert any("800 whitespace tokens" in n for n in m["data_notes"])


def test_triviaqa_hub_substitute_and_test_cap(models, tmp_path, monkeypatch):
    import datasets

    monkeypatch.delenv("RAFT_DATA_DIR", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **k: hub_rows())
    out = tmp_path / "metrics.json"
    rc = cli(["zeroshot", "--model", str(models["squad"]), "--target", "triviaqa", "--output", str(out),
              "--source-metrics", str(models["squad_metrics"]), "--max-test-examples", "2", "--num-threads", "1"])
    assert rc == 0
    m = json.loads(out.read_text())
    assert m["substitute"] is True and m["sources"]["test"] == "hub"
    # the first 2 of the 5 pairs as shuffled: tc_2's 9/9_1.txt (no alias in "x"), tc_1's 35/35_996.txt
    assert m["sizes"]["documents"] == 5 and m["sizes"]["test"] == {"triviaqa": 2, "all_pairs": 2, "has_ans": 1}
    assert set(json.loads((tmp_path / "predictions.json").read_text())) == {"tc_2--9/9_1.txt", "tc_1--35/35_996.txt"}
    assert m["partial_data"] is True and any("--max-test-examples" in n for n in m["data_notes"])
    assert any(n.startswith("TriviaQA: SUBSTITUTE") for n in m["data_notes"])


def test_triviaqa_window_override(models, data_root, tmp_path):
    """A window other than the fine-tuning run's only with --override-window (the authors scored
    TriviaQA at 384 whatever the model was fine-tuned with); the record says so."""
    rc, m = zeroshot(tmp_path, models["squad"], "triviaqa", data_root, "--source-metrics", str(models["squad_metrics"]),
                     "--max-seq-length", "128", "--doc-stride", "32", "--override-window", "--eval-batch-size", "4")
    assert rc == 0
    assert m["window_from_source"] is False
    assert "scored with 128-token windows; fine-tuned with 64 (--override-window)" in m["data_notes"]
    assert "scored with doc_stride 32; fine-tuned with 16 (--override-window)" in m["data_notes"]
    hp = m["hyperparameters"]
    assert (hp["max_seq_length"], hp["doc_stride"]) == (128, 32)
    assert hp["from_source_metrics"] == ["max_query_length", "max_answer_length", "n_best"]
    assert m["partial_data"] is False  # the data is whole; the window note is a caveat of its own
    # the opt-in alone (or flags equal to the record's) changes nothing
    rc, m = zeroshot(tmp_path, models["squad"], "triviaqa", data_root, "--source-metrics", str(models["squad_metrics"]),
                     "--max-seq-length", "64", "--override-window", "--max-test-examples", "1", name="same")
    assert rc == 0 and m["window_from_source"] is True and not any("override" in n for n in m["data_notes"])


@pytest.mark.parametrize("extra,expected", [
    (["--max-seq-length", "128"], ("--max-seq-length 128 contradicts the fine-tuning run's max_seq_length 64 "
                                   "(--source-metrics {metrics}); evaluate with the fine-tuning windows or pass "
                                   "--override-window")),
    (["--doc-stride", "8"], "--doc-stride 8 contradicts the fine-tuning run's doc_stride 16"),
    (["--n-best", "3", "--override-window"], "--n-best 3 contradicts the fine-tuning run's n_best 5"),
    (["--max-seq-length", "1024", "--override-window"], ("--max-seq-length 1024 exceeds the pretrained model's "
                                                         "512 position embeddings")),
])
def test_triviaqa_window_refused(models, data_root, tmp_path, capsys, extra, expected):
    rc, _ = zeroshot(tmp_path, models["squad"], "triviaqa", data_root, "--source-metrics", str(models["squad_metrics"]),
                     *extra)
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("raft zeroshot: error: ") and expected.format(metrics=models["squad_metrics"]) in err


@pytest.mark.parametrize("case,expected", [
    ("squad model on snli", "was fine-tuned on 'squad', not 'mnli'"),
    ("stride for snli", "--doc-stride applies to --target triviaqa only"),
    ("override for snli", "--override-window applies to --target triviaqa only"),
    ("window contradicts", "--max-seq-length 32 contradicts the fine-tuning run's max_seq_length 64"),
    ("wrong source", "a 'squad' run; --target snli needs a mnli run"),
    ("no seed", "give --source-metrics"),
    ("zero cap", "--max-test-examples must be >= 1, got 0"),
    ("no data", "cannot load SNLI 1.0 test"),
])
def test_usage_errors(models, data_root, tmp_path, capsys, monkeypatch, case, expected):
    model, target, root, extra = models["mnli"], "snli", data_root, ["--source-metrics", str(models["mnli_metrics"])]
    if case == "squad model on snli":
        model = models["squad"]
    elif case == "stride for snli":
        extra += ["--doc-stride", "16"]
    elif case == "override for snli":
        extra += ["--override-window"]
    elif case == "window contradicts":
        extra += ["--max-seq-length", "32"]
    elif case == "wrong source":
        extra = ["--source-metrics", str(models["squad_metrics"])]
    elif case == "no seed":
        extra = []
    elif case == "zero cap":
        extra += ["--max-test-examples", "0"]
    elif case == "no data":
        monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        root = tmp_path / "empty_root"
        root.mkdir()
    rc, _ = zeroshot(tmp_path, model, target, root, *extra)
    assert rc == 2
    err = capsys.readouterr().err
    assert err.startswith("raft zeroshot: error: ") and expected in err
    if case == "no data":
        assert str(root / "snli") in err  # says which local folder was missing


def test_notebook_runs_on_synthetic_results(tmp_path, monkeypatch, repo_root):
    """The notebook's code cells, executed in order with the parameters set (display captured)."""
    import IPython.display
    import nbformat
    from test_analysis_aggregate import zeroshot_tree

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **k: shown.extend(objs))
    zeroshot_tree(tmp_path / "results")
    nb = nbformat.read(repo_root / "notebooks" / "zeroshot.ipynb", as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert [c.source for c in params] == ['results_dir = "results"\nfigures_dir = "results/figures"']
    assert [c["id"] for c in nb.cells] == [f"cell-{i:03d}" for i in range(len(nb.cells))]
    scope = {}
    monkeypatch.chdir(tmp_path)
    for cell in nb.cells:
        if cell.cell_type == "code":
            exec(compile(cell.source, cell["id"], "exec"), scope)  # noqa: S102 - the notebook's own cells
    html = "".join(o.data for o in shown if isinstance(getattr(o, "data", None), str))
    assert "TriviaQA¶" in html and "SNLI†" in html and "RAFT better" in html
    assert (tmp_path / "results/figures/zeroshot/scores.png").is_file()
