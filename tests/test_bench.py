"""Smoke test of `raft bench` on tiny shapes (timings are not checked)."""

from __future__ import annotations

import argparse
import json

from raft import bench


def test_bench_smoke(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.MODEL_SHAPES, "tiny", (1, 32, 2, 64, 2, 2))
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args(["--shapes", "4x8x16", "--repeats", "2", "--warmup", "1", "--device", "cpu",
                              "--backends", "cpp,eager", "--models", "tiny", "--vocab-size", "300",
                              "--seq-len", "16", "--output", str(out)])
    assert bench.main(args) == 0
    res = json.loads(out.read_text())
    assert [r["backend"] for r in res["kernel"]] == ["cpp", "eager"]
    assert res["kernel"][0]["fwd_bwd_ratio"] > 0
    assert res["models"][0]["model"] == "tiny" and set(res["models"][0]["ratio"]) == {"cpp", "eager"}
    assert res["models"][0]["autocast"] is None  # precision auto (raft.train.runtime): fp32 on the CPU


def test_bench_bad_backend_is_a_usage_error(capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.main(parser.parse_args(["--device", "cpu", "--backends", "cpp,fast"])) == 2
    assert "raft bench: error: unknown backend 'fast'" in capsys.readouterr().err
