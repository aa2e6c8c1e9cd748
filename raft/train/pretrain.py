"""`raft pretrain`: masked-LM pretraining of a BERT ("bert", GELU) or RAFT model.

A plain PyTorch loop (nanoGPT style) over a corpus prepared by `raft prepare-corpus`:

- settings: the flags come from `raft.settings` (Model, Rational, Pretrain; the workflow builds
  the same flags from its config), plus the command-level --corpus / --output /
  --checkpoint-dir / --variant / --precision / --device (`Job`); device, precision (``auto``:
  `runtime.resolve_precision`), processes and exit codes come from `raft.train.runtime`, as for fine-tuning;
- data (`pretrain_data`): the token ids are held in memory as one int16/int32 tensor; the
  sequence order is a seeded permutation per epoch (epochs wrap around); optimisation step s uses
  positions [s*B, (s+1)*B) of that stream, split into per-process slices and micro-batches;
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
  torchrun the workers exit 75 and torchrun itself exits non-zero. A checkpoint's identity is
  the settings marked ``identity`` in `raft.settings` (model, recipe, seed; RAF options for
  raft), the variant and the corpus size: a checkpoint of another identity is refused with an
  error naming the differing flags (exit 2); the other settings (micro-batch, logging / eval /
  save intervals, precision, ...) may change between attempts.
  log.csv / rationals.jsonl rows live in the checkpoint and are rewritten from it on resume
  (no duplicates); progress.jsonl is truncated to the resumed step. What a checkpoint holds,
  and resuming from one: `pretrain_state`;
- --compile: `torch.compile` of the sparse-loss wrapper (before DDP; the masked-token count is
  marked dynamic, so one graph serves every step); checkpoints, evaluation and model/ use the
  plain model, and --compile is not part of the identity: compiled and eager attempts resume
  each other;
- multi-GPU: run the same command under `torchrun --nproc_per_node K -m raft.cli pretrain ...`
  (DDP over the sparse-loss wrapper; each process takes a contiguous slice of every global batch;
  the effective batch stays --batch-size via accumulation; only rank 0 writes files).

Outputs in --output: model/ (RaftForMaskedLM + corpus tokenizer), log.csv, rationals.jsonl,
preactivations.json (histograms of every FFN activation's inputs on the validation sequences,
unmasked: `collect_preactivations`) and, last, metrics.json (its presence means the run completed; the records: `pretrain_record`).
--checkpoint-dir holds checkpoints and progress.jsonl.

This module holds the command, the setup, the loop and the evaluation. Code map: `run` (CLI
namespace -> settings) -> `train`: `setup` (checks, runtime, data (`pretrain_data.load_data`),
model, optimiser) -> `resume` (`pretrain_state`: checkpoint -> `TrainState`) -> `train_loop`
(`train_step`, `log_and_eval`, `pretrain_state.save`) -> `write_outputs` (model/, then
`pretrain_record`: log.csv, rationals.jsonl, preactivations.json, metrics.json).
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import torch

from raft import checks, settings
from raft.settings import Model, Pretrain, Rational
from raft.train import runtime
from raft.train.checkpoint import StopSignal
from raft.train.mlm import (
    IGNORE_INDEX,
    SparseMLM,
    derive_seed,
    masked_positions,
    mlm_loss_sum,
    unigram_log_frequencies,
)
from raft.train.pretrain_data import Batches, Data, load_data
from raft.train.pretrain_record import (
    _degrees,
    _write_log,
    _write_snapshots,
    metrics_record,
    write_preactivations,
    write_records,
)
from raft.train.pretrain_state import (
    TrainState,
    _empty_interval,
    checkpoint_identity,
    resume,
    save,
)
from raft.train.progress import Progress
from raft.train.runtime import (
    EXIT_PREEMPTED,
    EXIT_USAGE,
    Dist,
    Runtime,
    UsageError,
    check,
)

PROG = "raft pretrain"
DEVICES = ("auto", "cpu", "cuda")


# ---------------------------------------------------------------------------------- command line
def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("data and outputs")
    g.add_argument("--corpus", required=True, type=Path, help="folder written by `raft prepare-corpus`")
    g.add_argument("--output", required=True, type=Path, help="run folder (model/, metrics.json, log.csv, rationals.jsonl)")
    g.add_argument("--checkpoint-dir", type=Path, default=None, help="checkpoints and progress.jsonl (default: OUTPUT/checkpoints)")
    g = p.add_argument_group("run")
    g.add_argument("--variant", required=True, choices=["bert", "raft"])
    g.add_argument("--precision", choices=checks.PRECISIONS, default="auto",
                   help=checks.AUTO_PRECISION)
    g.add_argument("--device", choices=DEVICES, default="auto", help="auto: this process's GPU if there is one")
    settings.add_flags(p, Model)
    settings.add_flags(p, Rational, "rational (the RAFs; raft only)")
    settings.add_flags(p, Pretrain, "pretrain (optimisation, logging and checkpoints)")


@dataclass(frozen=True)
class Job:
    """The command-level options of a run: what it reads and writes, and where it runs."""

    variant: str  # "bert" | "raft"
    corpus: Path
    output: Path
    checkpoint_dir: Path | None = None  # default: OUTPUT/checkpoints
    precision: str = "auto"  # as asked; the resolved one is `Runtime.precision`
    device: str = "auto"

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Job:
        return cls(variant=args.variant, corpus=Path(args.corpus), output=Path(args.output),
                   checkpoint_dir=Path(args.checkpoint_dir) if args.checkpoint_dir else None,
                   precision=args.precision, device=args.device)

    @property
    def checkpoints(self) -> Path:
        return self.checkpoint_dir or self.output / "checkpoints"

    @property
    def progress_path(self) -> Path:
        return self.checkpoints / "progress.jsonl"


def main(args) -> int:
    """`run`; a full disk while writing checkpoints or outputs is one line and exit code 2
    (`runtime.run_command`)."""
    return runtime.run_command(PROG, run, args)


def run(args: argparse.Namespace, on_step=None) -> int:
    """`train` with the settings of a parsed command line. `on_step(step)` is called after every
    optimiser step (tests)."""
    return train(settings.from_args(Model, args), settings.from_args(Rational, args),
                 settings.from_args(Pretrain, args), Job.from_args(args), on_step=on_step)


def train(model: Model, rational: Rational, pretrain: Pretrain, job: Job, on_step=None) -> int:
    """Train (or resume) one run: 0 when it completed, `EXIT_PREEMPTED` after a signal's
    checkpoint, `EXIT_USAGE` for a problem found before training (settings, corpus, checkpoint
    of another identity); a failure during training raises."""
    wall_start = time.perf_counter()
    try:
        world = Dist(job.device)
    except UsageError as exc:
        return _usage_error(exc)
    try:
        with StopSignal() as stop:
            try:
                current = setup(model, rational, pretrain, job, world, wall_start)
                state = resume(current)
            except (UsageError, ValueError, FileNotFoundError) as exc:
                return _usage_error(exc)
            start(current)
            code = train_loop(current, state, stop, on_step)
            if code == 0:
                write_outputs(current, state)
            return code
    finally:
        world.close()


def _usage_error(exc: Exception) -> int:
    print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
    return EXIT_USAGE


# ---------------------------------------------------------------------------------- setup
@dataclass
class Run:
    """Everything one run works with, built once by `setup`."""

    model_settings: Model  # max_position_embeddings resolved (None -> the corpus sequence length)
    rational_settings: Rational
    pretrain: Pretrain
    job: Job
    world: Dist
    rt: Runtime
    data: Data
    batches: Batches
    config: object  # the RaftConfig
    model: torch.nn.Module  # RaftForMaskedLM
    optimizer: torch.optim.Optimizer
    scheduler: object
    scaler: torch.amp.GradScaler  # disabled unless fp16
    warmup_steps: int
    identity: dict  # what a checkpoint must share with this run to be resumed
    wall_start: float
    loss_module: torch.nn.Module | None = None  # SparseMLM (DDP-wrapped under torchrun); set by `start`

    def say(self, msg: str) -> None:
        if self.world.main:
            print(f"[pretrain] {msg}", file=sys.stderr, flush=True)

    def wall_time(self, state: TrainState) -> float:
        return state.wall_before_s + time.perf_counter() - self.wall_start


def setup(model: Model, rational: Rational, pretrain: Pretrain, job: Job, world: Dist, wall_start: float) -> Run:
    """Check the settings, then load the data and build the model, optimiser and scheduler."""
    from raft.optim import build_optimizer, build_scheduler

    batches = Batches.plan(pretrain, world)
    rt = Runtime.create(world.device, job.precision)
    if pretrain.compile:
        runtime.check_compile(rt.device)
    check(checks.check_model, model.hidden_size, model.num_heads)
    if job.variant == "raft":
        check(checks.check_rational, rational.layers, rational.init, model.num_layers)
    data = load_data(job.corpus, pretrain)
    check(checks.check_positions, model.max_position_embeddings, data.seq_len)
    model = settings.replace(model, max_position_embeddings=model.max_position_embeddings or data.seq_len)

    runtime.seed_everything(pretrain.seed)
    config, net = build_model(job.variant, model, rational, data, rt.device)
    if pretrain.output_bias == "unigram":  # a resumed run's checkpoint overwrites it
        with torch.no_grad():
            net.cls.predictions.bias.copy_(unigram_log_frequencies(data.train, config.vocab_size))
    if world.rank:  # different dropout masks per process
        torch.manual_seed(derive_seed(pretrain.seed, world.rank))
    optimizer = build_optimizer(net, lr=pretrain.lr, weight_decay=pretrain.weight_decay, rational_lr=rational.lr,
                                rational_weight_decay=rational.weight_decay,
                                betas=(pretrain.adam_beta1, pretrain.adam_beta2), eps=pretrain.adam_eps)
    warmup_steps = round(pretrain.warmup_ratio * pretrain.max_steps)
    scheduler = build_scheduler(optimizer, warmup_steps, pretrain.max_steps, rational.schedule)
    scaler = rt.scaler or torch.amp.GradScaler(rt.device.type, enabled=False)  # a pass-through
    identity = checkpoint_identity(job.variant, model, rational, pretrain, data.n_train, data.seq_len)
    return Run(model, rational, pretrain, job, world, rt, data, batches, config, net, optimizer, scheduler,
               scaler, warmup_steps, identity, wall_start)


def build_model(variant: str, model: Model, rational: Rational, data: Data, device: torch.device):
    """(RaftConfig, RaftForMaskedLM on `device`, in training mode)."""
    from raft.modeling import RaftForMaskedLM, make_config

    config = make_config(
        variant, rational_layers=rational.layers, rational_init=rational.init, rational_degrees=_degrees(rational),
        vocab_size=len(data.tokenizer), hidden_size=model.hidden_size, num_hidden_layers=model.num_layers,
        num_attention_heads=model.num_heads, intermediate_size=model.intermediate_size,
        max_position_embeddings=model.max_position_embeddings, hidden_dropout_prob=model.dropout,
        attention_probs_dropout_prob=model.dropout, pad_token_id=data.pad_id,
        deepnorm=model.deepnorm, embedding_layernorm=model.embedding_layernorm, weight_init=model.weight_init,
    )
    return config, RaftForMaskedLM(config).to(device).train()


def start(run: Run) -> None:
    """Say what runs, and wrap the model for the loss (DDP under torchrun: after resuming, so
    that rank 0's restored weights are the ones broadcast)."""
    from raft.modeling import count_parameters, rational_modules

    b, data = run.batches, run.data
    run.say(f"{run.job.variant}: {count_parameters(run.model):,} parameters, {len(rational_modules(run.model))} "
            f"RAFs in the MLM model | {run.rt.describe(b.world)} | batch {b.size} = {b.world} x {b.per_device} x "
            f"{b.accumulation} accumulation | {run.pretrain.max_steps} steps | train {data.n_train:,} x "
            f"{data.seq_len}, validation {len(data.validation):,} sequences")
    run.loss_module = SparseMLM(run.model)
    if run.pretrain.compile:  # before DDP (DDP over the compiled module); checkpoints keep `run.model`
        run.loss_module = torch.compile(run.loss_module)
    if b.world > 1:
        from torch.nn.parallel import DistributedDataParallel

        device_ids = [run.rt.device.index] if run.rt.device.type == "cuda" else None
        run.loss_module = DistributedDataParallel(run.loss_module, device_ids=device_ids)


# ---------------------------------------------------------------------------------- the loop
class Meter:
    """The open logging interval's training loss, summed on the device (no sync per step), and
    its tokens/s clock."""

    def __init__(self, device: torch.device):
        self.loss = torch.zeros((), dtype=torch.float64, device=device)
        self.restart()

    def restart(self) -> None:
        self.started, self.tokens = time.perf_counter(), 0

    def drain(self, interval: dict) -> None:
        """Move the device sum into `interval["loss_sum"]`."""
        interval["loss_sum"] += self.loss.item()
        self.loss.zero_()

    def tokens_per_s(self) -> float:
        return self.tokens / max(time.perf_counter() - self.started, 1e-9)


@dataclass(frozen=True)
class Due:
    """What falls due after an optimiser step (the last step: everything)."""

    final: bool
    log: bool
    eval: bool
    snapshot: bool
    save: bool

    @classmethod
    def at(cls, step: int, p: Pretrain) -> Due:
        final = step == p.max_steps

        def every(n: int) -> bool:
            return (n > 0 and step % n == 0) or final

        return cls(final, every(max(1, p.logging_steps)), every(p.eval_steps), every(p.snapshot_steps),
                   every(p.save_steps))


def train_loop(run: Run, state: TrainState, stop: StopSignal, on_step=None) -> int:
    """Optimiser steps up to --max-steps (returns 0), or up to a stop signal (checkpoint, then
    `EXIT_PREEMPTED`); logs, evaluates, snapshots and checkpoints as they fall due."""
    p, world = run.pretrain, run.world
    progress = Progress(p.max_steps, run.job.progress_path, p.logging_steps, initial=state.step, desc="pretrain",
                        enabled=world.main)
    meter = Meter(run.rt.device)
    try:
        while state.step < p.max_steps:
            started = time.perf_counter()
            train_step(run, state, meter)
            due = Due.at(state.step, p)
            if due.log or due.eval:
                _sync(run.rt.device)  # queued GPU work belongs to training time
            state.train_time_s += time.perf_counter() - started
            if on_step is not None:
                on_step(state.step)
            stopping = world.any(stop.requested) and not due.final
            if due.log or due.eval:
                log_and_eval(run, state, meter, progress, evaluate_now=due.eval)
            else:
                progress.update(state.step)
            if due.snapshot:
                take_snapshot(run, state)
            if due.save or stopping:
                path = save(run, state, meter)
                if world.main and not due.final:
                    progress.write(f"checkpoint {path}")
            if stopping:
                return _preempted(stop, state.step, progress)
    finally:
        progress.close()
    return 0


def train_step(run: Run, state: TrainState, meter: Meter) -> None:
    """One optimiser step over global batch `state.step`: this process's micro-batches, the loss
    normalised by the masked tokens of the whole global batch."""
    b, rt = run.batches, run.rt
    batch, inputs, labels = run.data.masked_batch(state.step, b.size, run.pretrain.seed)
    scale = b.world / max(1, int((labels != IGNORE_INDEX).sum()))
    for j in range(b.accumulation):
        rows = b.rows(j)
        positions, targets = (t.to(rt.device) for t in masked_positions(labels[rows]))
        if run.pretrain.compile:  # masked tokens per micro-batch vary: one graph for all counts
            torch._dynamo.maybe_mark_dynamic(positions, 0)
            torch._dynamo.maybe_mark_dynamic(targets, 0)
        x = inputs[rows].to(rt.device, non_blocking=True)
        attn = _attention_mask(batch[rows], run.data.pad_id, rt.device)
        no_sync = run.loss_module.no_sync() if b.world > 1 and j < b.accumulation - 1 else nullcontext()
        with no_sync:
            with rt.autocast():
                loss_sum = run.loss_module(x, positions, targets, attn)
            run.scaler.scale(loss_sum * scale).backward()
        meter.loss += loss_sum.detach().double()
        state.interval["count"] += positions.numel()
    optimizer_step(run)
    state.step += 1
    state.tokens_seen += b.size * run.data.seq_len
    meter.tokens += b.size * run.data.seq_len


def optimizer_step(run: Run) -> None:
    """Clip (optional), step (through the grad scaler), zero the gradients, advance the schedule."""
    if run.pretrain.max_grad_norm > 0:
        run.scaler.unscale_(run.optimizer)
        torch.nn.utils.clip_grad_norm_(run.model.parameters(), run.pretrain.max_grad_norm)
    run.scaler.step(run.optimizer)
    run.scaler.update()
    run.optimizer.zero_grad(set_to_none=True)
    run.scheduler.step()


def log_and_eval(run: Run, state: TrainState, meter: Meter, progress: Progress, evaluate_now: bool) -> None:
    """A log.csv row (and a progress line) for the interval ending at `state.step`, with a
    validation loss when `evaluate_now`."""
    meter.drain(state.interval)
    loss_total, count = run.world.sum(state.interval["loss_sum"], state.interval["count"])
    row = {"step": state.step, "tokens": state.tokens_seen, "loss": loss_total / count if count else None,
           "lr": run.optimizer.param_groups[0]["lr"], "val_loss": None, "val_perplexity": None}
    if evaluate_now:
        row["val_loss"], row["val_perplexity"] = run_eval(run)
        state.last_eval = {"step": state.step, "loss": row["val_loss"], "perplexity": row["val_perplexity"]}
    state.log_rows.append(row)
    state.interval = _empty_interval()
    metrics = {"loss": row["loss"], "lr": row["lr"], "tokens_per_s": meter.tokens_per_s()}
    if evaluate_now:
        metrics.update(val_loss=row["val_loss"], val_ppl=row["val_perplexity"])
    progress.update(state.step, **metrics)
    meter.restart()
    if run.world.main:
        _write_log(run.job.output / "log.csv", state.log_rows)


def take_snapshot(run: Run, state: TrainState) -> None:
    from raft.modeling import export_rationals

    state.snapshots.append({"step": state.step, "rationals": export_rationals(run.model)})
    if run.world.main:
        _write_snapshots(run.job.output / "rationals.jsonl", state.snapshots)


def _preempted(stop: StopSignal, step: int, progress: Progress) -> int:
    how = signal.Signals(stop.signum).name if stop.signum else "stop requested"
    progress.write(f"preempted ({how}): checkpoint at step {step} saved; exiting with code {EXIT_PREEMPTED} "
                   "(run the same command again to resume)")
    return EXIT_PREEMPTED


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


# ---------------------------------------------------------------------------------- evaluation
def run_eval(run: Run) -> tuple[float | None, float | None]:
    d = run.data
    return evaluate(run.model, d.val_inputs, d.val_labels, d.validation, d.pad_id, 2 * run.batches.per_device,
                    run.rt, run.world)


@torch.no_grad()
def evaluate(model, inputs, labels, attention_ids, pad_id, batch_size: int, rt: Runtime,
             world: Dist) -> tuple[float | None, float | None]:
    """(mean masked-token loss, perplexity) over a pre-masked validation set, sharded over ranks."""
    n = len(inputs)
    if n == 0:
        return None, None
    lo, hi = world.rank * n // world.world, (world.rank + 1) * n // world.world
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
        with rt.autocast():
            total += mlm_loss_sum(model, x, positions.to(rt.device), targets.to(rt.device), attn).double()
        count += positions.numel()
    model.train(was_training)
    total, count = world.sum(total.item(), count)
    if count == 0:
        return None, None
    loss = total / count
    return loss, math.exp(min(loss, 700.0))


def collect_preactivations(run: Run) -> dict:
    """Histograms of every FFN activation's inputs (`raft.train.preacts.collect`) over the
    validation sequences as stored (unmasked; the first --max-eval-sequences), sharded over the
    processes as `evaluate` does; every process gets those of all shards."""
    from raft.train import preacts

    ids, world, size = run.data.validation, run.world, 2 * run.batches.per_device
    lo, hi = world.rank * len(ids) // world.world, (world.rank + 1) * len(ids) // world.world
    batches = ({"input_ids": ids[i:min(i + size, hi)].long(),
                "attention_mask": _attention_mask(ids[i:min(i + size, hi)], run.data.pad_id, run.rt.device)}
               for i in range(lo, hi, size))
    return preacts.collect(run.model, batches, run.rt, gather=world.gather)


def _attention_mask(ids: torch.Tensor, pad_id, device):
    """None for the usual unpadded corpus sequences; a padding mask otherwise."""
    if pad_id is None or not bool((ids == pad_id).any()):
        return None
    return (ids != pad_id).long().to(device)


# ---------------------------------------------------------------------------------- outputs
def write_outputs(run: Run, state: TrainState) -> None:
    """A final evaluation (unless the last step had one) and the pre-activation histograms, then
    on rank 0 model/, log.csv, rationals.jsonl, preactivations.json and, last, metrics.json."""
    if state.last_eval is None or state.last_eval["step"] != state.step:
        loss, ppl = run_eval(run)
        state.last_eval = {"step": state.step, "loss": loss, "perplexity": ppl}
    preactivations = collect_preactivations(run)
    if run.world.main:
        _save_model(run)
        write_records(run, state)
        write_preactivations(run, state, preactivations)
        runtime.write_json_atomic(run.job.output / "metrics.json", metrics_record(run, state), indent=1)
        run.say(f"done: {state.step} steps, eval loss {state.last_eval['loss']}, perplexity "
                f"{state.last_eval['perplexity']} -> {run.job.output}")
    run.world.barrier()


def _save_model(run: Run) -> None:
    output = run.job.output
    tmp = output / f".model.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    run.model.save_pretrained(tmp)
    run.data.tokenizer.save_pretrained(tmp)
    shutil.rmtree(output / "model", ignore_errors=True)
    os.rename(tmp, output / "model")
