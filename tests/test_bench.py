"""Smoke test of `raft bench` on tiny shapes (timings are not checked: speed targets live in the
printed ratios, not in tests)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from raft import bench, bench_pretrain
from raft import rational as R
from tiny_corpus import _one_thread  # noqa: F401 (autouse fixture)


def test_bench_smoke(tmp_path, monkeypatch):
    monkeypatch.setitem(bench.MODEL_SHAPES, "tiny", (1, 32, 2, 64, 2, 2))
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    out = tmp_path / "bench.json"
    args = parser.parse_args(["--shapes", "4x8x16", "--repeats", "2", "--warmup", "1", "--device", "cpu",
                              "--backends", "cpp,eager", "--models", "tiny", "--vocab-size", "300",
                              "--seq-len", "16", "--sparse-head-models", "tiny", "--hf-model", "tiny",
                              "--hf-steps", "2", "--precision", "bf16", "--output", str(out)])
    assert bench.main(args) == 0
    res = json.loads(out.read_text())
    assert [r["backend"] for r in res["kernel"]] == ["cpp", "eager"]
    assert res["kernel"][0]["fwd_bwd_ratio"] > 0
    assert res["models"][0]["model"] == "tiny" and set(res["models"][0]["ratio"]) == {"cpp", "eager"}
    assert res["models"][0]["autocast"] == "bf16"  # --precision reaches the model rows ...
    assert res["models"][0]["attention"] == "sdpa"
    assert "pretraining" not in res  # the pretraining rows are on by default on CUDA only
    head = res["sparse_head"][0]
    assert head["model"] == "tiny" and head["dense_ms"] > 0 and head["sparse_ms"] > 0
    assert head["ratio"] == pytest.approx(head["dense_ms"] / head["sparse_ms"])
    ours, hf = res["hf_trainer"]
    assert (ours["side"], hf["side"]) == ("raft pretrain", "hf trainer")
    assert ours["tokens_per_s"] > 0 and hf["tokens_per_s"] > 0
    assert ours["ratio"] == pytest.approx(ours["tokens_per_s"] / hf["tokens_per_s"]) and hf["ratio"] == 1
    assert ours["tokens_per_step"] == hf["tokens_per_step"] == 2 * 16  # batch x seq_len, both measured
    for key in ("layers", "hidden", "batch", "seq_len", "steps", "precision", "parameters"):
        assert ours[key] == hf[key], key  # the same model, batch and precision on both sides
    assert ours["precision"] == "bf16"  # ... and both sides of the Hugging Face comparison


def test_bench_bad_backend_is_a_usage_error(capsys):
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    assert bench.main(parser.parse_args(["--device", "cpu", "--backends", "cpp,fast"])) == 2
    assert "raft bench: error: unknown backend 'fast'" in capsys.readouterr().err
    assert bench.main(parser.parse_args(["--device", "cpu", "--precision", "fp16"])) == 2
    assert "raft bench: error: --precision fp16 needs a CUDA device" in capsys.readouterr().err


# ------------------------------------------------------------------ the CUDA sections, called on the CPU
def test_cuda_defaults_are_every_cuda_backend_in_fp32_and_bf16():
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert bench.default_backends(cuda) == ["triton", "compile", "eager"] and bench.default_backends(cpu) == ["auto"]
    assert bench.kernel_dtypes(cuda) == [torch.float32, torch.bfloat16] and bench.kernel_dtypes(cpu) == [torch.float32]
    assert set(bench.CUDA_BACKENDS) <= set(R.BACKENDS)
    parser = argparse.ArgumentParser()
    bench.add_arguments(parser)
    help_text = " ".join(parser.format_help().split())
    assert ",".join(R.BACKENDS) in help_text  # the --backends help lists rational.py's BACKENDS


def test_kernel_and_model_tables_per_backend_and_dtype_on_cpu():
    lines = []
    rows = bench.kernel_rows([(2, 4, 8)], [torch.float32], torch.device("cpu"), ["eager"], 1, 0, echo=lines.append)
    assert [(r["backend"], r["dtype"], r["shape"]) for r in rows] == [("eager", "float32", [2, 4, 8])]
    assert "raf f+b" in lines[0] and lines[1].startswith("2x4x8")
    row = bench.bench_models("tiny", torch.device("cpu"), ["eager"], repeats=1, seq_len=8, vocab_size=200,
                             shape=(1, 16, 2, 32, 2, 2), precision="fp32")
    assert row["attention"] == "sdpa" and row["autocast"] is None
    assert row["raft_tokens_per_s"]["eager"] == pytest.approx(2 * 8 / (row["raft_step_ms"]["eager"] / 1e3))


def test_pretraining_rows_run_the_real_step_on_cpu():
    lines = []
    rows = bench.pretraining_rows(torch.device("cpu"), ["eager"], shape=(1, 16, 2, 32), batch=4, steps=2,
                                  seq_len=16, vocab_size=120, precision="fp32", echo=lines.append)
    assert [(r["variant"], r["backend"]) for r in rows] == [("bert", None), ("raft", "eager")]
    assert all(r["tokens_per_s"] > 0 and r["precision"] == "fp32" and r["seq_len"] == 16 for r in rows)
    assert len(lines) == 3 and "tokens/s" in lines[0]


def test_the_hugging_face_comparison_has_a_compiled_row_of_ours_with_compile():
    lines = []
    rows = bench_pretrain.hf_trainer_rows(torch.device("cpu"), shape=(1, 16, 2, 32), batch=2, steps=1, warmup=1,
                                          seq_len=16, vocab_size=120, precision="fp32", compile=True,
                                          echo=lines.append)
    assert [(r["side"], r.get("compile")) for r in rows] == [
        ("raft pretrain", False), ("raft pretrain --compile", True), ("hf trainer", None)]
    assert all(r["tokens_per_s"] > 0 and r["precision"] == "fp32" for r in rows)
    assert rows[1]["ratio"] == pytest.approx(rows[1]["tokens_per_s"] / rows[2]["tokens_per_s"])
    assert "tokens_per_step" not in rows[1] and rows[0]["tokens_per_step"] == 2 * 16
    assert [line.split()[:3] for line in lines[1:]] == [["raft", "pretrain", "1"], ["raft", "pretrain", "--compile"],
                                                        ["hf", "trainer", "1"]]


def test_sparse_head_rows_match_the_dense_loss_on_cpu():
    lines = []
    rows = bench_pretrain.sparse_head_rows([], torch.device("cpu"), repeats=1, warmup=0, echo=lines.append)
    assert rows == [] and lines == []  # 'none': no table
    row = bench_pretrain.bench_sparse_head("tiny", torch.device("cpu"), repeats=2, warmup=1, seq_len=32,
                                           vocab_size=2000, shape=(1, 32, 2, 64, 4, 4))
    assert row["masked_tokens"] > 0 and row["dense_tokens_per_s"] > 0 and row["sparse_tokens_per_s"] > 0
    assert row["max_loss_diff"] < 1e-4  # same model, batch and dropout masks: the same loss
