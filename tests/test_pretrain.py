"""`raft pretrain` end to end on a tiny corpus: outputs, perplexity, RAFs, determinism, resume."""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from raft.modeling import load_pretrained, rational_modules
from raft.train import pretrain
from raft.train.checkpoint import EXIT_PREEMPTED, list_checkpoints
from raft.train.mlm import IGNORE_INDEX, mask_eval_set
from tiny_corpus import _one_thread, make_tiny_corpus  # noqa: F401 (_one_thread: autouse fixture)

REPO = Path(__file__).resolve().parents[1]
TIME_KEYS = {"wall_time_s", "train_time_s", "tokens_per_s"}
TINY = ["--num-layers", "2", "--hidden-size", "64", "--num-heads", "2", "--intermediate-size", "128",
        "--max-steps", "8", "--batch-size", "16", "--per-device-batch-size", "8", "--lr", "2e-3",
        "--save-steps", "2", "--eval-steps", "4", "--logging-steps", "2", "--snapshot-steps", "4",
        "--keep-checkpoints", "2", "--seed", "7", "--precision", "fp32"]  # exact references (auto: bf16 where native)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus") / "c", seq_len=32, n_train=160, n_validation=40)


def _args(corpus, out, variant="raft", *extra):
    parser = argparse.ArgumentParser()
    pretrain.add_arguments(parser)
    return parser.parse_args(["--corpus", str(corpus), "--output", str(out), "--variant", variant, *TINY, *extra])


def _sigterm_at(step):
    """on_step callback: SIGTERM to this process after optimiser step `step`."""
    def on_step(s):
        if s == step:
            os.kill(os.getpid(), signal.SIGTERM)
    return on_step


def _metrics(out):
    return json.loads((Path(out) / "metrics.json").read_text())


def _weights(out):
    return load_file(str(Path(out) / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(corpus, tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    out = {}
    for variant in ("bert", "raft"):
        assert pretrain.run(_args(corpus, root / variant, variant)) == 0
        out[variant] = root / variant
    return out


@pytest.mark.parametrize("variant", ["bert", "raft"])
def test_outputs_follow_the_contract(runs, variant):
    out = runs[variant]
    m = _metrics(out)
    assert {"variant", "seed", "steps", "tokens_seen", "eval_loss", "perplexity", "wall_time_s", "tokens_per_s",
            "device", "model", "rational", "data", "hyperparameters"} <= set(m)
    assert m["variant"] == variant and m["steps"] == 8 and m["seed"] == 7
    assert m["tokens_seen"] == 8 * 16 * 32
    assert m["data"]["source"] == "synthetic" and m["data"]["train_sequences"] == 160
    assert m["data"]["validation_sequences"] == 40
    assert m["hyperparameters"]["gradient_accumulation_steps"] == 2
    assert m["perplexity"] == pytest.approx(math.exp(m["eval_loss"]))
    with open(out / "log.csv") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["step", "tokens", "loss", "lr", "val_loss", "val_perplexity"]
    assert [int(r["step"]) for r in rows] == [2, 4, 6, 8]
    assert [r["val_loss"] == "" for r in rows] == [True, False, True, False]
    assert float(rows[-1]["val_loss"]) == pytest.approx(m["eval_loss"])
    snaps = [json.loads(line) for line in (out / "rationals.jsonl").read_text().splitlines()]
    assert [s["step"] for s in snaps] == [0, 4, 8]
    progress = [json.loads(line) for line in (out / "checkpoints" / "progress.jsonl").read_text().splitlines()]
    assert [p["step"] for p in progress] == [2, 4, 6, 8] and {"loss", "lr", "tokens_per_s", "eta_s"} <= set(progress[0])
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [6, 8]  # pruned to --keep-checkpoints
    # loadable by fine-tuning, with the corpus tokenizer
    clf = load_pretrained(out / "model", "sequence-classification", num_labels=2)
    assert (out / "model" / "tokenizer.json").is_file() or (out / "model" / "vocab.txt").is_file()
    assert clf.config.raft_variant == variant


def test_perplexity_is_exp_of_the_mean_masked_token_loss(runs, corpus):
    from datasets import load_from_disk
    from transformers import AutoTokenizer

    out = runs["raft"]
    model = load_pretrained(out / "model", "masked-lm").eval()
    tok = AutoTokenizer.from_pretrained(out / "model")
    ids = torch.tensor(load_from_disk(str(corpus / "validation"))["input_ids"])
    inputs, labels = mask_eval_set(ids, mask_token_id=tok.mask_token_id, vocab_size=len(tok),
                                   special_ids=tok.all_special_ids, probability=0.15)
    with torch.no_grad():  # the stock dense head, one batch
        mean = model(input_ids=inputs, labels=labels).loss.item()
    assert (labels != IGNORE_INDEX).sum() > 100
    m = _metrics(out)
    assert m["eval_loss"] == pytest.approx(mean, rel=1e-5)
    assert m["perplexity"] == pytest.approx(math.exp(mean), rel=1e-5)


@pytest.mark.parametrize("output_bias", ["zero", "unigram"])
def test_the_output_bias_starts_at_zero_or_at_the_log_token_frequencies(corpus, tmp_path, output_bias):
    from datasets import load_from_disk

    from raft import settings
    from raft.train.runtime import Dist

    args = _args(corpus, tmp_path / "out", "bert", "--output-bias", output_bias)
    run = pretrain.setup(*(settings.from_args(cls, args) for cls in (pretrain.Model, pretrain.Rational,
                                                                    pretrain.Pretrain)),
                         pretrain.Job.from_args(args), Dist("cpu"), 0.0)
    bias = run.model.cls.predictions.bias.detach().double()
    if output_bias == "zero":
        assert not bias.any()
        return
    ids = torch.tensor(load_from_disk(str(corpus / "train"))["input_ids"]).flatten()
    counts = torch.bincount(ids, minlength=len(bias)).double() + 0.1  # add-0.1 smoothing
    assert torch.allclose(bias, (counts / counts.sum()).log(), atol=1e-5)
    assert bias.argmax() == counts.argmax() and bias[counts == 0.1].max() < bias[counts > 1].min()
    assert run.identity["output_bias"] == "unigram"


def test_rafs_train_and_gelu_model_has_none(runs):
    snaps = [json.loads(line) for line in (runs["raft"] / "rationals.jsonl").read_text().splitlines()]
    assert set(snaps[0]["rationals"]) == {"layer.0", "layer.1"}  # no pooler in the masked-LM model
    for name in ("layer.0", "layer.1"):
        assert snaps[-1]["rationals"][name]["numerator"] != snaps[0]["rationals"][name]["numerator"]
    mlm = load_pretrained(runs["raft"] / "model", "masked-lm")
    assert set(rational_modules(mlm)) == {"layer.0", "layer.1"} and mlm.config.rational_pooler
    m = _metrics(runs["raft"])
    assert m["rational"]["trained_in_pretraining"] == 20 and m["rational"]["scalars"] == 30
    bert = load_pretrained(runs["bert"] / "model", "masked-lm")
    assert rational_modules(bert) == {}
    assert all(s["rationals"] == {} for s in map(json.loads, (runs["bert"] / "rationals.jsonl").read_text().splitlines()))
    assert _metrics(runs["bert"])["rational"]["scalars"] == 0


def test_same_seed_gives_identical_results(runs, corpus, tmp_path):
    assert pretrain.run(_args(corpus, tmp_path / "again", "raft")) == 0
    a, b = _metrics(runs["raft"]), _metrics(tmp_path / "again")
    for key in TIME_KEYS:
        a.pop(key), b.pop(key)
    a["data"].pop("corpus"), b["data"].pop("corpus")
    assert a == b
    wa, wb = _weights(runs["raft"]), _weights(tmp_path / "again")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert (runs["raft"] / "log.csv").read_text() == (tmp_path / "again" / "log.csv").read_text()


def test_sigterm_checkpoints_and_a_rerun_resumes_to_the_same_result(runs, corpus, tmp_path, capfd):
    out = tmp_path / "interrupted"
    assert pretrain.run(_args(corpus, out, "raft"), on_step=_sigterm_at(5)) == EXIT_PREEMPTED
    err = capfd.readouterr().err
    assert "received SIGTERM" in err and f"exiting with code {EXIT_PREEMPTED}" in err
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [4, 5]  # the signal's step-boundary checkpoint
    assert not (out / "metrics.json").exists()
    # a checkpoint write that was interrupted leaves only a temp folder: ignored and removed
    partial = out / "checkpoints" / ".tmp-step-00000006-12345"
    partial.mkdir()
    (partial / "state.pt").write_bytes(b"truncated")
    assert pretrain.run(_args(corpus, out, "raft")) == 0
    err = capfd.readouterr().err
    assert f"resuming from step 5 (checkpoint {out / 'checkpoints' / 'step-00000005'})" in err
    assert not partial.exists()
    a, b = _metrics(runs["raft"]), _metrics(out)
    assert b["steps"] == 8 and b["resumed_from_steps"] == [5]
    assert b["eval_loss"] == a["eval_loss"] and b["perplexity"] == a["perplexity"]  # exact on CPU
    wa, wb = _weights(runs["raft"]), _weights(out)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    for name in ("log.csv", "rationals.jsonl"):  # no duplicated or missing rows
        assert (runs["raft"] / name).read_text() == (out / name).read_text()
    steps = [json.loads(line)["step"] for line in (out / "checkpoints" / "progress.jsonl").read_text().splitlines()]
    assert steps == [2, 4, 6, 8]


def test_rerun_of_a_finished_run_rewrites_the_same_outputs(runs, corpus, tmp_path, capfd):
    out = tmp_path / "copy"
    shutil.copytree(runs["bert"], out)
    (out / "metrics.json").unlink()
    assert pretrain.run(_args(corpus, out, "bert")) == 0
    assert "resuming from step 8" in capfd.readouterr().err
    assert _metrics(out)["eval_loss"] == _metrics(runs["bert"])["eval_loss"]


def test_bad_settings_are_clear_errors(runs, corpus, tmp_path, capfd):
    assert pretrain.run(_args(corpus, tmp_path / "x", "raft", "--per-device-batch-size", "5")) == 2
    assert "not divisible" in capfd.readouterr().err
    out = tmp_path / "y"
    shutil.copytree(runs["raft"], out)
    assert pretrain.run(_args(corpus, out, "raft", "--lr", "1e-3")) == 2  # a checkpoint of other settings
    err = capfd.readouterr().err
    assert "other settings: --lr 0.002 (checkpoint) vs 0.001 (now)" in err
    assert pretrain.run(_args(corpus, out, "raft", "--rational-layers", "0-5")) == 2
    assert "--rational-layers '0-5' does not fit the model" in capfd.readouterr().err


def test_the_checkpoint_identity_is_the_settings_marked_identity(runs, corpus, tmp_path, capfd):
    # settings not marked `identity` (raft.settings) may change between attempts
    out = tmp_path / "changed"
    assert pretrain.run(_args(corpus, out, "raft"), on_step=_sigterm_at(5)) == EXIT_PREEMPTED
    changed = ["--logging-steps", "4", "--save-steps", "3", "--per-device-batch-size", "16", "--eval-steps", "0"]
    capfd.readouterr()
    assert pretrain.run(_args(corpus, out, "raft", *changed)) == 0
    assert "resuming from step 5" in capfd.readouterr().err
    m, reference = _metrics(out), _metrics(runs["raft"])
    assert m["steps"] == 8 and m["resumed_from_steps"] == [5]
    assert m["hyperparameters"]["per_device_batch_size"] == 16 and m["hyperparameters"]["gradient_accumulation_steps"] == 1
    assert m["hyperparameters"]["logging_steps"] == 4 and m["hyperparameters"]["save_steps"] == 3
    assert m["eval_loss"] == pytest.approx(reference["eval_loss"], rel=1e-4)  # the same run, other micro-batches
    with open(out / "log.csv") as f:
        assert [int(r["step"]) for r in csv.DictReader(f)] == [2, 4, 8]  # rows 2, 4 from the checkpoint
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [6, 8]
    # identity settings may not: refused (exit 2) naming the flag; the finished run stays intact
    for variant, flag, value, refused in [
        ("raft", "--rational-lr", "0.01", "other settings: --rational-lr 0.005 (checkpoint) vs 0.01 (now)"),
        ("raft", "--seed", "8", "other settings: --seed 7 (checkpoint) vs 8 (now)"),
        ("bert", "--rational-lr", "0.01", None),  # no RAFs: the RAF options are not bert's identity
    ]:
        again = tmp_path / f"{variant}{flag}"
        shutil.copytree(runs[variant], again)
        assert pretrain.run(_args(corpus, again, variant, flag, value)) == (2 if refused else 0)
        err = capfd.readouterr().err
        if refused:
            assert refused in err and (again / "metrics.json").is_file()
        else:
            assert "resuming from step 8" in err and _metrics(again)["eval_loss"] == _metrics(runs[variant])["eval_loss"]


def test_cli_sigterm_exits_75_and_leaves_a_resumable_checkpoint(corpus, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "raft.cli", "pretrain", "--corpus", str(corpus), "--output", str(out),
           "--variant", "bert", *TINY, "--max-steps", "100000", "--save-steps", "3", "--logging-steps", "1000"]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
    try:
        deadline = time.time() + 60
        while not list_checkpoints(out / "checkpoints") and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert list_checkpoints(out / "checkpoints"), proc.communicate()[1] if proc.poll() is not None else "timeout"
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, err
    assert "received SIGTERM" in err and "\r" not in err
    step = list_checkpoints(out / "checkpoints")[-1][0]
    assert 3 <= step < 100000
    assert not (out / "metrics.json").exists()
