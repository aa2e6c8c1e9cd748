"""`raft pretrain`: masked-LM pretraining of a BERT ("bert", GELU) or RAFT model.

A plain PyTorch loop (nanoGPT style) over a corpus prepared by `raft prepare-corpus`:

- data: the token ids are held in memory as one int16/int32 tensor; the sequence order is a
  seeded permutation per epoch (epochs wrap around); optimisation step s uses positions
  [s*B, (s+1)*B) of that stream, split into per-process slices and micro-batches;
- masking: 15 % of non-special tokens, 80/10/10, drawn from a generator seeded by (seed, step),
  so a resumed run sees exactly the same masks; validation masks are fixed (`mlm.mask_eval_set`);
- loss: sparse prediction head (`mlm.mlm_loss_sum`), normalised by the masked tokens of the
  whole global batch, so accumulation and the number of processes do not change the update;
- optimiser: `raft.optim` AdamW groups (RAF group with its own lr / weight decay / schedule),
  linear warmup then linear decay; optional clipping; bf16/fp16 autocast on GPU;
- checkpoints (`checkpoint.py`): every --save-steps, at the last step and on SIGTERM/SIGUSR1/SIGINT
  (at the next step boundary). A rerun of the same command resumes from the newest readable
  checkpoint ("resuming from step N (checkpoint ...)"; unreadable ones are moved aside to
  `corrupt-step-*`, "no readable checkpoint ...: starting from step 0" when none is left) and
  ends exactly where an uninterrupted run would (same data order, masks, dropout RNG,
  optimizer/scheduler/scaler state; bit-exact on CPU). A run preempted by a signal exits with
  code 75 (EX_TEMPFAIL) after its checkpoint (a second Ctrl-C aborts without one); under
  torchrun the workers exit 75 and torchrun itself exits non-zero. A checkpoint written with
  other settings (model, recipe, seed, corpus size) is refused with an error (exit 2).
  log.csv / rationals.jsonl rows live in the checkpoint and are rewritten from it on resume
  (no duplicates); progress.jsonl is truncated to the resumed step;
- multi-GPU: run the same command under `torchrun --nproc_per_node K -m raft.cli pretrain ...`
  (DDP over the sparse-loss wrapper; each process takes a contiguous slice of every global batch;
  the effective batch stays --batch-size via accumulation; only rank 0 writes files).

Outputs in --output: model/ (RaftForMaskedLM + corpus tokenizer), log.csv, rationals.jsonl and,
last, metrics.json (its presence means the run completed). --checkpoint-dir holds checkpoints
and progress.jsonl.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import os
import random
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from raft import checks
from raft.train.checkpoint import EXIT_PREEMPTED, StopSignal, load_resumable, prune, remove_temp, save_checkpoint
from raft.train.mlm import (
    DATA_TAG,
    EVAL_MASK_SEED,
    IGNORE_INDEX,
    SparseMLM,
    derive_seed,
    generator,
    mask_eval_set,
    mask_train_batch,
    masked_positions,
    mlm_loss_sum,
)
from raft.train.progress import Progress, truncate_jsonl

LOG_COLUMNS = ["step", "tokens", "loss", "lr", "val_loss", "val_perplexity"]
# settings that must match for a checkpoint to be resumed
IDENTITY_KEYS = [
    "variant", "num_layers", "hidden_size", "num_heads", "intermediate_size", "max_position_embeddings",
    "dropout", "rational_layers", "rational_init", "rational_degrees", "rational_lr", "rational_weight_decay",
    "rational_schedule", "max_steps", "batch_size", "lr", "warmup_ratio", "weight_decay", "adam_beta1",
    "adam_beta2", "adam_eps", "max_grad_norm", "mlm_probability", "seed",
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and outputs")
    g.add_argument("--corpus", required=True, type=Path, help="folder written by `raft prepare-corpus`")
    g.add_argument("--output", required=True, type=Path, help="run folder (model/, metrics.json, log.csv, rationals.jsonl)")
    g.add_argument("--checkpoint-dir", type=Path, default=None, help="checkpoints and progress.jsonl (default: OUTPUT/checkpoints)")
    g = p.add_argument_group("model")
    g.add_argument("--variant", required=True, choices=["bert", "raft"])
    g.add_argument("--num-layers", type=int, default=12)
    g.add_argument("--hidden-size", type=int, default=768)
    g.add_argument("--num-heads", type=int, default=12)
    g.add_argument("--intermediate-size", type=int, default=3072)
    g.add_argument("--max-position-embeddings", type=int, default=None, help="default: the corpus sequence length")
    g.add_argument("--dropout", type=float, default=0.1, help="hidden and attention dropout")
    g.add_argument("--rational-layers", default="all,pooler", help="RAF placement (raft only), e.g. 'all,pooler', '0-5'")
    g.add_argument("--rational-init", default="gelu", help="initial RAF shape (a name from raft/inits.json)")
    g.add_argument("--rational-degrees", default="5,4", help="numerator,denominator degrees")
    g.add_argument("--rational-lr", type=float, default=5e-3)
    g.add_argument("--rational-weight-decay", type=float, default=0.1)
    g.add_argument("--rational-schedule", choices=["constant", "linear"], default="constant",
                   help="RAF lr after warmup: constant (paper) or linear decay like the other weights")
    g = p.add_argument_group("optimisation")
    g.add_argument("--max-steps", type=int, default=23000)
    g.add_argument("--batch-size", type=int, default=4096, help="global effective batch (sequences per step)")
    g.add_argument("--per-device-batch-size", type=int, default=None,
                   help="micro-batch per process (default: batch-size / world size); accumulation fills the rest")
    g.add_argument("--lr", type=float, default=7e-4)
    g.add_argument("--warmup-ratio", type=float, default=0.01)
    g.add_argument("--weight-decay", type=float, default=0.01)
    g.add_argument("--adam-beta1", type=float, default=0.9)
    g.add_argument("--adam-beta2", type=float, default=0.98)
    g.add_argument("--adam-eps", type=float, default=1e-8)
    g.add_argument("--max-grad-norm", type=float, default=0.0, help="0 = no clipping")
    g.add_argument("--mlm-probability", type=float, default=0.15)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], default="auto",
                   help="auto: bf16 autocast on CUDA if supported, else fp32")
    g.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    g = p.add_argument_group("logging and checkpoints")
    g.add_argument("--save-steps", type=int, default=1000, help="checkpoint interval (0: only at the end / on SIGTERM)")
    g.add_argument("--eval-steps", type=int, default=1000, help="validation interval (0: only at the end)")
    g.add_argument("--logging-steps", type=int, default=50)
    g.add_argument("--snapshot-steps", type=int, default=500, help="RAF coefficient snapshot interval (0: start and end)")
    g.add_argument("--keep-checkpoints", type=int, default=2, help="newest checkpoints to keep (0: all)")
    g.add_argument("--max-eval-sequences", type=int, default=None, help="cap on validation sequences (default: all)")


def main(args) -> int:
    return run(args)


# ---------------------------------------------------------------------------------- helpers
class _Dist:
    def __init__(self, device_arg: str):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        local = int(os.environ.get("LOCAL_RANK", "0"))
        if device_arg == "cuda" or (device_arg == "auto" and torch.cuda.is_available()):
            self.device = torch.device("cuda", local)
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        self.initialized_here = False
        self.training = False
        if self.world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if self.device.type == "cuda" else "gloo")
            self.initialized_here = True

    @property
    def main(self) -> bool:
        return self.rank == 0

    def sum(self, *values: float) -> list[float]:
        if self.world == 1:
            return [float(v) for v in values]
        t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def any(self, flag: bool) -> bool:
        return self.sum(float(flag))[0] > 0

    def barrier(self):
        if self.world > 1:
            dist.barrier()

    def gather(self, obj) -> list:
        if self.world == 1:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self):
        if self.initialized_here and dist.is_initialized():
            dist.destroy_process_group()


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _load_ids(path: Path, dtype: torch.dtype) -> torch.Tensor:
    import datasets

    ds = datasets.load_from_disk(str(path))
    if "input_ids" not in ds.column_names:
        raise ValueError(f"{path}: no 'input_ids' column (columns: {ds.column_names})")
    n = len(ds)
    if n == 0:
        return torch.empty((0, 0), dtype=dtype)
    seq_len = len(ds[0]["input_ids"])
    out = torch.empty((n, seq_len), dtype=dtype)
    flat = out.view(-1).numpy()
    if ds._indices is None:  # fast path: the Arrow column's values, chunk by chunk
        def uniform(c):
            if hasattr(c, "offsets") and len(c) and not (np.diff(c.offsets.to_numpy()) == seq_len).all():
                raise ValueError(f"{path}: sequences must all have the same length ({seq_len})")
            return c.flatten().to_numpy(zero_copy_only=False)

        chunks = ((uniform(c), len(c)) for c in ds.data.column("input_ids").chunks)
    else:
        chunks = ((b["input_ids"].reshape(-1), len(b["input_ids"]))
                  for b in ds.with_format("numpy", columns=["input_ids"]).iter(batch_size=65536))
    start = 0
    for values, rows in chunks:
        if values.size != rows * seq_len:
            raise ValueError(f"{path}: sequences must all have the same length ({seq_len})")
        flat[start:start + values.size] = values
        start += values.size
    if start != n * seq_len:
        raise ValueError(f"{path}: expected {n} sequences of {seq_len} ids, read {start} ids")
    return out


def load_corpus(corpus: Path):
    """(train ids, validation ids, tokenizer, stats) of a prepared corpus folder."""
    import datasets
    from transformers import AutoTokenizer

    datasets.disable_progress_bars()
    corpus = Path(corpus)
    for part in ("train", "validation", "tokenizer"):
        if not (corpus / part).exists():
            raise FileNotFoundError(f"corpus {str(corpus)!r} has no {part}/ (expected the output of `raft prepare-corpus`)")
    tokenizer = AutoTokenizer.from_pretrained(corpus / "tokenizer")
    stats = json.loads((corpus / "stats.json").read_text()) if (corpus / "stats.json").is_file() else {}
    dtype = torch.int16 if len(tokenizer) <= 32767 else torch.int32
    train, val = _load_ids(corpus / "train", dtype), _load_ids(corpus / "validation", dtype)
    if len(train) == 0:
        raise ValueError(f"corpus {str(corpus)!r}: the train split is empty")
    for name, ids in (("train", train), ("validation", val)):
        if len(ids) and int(ids.max()) >= len(tokenizer):
            raise ValueError(f"corpus {str(corpus)!r}: {name} ids reach {int(ids.max())}, beyond the tokenizer's "
                             f"{len(tokenizer)} tokens")
    if len(val) and val.shape[1] != train.shape[1]:
        raise ValueError(f"corpus {str(corpus)!r}: train and validation sequence lengths differ")
    return train, val, tokenizer, stats


class EpochStream:
    """Positions of an endless stream of seeded per-epoch permutations of range(n)."""

    def __init__(self, n: int, seed: int):
        self.n, self.seed, self._cache = n, seed, {}

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 2:
                self._cache.pop(min(self._cache))
            self._cache[epoch] = torch.randperm(self.n, generator=generator(self.seed, DATA_TAG, epoch))
        return self._cache[epoch]

    def indices(self, start: int, count: int) -> torch.Tensor:
        parts, pos = [], start
        while pos < start + count:
            epoch, offset = divmod(pos, self.n)
            take = min(self.n - offset, start + count - pos)
            parts.append(self.permutation(epoch)[offset:offset + take])
            pos += take
        return torch.cat(parts)


def _rng_state(device) -> dict:
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict, device) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def _seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _write_log(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in LOG_COLUMNS})
    _atomic_write(path, buf.getvalue())


def _write_snapshots(path: Path, snapshots: list[dict]) -> None:
    _atomic_write(path, "".join(json.dumps(s) + "\n" for s in snapshots))


def _identity(args, train_sequences: int, seq_len: int) -> dict:
    ident = {k: getattr(args, k) for k in IDENTITY_KEYS}
    if args.variant == "bert":  # RAF options are meaningless for the GELU model
        for k in [k for k in ident if k.startswith("rational_")]:
            ident.pop(k)
    return {**ident, "train_sequences": train_sequences, "seq_len": seq_len}


def _check(rule, *args):
    """A `raft.checks` rule; its error (a ValueError: exit 2) names the flag."""
    try:
        return rule(*args)
    except checks.SettingError as exc:
        raise ValueError(exc.as_flag()) from None


def _resolve_precision(precision: str, device) -> str:
    if precision == "auto":
        return "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    return precision


def _device_name(device, world: int) -> str:
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)} x{world}"
    return f"cpu ({torch.get_num_threads()} threads) x{world}"


# ---------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def evaluate(model, inputs, labels, attention_ids, pad_id, batch_size, ctx, rt: _Dist) -> tuple[float | None, float | None]:
    """(mean masked-token loss, perplexity) over a pre-masked validation set, sharded over ranks."""
    n = len(inputs)
    if n == 0:
        return None, None
    lo, hi = rt.rank * n // rt.world, (rt.rank + 1) * n // rt.world
    was_training = model.training
    model.eval()
    total = torch.zeros((), dtype=torch.float64, device=rt.device)
    count = 0
    for i in range(lo, hi, batch_size):
        rows = slice(i, min(i + batch_size, hi))
        positions, targets = masked_positions(labels[rows])
        if positions.numel() == 0:
            continue
        x = inputs[rows].to(rt.device)
        attn = _attention_mask(attention_ids[rows], pad_id, rt.device)
        with ctx():
            total += mlm_loss_sum(model, x, positions.to(rt.device), targets.to(rt.device), attn).double()
        count += positions.numel()
    model.train(was_training)
    total, count = rt.sum(total.item(), count)
    if count == 0:
        return None, None
    loss = total / count
    return loss, math.exp(min(loss, 700.0))


def _attention_mask(ids: torch.Tensor, pad_id, device):
    """None for the usual unpadded corpus sequences; a padding mask otherwise."""
    if pad_id is None or not bool((ids == pad_id).any()):
        return None
    return (ids != pad_id).long().to(device)


def _load_checkpoint(ckpt_dir: Path, rt: _Dist, say) -> tuple[Path | None, dict | None]:
    """(path, state) to resume from. Rank 0 moves unreadable newer checkpoints aside first (and
    says so), then the other processes load the same, now newest, checkpoint."""
    found = load_resumable(ckpt_dir) if rt.main else None
    rt.barrier()
    if not rt.main:
        return load_resumable(ckpt_dir, move=False)[:2]
    for bad in found.unreadable:
        where = f"moved aside to {bad.now}" if bad.now != bad.path else "could not be moved aside"
        say(f"checkpoint {bad.path} is unreadable ({bad.reason}): {where}")
    if found.state is None and found.unreadable:
        say(f"no readable checkpoint in {ckpt_dir}: starting from step 0 "
            f"(moved aside: {', '.join(bad.now.name for bad in found.unreadable)})")
    return found.path, found.state


# ---------------------------------------------------------------------------------- training
def run(args, on_step=None) -> int:
    """Train (or resume) one run. `on_step(step)` is called after every optimiser step (tests)."""
    rt = _Dist(args.device)
    try:
        with StopSignal() as stop:
            return _run(args, rt, stop, on_step)
    except (ValueError, FileNotFoundError) as exc:
        if getattr(rt, "training", False):  # a bug during training: keep the traceback
            raise
        print(f"raft pretrain: error: {exc}", file=sys.stderr, flush=True)
        return 2
    finally:
        rt.close()


def _run(args, rt: _Dist, stop: StopSignal, on_step) -> int:
    from raft.modeling import RaftForMaskedLM, count_parameters, export_rationals, make_config, rational_modules
    from raft.optim import build_optimizer, build_scheduler

    wall_start = time.perf_counter()

    def say(msg: str) -> None:
        if rt.main:
            print(f"[pretrain] {msg}", file=sys.stderr, flush=True)

    # ---- settings
    B = args.batch_size
    if B <= 0 or args.max_steps <= 0:
        raise ValueError("--batch-size and --max-steps must be positive")
    accum = _check(checks.check_batch, B, args.per_device_batch_size, rt.world)
    per_rank = B // rt.world
    pd = per_rank // accum
    precision = _resolve_precision(args.precision, rt.device)
    _check(checks.check_precision, precision, rt.device.type)
    _check(checks.check_model, args.hidden_size, args.num_heads)
    amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    autocast = (lambda: torch.autocast(rt.device.type, dtype=amp_dtype)) if amp_dtype else nullcontext
    if rt.device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    degrees = tuple(int(d) for d in str(args.rational_degrees).split(","))

    # ---- data
    train_ids, val_ids, tokenizer, stats = load_corpus(args.corpus)
    n_train, L = train_ids.shape
    if args.max_eval_sequences is not None:
        val_ids = val_ids[: max(0, args.max_eval_sequences)]
    special = sorted(set(tokenizer.all_special_ids))
    mask_kw = dict(mask_token_id=tokenizer.mask_token_id, vocab_size=len(tokenizer), special_ids=special,
                   probability=args.mlm_probability)
    val_inputs, val_labels = mask_eval_set(val_ids, **mask_kw)
    pad_id = tokenizer.pad_token_id
    stream = EpochStream(n_train, args.seed)
    _check(checks.check_positions, args.max_position_embeddings, L)
    args.max_position_embeddings = args.max_position_embeddings or L

    # ---- model and optimiser
    _seed_all(args.seed)
    config = make_config(
        args.variant, rational_layers=args.rational_layers, rational_init=args.rational_init,
        rational_degrees=degrees, vocab_size=len(tokenizer), hidden_size=args.hidden_size,
        num_hidden_layers=args.num_layers, num_attention_heads=args.num_heads,
        intermediate_size=args.intermediate_size, max_position_embeddings=args.max_position_embeddings,
        hidden_dropout_prob=args.dropout, attention_probs_dropout_prob=args.dropout, pad_token_id=pad_id,
    )
    model = RaftForMaskedLM(config).to(rt.device).train()
    if rt.rank:  # different dropout masks per process
        torch.manual_seed(derive_seed(args.seed, rt.rank))
    optimizer = build_optimizer(model, lr=args.lr, weight_decay=args.weight_decay, rational_lr=args.rational_lr,
                                rational_weight_decay=args.rational_weight_decay,
                                betas=(args.adam_beta1, args.adam_beta2), eps=args.adam_eps)
    warmup_steps = int(round(args.warmup_ratio * args.max_steps))
    scheduler = build_scheduler(optimizer, warmup_steps, args.max_steps, args.rational_schedule)
    scaler = torch.amp.GradScaler(rt.device.type, enabled=precision == "fp16")

    # ---- resume
    output, ckpt_dir = Path(args.output), Path(args.checkpoint_dir or Path(args.output) / "checkpoints")
    progress_path = ckpt_dir / "progress.jsonl"
    identity = _identity(args, n_train, L)
    if rt.main:
        output.mkdir(parents=True, exist_ok=True)
        ckpt_dir.mkdir(parents=True, exist_ok=True)
        (output / "metrics.json").unlink(missing_ok=True)  # present only once this run completes
        for leftover in remove_temp(ckpt_dir):
            say(f"removed incomplete checkpoint {leftover}")
    ckpt_path, state = _load_checkpoint(ckpt_dir, rt, say)
    if state is not None:
        diff = {k: (state["identity"].get(k), v) for k, v in identity.items() if state["identity"].get(k) != v}
        if diff:
            raise ValueError(f"checkpoint {ckpt_path} was written with other settings {diff} (checkpoint, now); "
                             "use another --checkpoint-dir or delete it")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        if state["scaler"] and scaler.is_enabled():
            scaler.load_state_dict(state["scaler"])
        rngs = state["rng"]
        if len(rngs) == rt.world:
            _set_rng_state(rngs[rt.rank], rt.device)
        else:
            say(f"warning: checkpoint from {len(rngs)} processes, now {rt.world}: dropout RNG reseeded")
            torch.manual_seed(derive_seed(args.seed, rt.rank, state["step"]))
        step, tokens_seen = state["step"], state["tokens_seen"]
        train_time, wall_before = state["train_time_s"], state["wall_time_s"]
        log_rows, snapshots, last_eval = state["log_rows"], state["snapshots"], state["last_eval"]
        interval = state["interval"] if rt.main else {"loss_sum": 0.0, "count": 0}
        resumed_from = state["resumed_from"] + [step]
        say(f"resuming from step {step} (checkpoint {ckpt_path})")
        if rt.main:
            truncate_jsonl(progress_path, step)
    else:
        step = tokens_seen = 0
        train_time = wall_before = 0.0
        log_rows, snapshots, last_eval, resumed_from = [], [], None, []
        interval = {"loss_sum": 0.0, "count": 0}
        snapshots.append({"step": 0, "rationals": export_rationals(model)})
        if rt.main:
            progress_path.unlink(missing_ok=True)
    del state
    if rt.main:
        _write_log(output / "log.csv", log_rows)
        _write_snapshots(output / "rationals.jsonl", snapshots)

    n_params = count_parameters(model)
    rafs = rational_modules(model)
    say(f"{args.variant}: {n_params:,} parameters, {len(rafs)} RAFs in the MLM model | {_device_name(rt.device, rt.world)} "
        f"{precision} | batch {B} = {rt.world} x {pd} x {accum} accumulation | {args.max_steps} steps | "
        f"train {n_train:,} x {L}, validation {len(val_ids):,} sequences")

    loss_module = SparseMLM(model)
    if rt.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        loss_module = DistributedDataParallel(loss_module, device_ids=[rt.device.index] if rt.device.type == "cuda" else None)

    def checkpoint(at_step: int) -> Path:
        rng = rt.gather(_rng_state(rt.device))
        path = None
        if rt.main:
            state = {
                "step": at_step, "tokens_seen": tokens_seen, "train_time_s": train_time,
                "wall_time_s": wall_before + time.perf_counter() - wall_start,
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(), "scaler": scaler.state_dict(), "rng": rng,
                "data": {"position": at_step * B, "epoch": at_step * B // n_train, "train_sequences": n_train,
                         "seq_len": L, "order_seed": args.seed},
                "interval": dict(interval), "log_rows": log_rows, "snapshots": snapshots, "last_eval": last_eval,
                "identity": identity, "resumed_from": resumed_from, "world_size": rt.world,
            }
            path = save_checkpoint(ckpt_dir, at_step, state, {"tokens_seen": tokens_seen, "train_time_s": train_time})
            prune(ckpt_dir, args.keep_checkpoints, protect=path)
        rt.barrier()
        return path

    def run_eval():
        return evaluate(model, val_inputs, val_labels, val_ids, pad_id, 2 * pd, autocast, rt)

    # ---- loop
    rt.training = True  # from here on, errors are not usage errors
    progress = Progress(args.max_steps, progress_path, args.logging_steps, initial=step, desc="pretrain",
                        enabled=rt.main)
    interval_loss = torch.zeros((), dtype=torch.float64, device=rt.device)
    interval_start, interval_tokens = time.perf_counter(), 0
    try:
        while step < args.max_steps:
            t0 = time.perf_counter()
            batch = train_ids[stream.indices(step * B, B)]
            inputs, labels = mask_train_batch(batch, args.seed, step, **mask_kw)
            scale = rt.world / max(1, int((labels != IGNORE_INDEX).sum()))
            for j in range(accum):
                rows = slice(rt.rank * per_rank + j * pd, rt.rank * per_rank + (j + 1) * pd)
                positions, targets = masked_positions(labels[rows])
                x = inputs[rows].to(rt.device, non_blocking=True)
                attn = _attention_mask(batch[rows], pad_id, rt.device)
                no_sync = loss_module.no_sync() if rt.world > 1 and j < accum - 1 else nullcontext()
                with no_sync:
                    with autocast():
                        loss_sum = loss_module(x, positions.to(rt.device), targets.to(rt.device), attn)
                    scaler.scale(loss_sum * scale).backward()
                interval_loss += loss_sum.detach().double()
                interval["count"] += positions.numel()
            if args.max_grad_norm > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(model.parameters(), args.max_grad_norm)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            scheduler.step()
            step += 1
            tokens_seen += B * L
            interval_tokens += B * L
            final = step == args.max_steps
            log_due = step % max(1, args.logging_steps) == 0 or final
            eval_due = (args.eval_steps > 0 and step % args.eval_steps == 0) or final
            if log_due or eval_due:
                _sync(rt.device)  # queued GPU work belongs to training time
            train_time += time.perf_counter() - t0
            if on_step is not None:
                on_step(step)
            stopping = rt.any(stop.requested) and not final

            if log_due or eval_due:
                interval["loss_sum"] += interval_loss.item()
                interval_loss.zero_()
                loss_total, count = rt.sum(interval["loss_sum"], interval["count"])
                row = {"step": step, "tokens": tokens_seen, "loss": loss_total / count if count else None,
                       "lr": optimizer.param_groups[0]["lr"], "val_loss": None, "val_perplexity": None}
                if eval_due:
                    row["val_loss"], row["val_perplexity"] = run_eval()
                    last_eval = {"step": step, "loss": row["val_loss"], "perplexity": row["val_perplexity"]}
                log_rows.append(row)
                interval = {"loss_sum": 0.0, "count": 0}
                elapsed = time.perf_counter() - interval_start
                metrics = {"loss": row["loss"], "lr": row["lr"], "tokens_per_s": interval_tokens / max(elapsed, 1e-9)}
                if eval_due:
                    metrics.update(val_loss=row["val_loss"], val_ppl=row["val_perplexity"])
                progress.update(step, **metrics)
                interval_start, interval_tokens = time.perf_counter(), 0
                if rt.main:
                    _write_log(output / "log.csv", log_rows)
            else:
                progress.update(step)
            if (args.snapshot_steps > 0 and step % args.snapshot_steps == 0) or final:
                snapshots.append({"step": step, "rationals": export_rationals(model)})
                if rt.main:
                    _write_snapshots(output / "rationals.jsonl", snapshots)
            if (args.save_steps > 0 and step % args.save_steps == 0) or final or stopping:
                # the running loss of the current logging interval, summed over processes, goes into
                # the checkpoint (held by rank 0 from here on), so a resumed run logs the same rows
                interval["loss_sum"] += interval_loss.item()
                interval_loss.zero_()
                loss_total, count = rt.sum(interval["loss_sum"], interval["count"])
                interval = {"loss_sum": loss_total if rt.main else 0.0, "count": int(count) if rt.main else 0}
                path = checkpoint(step)
                if rt.main and not final:
                    progress.write(f"checkpoint {path}")
            if stopping:
                how = signal.Signals(stop.signum).name if stop.signum else "stop requested"
                progress.write(f"preempted ({how}): "
                               f"checkpoint at step {step} saved; exiting with code {EXIT_PREEMPTED} "
                               "(run the same command again to resume)")
                return EXIT_PREEMPTED
    finally:
        progress.close()

    # ---- final outputs (a run resumed at max_steps lands here directly)
    if last_eval is None or last_eval["step"] != step:
        loss, ppl = run_eval()
        last_eval = {"step": step, "loss": loss, "perplexity": ppl}
    if rt.main:
        tmp_model = output / f".model.tmp-{os.getpid()}"
        shutil.rmtree(tmp_model, ignore_errors=True)
        model.save_pretrained(tmp_model)
        tokenizer.save_pretrained(tmp_model)
        shutil.rmtree(output / "model", ignore_errors=True)
        os.rename(tmp_model, output / "model")
        _write_log(output / "log.csv", log_rows)
        _write_snapshots(output / "rationals.jsonl", snapshots)
        wall = wall_before + time.perf_counter() - wall_start
        metrics = {
            "variant": args.variant, "seed": args.seed, "steps": step, "tokens_seen": tokens_seen,
            "eval_loss": last_eval["loss"], "perplexity": last_eval["perplexity"],
            "wall_time_s": wall, "train_time_s": train_time, "tokens_per_s": tokens_seen / max(train_time, 1e-9),
            "device": _device_name(rt.device, rt.world), "precision": precision, "world_size": rt.world,
            "resumed_from_steps": resumed_from,
            "model": {
                "num_layers": args.num_layers, "hidden_size": args.hidden_size, "num_heads": args.num_heads,
                "intermediate_size": args.intermediate_size, "max_position_embeddings": args.max_position_embeddings,
                "vocab_size": len(tokenizer), "seq_len": L, "dropout": args.dropout, "parameters": n_params,
            },
            "rational": {
                "layers": config.rational_layers, "pooler": config.rational_pooler,
                "spec": args.rational_layers if args.variant == "raft" else "none",
                "init": args.rational_init if args.variant == "raft" else None,
                "degrees": list(degrees) if args.variant == "raft" else None,
                "lr": args.rational_lr, "weight_decay": args.rational_weight_decay, "schedule": args.rational_schedule,
                "scalars": config.num_rational_scalars if args.variant == "raft" else 0,
                "trained_in_pretraining": sum(p.numel() for m in rafs.values() for p in m.parameters()),
                "final": export_rationals(model),
            },
            "data": {
                "source": stats.get("source", "unknown"), "corpus": str(args.corpus), "train_sequences": n_train,
                "validation_sequences": len(val_ids), "seq_len": L,
                "epochs": tokens_seen / (n_train * L),
            },
            "hyperparameters": {
                "max_steps": args.max_steps, "batch_size": B, "per_device_batch_size": pd,
                "gradient_accumulation_steps": accum, "world_size": rt.world, "lr": args.lr,
                "warmup_ratio": args.warmup_ratio, "warmup_steps": warmup_steps, "schedule": "linear",
                "weight_decay": args.weight_decay, "adam_betas": [args.adam_beta1, args.adam_beta2],
                "adam_eps": args.adam_eps, "max_grad_norm": args.max_grad_norm,
                "mlm_probability": args.mlm_probability, "mask_replace": [0.8, 0.1, 0.1],
                "rational_lr": args.rational_lr, "rational_weight_decay": args.rational_weight_decay,
                "rational_schedule": args.rational_schedule, "precision": precision, "seed": args.seed,
                "max_eval_sequences": args.max_eval_sequences, "eval_mask_seed": EVAL_MASK_SEED,
            },
        }
        _atomic_write(output / "metrics.json", json.dumps(metrics, indent=1) + "\n")
        say(f"done: {step} steps, eval loss {last_eval['loss']}, perplexity {last_eval['perplexity']} -> {output}")
    rt.barrier()
    return 0
