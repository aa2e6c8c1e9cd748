"""`--compile` (settings.Pretrain.compile / Finetune.compile): torch.compile on the CPU.

A tiny model over a few steps: the compiled and the eager run give the same losses (dropout 0:
compiled dropout draws other masks), a compiled and an eager attempt resume each other, and
the files written (checkpoints, model/) are those of the plain model. Compiling on the CPU
takes tens of seconds (less once Inductor's on-disk cache is warm), so one test per command.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from tiny_corpus import _one_thread, make_tiny_corpus  # noqa: F401 (_one_thread: autouse fixture)

from raft.train import finetune, loop, pretrain, runtime
from raft.train.checkpoint import EXIT_PREEMPTED

TINY = ["--num-layers", "1", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64",
        "--dropout", "0", "--max-steps", "4", "--batch-size", "8", "--lr", "2e-3", "--save-steps", "2",
        "--eval-steps", "4", "--logging-steps", "1", "--snapshot-steps", "2", "--seed", "7",
        "--precision", "fp32"]  # close comparisons (auto: bf16 where the CPU has it)


def _pretrain(corpus, out, *extra, on_step=None) -> int:
    parser = argparse.ArgumentParser()
    pretrain.add_arguments(parser)
    args = parser.parse_args(["--corpus", str(corpus), "--output", str(out), "--variant", "raft", *TINY, *extra])
    return pretrain.run(args, on_step=on_step)


def _sigterm_at(step):
    import os
    import signal

    def on_step(s):
        if s == step:
            os.kill(os.getpid(), signal.SIGTERM)
    return on_step


def _losses(out) -> list[float]:
    import csv

    with open(out / "log.csv") as f:
        return [float(r["loss"]) for r in csv.DictReader(f)]


def test_compiled_pretraining_matches_eager_and_they_resume_each_other(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus", seq_len=32, n_train=64, n_validation=16)
    assert _pretrain(corpus, tmp_path / "eager") == 0
    reference = json.loads((tmp_path / "eager" / "metrics.json").read_text())
    weights = load_file(str(tmp_path / "eager" / "model" / "model.safetensors"))
    for first, second in ((["--compile"], []), ([], ["--compile"])):  # compiled -> eager, eager -> compiled
        out = tmp_path / f"first{len(first)}"
        assert _pretrain(corpus, out, *first, on_step=_sigterm_at(2)) == EXIT_PREEMPTED
        assert _pretrain(corpus, out, *second) == 0  # compile is not part of the checkpoint identity
        m = json.loads((out / "metrics.json").read_text())
        assert m["steps"] == 4 and m["resumed_from_steps"] == [2]
        assert m["hyperparameters"]["compile"] is bool(second)
        assert _losses(out) == pytest.approx(_losses(tmp_path / "eager"), rel=1e-4)
        assert m["eval_loss"] == pytest.approx(reference["eval_loss"], rel=1e-4)
        got = load_file(str(out / "model" / "model.safetensors"))
        assert set(got) == set(weights)  # the plain model's names (no "_orig_mod.")
        for k in weights:
            torch.testing.assert_close(got[k], weights[k], rtol=1e-3, atol=1e-4)


# ------------------------------------------------------------------------------ fine-tuning
def _tiny_classifier():
    from raft.modeling import RaftForSequenceClassification, make_config

    torch.manual_seed(0)
    config = make_config("raft", vocab_size=64, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64, hidden_dropout_prob=0.0,
                         attention_probs_dropout_prob=0.0, num_labels=2,
                         problem_type="single_label_classification")  # set: no recompilation when HF sets it
    return RaftForSequenceClassification(config)


def _encoded(n, seed):
    rng = np.random.default_rng(seed)
    ids = [[2, *rng.integers(5, 64, rng.integers(4, 20)).tolist(), 3] for _ in range(n)]
    return loop.Encoded(ids, pad_id=0, labels=np.array([int(sum(x) % 2) for x in ids]))


def _finetune(model, step_model, train, dev, rt):
    def evaluate_dev():
        out = loop.predict(step_model, dev, batch_size=8, runtime=rt)
        return {"score": -out["loss"], "loss": out["loss"]}

    fit, _ = loop.train_with_early_stopping(
        model, train, evaluate_dev, runtime=rt, seed=3, epochs=2, patience=2, batch_size=6, lr=1e-3,
        weight_decay=0.01, rational_lr=1e-3, rational_weight_decay=0.0, step_model=step_model)
    return fit


def test_compiled_finetuning_matches_eager():
    rt = runtime.Runtime.create(torch.device("cpu"), "fp32")
    train, dev = _encoded(20, 0), _encoded(10, 1)  # ragged lengths, a short last batch
    eager = _tiny_classifier()
    ref = _finetune(eager, eager, train, dev, rt)
    model = _tiny_classifier()
    got = _finetune(model, finetune.compile_model(model), train, dev, rt)
    assert [p["loss"] for p in got.curve] == pytest.approx([p["loss"] for p in ref.curve], rel=1e-4)
    assert [p["dev_loss"] for p in got.curve] == pytest.approx([p["dev_loss"] for p in ref.curve], rel=1e-4)
    assert got.best_epoch == ref.best_epoch
    for (name, p), q in zip(model.state_dict().items(), eager.state_dict().values()):  # the plain model trained
        torch.testing.assert_close(p, q, rtol=1e-3, atol=1e-4, msg=name)


def test_finetune_compile_flag_runs_steps_through_the_compiled_model(tiny_pretrained, data_dir, tmp_path, monkeypatch):
    """The wiring, without compiling: --compile -> `compile_model`; training and evaluation call
    its result, saving and the record use the plain model."""
    from raft.cli import main as cli

    calls = {"train": 0, "eval": 0}

    class Recorder(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, **batch):
            calls["train" if self.training else "eval"] += 1
            return self.model(**batch)

    monkeypatch.setattr(finetune, "compile_model", Recorder)
    out = tmp_path / "run" / "metrics.json"
    argv = ["finetune-glue", "--pretrained", str(tiny_pretrained["raft"]), "--task", "rte", "--n", "16",
            "--seed", "1", "--output", str(out), "--data-dir", str(data_dir), "--epochs", "1",
            "--max-test-examples", "8", "--num-threads", "1", "--save-model", str(tmp_path / "model"), "--compile"]
    assert cli(argv) == 0
    m = json.loads(out.read_text())
    assert m["hyperparameters"]["compile"] is True and m["rationals"]
    assert calls["train"] >= 1 and calls["eval"] >= 2  # dev and test
    assert not any(k.startswith("model.") for k in load_file(str(tmp_path / "model" / "model.safetensors")))
