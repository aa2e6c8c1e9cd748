"""`raft bench`: the rational kernel against GELU, and RAFT against BERT training steps.

Everything is measured in one process; the two candidates of one comparison are timed in
interleaved rounds (gelu, raf, gelu, raf, ...) so that load from other processes hits them
alike, and medians over `--repeats` rounds are reported (all samples go to the JSON file).
Each rational backend is compared with its own GELU runs.

Kernel: forward (no grad) and forward+backward (x and the 10 coefficients get gradients) of
F.gelu and of the rational on the given shapes; fp32 on CPU, fp32 and bf16 on CUDA, where the
default backends are every CUDA one (`CUDA_BACKENDS`: triton, compile, eager).
Models: one optimizer step (forward, backward, AdamW) of a BERT and a RAFT masked-LM of the
same shape (sparse MLM head: only masked positions are projected onto the vocabulary, as in
pretraining; SDPA attention); seeds and data are identical. Device and precision come from
`raft.train.runtime`, as in pretraining (``auto`` precision: `runtime.resolve_precision`).
Pretraining (CUDA by default; ``--pretrain-steps``): tokens/s of a few steps of the real
pretraining step (`raft.train.pretrain.train_step`: masking, micro-batches, sparse loss,
AdamW, schedule) on a synthetic corpus, per variant (RAFT: per backend).
Sparse head and Hugging Face recipe (`raft.bench_pretrain`; on by default): the sparse MLM head
against the dense one, and our pretraining loop against Trainer + BertForMaskedLM +
DataCollatorForLanguageModeling (run_mlm.py's recipe), tokens/s of both and their ratio
(``--compile``: also ours compiled, as `raft pretrain --compile`).

The sections are plain functions (`kernel_rows`, `model_rows`, `pretraining_rows`,
`bench_pretrain.sparse_head_rows`, `bench_pretrain.hf_trainer_rows`) that take their device, so
they run on the CPU too (tests, `raft device-check --device cpu`); `_bench` composes them.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from contextlib import contextmanager, nullcontext
from pathlib import Path

import torch
import torch.nn.functional as F

from raft import checks
from raft import rational as R
from raft.train import runtime

PROG = "raft bench"

KERNEL_SHAPES = [(32, 128, 3072), (8, 128, 1024)]
# name -> (layers, hidden, heads, ffn, batch, quick batch)
MODEL_SHAPES = {
    "bert-mini": (4, 256, 4, 1024, 32, 8),
    "bert-base": (12, 768, 12, 3072, 8, 2),
}
CUDA_BACKENDS = ("triton", "compile", "eager")  # the default on CUDA: every CUDA path
SPECIAL_TOKENS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--repeats", type=int, default=7, help="timed rounds per comparison (median reported)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="untimed calls per candidate first (HF comparison: steps per side, at least 1)")
    parser.add_argument("--output", type=Path, default=None, help="write results as JSON here")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    parser.add_argument("--precision", choices=checks.PRECISIONS, default="auto",
                        help="of the model, pretraining and Hugging Face rows (auto: as `raft pretrain`)")
    parser.add_argument("--backends", default=None,
                        help=f"comma-separated rational backends to compare, from {','.join(R.BACKENDS)} "
                             f"(default: auto on the CPU, {','.join(CUDA_BACKENDS)} on CUDA)")
    parser.add_argument("--shapes", default=None,
                        help="kernel shapes, e.g. '32x128x3072,8x128x1024' (default: those two)")
    parser.add_argument("--models", default="bert-mini,bert-base",
                        help="comma-separated model shapes (bert-mini, bert-base) or 'none'")
    parser.add_argument("--quick", action="store_true", help="skip bert-base; small model batches")
    parser.add_argument("--seq-len", type=int, default=128)
    parser.add_argument("--vocab-size", type=int, default=30522)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--pretrain-steps", type=int, default=None,
                        help="timed steps of the real pretraining step per variant (default: 5 on CUDA, 0 = off on the CPU)")
    parser.add_argument("--pretrain-batch", type=int, default=64, help="sequences per pretraining step")
    parser.add_argument("--pretrain-model", default="bert-base", help="model shape of the pretraining rows")
    parser.add_argument("--hf-steps", type=int, default=None,
                        help="timed steps per side of our pretraining loop vs Hugging Face's Trainer recipe "
                             "(default: 40 on CUDA, 3 on the CPU; 0 = off)")
    parser.add_argument("--compile", action="store_true",
                        help="pretraining rows as `raft pretrain --compile`, and a compiled row of ours in the "
                             "Hugging Face comparison (compilation falls in the untimed warm-up steps)")
    parser.add_argument("--hf-model", default="bert-mini", help="model shape of the Hugging Face comparison")
    parser.add_argument("--hf-batch", type=int, default=None,
                        help="sequences per step of the Hugging Face comparison (default: the model shape's batch)")
    parser.add_argument("--sparse-head-models", default="bert-mini",
                        help="comma-separated model shapes of the sparse vs dense MLM head rows, or 'none'")
    g = parser.add_argument_group("fine-tuning grid (`raft.bench_finetune`; off unless --finetune-grid)")
    g.add_argument("--finetune-grid", nargs="+", type=Path, default=None, metavar="CONFIG",
                   help="workflow config file(s), merged as --configfile overlays (e.g. config/config.yaml): run "
                        "its GLUE low-data grid one process per run and batched, print runs/h and overhead")
    g.add_argument("--finetune-results", type=Path, default=None, metavar="DIR",
                   help="results folder with the study's pretrained models (default: tiny random models)")
    g.add_argument("--finetune-tasks", default=None, help="comma-separated subset of the grid's tasks")
    g.add_argument("--finetune-variants", default=None, help="comma-separated subset of bert,raft")
    g.add_argument("--finetune-seeds", type=int, default=None, help="only the first K seeds of each group")


def default_backends(device: torch.device) -> list[str]:
    """The backends compared when --backends is not given: auto on the CPU, every CUDA one on CUDA."""
    return list(CUDA_BACKENDS) if device.type == "cuda" else ["auto"]


def kernel_dtypes(device: torch.device) -> list[torch.dtype]:
    return [torch.float32] + ([torch.bfloat16] if device.type == "cuda" else [])


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
        raf_fn = lambda t, b=b: R.rational(t, raf.numerator, raf.denominator, backend=b)
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


# ------------------------------------------------------------------ kernel table
def kernel_rows(shapes, dtypes, device, backends, repeats, warmup, echo=print) -> list[dict]:
    """`bench_kernel` for every shape x dtype (x backend), printed as a table."""
    echo(f"\n{'shape':<16} {'dtype':<9} {'backend':<8} {'gelu fwd':>9} {'raf fwd':>9} {'ratio':>6}"
         f" {'gelu f+b':>9} {'raf f+b':>9} {'ratio':>6} {'(min)':>6}   (ms, medians of {repeats})")
    rows = []
    for shape in shapes:
        for dtype in dtypes:
            for row in bench_kernel(shape, dtype, device, backends, repeats, warmup):
                rows.append(row)
                echo(f"{'x'.join(map(str, shape)):<16} {row['dtype']:<9} {row['backend']:<8}"
                     f" {row['gelu_fwd_ms']:>9.2f} {row['raf_fwd_ms']:>9.2f} {row['fwd_ratio']:>6.2f}"
                     f" {row['gelu_fwd_bwd_ms']:>9.2f} {row['raf_fwd_bwd_ms']:>9.2f} {row['fwd_bwd_ratio']:>6.2f}"
                     f" {row['fwd_bwd_ratio_of_minima']:>6.2f}")
    return rows


# ------------------------------------------------------------------ models
def _mlm_step(model, opt, batch, rt: runtime.Runtime):
    """One pretraining step with a sparse MLM head (vocabulary projection of masked positions only),
    in the runtime's precision."""
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


def _model_sizes(shape, seq_len: int, vocab_size: int) -> dict:
    layers, hidden, heads, ffn = shape[:4]
    return {"vocab_size": vocab_size, "hidden_size": hidden, "num_hidden_layers": layers, "num_attention_heads": heads,
            "intermediate_size": ffn, "max_position_embeddings": max(512, seq_len), "attn_implementation": "sdpa"}


def _masked_batch(batch: int, seq_len: int, vocab_size: int, device):
    gen = torch.Generator().manual_seed(0)
    input_ids = torch.randint(min(1000, vocab_size // 2), vocab_size, (batch, seq_len), generator=gen)
    labels = torch.full_like(input_ids, -100)
    mask = torch.rand(input_ids.shape, generator=gen) < 0.15
    labels[mask] = input_ids[mask]
    input_ids[mask] = min(103, vocab_size - 1)  # [MASK] in the BERT vocabulary
    return input_ids.to(device), labels.to(device)


def bench_models(name, device, backends, *, repeats: int, quick: bool = False, seq_len: int = 128,
                 vocab_size: int = 30522, shape=None, precision: str = "auto") -> dict:
    """BERT vs RAFT optimizer steps of model shape `name` (`MODEL_SHAPES`, or `shape`), per backend."""
    from raft.modeling import RaftForMaskedLM, make_config

    layers, hidden, heads, ffn, batch, quick_batch = shape or MODEL_SHAPES[name]
    batch = quick_batch if quick else batch
    sizes = _model_sizes((layers, hidden, heads, ffn), seq_len, vocab_size)
    data = _masked_batch(batch, seq_len, vocab_size, device)
    models = {}
    for variant in ("bert", "raft"):
        torch.manual_seed(0)
        model = RaftForMaskedLM(make_config(variant, **sizes)).to(device).train()
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
        models[variant] = (model, opt, runtime.Runtime.create(device, precision))  # a grad scaler each

    def step(variant, backend=None):
        model, opt, rt = models[variant]

        def run():
            with _backend_env(backend) if backend else nullcontext():
                _mlm_step(model, opt, data, rt)
        return run

    repeats = repeats if not quick else max(3, repeats // 2)
    samples = {b: measure({"bert": step("bert"), "raft": step("raft", b)}, repeats, 1, device) for b in backends}
    med = {b: {k: statistics.median(v) for k, v in s.items()} for b, s in samples.items()}
    tokens = batch * seq_len
    precision = models["raft"][2].precision
    return {
        "model": name, "layers": layers, "hidden": hidden, "heads": heads, "ffn": ffn,
        "batch": batch, "seq_len": seq_len, "vocab_size": vocab_size, "device": device.type,
        "autocast": None if precision == "fp32" else precision,
        "attention": models["raft"][0].config._attn_implementation,
        "bert_step_ms": {b: 1e3 * m["bert"] for b, m in med.items()},
        "raft_step_ms": {b: 1e3 * m["raft"] for b, m in med.items()},
        "ratio": {b: m["raft"] / m["bert"] for b, m in med.items()},
        "ratio_of_minima": {b: min(s["raft"]) / min(s["bert"]) for b, s in samples.items()},
        "bert_tokens_per_s": {b: tokens / m["bert"] for b, m in med.items()},
        "raft_tokens_per_s": {b: tokens / m["raft"] for b, m in med.items()},
        "samples_s": samples,
    }


def model_rows(names, device, backends, *, repeats: int, quick: bool = False, seq_len: int = 128,
               vocab_size: int = 30522, precision: str = "auto", echo=print) -> list[dict]:
    """`bench_models` for each name, printed as a table."""
    if names:
        echo(f"\n{'model':<10} {'batch':>5} {'backend':<8} {'bert step':>10} {'raft step':>10} {'ratio':>6} {'(min)':>6}   "
             "(ms; forward+backward+AdamW, sparse MLM head)")
    rows = []
    for name in names:
        if name not in MODEL_SHAPES:
            raise runtime.UsageError(f"unknown model shape {name!r}; choose from {sorted(MODEL_SHAPES)}")
        row = bench_models(name, device, backends, repeats=repeats, quick=quick, seq_len=seq_len,
                           vocab_size=vocab_size, precision=precision)
        rows.append(row)
        for b in backends:
            echo(f"{name:<10} {row['batch']:>5} {b:<8} {row['bert_step_ms'][b]:>10.1f}"
                 f" {row['raft_step_ms'][b]:>10.1f} {row['ratio'][b]:>6.3f} {row['ratio_of_minima'][b]:>6.3f}")
    return rows


# ------------------------------------------------------------------ pretraining tokens/s
def write_synthetic_corpus(out, *, vocab_size: int = 30522, seq_len: int = 128, n_train: int = 256,
                           n_validation: int = 32, seed: int = 0) -> Path:
    """A corpus folder in `raft prepare-corpus`'s format with uniformly random token ids (speed and
    plumbing checks only): train/, validation/, tokenizer/ (placeholder WordPiece words), stats.json."""
    import datasets
    import numpy as np
    from transformers import BertTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL_TOKENS + [f"w{i}" for i in range(vocab_size - len(SPECIAL_TOKENS))]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    try:  # transformers >= 5: a vocab dict
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    except TypeError:  # transformers 4.x
        tok = BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True)
    tok.save_pretrained(out / "tokenizer")
    rng = np.random.default_rng(seed)
    datasets.disable_progress_bars()
    for split, n in (("train", n_train), ("validation", n_validation)):
        body = rng.integers(len(SPECIAL_TOKENS), vocab_size, (n, seq_len - 2))
        ids = np.concatenate([np.full((n, 1), 2), body, np.full((n, 1), 3)], axis=1).astype(np.int32)
        datasets.Dataset.from_dict({"input_ids": ids.tolist()}).save_to_disk(str(out / split))
    stats = {"source": "synthetic", "seq_len": seq_len, "vocab_size": vocab_size,
             "train": {"sequences": n_train}, "validation": {"sequences": n_validation}}
    (out / "stats.json").write_text(json.dumps(stats) + "\n")
    return out


def bench_pretraining(variant: str, device, corpus, *, shape, batch: int, steps: int, warmup: int = 2,
                      backend: str | None = None, compile: bool = False, count_tokens: bool = False,
                      precision: str = "auto") -> dict:
    """Tokens/s of `steps` calls of the real pretraining step (`raft.train.pretrain.train_step`)
    after `warmup` untimed ones, on `corpus` (nothing is written). `count_tokens`:
    also the token ids the encoder received per timed step (not with `compile`)."""
    from raft import settings
    from raft.bench_pretrain import encoder_tokens
    from raft.train import pretrain

    layers, hidden, heads, ffn = shape[:4]
    model = settings.Model(num_layers=layers, hidden_size=hidden, num_heads=heads, intermediate_size=ffn)
    p = settings.Pretrain(max_steps=warmup + steps, batch_size=batch, warmup_ratio=0.0, save_steps=0,
                          eval_steps=0, compile=compile)
    job = pretrain.Job(variant=variant, corpus=Path(corpus), output=Path(corpus) / "unused", device=str(device),
                       precision=precision)
    world = runtime.Dist(str(device))
    try:
        run = pretrain.setup(model, settings.Rational(), p, job, world, time.perf_counter())
        pretrain.start(run)
        state, meter = pretrain.TrainState(), pretrain.Meter(run.rt.device)
        with _backend_env(backend) if backend else nullcontext(), \
                encoder_tokens(run.model) if count_tokens else nullcontext([]) as seen:
            for _ in range(warmup):
                pretrain.train_step(run, state, meter)
            _sync(run.rt.device)
            t = time.perf_counter()
            for _ in range(steps):
                pretrain.train_step(run, state, meter)
            _sync(run.rt.device)
            elapsed = time.perf_counter() - t
    finally:
        world.close()
    tokens = steps * batch * run.data.seq_len
    return {"variant": variant, "backend": backend if variant == "raft" else None, "compile": compile,
            "layers": layers, "hidden": hidden, "batch": batch, "seq_len": run.data.seq_len, "steps": steps,
            "precision": run.rt.precision, "parameters": sum(p.numel() for p in run.model.parameters()),
            "step_ms": 1e3 * elapsed / steps, "tokens_per_s": tokens / elapsed,
            **({"tokens_per_step": sum(seen[warmup:]) / steps} if count_tokens else {})}


def pretraining_rows(device, backends, *, shape, batch: int, steps: int, seq_len: int = 128,
                     vocab_size: int = 30522, compile: bool = False, precision: str = "auto",
                     echo=print) -> list[dict]:
    """`bench_pretraining` for bert and for raft with each backend, on a synthetic corpus; a table."""
    echo(f"\n{'variant':<8} {'backend':<8} {'batch':>5} {'step ms':>9} {'tokens/s':>10}   "
         f"(the real pretraining step, {steps} steps{', compiled' if compile else ''})")
    rows = []
    with tempfile.TemporaryDirectory(prefix="raft-bench-") as tmp:
        corpus = write_synthetic_corpus(Path(tmp) / "corpus", vocab_size=vocab_size, seq_len=seq_len,
                                        n_train=max(2 * batch, 64), n_validation=8)
        for variant, backend in [("bert", None)] + [("raft", b) for b in backends]:
            row = bench_pretraining(variant, device, corpus, shape=shape, batch=batch, steps=steps,
                                    backend=backend, compile=compile, precision=precision)
            rows.append(row)
            echo(f"{variant:<8} {backend or '-':<8} {batch:>5} {row['step_ms']:>9.1f} {row['tokens_per_s']:>10.0f}")
    return rows


# ------------------------------------------------------------------ main
def _parse_shapes(text):
    if not text:
        return KERNEL_SHAPES
    return [tuple(int(v) for v in item.lower().split("x")) for item in text.split(",") if item]


def _parse_names(text: str, quick: bool) -> list[str]:
    """Model shape names from a comma-separated list ('none': no names; --quick drops bert-base)."""
    names = [] if text.strip().lower() == "none" else [n.strip() for n in text.split(",") if n.strip()]
    return [n for n in names if not (quick and n == "bert-base")]


def _parse_backends(text, device) -> list[str]:
    backends = [b.strip() for b in text.split(",") if b.strip()] if text else default_backends(device)
    for b in backends:
        if b not in R.BACKENDS:
            raise runtime.UsageError(f"unknown backend {b!r}; choose from {R.BACKENDS}")
    return backends


def main(args: argparse.Namespace) -> int:
    return runtime.run_command(PROG, _bench, args)


def _bench(args: argparse.Namespace) -> int:
    # imported here: its sections build on this module's corpus and pretraining step
    from raft import bench_pretrain

    runtime.set_num_threads(args.threads)
    device = runtime.select_device(args.device)
    runtime.resolve_precision(args.precision, device)  # fp16 on the CPU: refused before any work
    backends = _parse_backends(args.backends, device)
    names, head_names = _parse_names(args.models, args.quick), _parse_names(args.sparse_head_models, args.quick)
    for name in names + head_names + [args.pretrain_model, args.hf_model]:
        if name not in MODEL_SHAPES:
            raise runtime.UsageError(f"unknown model shape {name!r}; choose from {sorted(MODEL_SHAPES)}")
    cuda = device.type == "cuda"
    steps = args.pretrain_steps if args.pretrain_steps is not None else (5 if cuda else 0)
    hf_steps = args.hf_steps if args.hf_steps is not None else (40 if cuda else 3)

    result = header(device, backends, args.repeats)
    result["kernel"] = kernel_rows(_parse_shapes(args.shapes), kernel_dtypes(device), device, backends,
                                   args.repeats, args.warmup)
    result["models"] = model_rows(names, device, backends, repeats=args.repeats, quick=args.quick,
                                  seq_len=args.seq_len, vocab_size=args.vocab_size, precision=args.precision)
    if steps > 0:
        result["pretraining"] = pretraining_rows(device, backends, shape=MODEL_SHAPES[args.pretrain_model],
                                                 batch=args.pretrain_batch, steps=steps, seq_len=args.seq_len,
                                                 vocab_size=args.vocab_size, compile=args.compile,
                                                 precision=args.precision)
    result["sparse_head"] = bench_pretrain.sparse_head_rows(
        head_names, device, repeats=args.repeats, warmup=args.warmup, quick=args.quick, seq_len=args.seq_len,
        vocab_size=args.vocab_size)
    if hf_steps > 0:
        shape = MODEL_SHAPES[args.hf_model]
        result["hf_trainer"] = bench_pretrain.hf_trainer_rows(
            device, shape=shape, batch=args.hf_batch or shape[5 if args.quick else 4], steps=hf_steps,
            warmup=args.warmup, seq_len=args.seq_len, vocab_size=args.vocab_size, precision=args.precision,
            compile=args.compile)
    if args.finetune_grid:
        result["finetune"] = _finetune_section(args)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=1) + "\n")
        print(f"\nwrote {args.output}")
    return 0


def _finetune_section(args: argparse.Namespace) -> dict:
    from raft import bench_finetune

    def listed(text):
        return [x.strip() for x in text.split(",") if x.strip()] if text else None

    try:
        return bench_finetune.finetune_rows(args.finetune_grid, results=args.finetune_results,
                                            tasks=listed(args.finetune_tasks), variants=listed(args.finetune_variants),
                                            limit_seeds=args.finetune_seeds)
    except (FileNotFoundError, ValueError) as exc:  # a bad config file or data folder (ConfigError too)
        raise runtime.UsageError(str(exc)) from exc


def header(device, backends, repeats: int, echo=print) -> dict:
    """The JSON head (device, versions, C++ kernel state) and its first printed line."""
    t = time.perf_counter()
    cpp_ok = R._CPP.module() is not None  # builds on first use, loads from the cache after
    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__, "threads": torch.get_num_threads(), "repeats": repeats,
        "backends": backends, "cpp_kernel": cpp_ok, "cpp_build_or_load_s": time.perf_counter() - t,
        "kernel": [], "models": [],
    }
    echo(f"device {result['device']} ({device.type}), torch {torch.__version__}, {result['threads']} threads; "
         f"C++ kernel {'ready' if cpp_ok else 'unavailable'} in {result['cpp_build_or_load_s']:.1f}s")
    return result
