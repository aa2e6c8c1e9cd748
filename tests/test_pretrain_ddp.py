"""`raft pretrain` under `torchrun --nproc_per_node 2` (gloo, CPU) matches a single process."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from raft.train import pretrain
from tiny_corpus import _one_thread, make_tiny_corpus  # noqa: F401 (_one_thread: autouse fixture)

REPO = Path(__file__).resolve().parents[1]
ARGS = ["--variant", "raft", "--num-layers", "2", "--hidden-size", "64", "--num-heads", "2",
        "--intermediate-size", "128", "--max-steps", "6", "--batch-size", "16", "--per-device-batch-size", "4",
        "--save-steps", "3", "--eval-steps", "3", "--logging-steps", "3", "--snapshot-steps", "3",
        "--dropout", "0", "--seed", "3", "--lr", "2e-3", "--precision", "fp32"]  # close comparisons


@pytest.mark.skipif(shutil.which("torchrun") is None and not Path(sys.executable).with_name("torchrun").exists(),
                    reason="torchrun not installed")
def test_two_process_gloo_run_matches_single_process(tmp_path):
    corpus = make_tiny_corpus(tmp_path / "corpus", seq_len=32, n_train=96, n_validation=24)
    single, ddp = tmp_path / "single", tmp_path / "ddp"
    parser = argparse.ArgumentParser()
    pretrain.add_arguments(parser)
    assert pretrain.run(parser.parse_args(["--corpus", str(corpus), "--output", str(single), *ARGS])) == 0
    # single process: 4 micro-batches of 4; two processes: 2 x 2 micro-batches of 4 (same global batch)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "raft.cli", "pretrain", "--corpus", str(corpus), "--output", str(ddp), *ARGS]
    env = {**os.environ, "TQDM_DISABLE": "1", "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "batch 16 = 2 x 4 x 2 accumulation" in proc.stderr
    a = json.loads((single / "metrics.json").read_text())
    b = json.loads((ddp / "metrics.json").read_text())
    assert b["world_size"] == 2 and b["hyperparameters"]["gradient_accumulation_steps"] == 2
    assert b["eval_loss"] == pytest.approx(a["eval_loss"], rel=1e-6)
    wa, wb = load_file(str(single / "model" / "model.safetensors")), load_file(str(ddp / "model" / "model.safetensors"))
    for k in wa:
        torch.testing.assert_close(wb[k], wa[k], rtol=1e-4, atol=1e-5)
    assert len((ddp / "log.csv").read_text().splitlines()) == 3  # only rank 0 writes, once per row
