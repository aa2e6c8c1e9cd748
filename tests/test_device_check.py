"""`raft device-check --device cpu`: every part at toy sizes (the CUDA-only ones skipped), one
JSON report, a readable summary, exit 0; a failing part does not stop the others; the budget."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from raft import device_check
from raft.cli import main as cli

REPO = Path(__file__).resolve().parents[1]
PART_KEYS = {"name", "ok", "status", "seconds", "details"}


def test_cpu_device_check_runs_every_part_it_can(data_dir, tmp_path):
    out = tmp_path / "device-check.json"
    cmd = [sys.executable, "-m", "raft.cli", "device-check", "--device", "cpu", "--data-dir", str(data_dir),
           "--output", str(out), "--workdir", str(tmp_path / "work")]
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, timeout=600, check=False)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-6000:]
    report = json.loads(out.read_text())
    assert report["ok"] is True and report["size"] == "tiny" and report["precision"] == "fp32"
    assert {"device", "versions", "budget_s", "data_dir", "workdir", "seconds", "parts"} <= set(report)
    parts = {p["name"]: p for p in report["parts"]}
    assert list(parts) == list(device_check.PARTS)
    assert all(set(p) == PART_KEYS and p["seconds"] >= 0 for p in parts.values())
    status = {name: p["status"] for name, p in parts.items()}
    assert status == {"kernel": "passed", "determinism": "passed", "bench": "passed", "pretrain": "passed",
                      "ddp": "skipped", "finetune": "passed", "compile": "skipped"}, parts
    assert all(parts[n]["ok"] is None and parts[n]["details"]["reason"] for n in ("ddp", "compile"))
    # kernel: eager (and the C++ kernel) in fp32 and bf16, all three gradients checked
    rows = parts["kernel"]["details"]["rows"]
    assert {(r["backend"], r["dtype"]) for r in rows} >= {("eager", "float32"), ("eager", "bfloat16")}
    assert all(r["ok"] and {"y", "grad_x", "grad_numerator", "grad_denominator"} <= set(r) for r in rows)
    bench = parts["bench"]["details"]
    assert bench["kernel"] and set(bench["models"]["ratio"]) == {"eager"}
    assert [(r["variant"], r["backend"]) for r in bench["pretraining"]] == [("bert", None), ("raft", "eager")]
    # pretraining: SIGTERM after the first checkpoint (exit 75), rerun completes all steps
    for variant, run in parts["pretrain"]["details"]["runs"].items():
        assert [a["rc"] for a in run["attempts"]] == [75, 0] and run["attempts"][0]["signalled"], (variant, run)
        assert run["steps"] == device_check.SIZES["tiny"].steps and len(run["resumed_from_steps"]) == 1
    assert parts["pretrain"]["details"]["corpus"]["source"] == "local"
    ft = parts["finetune"]["details"]
    assert ft["run"]["rc"] == 0 and ft["accuracy"] is not None and "pretrain part" in ft["pretrained"]
    assert "device check passed: 5 passed, 0 failed, 2 skipped" in proc.stdout
    assert "== pretrain" in proc.stdout and "raft/bert step ratio" in proc.stdout
    timings = ", ".join(f"{n} {p['seconds']:.0f} s" for n, p in parts.items())
    print(f"device check on the CPU: {time.perf_counter() - t:.0f} s ({timings})")


def test_a_failing_part_does_not_stop_the_others_and_the_budget_stops_new_ones(tmp_path, monkeypatch, capsys):
    @device_check.part("boom")
    def boom(ctx):
        raise RuntimeError("kaput")

    @device_check.part("fine")
    def fine(ctx):
        return True, {"summary": "all good"}

    monkeypatch.setattr(device_check, "PARTS", {"boom": boom, "fine": fine})
    ctx = device_check.Check(torch.device("cpu"), device_check.SIZES["tiny"], tmp_path, None,
                             deadline=time.perf_counter() + 60)
    report = device_check.run_parts(ctx, ["boom", "fine"], tmp_path / "r.json", 60)
    assert [(p["name"], p["status"], p["ok"]) for p in report["parts"]] == [("boom", "failed", False),
                                                                           ("fine", "passed", True)]
    assert "kaput" in report["parts"][0]["details"]["error"] and "Traceback" in report["parts"][0]["details"]["traceback"]
    assert report["ok"] is False and json.loads((tmp_path / "r.json").read_text()) == json.loads(json.dumps(report))
    ctx.deadline = time.perf_counter() - 1  # budget spent: nothing new starts
    report = device_check.run_parts(ctx, ["fine"], tmp_path / "r2.json", 0)
    assert report["parts"][0]["status"] == "skipped" and "budget" in report["parts"][0]["details"]["reason"]
    assert "-- fine: skipped" in capsys.readouterr().out


def test_without_data_dir_fine_tuning_is_skipped_and_bad_parts_are_usage_errors(tmp_path, capsys):
    out = tmp_path / "r.json"
    assert cli(["device-check", "--device", "cpu", "--parts", "finetune,ddp", "--output", str(out)]) == 0
    parts = json.loads(out.read_text())["parts"]
    assert [p["status"] for p in parts] == ["skipped", "skipped"] and "--data-dir" in parts[0]["details"]["reason"]
    assert cli(["device-check", "--device", "cpu", "--parts", "kernel,gpu"]) == 2
    assert "raft device-check: error: unknown part(s) gpu" in capsys.readouterr().err


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_errors_catch_a_wrong_gradient(dtype, monkeypatch):
    assert device_check.kernel_errors("eager", dtype, 999, torch.device("cpu"))["ok"]
    from raft import rational as R

    real = R._formula_backward

    def wrong(*args):  # the denominator gradient 0.1 % off
        gx, ga, gb = real(*args)
        return gx, ga, gb * 1.001

    monkeypatch.setattr(R, "_formula_backward", wrong)
    row = device_check.kernel_errors("eager", dtype, 999, torch.device("cpu"))
    assert not row["ok"] and row["grad_denominator"] > 1e-4
