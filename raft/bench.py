"""`raft bench`: the rational kernel against GELU, and RAFT against BERT training steps.

Everything is measured in one process; the two candidates of one comparison are timed in
interleaved rounds (gelu, raf, gelu, raf, ...) so that load from other processes hits them
alike, and medians over `--repeats` rounds are reported (all samples go to the JSON file).
Each rational backend is compared with its own GELU runs.

Kernel: forward (no grad) and forward+backward (x and the 10 coefficients get gradients) of
F.gelu and of the rational on the given shapes; fp32 on CPU, fp32 and bf16 on CUDA.
Models: one optimizer step (forward, backward, AdamW) of a BERT and a RAFT masked-LM of the
same shape (sparse MLM head: only masked positions are projected onto the vocabulary, as in
pretraining); seeds and data are identical. Device and precision come from
`raft.train.runtime`, as in pretraining: ``auto`` precision (bf16 autocast on a GPU that
supports it, else fp16 with a grad scaler; fp32 on the CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from contextlib import contextmanager
from pathlib import Path

import torch
import torch.nn.functional as F

from raft import rational as R
from raft.train import runtime

PROG = "raft bench"

KERNEL_SHAPES = [(32, 128, 3072), (8, 128, 1024)]
# name -> (layers, hidden, heads, ffn, batch, quick batch)
MODEL_SHAPES = {
    "bert-mini": (4, 256, 4, 1024, 32, 8),
    "bert-base": (12, 768, 12, 3072, 8, 2),
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per comparison (median reported)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed calls per candidate first")
    parser.add_argument("--output", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--backends", default="auto",
                        help="comma-separated rational backends to compare: auto,cpp,compile,eager")
    parser.add_argument("--shapes", default=None,
                        help="kernel shapes, e.g. '32x128x3072,8x128x1024' (default: those two)")
    parser.add_argument("--models", default="bert-mini,bert-base",
                        help="comma-separated model shapes (bert-mini, bert-base) or 'none'")
    parser.add_argument("--quick", action="store_true", help="skip bert-base; small model batches")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")


# ------------------------------------------------------------------ timing
def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(candidates: dict, repeats: int, warmup: int, device) -> dict[str, list[float]]:
    """Interleaved timing: {name: [seconds per round]} for zero-argument callables."""
    for fn in candidates.values():
        for _ in range(warmup):
            fn()
    _sync(device)
    samples = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            _sync(device)
            t = time.perf_counter()
            fn()
            _sync(device)
            samples[name].append(time.perf_counter() - t)
    return samples


def _median_ms(xs):
    return 1e3 * statistics.median(xs)


@contextmanager
def _backend_env(backend: str):
    old = os.environ.get("RAFT_RATIONAL_BACKEND")
    os.environ["RAFT_RATIONAL_BACKEND"] = backend
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("RAFT_RATIONAL_BACKEND", None)
        else:
            os.environ["RAFT_RATIONAL_BACKEND"] = old


# ------------------------------------------------------------------ kernel
def bench_kernel(shape, dtype, device, backends, repeats, warmup) -> list[dict]:
    gen = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    g = torch.randn(shape, generator=gen).to(device=device, dtype=dtype)
    raf = R.Rational().to(device)
    xg = x.clone().requires_grad_()

    def fwd(fn):
        def run():
            with torch.no_grad():
                fn(x)
        return run

    def fwd_bwd(fn):
        def run():
            xg.grad = None
            raf.zero_grad(set_to_none=True)
            fn(xg).backward(g)
        return run

    rows = []
    for b in backends:  # each backend against its own interleaved GELU runs (no cross-talk)
        raf_fn = lambda t, b=b: R.rational(t, raf.numerator, raf.denominator, backend=b)  # noqa: E731
        f = measure({"gelu": fwd(F.gelu), b: fwd(raf_fn)}, repeats, warmup, device)
        fb = measure({"gelu": fwd_bwd(F.gelu), b: fwd_bwd(raf_fn)}, repeats, warmup, device)
        rows.append({
            "shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "device": device.type, "backend": b,
            "gelu_fwd_ms": _median_ms(f["gelu"]), "raf_fwd_ms": _median_ms(f[b]),
            "fwd_ratio": statistics.median(f[b]) / statistics.median(f["gelu"]),
            "gelu_fwd_bwd_ms": _median_ms(fb["gelu"]), "raf_fwd_bwd_ms": _median_ms(fb[b]),
            "fwd_bwd_ratio": statistics.median(fb[b]) / statistics.median(fb["gelu"]),
            "fwd_bwd_ratio_of_minima": min(fb[b]) / min(fb["gelu"]),  # robust to bursts of load
            "samples_s": {"fwd": f, "fwd_bwd": fb},
        })
    return rows


# ------------------------------------------------------------------ models
def _mlm_step(model, opt, batch, rt: runtime.Runtime):
    """One pretraining step with a sparse MLM head (vocabulary projection of masked positions only),
    in the runtime's precision (``auto``: bf16 autocast on CUDA, fp32 on CPU)."""
    input_ids, labels = batch
    with rt.autocast():
        hidden = model.bert(input_ids=input_ids, attention_mask=torch.ones_like(input_ids))[0]
        sel = labels != -100
        logits = model.cls(hidden[sel])
    loss = F.cross_entropy(logits.float(), labels[sel])
    if rt.scaler is None:
        loss.backward()
        opt.step()
    else:
        rt.scaler.scale(loss).backward()
        rt.scaler.step(opt)
        rt.scaler.update()
    opt.zero_grad(set_to_none=True)


def bench_models(name, device, backends, args) -> dict:
    from raft.modeling import RaftForMaskedLM, make_config

    layers, hidden, heads, ffn, batch, quick_batch = MODEL_SHAPES[name]
    batch = quick_batch if args.quick else batch
    sizes = dict(vocab_size=args.vocab_size, hidden_size=hidden, num_hidden_layers=layers,
                 num_attention_heads=heads, intermediate_size=ffn,
                 max_position_embeddings=max(512, args.seq_len))
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(min(1000, args.vocab_size // 2), args.vocab_size, (batch, args.seq_len), generator=gen)
    labels = torch.full_like(input_ids, -100)
    mask = torch.rand(input_ids.shape, generator=gen) < 0.15
    labels[mask] = input_ids[mask]
    input_ids[mask] = min(103, args.vocab_size - 1)  # [MASK] in the BERT vocabulary
    data = (input_ids.to(device), labels.to(device))

    models = {}
    for variant in ("bert", "raft"):
        torch.manual_seed(0)
        model = RaftForMaskedLM(make_config(variant, **sizes)).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        models[variant] = (model, opt, runtime.Runtime.create(device, "auto"))  # one grad scaler per model

    def step(variant, backend=None):
        model, opt, rt = models[variant]

        def run():
            if backend is None:
                _mlm_step(model, opt, data, rt)
            else:
                with _backend_env(backend):
                    _mlm_step(model, opt, data, rt)
        return run

    repeats = args.repeats if not args.quick else max(3, args.repeats // 2)
    samples = {b: measure({"bert": step("bert"), "raft": step("raft", b)}, repeats, 1, device) for b in backends}
    med = {b: {k: statistics.median(v) for k, v in s.items()} for b, s in samples.items()}
    return {
        "model": name, "layers": layers, "hidden": hidden, "heads": heads, "ffn": ffn,
        "batch": batch, "seq_len": args.seq_len, "vocab_size": args.vocab_size, "device": device.type,
        "autocast": None if models["raft"][2].precision == "fp32" else models["raft"][2].precision,
        "bert_step_ms": {b: 1e3 * m["bert"] for b, m in med.items()},
        "raft_step_ms": {b: 1e3 * m["raft"] for b, m in med.items()},
        "ratio": {b: m["raft"] / m["bert"] for b, m in med.items()},
        "ratio_of_minima": {b: min(s["raft"]) / min(s["bert"]) for b, s in samples.items()},
        "samples_s": samples,
    }


# ------------------------------------------------------------------ main
def _parse_shapes(text):
    if not text:
        return KERNEL_SHAPES
    return [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item]


def main(args: argparse.Namespace) -> int:
    return runtime.run_command(PROG, _bench, args)


def _bench(args: argparse.Namespace) -> int:
    runtime.set_num_threads(args.threads)
    device = runtime.select_device(args.device)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    for b in backends:
        if b not in R.BACKENDS:
            raise runtime.UsageError(f"unknown backend {b!r}; choose from {R.BACKENDS}")
    dtypes = [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])

    t = time.perf_counter()
    cpp_ok = R._CPP.module() is not None  # builds on first use, loads from the cache after
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": args.repeats,
        "backends": backends, "cpp_kernel": cpp_ok, "cpp_build_or_load_s": time.perf_counter() - t,
        "kernel": [], "models": [],
    }
    print(f"device {result['device']} ({device.type}), torch {torch.__version__}, {result['threads']} threads; "
          f"C++ kernel {'ready' if cpp_ok else 'unavailable'} in {result['cpp_build_or_load_s']:.1f}s")

    print(f"\n{'shape':<16} {'dtype':<9} {'backend':<8} {'gelu fwd':>9} {'raf fwd':>9} {'ratio':>6}"
          f" {'gelu f+b':>9} {'raf f+b':>9} {'ratio':>6} {'(min)':>6}   (ms, medians of {args.repeats})")
    for shape in _parse_shapes(args.shapes):
        for dtype in dtypes:
            for row in bench_kernel(shape, dtype, device, backends, args.repeats, args.warmup):
                result["kernel"].append(row)
                print(f"{'x'.join(map(str, shape)):<16} {row['dtype']:<9} {row['backend']:<8}"
                      f" {row['gelu_fwd_ms']:>9.2f} {row['raf_fwd_ms']:>9.2f} {row['fwd_ratio']:>6.2f}"
                      f" {row['gelu_fwd_bwd_ms']:>9.2f} {row['raf_fwd_bwd_ms']:>9.2f} {row['fwd_bwd_ratio']:>6.2f}"
                      f" {row['fwd_bwd_ratio_of_minima']:>6.2f}")

    names = [] if args.models.strip().lower() == "none" else [n.strip() for n in args.models.split(",") if n.strip()]
    if args.quick:
        names = [n for n in names if n != "bert-base"]
    if names:
        print(f"\n{'model':<10} {'batch':>5} {'backend':<8} {'bert step':>10} {'raft step':>10} {'ratio':>6} {'(min)':>6}   "
              "(ms; forward+backward+AdamW, sparse MLM head)")
    for name in names:
        if name not in MODEL_SHAPES:
            raise runtime.UsageError(f"unknown model shape {name!r}; choose from {sorted(MODEL_SHAPES)}")
        row = bench_models(name, device, backends, args)
        result["models"].append(row)
        for b in backends:
            print(f"{name:<10} {row['batch']:>5} {b:<8} {row['bert_step_ms'][b]:>10.1f}"
                  f" {row['raft_step_ms'][b]:>10.1f} {row['ratio'][b]:>6.3f} {row['ratio_of_minima'][b]:>6.3f}")

    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {args.output}")
    return 0
