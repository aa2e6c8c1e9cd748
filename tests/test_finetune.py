"""`raft finetune-glue` and the shared loop: tiny (2 x 64) BERT/RAFT models on RTE and STS-B, CPU.

End-to-end runs go through `raft.cli.main` in-process; every run keeps the test sets small
(`--max-test-examples`) and the epochs few.
"""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from raft import settings
from raft.cli import main as cli
from raft.data import glue, split
from raft.modes import default_bias_budget
from raft.train import finetune, loop, runtime
from raft.train.finetune_glue import encode, model_overrides

CONTRACT_KEYS = {
    "task", "variant", "n", "seed", "mode", "pretrained", "test", "selection_metric", "best_dev_score",
    "best_epoch", "dev_curve", "sizes", "dev_sampling", "sources", "partial_data", "data_notes", "trainable_parameters",
    "hyperparameters", "wall_time_s", "device", "rationals",
}
FAST = ["--epochs", "3", "--patience", "2", "--max-test-examples", "48", "--eval-batch-size", "64",
        "--lr", "1e-3", "--num-threads", "1"]


@pytest.fixture(autouse=True)
def _keep_threads():
    n = torch.get_num_threads()  # the runs set 1 thread (robust on shared cores); restore it
    yield
    torch.set_num_threads(n)


def run_glue(tmp_path, pretrained, data_dir, *, task="rte", n="32", seed=7, mode="full", extra=(), name="run"):
    out = tmp_path / name / "metrics.json"
    argv = ["finetune-glue", "--pretrained", str(pretrained), "--task", task, "--n", str(n), "--seed", str(seed),
            "--mode", mode, "--output", str(out), "--data-dir", str(data_dir), *FAST, *extra]
    rc = cli(argv)
    assert rc == 0
    return json.loads(out.read_text()), out


def evaluate_saved(model_dir, data_dir, task, part, seed, n, max_test=48):
    """Score a `--save-model` directory on the run's dev sample or test set, independently of the run."""
    from raft.modeling import load_pretrained
    from transformers import AutoTokenizer

    info = glue.task_info(task)
    model = load_pretrained(model_dir, "sequence-classification")
    tok = AutoTokenizer.from_pretrained(model_dir)
    data = glue.load_glue(task, data_dir)
    if part == "dev":
        ds = glue.sample(data, n, seed)[1]
    else:
        ds = data.tests[part].select(range(min(max_test, len(data.tests[part]))))
    enc = encode(ds, tok, 128, info.is_regression)
    rt = runtime.Runtime.create(torch.device("cpu"), "auto")  # as the run resolved it
    out = loop.predict(model, enc, batch_size=64, runtime=rt)
    metrics = data.metrics(out["logits"], enc.targets["labels"])
    if part != "dev" and not info.is_regression:  # as the run records it: labels its predictions used
        metrics = {**metrics, "_distinct": len(np.unique(out["logits"].argmax(-1)))}
    return metrics, out["loss"]


@pytest.fixture(scope="module")
def rte_raft(tiny_pretrained, data_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rte_raft")
    metrics, out = run_glue(tmp, tiny_pretrained["raft"], data_dir, extra=["--save-model", str(tmp / "model")])
    return metrics, tmp / "model"


# ---------------------------------------------------------------------------------------
# end-to-end: contract, ranges, selection, restore
# ---------------------------------------------------------------------------------------
def _check_contract(m, task, variant, n, mode="full"):
    assert CONTRACT_KEYS <= set(m)
    assert (m["task"], m["variant"], m["n"], m["mode"]) == (task, variant, n, mode)
    assert m["selection_metric"] == glue.SELECTION_METRIC[task]
    eval_sets = ["matched", "mismatched"] if task == "mnli" else ["test"]
    assert sorted(m["test"]) == sorted(eval_sets)
    for metrics in m["test"].values():
        assert "score" in metrics and all(isinstance(v, float) for v in metrics.values())
        assert set(metrics) == set(glue.GLUE_METRIC_NAMES[task]) | {"score"}
        for v in metrics.values():
            assert -1.0 <= v <= 1.0
    # labels used by each test set's predictions, and the constant-classifier flag (null: regression)
    if glue.task_info(task).is_regression:
        assert m["distinct_predictions"] is None and m["constant_predictions"] is None
    else:
        counts = m["distinct_predictions"]
        assert sorted(counts) == sorted(eval_sets)
        assert all(type(k) is int and 1 <= k <= len(glue.task_info(task).label_names) for k in counts.values())
        assert m["constant_predictions"] is any(k == 1 for k in counts.values())
    keys = list(m)
    assert keys.index("dev_ids_sha1") < keys.index("distinct_predictions") < keys.index("constant_predictions")
    # selection: best epoch = argmax of the dev curve (first on ties), its score reported
    scores = [p["score"] for p in m["dev_curve"]]
    assert [p["epoch"] for p in m["dev_curve"]] == list(range(1, len(scores) + 1))
    assert m["best_epoch"] == int(np.argmax(scores)) + 1
    assert m["best_dev_score"] == max(scores)
    assert all(math.isfinite(p["loss"]) and p["loss"] >= 0 for p in m["dev_curve"])
    assert 1 <= len(scores) <= m["hyperparameters"]["epochs"]
    s = m["sizes"]
    assert s["train"] == s["dev"] == n
    assert m["dev_sampling"] == "sampled" and list(m).index("dev_sampling") == list(m).index("sizes") + 1
    assert s["pool"] > s["dev_part"] > 0 and s["pool"] + s["dev_part"] > 0
    assert all(0 < v <= 48 for v in s["test"].values())
    assert m["sources"] == {"train": "local", "test": "local"}
    assert m["partial_data"] is True  # the test sets were capped, and the note says so
    assert any("--max-test-examples" in note for note in m["data_notes"])
    assert m["trainable_parameters"] > 0 and m["wall_time_s"] > 0 and m["device"].startswith("cpu")
    hp = m["hyperparameters"]
    assert hp["max_seq_length"] == 128 and hp["batch_size"] == 32 and hp["warmup_steps"] == 0
    assert hp["weight_decay"] == 0.1 and hp["rational_lr"] == 1e-3 and hp["adam_eps"] == 1e-6
    assert len(m["train_ids_sha1"]) == 40


def test_rte_raft_end_to_end_restores_best_epoch(rte_raft, tiny_pretrained, data_dir):
    m, model_dir = rte_raft
    _check_contract(m, "rte", "raft", 32)
    # RAF coefficients after fine-tuning: 2 layers + pooler, (5, 4) each
    assert sorted(m["rationals"]) == ["layer.0", "layer.1", "pooler"]
    assert all(len(c["numerator"]) == 6 and len(c["denominator"]) == 4 for c in m["rationals"].values())
    # the saved model is the restored best epoch: it reproduces that epoch's dev score and dev loss
    # (the loss differs from epoch to epoch), and the reported test metrics
    dev, dev_loss = evaluate_saved(model_dir, data_dir, "rte", "dev", 7, 32)
    best = m["dev_curve"][m["best_epoch"] - 1]
    assert dev["score"] == pytest.approx(m["best_dev_score"], abs=1e-12)
    assert dev_loss == pytest.approx(best["dev_loss"], rel=1e-6)
    assert m["epochs_run"] > m["best_epoch"]  # so the restore really went back
    assert dev_loss != pytest.approx(m["dev_curve"][-1]["dev_loss"], rel=1e-6)
    test, _ = evaluate_saved(model_dir, data_dir, "rte", "test", 7, 32)
    assert m["distinct_predictions"] == {"test": test.pop("_distinct")}
    assert test == pytest.approx(m["test"]["test"], abs=1e-12)


def _constant_head(monkeypatch, label: int):
    """Every fine-tuning run loads its model with zero classifier weights and a bias for
    ``label``: the same logits for every input (with --lr 0 the head stays so)."""
    load = finetune.load_model

    def load_model(*args, **kwargs):
        model = load(*args, **kwargs)
        with torch.no_grad():
            model.classifier.weight.zero_()
            model.classifier.bias.zero_()
            model.classifier.bias[label] = 3.0
        return model

    monkeypatch.setattr(finetune, "load_model", load_model)


FROZEN = ["--epochs", "1", "--lr", "0", "--rational-lr", "0", "--max-seq-length", "64"]


def test_constant_classifier_is_flagged(tiny_pretrained, data_dir, tmp_path, monkeypatch):
    """A model that gives every example the same label (zero classifier weights, a bias for
    class 1, nothing trained): one distinct prediction, constant_predictions true, accuracy =
    that class's share of the test set; the tables carry the flag."""
    from raft.analysis import aggregate as agg

    _constant_head(monkeypatch, 1)
    m, _ = run_glue(tmp_path, tiny_pretrained["bert"], data_dir, n=16, seed=1, extra=FROZEN,
                    name="results/glue/rte/bert/n16/seed1")
    assert m["distinct_predictions"] == {"test": 1} and m["constant_predictions"] is True
    labels = np.asarray(glue.load_glue("rte", data_dir).tests["test"]["label"][:48])
    acc = m["test"]["test"]["accuracy"]
    assert acc == pytest.approx(float(np.mean(labels == 1)))  # the class balance, not the model
    runs = agg.load_runs(tmp_path / "results", "glue")
    assert runs["constant_predictions"].tolist() == [True]
    long = agg.long_table(runs)
    assert list(long.columns) == agg.LONG_COLUMNS + ["constant_predictions"]
    assert set(long["metric"]) == {"acc", "score"}  # the counts are no metric rows


def test_varying_classifier_is_not_flagged(tiny_pretrained, data_dir, tmp_path, monkeypatch):
    """The same frozen run with the head's threshold at the median of its margin on the capped
    test set (an untrained tiny model's pooled outputs barely differ between inputs, so a
    random head gives one label): the predictions use both RTE labels."""
    from transformers import AutoTokenizer

    load = finetune.load_model

    def load_model(path, head, **kwargs):
        model = load(path, head, **kwargs)
        tok = AutoTokenizer.from_pretrained(path)
        ds = glue.load_glue("rte", data_dir).tests["test"].select(range(48))
        pooled = []
        hook = model.bert.pooler.register_forward_hook(lambda mod, i, o: pooled.append(o.detach()))
        loop.predict(model, encode(ds, tok, 64, False), batch_size=64,
                     runtime=runtime.Runtime.create(torch.device("cpu"), "fp32"), with_loss=False)
        hook.remove()
        w = model.classifier.weight.detach()
        margin = torch.cat(pooled) @ (w[0] - w[1])  # logit 0 - logit 1 without the bias
        with torch.no_grad():
            model.classifier.bias.copy_(torch.stack([-margin.median(), torch.tensor(0.0)]))
        return model

    monkeypatch.setattr(finetune, "load_model", load_model)
    m, _ = run_glue(tmp_path, tiny_pretrained["bert"], data_dir, n=16, seed=1, extra=FROZEN)
    assert m["distinct_predictions"] == {"test": 2} and m["constant_predictions"] is False


def test_distinct_predictions_helper():
    from raft.data.metrics import distinct_predictions
    from raft.train.finetune_glue import constant_predictions

    assert distinct_predictions("rte", np.array([[0.1, 0.9], [0.2, 0.8]])) == 1
    assert distinct_predictions("mnli", np.array([0, 2, 2, 1])) == 3
    assert distinct_predictions("stsb", np.array([0.5, 0.5])) is None
    assert constant_predictions({"matched": 3, "mismatched": 1}) is True
    assert constant_predictions({"test": 2}) is False
    assert constant_predictions({"test": None}) is None and constant_predictions({}) is None


def test_rte_bert_end_to_end(tiny_pretrained, data_dir, tmp_path):
    m, _ = run_glue(tmp_path, tiny_pretrained["bert"], data_dir, seed=3)
    _check_contract(m, "rte", "bert", 32)
    assert m["rationals"] == {}


@pytest.mark.parametrize("variant", ["raft", "bert"])
def test_stsb_regression_end_to_end(tiny_pretrained, data_dir, tmp_path, variant):
    m, _ = run_glue(tmp_path, tiny_pretrained[variant], data_dir, task="stsb", n=32, seed=11)
    _check_contract(m, "stsb", variant, 32)
    t = m["test"]["test"]
    assert t["score"] == pytest.approx((t["pearson"] + t["spearman"]) / 2)
    assert m["dev_curve"][0]["dev_loss"] > 0  # MSE on the dev sample


# ---------------------------------------------------------------------------------------
# determinism
# ---------------------------------------------------------------------------------------
def _stable(m):
    drop = {"wall_time_s", "timings_s", "record_sha1"}  # the checksum covers the timings
    out = {k: v for k, v in m.items() if k not in drop}
    out["dev_curve"] = [{k: v for k, v in p.items() if k != "time_s"} for p in m["dev_curve"]]
    return out


def test_same_seed_same_metrics_other_seed_other_subset(rte_raft, tiny_pretrained, data_dir, tmp_path):
    first, _ = rte_raft
    again, _ = run_glue(tmp_path, tiny_pretrained["raft"], data_dir, name="again")
    assert _stable(again) == _stable(first)
    other, _ = run_glue(tmp_path, tiny_pretrained["raft"], data_dir, seed=8, name="other",
                        extra=["--epochs", "1"])
    assert other["train_ids_sha1"] != first["train_ids_sha1"]
    assert other["dev_ids_sha1"] != first["dev_ids_sha1"]


# ---------------------------------------------------------------------------------------
# modes: exactly the intended parameters train
# ---------------------------------------------------------------------------------------
def _initial_model(pretrained, seed, task="rte"):
    runtime.seed_everything(seed)
    return finetune.load_model(pretrained, "sequence-classification", **model_overrides(glue.task_info(task)))


@pytest.mark.parametrize("variant,mode", [("raft", "frozen_rafs"), ("raft", "raf_head"), ("bert", "bias_head"),
                                          ("bert", "full")])
def test_mode_trains_exactly_the_intended_parameters(tiny_pretrained, data_dir, tmp_path, variant, mode):
    from raft.modeling import load_pretrained
    from raft.rational import Rational

    seed = 5
    m, _ = run_glue(tmp_path, tiny_pretrained[variant], data_dir, seed=seed, mode=mode,
                    extra=["--epochs", "2", "--save-model", str(tmp_path / "model")])
    before = _initial_model(tiny_pretrained[variant], seed)
    after = load_pretrained(tmp_path / "model", "sequence-classification")
    p0, p1 = dict(before.named_parameters()), dict(after.named_parameters())
    assert p0.keys() == p1.keys()
    raf_names = {f"{name}.{c}" for name, mod in before.named_modules() if isinstance(mod, Rational)
                 for c in ("numerator", "denominator")}
    assert raf_names <= p0.keys() and len(raf_names) == (6 if variant == "raft" else 0)
    head = {n for n in p0 if not n.startswith("bert.")}
    changed = {n for n in p0 if not torch.equal(p0[n], p1[n])}
    total = sum(p.numel() for p in p0.values())
    rafs = sum(p0[n].numel() for n in raf_names)
    n_head = sum(p0[n].numel() for n in head)
    assert head and head <= changed  # the classifier always trains
    if mode == "full":
        assert m["trainable_parameters"] == total
    elif mode == "frozen_rafs":
        assert m["trainable_parameters"] == total - rafs
        assert not changed & raf_names  # RAFs bit-identical
        assert len(changed) > len(head)  # the encoder trained
    elif mode == "raf_head":
        assert m["trainable_parameters"] == rafs + n_head == 3 * 10 + n_head
        assert changed <= raf_names | head and changed & raf_names
    elif mode == "bias_head":
        budget = default_bias_budget(after.config)
        assert budget == 3 * 10  # = the RAF scalars of the RAFT counterpart (2 layers + pooler)
        assert m["trainable_parameters"] == budget + n_head  # the summary's count
        assert all(n.endswith("bias") for n in changed - head)
        moved = sum(int((p0[n] != p1[n]).sum()) for n in changed - head)
        assert 0 < moved <= budget  # only the chosen entries moved; the rest of each bias tensor is bit-identical


def test_raf_head_and_bias_head_have_equal_budgets(tiny_pretrained):
    from raft.modes import apply_mode

    raf = apply_mode(_initial_model(tiny_pretrained["raft"], 1), "raf_head", seed=1)
    bias = apply_mode(_initial_model(tiny_pretrained["bert"], 1), "bias_head", seed=1)
    assert raf["head_parameters"] == bias["head_parameters"]
    assert raf["trainable_parameters"] == bias["trainable_parameters"]


# ---------------------------------------------------------------------------------------
# errors before any training: exit code 2, a message naming the value, no output
# ---------------------------------------------------------------------------------------
def _fail(tmp_path, capsys, argv):
    out = tmp_path / "err" / "metrics.json"
    try:
        rc = cli(["finetune-glue", *argv, "--output", str(out)])
    except SystemExit as exc:  # argparse errors
        rc = exc.code
    assert rc == 2
    assert not out.exists()
    return capsys.readouterr().err


def test_errors(tiny_pretrained, data_dir, tmp_path, capsys):
    base = ["--n", "32", "--seed", "1", "--data-dir", str(data_dir)]
    err = _fail(tmp_path, capsys, ["--pretrained", str(tmp_path / "nope"), "--task", "rte", *base])
    assert "error: --pretrained" in err and "does not exist" in err and "nope" in err
    # a directory of the wrong kind: a stock BERT config
    from transformers import BertConfig

    wrong = tmp_path / "stock"
    BertConfig(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64).save_pretrained(wrong)
    err = _fail(tmp_path, capsys, ["--pretrained", str(wrong), "--task", "rte", *base])
    assert "not a raft model" in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no config.json" in _fail(tmp_path, capsys, ["--pretrained", str(empty), "--task", "rte", *base])
    # task / mode mismatches
    err = _fail(tmp_path, capsys, ["--pretrained", str(tiny_pretrained["bert"]), "--task", "rte", "--mode", "raf_head", *base])
    assert "raf_head" in err and "needs a RAFT model" in err
    err = _fail(tmp_path, capsys, ["--pretrained", str(tiny_pretrained["raft"]), "--task", "rte", "--mode", "bias_head", *base])
    assert "bias_head" in err and "'bert' model" in err
    err = _fail(tmp_path, capsys, ["--pretrained", str(tiny_pretrained["bert"]), "--task", "rtee", *base])
    assert "rtee" in err and all(t in err for t in glue.GLUE_TASKS)
    # N larger than the pool (N above the dev part alone is fine: the whole dev part is used)
    err = _fail(tmp_path, capsys, ["--pretrained", str(tiny_pretrained["bert"]), "--task", "rte", "--n", "5000",
                                   "--seed", "1", "--data-dir", str(data_dir)])
    assert "--n 5000 is larger than the rte train pool (1,867 examples)" in err
    err = _fail(tmp_path, capsys, ["--pretrained", str(tiny_pretrained["bert"]), "--task", "rte", "--n", "zero",
                                   "--seed", "1"])
    assert "'zero'" in err
    err = _fail(tmp_path, capsys, ["--pretrained", str(tiny_pretrained["bert"]), "--task", "rte", *base,
                                   "--precision", "fp16", "--device", "cpu"])
    assert "fp16" in err


def test_n_above_the_dev_part_uses_the_whole_dev_part(tiny_pretrained, data_dir, tmp_path):
    fast = ["--epochs", "1", "--max-test-examples", "16", "--max-seq-length", "64"]
    m, _ = run_glue(tmp_path, tiny_pretrained["bert"], data_dir, n=1000, seed=2, extra=fast, name="whole")
    s = m["sizes"]
    assert (s["pool"], s["dev_part"], s["train"], s["dev"]) == (1867, 623, 1000, 623)
    assert m["dev_sampling"] == "whole"
    note = ("N=1000 exceeds the dev part (623 examples): the whole dev part is used for early stopping and "
            "model selection (the authors' rule in run_glue.py)")
    assert note in m["data_notes"]
    assert m["dev_ids_sha1"] == finetune.ids_sha1(glue.load_glue("rte", data_dir).dev["idx"])
    m, _ = run_glue(tmp_path, tiny_pretrained["bert"], data_dir, n=100, seed=2, extra=fast, name="sampled")
    assert m["dev_sampling"] == "sampled" and m["sizes"]["dev"] == 100
    assert not any("dev part (" in note for note in m["data_notes"])


def _parse(module, *argv):
    import argparse

    parser = argparse.ArgumentParser()
    module.add_arguments(parser)
    return parser.parse_args(["--pretrained", "m", "--seed", "1", "--output", "o", *argv])


def test_defaults_come_from_the_dataclasses_whatever_n():
    """No per-N schedule: --epochs / --patience (and every other hyperparameter) default to the
    settings dataclass, for an integer N and for full data alike (the workflow passes them)."""
    from raft.train import finetune_glue, finetune_squad

    for module, cls, extra in ((finetune_glue, settings.Finetune, ["--task", "rte"]),
                               (finetune_squad, settings.SquadFinetune, [])):
        for n in ("100", "full"):
            assert settings.from_args(cls, _parse(module, "--n", n, *extra)) == cls()
    assert settings.Finetune().eval_batch_size == 128 and settings.Finetune().precision is None
    args = _parse(finetune_glue, "--n", "full", "--task", "rte", "--epochs", "4", "--precision", "bf16")
    assert settings.from_args(settings.Finetune, args) == settings.Finetune(epochs=4, precision="bf16")
    assert split.n_arg("full") == "full" and split.n_arg("100") == 100


# ---------------------------------------------------------------------------------------
# settings -> flags -> hyperparameters
# ---------------------------------------------------------------------------------------
DERIVED = {"schedule", "warmup_steps", "total_steps", "split_seed", "pool_fraction"}


def test_hyperparameters_hold_every_setting(rte_raft):
    m, _ = rte_raft
    hp = m["hyperparameters"]
    fields = {f.name for f in dataclasses.fields(settings.Finetune)}
    assert set(hp) == fields | DERIVED
    want = settings.as_record(settings.Finetune(epochs=3, patience=2, max_test_examples=48, eval_batch_size=64,
                                                lr=1e-3))
    assert {k: hp[k] for k in fields - {"precision"}} == {k: v for k, v in want.items() if k != "precision"}
    assert hp["precision"] == runtime.resolve_precision("auto", torch.device("cpu"))  # resolved (None: auto)
    assert (hp["schedule"], hp["split_seed"], hp["pool_fraction"]) == ("linear", 96, 0.75)
    assert (hp["total_steps"], hp["warmup_steps"]) == (3, 0)  # 32 examples, batch 32: a step per epoch


def test_a_new_setting_becomes_a_flag_and_a_hyperparameter(tiny_pretrained, data_dir, tmp_path, monkeypatch):
    """Adding a field to `settings.Finetune` is all it takes: no change to the command."""
    import argparse

    from raft.train import finetune_glue

    extended = dataclasses.make_dataclass(
        "Extended", [("label_smoothing", float, settings.setting(0.0, "label smoothing"))],
        bases=(settings.Finetune,), frozen=True)
    monkeypatch.setattr(finetune_glue, "SETTINGS", extended)
    parser = argparse.ArgumentParser()
    finetune_glue.add_arguments(parser)
    assert "--label-smoothing" in parser.format_help()
    m, _ = run_glue(tmp_path, tiny_pretrained["bert"], data_dir, n=16, seed=1,
                    extra=["--epochs", "1", "--max-seq-length", "64", "--label-smoothing", "0.25"])
    hp = m["hyperparameters"]
    assert hp["label_smoothing"] == 0.25
    assert set(hp) == {f.name for f in dataclasses.fields(extended)} | DERIVED


# ---------------------------------------------------------------------------------------
# the loop on its own
# ---------------------------------------------------------------------------------------
class _Scripted:
    """A one-parameter 'model' whose dev score follows a script; training adds 1 to the weight."""

    def __init__(self, scores):
        self.model = torch.nn.Linear(1, 1, bias=False)
        torch.nn.init.zeros_(self.model.weight)
        self.scores = list(scores)
        self.weights_seen = []

    def train_epoch(self, epoch):
        with torch.no_grad():
            self.model.weight.add_(1.0)
        return 1.0 / epoch

    def evaluate(self):
        self.weights_seen.append(float(self.model.weight.detach()))
        return {"score": self.scores.pop(0), "loss": 0.5}


@pytest.mark.parametrize("scores,patience,best,run", [
    ([0.1, 0.5, 0.3, 0.2, 0.9], 2, 2, 4),      # stops after 2 epochs without improvement
    ([0.1, 0.5, 0.5, 0.6, 0.2], 3, 4, 5),      # ties do not count as improvement; runs to the end
    ([0.3, 0.3, 0.3, 0.3, 0.3], 5, 1, 5),       # first of equal scores
])
def test_fit_early_stopping_and_restore(scores, patience, best, run):
    s = _Scripted(scores)
    r = loop.fit(s.model, epochs=5, patience=patience, train_one_epoch=s.train_epoch, evaluate_dev=s.evaluate)
    assert (r.best_epoch, r.epochs_run) == (best, run)
    assert r.best_score == max(p["score"] for p in r.curve)
    assert float(s.model.weight.detach()) == s.weights_seen[best - 1] == best  # the best epoch's weights are back


def test_predict_is_order_preserving_and_padding_free():
    torch.manual_seed(0)
    emb = torch.nn.Embedding(50, 4)

    class Tiny(torch.nn.Module):
        def forward(self, input_ids, attention_mask, **_):
            x = emb(input_ids) * attention_mask.unsqueeze(-1)
            return {"logits": x.sum(1), "loss": None}

    rng = np.random.default_rng(0)
    ids = [rng.integers(1, 50, size=int(k)).tolist() for k in rng.integers(1, 20, size=37)]
    data = loop.Encoded(ids)
    rt = runtime.Runtime.create(torch.device("cpu"), "fp32")
    got = loop.predict(Tiny(), data, batch_size=8, runtime=rt)["logits"]
    want = np.stack([emb(torch.tensor(x)).sum(0).detach().numpy() for x in ids])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    batches = loop.length_sorted_batches(data.lengths, 8)
    assert all(np.all(np.diff(data.lengths[np.concatenate(batches)]) <= 0) for _ in [0])


def test_write_json_atomic(tmp_path):
    p = tmp_path / "a" / "b" / "metrics.json"
    runtime.write_json_atomic(p, {"x": np.float32(0.5), "n": np.int64(3), "t": torch.tensor([1, 2])})
    assert json.loads(p.read_text()) == {"x": 0.5, "n": 3, "t": [1, 2]}
    assert [f.name for f in p.parent.iterdir()] == ["metrics.json"]  # no temp file left
