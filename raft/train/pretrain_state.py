"""The checkpoint state of `raft pretrain`: what a checkpoint holds, and resuming from one.

`TrainState` is the loop's counters and records (log.csv rows, RAF snapshots, last evaluation,
the open logging interval). `save` checkpoints it with the model, optimiser, scheduler, grad
scaler and every process's RNG states (`raft.train.checkpoint`: atomic, then pruned). `resume`
takes the newest readable checkpoint (unreadable ones are moved aside by rank 0 first), refuses
one of another identity (`checkpoint_identity`, `check_identity`: exit 2), restores it
(`restore`) and rewrites log.csv / rationals.jsonl and progress.jsonl to its step.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from raft import settings
from raft.settings import Model, Pretrain, Rational
from raft.train.checkpoint import load_resumable, prune, remove_temp, save_checkpoint
from raft.train.mlm import derive_seed
from raft.train.pretrain_record import write_records
from raft.train.progress import truncate_jsonl
from raft.train.runtime import Dist, UsageError

if TYPE_CHECKING:
    from raft.train.pretrain import Meter, Run


def checkpoint_identity(variant: str, model: Model, rational: Rational, pretrain: Pretrain,
                        train_sequences: int, seq_len: int) -> dict:
    """What a checkpoint must share with this run to be resumed: the settings marked ``identity``
    (keyed by flag name: Rational's lr is rational_lr; the RAF options only for raft, they mean
    nothing to the GELU model), the variant and the corpus size."""
    parts = [model, pretrain] + ([rational] if variant == "raft" else [])
    ident = {"variant": variant}
    for obj in parts:
        ident.update({type(obj).PREFIX + name: value for name, value in settings.identity(obj).items()})
    return {**ident, "train_sequences": train_sequences, "seq_len": seq_len}


def check_identity(path: Path, saved: dict, now: dict) -> None:
    """A `UsageError` naming each setting in which checkpoint `path` differs from this run."""
    corpus = {"train_sequences": "the corpus's train sequences", "seq_len": "the corpus's sequence length"}
    diff = [f"{corpus.get(k) or '--' + k.replace('_', '-')} {saved.get(k)!r} (checkpoint) vs {v!r} (now)"
            for k, v in now.items() if saved.get(k) != v]
    if diff:
        raise UsageError(f"checkpoint {path} was written with other settings: {'; '.join(diff)}; "
                         "use another --checkpoint-dir or delete it")


def _empty_interval() -> dict:
    return {"loss_sum": 0.0, "count": 0}


@dataclass
class TrainState:
    """The loop's counters and records: what a checkpoint holds besides weights, optimiser and RNGs."""

    step: int = 0
    tokens_seen: int = 0
    train_time_s: float = 0.0
    wall_before_s: float = 0.0  # wall time of the earlier attempts of a resumed run
    log_rows: list[dict] = field(default_factory=list)  # log.csv
    snapshots: list[dict] = field(default_factory=list)  # rationals.jsonl
    last_eval: dict | None = None  # {"step", "loss", "perplexity"}
    interval: dict = field(default_factory=_empty_interval)  # loss sum / masked tokens since the last log row
    resumed_from: list[int] = field(default_factory=list)

    def to_checkpoint(self, wall_time_s: float) -> dict:
        return {"step": self.step, "tokens_seen": self.tokens_seen, "train_time_s": self.train_time_s,
                "wall_time_s": wall_time_s, "interval": dict(self.interval), "log_rows": self.log_rows,
                "snapshots": self.snapshots, "last_eval": self.last_eval, "resumed_from": self.resumed_from}

    @classmethod
    def from_checkpoint(cls, ckpt: dict, main: bool) -> TrainState:
        """The state after `ckpt`'s step; the open interval's loss is rank 0's alone (see `save`)."""
        return cls(step=ckpt["step"], tokens_seen=ckpt["tokens_seen"], train_time_s=ckpt["train_time_s"],
                   wall_before_s=ckpt["wall_time_s"], log_rows=ckpt["log_rows"], snapshots=ckpt["snapshots"],
                   last_eval=ckpt["last_eval"], interval=ckpt["interval"] if main else _empty_interval(),
                   resumed_from=ckpt["resumed_from"] + [ckpt["step"]])


def resume(run: Run) -> TrainState:
    """The state to start from: the newest readable checkpoint (of this run's identity, else a
    `UsageError`), restored into model, optimiser, scheduler, scaler and RNGs; else step 0."""
    from raft.modeling import export_rationals

    job, main = run.job, run.world.main
    if main:
        job.checkpoints.mkdir(parents=True, exist_ok=True)
        for leftover in remove_temp(job.checkpoints):
            run.say(f"removed incomplete checkpoint {leftover}")
    path, ckpt = _load_checkpoint(job.checkpoints, run.world, run.say)
    if ckpt is None:
        state = TrainState(snapshots=[{"step": 0, "rationals": export_rationals(run.model)}])
    else:
        check_identity(path, ckpt["identity"], run.identity)
        restore(run, ckpt)
        state = TrainState.from_checkpoint(ckpt, main)
        run.say(f"resuming from step {state.step} (checkpoint {path})")
    if main:
        job.output.mkdir(parents=True, exist_ok=True)
        (job.output / "metrics.json").unlink(missing_ok=True)  # present only once this run completes
        if ckpt is None:
            job.progress_path.unlink(missing_ok=True)
        else:
            truncate_jsonl(job.progress_path, state.step)
        write_records(run, state)
    return state


def restore(run: Run, ckpt: dict) -> None:
    run.model.load_state_dict(ckpt["model"])
    run.optimizer.load_state_dict(ckpt["optimizer"])
    run.scheduler.load_state_dict(ckpt["scheduler"])
    if ckpt["scaler"] and run.scaler.is_enabled():
        run.scaler.load_state_dict(ckpt["scaler"])
    rngs, world = ckpt["rng"], run.world
    if len(rngs) == world.world:
        _set_rng_state(rngs[world.rank], run.rt.device)
    else:
        run.say(f"warning: checkpoint from {len(rngs)} processes, now {world.world}: dropout RNG reseeded")
        torch.manual_seed(derive_seed(run.pretrain.seed, world.rank, ckpt["step"]))


def save(run: Run, state: TrainState, meter: Meter) -> Path | None:
    """Checkpoint after `state.step` (rank 0 writes; returns the folder there, None elsewhere).

    The running loss of the open logging interval, summed over processes, goes into the
    checkpoint (held by rank 0 from here on), so a resumed run logs the same rows."""
    world = run.world
    meter.drain(state.interval)
    loss_total, count = world.sum(state.interval["loss_sum"], state.interval["count"])
    state.interval = {"loss_sum": loss_total, "count": int(count)} if world.main else _empty_interval()
    rng = world.gather(_rng_state(run.rt.device))
    path = None
    if world.main:
        b, data = run.batches, run.data
        ckpt = {
            **state.to_checkpoint(run.wall_time(state)),
            "model": run.model.state_dict(), "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(), "scaler": run.scaler.state_dict(), "rng": rng,
            "data": {"position": state.step * b.size, "epoch": state.step * b.size // data.n_train,
                     "train_sequences": data.n_train, "seq_len": data.seq_len, "order_seed": run.pretrain.seed},
            "identity": run.identity, "world_size": world.world,
        }
        path = save_checkpoint(run.job.checkpoints, state.step, ckpt,
                               {"tokens_seen": state.tokens_seen, "train_time_s": state.train_time_s})
        prune(run.job.checkpoints, run.pretrain.keep_checkpoints, protect=path)
    world.barrier()
    return path


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


def _load_checkpoint(ckpt_dir: Path, world: Dist, say) -> tuple[Path | None, dict | None]:
    """(path, state) to resume from. Rank 0 moves unreadable newer checkpoints aside first (and
    says so), then the other processes load the same, now newest, checkpoint."""
    found = load_resumable(ckpt_dir) if world.main else None
    world.barrier()
    if not world.main:
        return load_resumable(ckpt_dir, move=False)[:2]
    for bad in found.unreadable:
        where = f"moved aside to {bad.now}" if bad.now != bad.path else "could not be moved aside"
        say(f"checkpoint {bad.path} is unreadable ({bad.reason}): {where}")
    if found.state is None and found.unreadable:
        say(f"no readable checkpoint in {ckpt_dir}: starting from step 0 "
            f"(moved aside: {', '.join(bad.now.name for bad in found.unreadable)})")
    return found.path, found.state
