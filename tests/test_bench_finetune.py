"""The fine-tuning grid benchmark (`raft bench --finetune-grid`): both ways run the same runs
with the workflow's flags, and the printed figures are computed from the runs' records."""

from __future__ import annotations

import pytest

import json
from pathlib import Path

from raft import bench_finetune, study

CONFIG = Path(__file__).resolve().parents[1] / "config"


@pytest.fixture()
def smoke(data_dir, tmp_path):
    overlay = tmp_path / "data.yaml"
    overlay.write_text(f"data_dir: {data_dir}\n")
    return [CONFIG / "config.yaml", CONFIG / "smoke.yaml", overlay]


def test_grid_is_the_workflow_grid(smoke):
    config, _ = bench_finetune.load_study(smoke)
    groups = bench_finetune.grid(config)
    runs = [(t, v, n, s) for t, v, n, seeds in groups for s in seeds]
    assert sorted(runs) == sorted(r for r in study.runs(config, "glue") if r[2] != "full")
    assert bench_finetune.grid(config, ["rte"], ["bert"], 1) == [("rte", "bert", 16, [2022])]
    argv = bench_finetune.command(config, "rte", "raft", 16, [1, 2], "m", "o/seed{seed}/metrics.json", "d")
    assert argv[argv.index("--seed") + 1: argv.index("--seed") + 3] == ["1", "2"]
    assert "--epochs" in argv and argv[argv.index("--epochs") + 1] == "2"  # the smoke config's
    assert argv[-2:] == ["--data-dir", "d"]


def test_both_ways_run_the_same_runs(smoke, tmp_path, capsys):
    """`raft bench --finetune-grid`: the section's rows in the JSON, computed from the runs."""
    from raft.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--repeats", "1", "--warmup", "0", "--models", "none", "--sparse-head-models", "none",
                 "--hf-steps", "0", "--shapes", "4x8x16", "--output", str(out), "--finetune-grid", *map(str, smoke),
                 "--finetune-tasks", "rte", "--finetune-variants", "bert", "--finetune-seeds", "2"]) == 0
    result = json.loads(out.read_text())["finetune"]
    alone, batched = result["rows"]
    assert (alone["way"], alone["processes"], alone["runs"]) == ("alone", 2, 2)
    assert (batched["way"], batched["processes"], batched["runs"]) == ("batched", 1, 2)
    for row in (alone, batched):
        assert 0 < row["work_s"] < row["wall_s"]
        assert row["overhead"] == pytest.approx((row["wall_s"] - row["work_s"]) / row["wall_s"])
        assert row["runs_per_hour"] == pytest.approx(2 / row["wall_s"] * 3600)
    assert result["speedup"] == pytest.approx(alone["wall_s"] / batched["wall_s"])
    printed = capsys.readouterr().out
    assert "batched          1     2" in printed and "faster than one process per run" in printed


def test_config_outside_a_checkout_is_named(tmp_path):
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: null\n")
    with pytest.raises(FileNotFoundError, match="no workflow schema"):
        bench_finetune.load_study([cfg])
