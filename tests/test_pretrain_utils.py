"""Checkpoint files (atomic write, resume choice, pruning, signals), the progress reporter, and
`raft pretrain`'s command line against the workflow's."""

from __future__ import annotations

import io
import json
import os
import signal
from pathlib import Path

import pytest
import torch

from raft.train.checkpoint import (
    StopSignal,
    list_checkpoints,
    load_latest,
    prune,
    remove_temp,
    save_checkpoint,
)
from raft.train.progress import Progress, truncate_jsonl


def test_atomic_checkpoints_resume_choice_and_pruning(tmp_path):
    for step in (2, 4, 6):
        save_checkpoint(tmp_path, step, {"step": step, "w": torch.full((3,), float(step))})
    # an interrupted write: only a temp folder (ignored), and a newer damaged file (skipped)
    (tmp_path / ".tmp-step-00000008-99").mkdir()
    (tmp_path / ".tmp-step-00000008-99" / "state.pt").write_bytes(b"partial")
    (tmp_path / "step-00000010").mkdir()
    (tmp_path / "step-00000010" / "state.pt").write_bytes(b"garbage")
    assert [s for s, _ in list_checkpoints(tmp_path)] == [2, 4, 6, 10]
    with pytest.warns(UserWarning, match="unreadable"):
        path, state = load_latest(tmp_path)
    assert path.name == "step-00000006" and state["step"] == 6 and torch.equal(state["w"], torch.full((3,), 6.0))
    assert [p.name for p in remove_temp(tmp_path)] == [".tmp-step-00000008-99"]
    save_checkpoint(tmp_path, 6, {"step": 6, "again": True})  # same step again: replaced atomically
    assert load_latest(tmp_path / "none") == (None, None)
    assert [p.name for p in prune(tmp_path, 2)] == ["step-00000002", "step-00000004"]
    assert [s for s, _ in list_checkpoints(tmp_path)] == [6, 10]
    assert prune(tmp_path, 0) == []
    assert json.loads((tmp_path / "step-00000006" / "meta.json").read_text())["step"] == 6
    assert not any(p.name.startswith(".tmp") for p in tmp_path.iterdir())


def test_stop_signal_sets_a_flag_and_restores_the_handler():
    before = signal.getsignal(signal.SIGTERM)
    with StopSignal() as stop:
        assert not stop.requested
        os.kill(os.getpid(), signal.SIGUSR1)
        assert stop.requested and stop.signum == signal.SIGUSR1
    assert signal.getsignal(signal.SIGTERM) is before


def test_progress_prints_plain_lines_and_jsonl(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    stream = io.StringIO()
    path = tmp_path / "progress.jsonl"
    with Progress(10, path, log_every=5, initial=0, desc="demo", stream=stream) as p:
        for step in range(1, 11):
            p.update(step, **({"loss": 1.0 / step, "lr": 1e-3, "tokens_per_s": 1234.5} if p.due(step) else {}))
        p.write("a message")
    text = stream.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert lines[0].startswith("[demo] step 5/10 (50.0%) | loss 0.2000 | lr 1.00e-03 | tokens/s 1234 | elapsed")
    assert "eta" in lines[0] and lines[-1] == "[demo] a message"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    assert [r["step"] for r in records] == [5, 10] and {"loss", "lr", "tokens_per_s", "elapsed_s", "eta_s"} <= set(records[0])
    with path.open("a") as f:
        f.write('{"step": 1')  # torn line of a killed process
    truncate_jsonl(path, 5)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [5]
    quiet = io.StringIO()
    Progress(10, None, 1, stream=quiet, enabled=False).update(1, loss=1.0)
    assert quiet.getvalue() == ""


@pytest.mark.parametrize("overlay", [None, "paper.yaml", "smoke.yaml", "paper.yaml+paper_authors.yaml"])
def test_the_workflow_command_line_gives_the_config_settings(overlay):
    """`raft pretrain`'s flags come from raft.settings, as do the workflow's: the command line that
    raft.study builds from a config parses back to that config's settings."""
    import argparse
    import shlex

    from raft import settings, study
    from raft.train import pretrain
    from test_study import CONFIG, config_of

    cfg = config_of(*([CONFIG / name for name in overlay.split("+")] if overlay else []))
    parser = argparse.ArgumentParser()
    pretrain.add_arguments(parser)
    for variant in cfg["variants"]:
        flags = study.cli_args(study.values(study.pretrain_settings(cfg, variant)))  # as the workflow
        args = parser.parse_args(["--corpus", "corpus", "--output", "out", *shlex.split(flags)])
        classes = [settings.Model, settings.Pretrain] + ([settings.Rational] if variant == "raft" else [])
        for cls in classes:
            assert settings.from_args(cls, args) == cls(**cfg[cls.SECTION])
        assert pretrain.Job.from_args(args) == pretrain.Job(variant, Path("corpus"), Path("out"), None,
                                                             cfg["precision"] or "auto")
