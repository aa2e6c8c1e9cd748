"""The records of `raft pretrain`: metrics.json's content, log.csv, rationals.jsonl and
preactivations.json.

`metrics_record` (with `rational_record` and `hyperparameters`) is metrics.json
(docs/architecture.md); `write_records` writes log.csv (`LOG_COLUMNS`) and rationals.jsonl as a
`TrainState` has them (rank 0; rewritten whole, so a resumed run has no duplicate rows);
`write_preactivations` writes preactivations.json (the histograms of the FFN pre-activations on
the validation sequences, `raft.train.preacts`). `pretrain.write_outputs` writes them, with
model/, at the end of a run.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING

from raft import settings
from raft.settings import Rational
from raft.train import runtime
from raft.train.mlm import EVAL_MASK_SEED

if TYPE_CHECKING:
    from raft.train.pretrain import Run
    from raft.train.pretrain_state import TrainState

LOG_COLUMNS = ["step", "tokens", "loss", "lr", "val_loss", "val_perplexity"]
MASK_REPLACE = [0.8, 0.1, 0.1]  # selected tokens -> [MASK] / random id / unchanged (raft.train.mlm)


def metrics_record(run: Run, state: TrainState) -> dict:
    """metrics.json (docs/architecture.md)."""
    from raft.modeling import count_parameters

    data, world, last = run.data, run.world, state.last_eval
    return {
        "variant": run.job.variant, "seed": run.pretrain.seed, "steps": state.step, "tokens_seen": state.tokens_seen,
        "eval_loss": last["loss"], "perplexity": last["perplexity"], "wall_time_s": run.wall_time(state),
        "train_time_s": state.train_time_s, "tokens_per_s": state.tokens_seen / max(state.train_time_s, 1e-9),
        "device": runtime.device_description(run.rt.device, world=world.world), "precision": run.rt.precision,
        "world_size": world.world, "resumed_from_steps": state.resumed_from,
        "model": {**settings.as_record(run.model_settings), "vocab_size": len(data.tokenizer),
                  "seq_len": data.seq_len, "parameters": count_parameters(run.model)},
        "rational": rational_record(run),
        "data": {"source": data.stats.get("source", "unknown"), "corpus": str(run.job.corpus),
                 "train_sequences": data.n_train, "validation_sequences": len(data.validation),
                 "seq_len": data.seq_len, "epochs": state.tokens_seen / (data.n_train * data.seq_len)},
        "hyperparameters": hyperparameters(run),
    }


def rational_record(run: Run) -> dict:
    """The RAF settings as given (lr, weight_decay, schedule) and as used: placement, shape, size."""
    from raft.modeling import export_rationals, rational_modules

    r, config, raft = run.rational_settings, run.config, run.job.variant == "raft"
    rafs = rational_modules(run.model)
    return {
        **settings.as_record(r),
        "layers": config.rational_layers, "pooler": config.rational_pooler,
        "spec": r.layers if raft else "none", "init": r.init if raft else None,
        "degrees": list(_degrees(r)) if raft else None,
        "scalars": config.num_rational_scalars if raft else 0,
        "trained_in_pretraining": sum(p.numel() for m in rafs.values() for p in m.parameters()),
        "final": export_rationals(run.model),
    }


def hyperparameters(run: Run) -> dict:
    """The Pretrain settings as given, with the values derived from them and the RAF recipe."""
    p, r, b = run.pretrain, run.rational_settings, run.batches
    return {
        **settings.as_record(p),
        "per_device_batch_size": b.per_device, "gradient_accumulation_steps": b.accumulation,
        "world_size": b.world, "warmup_steps": run.warmup_steps, "schedule": "linear",
        "adam_betas": [p.adam_beta1, p.adam_beta2], "mask_replace": MASK_REPLACE,
        "rational_lr": r.lr, "rational_weight_decay": r.weight_decay, "rational_schedule": r.schedule,
        "precision": run.rt.precision, "eval_mask_seed": EVAL_MASK_SEED,
    }


def write_records(run: Run, state: TrainState) -> None:
    """log.csv and rationals.jsonl as the state has them (rank 0)."""
    _write_log(run.job.output / "log.csv", state.log_rows)
    _write_snapshots(run.job.output / "rationals.jsonl", state.snapshots)


def write_preactivations(run: Run, state: TrainState, layers: dict) -> None:
    """preactivations.json (docs/architecture.md): ``layers`` (`raft.train.preacts.collect` over
    the validation sequences) with what they were computed on (rank 0)."""
    from raft.train import preact_records as fmt

    data = run.data
    record = {
        "variant": run.job.variant, "steps": state.step, "split": "validation", "masked": False,
        "sequences": len(data.validation), "seq_len": data.seq_len, "precision": run.rt.precision,
        "histogram": {"bins": fmt.BINS, "limits": list(fmt.LIMITS),
                      "quantiles": "read from the histogram, linear within a bin"},
        "layers": layers,
    }
    runtime.write_json_atomic(run.job.output / fmt.FILE, record, indent=1)


def _write_log(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=LOG_COLUMNS, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: ("" if row.get(k) is None else row[k]) for k in LOG_COLUMNS})
    runtime.write_text_atomic(path, buf.getvalue())


def _write_snapshots(path: Path, snapshots: list[dict]) -> None:
    runtime.write_text_atomic(path, "".join(json.dumps(s) + "\n" for s in snapshots))


# also `pretrain.build_model`'s (kept here: this module must not import `pretrain`)
def _degrees(rational: Rational) -> tuple[int, ...]:
    return tuple(int(d) for d in str(rational.degrees).split(","))
