"""Checkpoint faults: unreadable checkpoints are moved aside (never chosen again, never crowding the
readable ones out of `prune`), and SIGINT (Ctrl-C) checkpoints and exits 75 like SIGTERM."""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from raft.train import pretrain
from raft.train.checkpoint import (
    EXIT_PREEMPTED,
    StopSignal,
    list_checkpoints,
    load_resumable,
    prune,
    save_checkpoint,
)
from tiny_corpus import _one_thread, make_tiny_corpus  # noqa: F401 (_one_thread: autouse fixture)

REPO = Path(__file__).resolve().parents[1]
TINY = ["--num-layers", "2", "--hidden-size", "64", "--num-heads", "2", "--intermediate-size", "128",
        "--max-steps", "8", "--batch-size", "16", "--per-device-batch-size", "16", "--lr", "2e-3",
        "--save-steps", "2", "--eval-steps", "4", "--logging-steps", "2", "--snapshot-steps", "4",
        "--seed", "7", "--variant", "bert"]


# ---------------------------------------------------------------------------- checkpoint.py
def _corrupt(path: Path) -> None:
    """Truncate a checkpoint's state file to half its size (a torn copy / full disk)."""
    state = path / "state.pt"
    os.truncate(state, state.stat().st_size // 2)


def _names(directory, prefix="corrupt-"):
    return sorted(p.name for p in Path(directory).iterdir() if p.name.startswith(prefix))


def test_unreadable_newer_checkpoints_are_moved_aside_not_deleted(tmp_path):
    for step in (2, 4, 6, 8):
        save_checkpoint(tmp_path, step, {"step": step})
    _corrupt(tmp_path / "step-00000006")
    _corrupt(tmp_path / "step-00000008")
    found = load_resumable(tmp_path)
    assert found.path.name == "step-00000004" and found.state == {"step": 4}
    assert [(b.path.name, b.now.name) for b in found.unreadable] == [
        ("step-00000008", "corrupt-step-00000008"), ("step-00000006", "corrupt-step-00000006")]
    assert all(b.reason for b in found.unreadable) and "\n" not in found.unreadable[0].reason
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]  # no longer checkpoints...
    assert (tmp_path / "corrupt-step-00000008" / "state.pt").is_file()  # ...but still on disk
    # the same step damaged again later: a second name, nothing overwritten
    save_checkpoint(tmp_path, 8, {"step": 8})
    _corrupt(tmp_path / "step-00000008")
    assert load_resumable(tmp_path).unreadable[0].now.name == "corrupt-step-00000008.1"
    assert _names(tmp_path) == ["corrupt-step-00000006", "corrupt-step-00000008", "corrupt-step-00000008.1"]
    # nothing readable at all; read-only mode moves nothing
    _corrupt(tmp_path / "step-00000004")
    _corrupt(tmp_path / "step-00000002")
    found = load_resumable(tmp_path, move=False)
    assert found.path is None and found.state is None and len(found.unreadable) == 2
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4]
    assert load_resumable(tmp_path / "missing") == (None, None, [])


def test_prune_never_removes_the_protected_newest_readable_checkpoint(tmp_path):
    for step in (20, 60, 63):
        save_checkpoint(tmp_path, step, {"step": step})
    assert prune(tmp_path, 2, protect=tmp_path / "step-00000020") == []
    assert [p.name for p in prune(tmp_path, 1, protect=tmp_path / "step-00000020")] == ["step-00000060"]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [20, 63]
    assert [p.name for p in prune(tmp_path, 1)] == ["step-00000020"]  # no protection: highest steps win


@pytest.fixture()
def sigint_default():
    """Ctrl-C as in a foreground shell: a job started in the background inherits SIGINT
    ignored, which StopSignal respects (and these tests would then not see it)."""
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    yield
    signal.signal(signal.SIGINT, before)


def test_sigint_sets_the_flag_once_then_aborts_as_usual(sigint_default):
    before = signal.getsignal(signal.SIGINT)
    with StopSignal() as stop:
        assert signal.getsignal(signal.SIGINT) == stop._handle
        os.kill(os.getpid(), signal.SIGINT)
        assert stop.requested and stop.signum == signal.SIGINT
        assert signal.getsignal(signal.SIGINT) == before  # a second Ctrl-C: KeyboardInterrupt
    assert signal.getsignal(signal.SIGINT) == before


def test_an_ignored_sigint_stays_ignored():
    before = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        with StopSignal():
            assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
        assert signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, before)


# ---------------------------------------------------------------------------- raft pretrain
@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return make_tiny_corpus(tmp_path_factory.mktemp("corpus") / "c", seq_len=32, n_train=160, n_validation=40)


@pytest.fixture(scope="module")
def reference(corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("ref") / "run"
    assert pretrain.run(_args(corpus, out, 2)) == 0
    return _metrics(out)


def _args(corpus, out, keep):
    parser = argparse.ArgumentParser()
    pretrain.add_arguments(parser)
    return parser.parse_args(["--corpus", str(corpus), "--output", str(out), *TINY, "--keep-checkpoints", str(keep)])


def _metrics(out):
    return json.loads((Path(out) / "metrics.json").read_text())


def _signal_at(step, signum=signal.SIGTERM, seen=None):
    """on_step callback: send `signum` at `step`; records the checkpoints present after each step."""
    def on_step(s):
        if seen is not None:
            seen[s] = [n for n, _ in list_checkpoints(seen["dir"])]
        if s == step:
            os.kill(os.getpid(), signum)
    return on_step


def _same_result(out, reference):
    m = _metrics(out)
    assert m["steps"] == 8 and m["tokens_seen"] == 8 * 16 * 32
    assert m["eval_loss"] == reference["eval_loss"]  # exact on CPU


@pytest.mark.parametrize("keep, first_kept", [(2, [6, 7]), (1, [7])])
def test_all_checkpoints_corrupt_restarts_from_zero_and_keeps_the_new_ones(corpus, reference, tmp_path, capfd,
                                                                            keep, first_kept):
    out, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints"
    assert pretrain.run(_args(corpus, out, keep), on_step=_signal_at(7)) == EXIT_PREEMPTED
    assert [s for s, _ in list_checkpoints(ckpt)] == first_kept
    for _, path in list_checkpoints(ckpt):
        _corrupt(path)
    capfd.readouterr()

    seen = {"dir": ckpt}
    assert pretrain.run(_args(corpus, out, keep), on_step=_signal_at(3, seen=seen)) == EXIT_PREEMPTED
    err = capfd.readouterr().err
    moved = [f"corrupt-step-{s:08d}" for s in reversed(first_kept)]
    for s in first_kept:
        assert f"checkpoint {ckpt / f'step-{s:08d}'} is unreadable (" in err
        assert f"moved aside to {ckpt / f'corrupt-step-{s:08d}'}" in err
    assert f"no readable checkpoint in {ckpt}: starting from step 0 (moved aside: {', '.join(moved)})" in err
    assert seen[1] == [] and seen[3] == [2]  # the step-2 checkpoint survived pruning
    assert [s for s, _ in list_checkpoints(ckpt)] == [2, 3][-keep:]
    assert _names(ckpt) == sorted(moved)
    assert all((ckpt / name / "state.pt").is_file() for name in moved)  # moved aside, not deleted

    assert pretrain.run(_args(corpus, out, keep)) == 0
    err = capfd.readouterr().err
    assert f"resuming from step 3 (checkpoint {ckpt / 'step-00000003'})" in err
    assert "unreadable" not in err and "starting from step 0" not in err
    _same_result(out, reference)
    assert _metrics(out)["resumed_from_steps"] == [3]
    assert [s for s, _ in list_checkpoints(ckpt)] == [6, 8][-keep:]
    assert _names(ckpt) == sorted(moved)


def test_corrupt_newest_checkpoint_resumes_from_the_older_readable_one(corpus, reference, tmp_path, capfd):
    out, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints"
    assert pretrain.run(_args(corpus, out, 2), on_step=_signal_at(5)) == EXIT_PREEMPTED
    _corrupt(ckpt / "step-00000005")
    capfd.readouterr()
    assert pretrain.run(_args(corpus, out, 2)) == 0
    err = capfd.readouterr().err
    assert f"checkpoint {ckpt / 'step-00000005'} is unreadable (" in err
    assert f"moved aside to {ckpt / 'corrupt-step-00000005'}" in err
    assert f"resuming from step 4 (checkpoint {ckpt / 'step-00000004'})" in err
    assert "starting from step 0" not in err
    _same_result(out, reference)
    assert [s for s, _ in list_checkpoints(ckpt)] == [6, 8] and _names(ckpt) == ["corrupt-step-00000005"]


def test_sigint_checkpoints_exits_75_and_a_rerun_resumes(corpus, reference, tmp_path, capfd, sigint_default):
    out, ckpt = tmp_path / "run", tmp_path / "run" / "checkpoints"
    assert pretrain.run(_args(corpus, out, 2), on_step=_signal_at(5, signal.SIGINT)) == EXIT_PREEMPTED
    err = capfd.readouterr().err
    assert "received SIGINT" in err and f"exiting with code {EXIT_PREEMPTED}" in err
    assert [s for s, _ in list_checkpoints(ckpt)] == [4, 5]
    assert not (out / "metrics.json").exists()
    assert pretrain.run(_args(corpus, out, 2)) == 0
    assert f"resuming from step 5 (checkpoint {ckpt / 'step-00000005'})" in capfd.readouterr().err
    _same_result(out, reference)


def test_cli_sigint_exits_75_with_a_checkpoint_and_no_traceback(corpus, tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, "-m", "raft.cli", "pretrain", "--corpus", str(corpus), "--output", str(out), *TINY,
           "--max-steps", "100000", "--save-steps", "3", "--logging-steps", "1000"]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    # Ctrl-C as at a terminal: the child must not inherit an ignored SIGINT (background shells)
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    try:
        deadline = time.time() + 60
        while not list_checkpoints(out / "checkpoints") and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert list_checkpoints(out / "checkpoints"), proc.communicate()[1] if proc.poll() is not None else "timeout"
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == EXIT_PREEMPTED, err
    assert "received SIGINT" in err and "Traceback" not in err and "KeyboardInterrupt" not in err
    step = list_checkpoints(out / "checkpoints")[-1][0]
    assert f"preempted (SIGINT): checkpoint at step {step} saved" in err
    state = torch.load(out / "checkpoints" / f"step-{step:08d}" / "state.pt", weights_only=False)
    assert state["step"] == step and not (out / "metrics.json").exists()
