"""`raft.train.runtime`: one meaning of ``precision: auto`` for every training command (a faked
GPU capability: `resolve_precision` reads only ``device.type``), and pretraining uses it."""

from __future__ import annotations

import argparse
import importlib
import inspect
import json
import os
import stat
import warnings

import pytest
import torch

from raft.train import pretrain, runtime
from tiny_corpus import _one_thread, make_tiny_corpus  # noqa: F401 (_one_thread: autouse fixture)

CPU, CUDA = torch.device("cpu"), torch.device("cuda")  # a device object; CUDA itself is never touched


@pytest.fixture
def bf16(monkeypatch):
    """bf16(True/False): fake the GPU's bf16 support."""
    return lambda supported: monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)


@pytest.mark.parametrize("device, has_bf16, expected", [
    (CPU, True, "bf16"), (CPU, False, "fp32"), (CUDA, True, "bf16"), (CUDA, False, "fp16"),
])
@pytest.mark.parametrize("asked", ["auto", None])
def test_auto_precision_per_device_type(bf16, monkeypatch, device, has_bf16, expected, asked):
    bf16(has_bf16)  # the GPU's support, and the CPU's native bf16 units
    monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: has_bf16)
    assert runtime.resolve_precision(asked, device) == expected


def test_native_cpu_bf16_is_read_from_torchs_cpu_probes(monkeypatch):
    for avx512_bf16, amx, expected in [(False, False, False), (True, False, True), (False, True, True)]:
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda v=avx512_bf16: v)
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda v=amx: v)
        assert runtime.cpu_has_native_bf16() is expected


@pytest.mark.parametrize("asked", ["fp32", "bf16", "fp16"])
def test_explicit_precision_is_kept_where_it_can_run(bf16, asked):
    bf16(False)
    assert runtime.resolve_precision(asked, CUDA) == asked
    if asked != "fp16":
        assert runtime.resolve_precision(asked, CPU) == asked


def test_fp16_on_the_cpu_is_a_usage_error_naming_the_flag():
    with pytest.raises(runtime.UsageError, match=r"^--precision fp16 needs a CUDA device"):
        runtime.resolve_precision("fp16", CPU)
    with pytest.raises(runtime.UsageError, match="unknown precision 'fp8'"):
        runtime.resolve_precision("fp8", CPU)


def test_auto_on_a_gpu_without_bf16_gets_a_grad_scaler(bf16, monkeypatch):
    # Runtime.create turns TF32 on (the legacy allow_tf32 flags): restore them by hand, through
    # the same getter/setter. Not monkeypatch.setattr: torch.backends.cuda.matmul serves
    # allow_tf32 from __getattr__, not its __dict__, so pytest >= 9.2 undoes the patch with
    # delattr, which fails there (pytest #10644).
    flags = (torch.backends.cuda.matmul, torch.backends.cudnn)
    saved = [flag.allow_tf32 for flag in flags]
    try:
        bf16(False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "GradScaler is enabled, but CUDA is not available"
            rt = runtime.Runtime.create(CUDA, "auto")
        assert rt.precision == "fp16" and rt.scaler is not None
        bf16(True)
        assert runtime.Runtime.create(CUDA, "auto").scaler is None
        monkeypatch.setattr(runtime, "cpu_has_native_bf16", lambda: False)
        assert runtime.Runtime.create(CPU, "auto") == runtime.Runtime(CPU, "fp32", None)
    finally:
        for flag, value in zip(flags, saved):
            flag.allow_tf32 = value


def test_pretraining_and_fine_tuning_resolve_through_the_runtime(tmp_path, monkeypatch, capsys):
    calls = []
    resolve = runtime.resolve_precision
    monkeypatch.setattr(runtime, "resolve_precision", lambda p, d: calls.append((p, d.type)) or resolve(p, d))
    corpus = make_tiny_corpus(tmp_path / "corpus", seq_len=16, n_train=16, n_validation=8)
    parser = argparse.ArgumentParser()
    pretrain.add_arguments(parser)
    base = ["--corpus", str(corpus), "--output", str(tmp_path / "out"), "--variant", "bert", "--device", "cpu",
            "--num-layers", "1", "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "64",
            "--max-steps", "1", "--batch-size", "8", "--per-device-batch-size", "8"]
    assert pretrain.run(parser.parse_args(base)) == 0
    assert calls == [("auto", "cpu")]
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    expected = "bf16" if runtime.cpu_has_native_bf16() else "fp32"
    assert metrics["precision"] == metrics["hyperparameters"]["precision"] == expected
    # fp16 on the CPU: refused before the corpus is read, naming the flag (exit 2)
    args = parser.parse_args([*base, "--precision", "fp16", "--corpus", str(tmp_path / "missing")])
    assert pretrain.run(args) == runtime.EXIT_USAGE
    assert "raft pretrain: error: --precision fp16 needs a CUDA device" in capsys.readouterr().err
    # fine-tuning builds its runtime the same way (no precision logic of its own)
    setup = importlib.import_module("raft.train.finetune_setup")
    assert "Runtime.create(" in inspect.getsource(setup)


def test_atomic_writes_keep_the_usual_permissions(tmp_path):
    path = runtime.write_json_atomic(tmp_path / "sub" / "m.json", {"a": (1, 2)}, indent=1)
    assert json.loads(path.read_text()) == {"a": [1, 2]}
    runtime.write_text_atomic(path, "x\n")
    assert path.read_text() == "x\n" and [p.name for p in path.parent.iterdir()] == ["m.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask


def test_select_device_gives_cuda_this_process_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert runtime.select_device("cuda", local_rank=1) == torch.device("cuda", 1)
    assert runtime.select_device("cuda:0", local_rank=1) == torch.device("cuda", 0)
    assert runtime.select_device("cpu", local_rank=1) == CPU
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert runtime.select_device("auto") == CPU
    with pytest.raises(runtime.UsageError, match="CUDA is not available"):
        runtime.select_device("cuda")
