"""The fine-tuning loop shared by GLUE and SQuAD.

- `Encoded`: tokenized examples *without* padding (token id lists) plus per-example target
  arrays; `Encoded.batch(idx)` pads one batch to its own longest sequence (dynamic padding).
- `train_epoch`: one pass in a seeded random order, AdamW step per batch, gradient clipping,
  autocast (bf16 / fp16 with a grad scaler) on GPU.
- `predict`: batched `torch.inference_mode()` evaluation over length-sorted batches
  (sort by length, pad per batch), outputs returned in the original order.
- `fit`: evaluate on dev after every epoch, early stopping with `patience`, and the best
  epoch's weights restored at the end (best = strictly highest dev score, first on ties, so
  the selected epoch is the argmax of the dev curve).
- `train_with_settings`: AdamW + schedule + `fit` with a run's `raft.settings.Finetune`.

Where the model runs (device, precision, grad scaler) is a `raft.train.runtime.Runtime`.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from raft.train.runtime import Runtime, autocast

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
class Encoded:
    """Unpadded token id lists (+ token types) and per-example targets of one data part."""

    def __init__(self, input_ids: Sequence[Sequence[int]], token_type_ids=None, pad_id: int = 0, **targets):
        self.input_ids = [np.asarray(x, dtype=np.int64) for x in input_ids]
        self.token_type_ids = None if token_type_ids is None else [np.asarray(x, dtype=np.int64) for x in token_type_ids]
        self.pad_id = int(pad_id)
        self.lengths = np.fromiter((len(x) for x in self.input_ids), dtype=np.int64, count=len(self.input_ids))
        self.targets = {k: np.asarray(v) for k, v in targets.items() if v is not None}
        for k, v in self.targets.items():
            if len(v) != len(self.input_ids):
                raise ValueError(f"target {k!r} has {len(v)} entries for {len(self.input_ids)} examples")

    def __len__(self) -> int:
        return len(self.input_ids)

    def batch(self, idx, device, with_targets: bool = True) -> dict[str, torch.Tensor]:
        idx = np.asarray(idx)
        width = int(self.lengths[idx].max())
        ids = np.full((len(idx), width), self.pad_id, dtype=np.int64)
        mask = np.zeros((len(idx), width), dtype=np.int64)
        types = np.zeros((len(idx), width), dtype=np.int64) if self.token_type_ids is not None else None
        for row, i in enumerate(idx):
            n = self.lengths[i]
            ids[row, :n] = self.input_ids[i]
            mask[row, :n] = 1
            if types is not None:
                types[row, :n] = self.token_type_ids[i]
        out = {"input_ids": torch.from_numpy(ids), "attention_mask": torch.from_numpy(mask)}
        if types is not None:
            out["token_type_ids"] = torch.from_numpy(types)
        if with_targets:
            for k, v in self.targets.items():
                out[k] = torch.from_numpy(np.ascontiguousarray(v[idx]))
        non_blocking = device.type == "cuda"
        return {k: t.to(device, non_blocking=non_blocking) for k, t in out.items()}


def length_sorted_batches(lengths: np.ndarray, batch_size: int, max_tokens: int | None = None) -> list[np.ndarray]:
    """Index batches over examples sorted by length (longest first), stable for equal lengths."""
    order = np.argsort(-np.asarray(lengths), kind="stable")
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def shuffled_batches(n: int, batch_size: int, generator: torch.Generator) -> list[np.ndarray]:
    perm = torch.randperm(n, generator=generator).numpy()
    return [perm[i : i + batch_size] for i in range(0, n, batch_size)]


def steps_per_epoch(n: int, batch_size: int) -> int:
    return max(1, math.ceil(n / batch_size))


def _bar(iterable, total: int, desc: str):
    """A per-batch tqdm bar on interactive terminals only (log files get the per-epoch line)."""
    from raft.train.progress import use_bar

    if not use_bar():
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, leave=False, dynamic_ncols=True, unit="batch")


# ---------------------------------------------------------------------------------------
# training and evaluation
# ---------------------------------------------------------------------------------------
def train_epoch(
    model: nn.Module,
    data: Encoded,
    *,
    batch_size: int,
    optimizer: torch.optim.Optimizer,
    scheduler,
    generator: torch.Generator,
    runtime: Runtime,
    max_grad_norm: float | None = 1.0,
    desc: str = "train",
) -> float:
    """One epoch in a seeded random order; returns the example-weighted mean training loss."""
    model.train()
    params = [p for g in optimizer.param_groups for p in g["params"]]
    total = torch.zeros((), dtype=torch.float64, device=runtime.device)  # summed on device: no sync per step
    count = 0
    batches = shuffled_batches(len(data), batch_size, generator)
    for idx in _bar(batches, len(batches), desc):
        batch = data.batch(idx, runtime.device)
        with autocast(runtime.device, runtime.precision):
            loss = model(**batch).loss
        optimizer.zero_grad(set_to_none=True)
        if runtime.scaler is not None:
            runtime.scaler.scale(loss).backward()
            runtime.scaler.unscale_(optimizer)
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            runtime.scaler.step(optimizer)
            runtime.scaler.update()
        else:
            loss.backward()
            if max_grad_norm:
                torch.nn.utils.clip_grad_norm_(params, max_grad_norm)
            optimizer.step()
        scheduler.step()
        total += loss.detach().double() * len(idx)
        count += len(idx)
    mean = float(total) / max(1, count)
    if not math.isfinite(mean):
        raise FloatingPointError(f"non-finite training loss ({mean}) with precision {runtime.precision}")
    return mean


def predict(
    model: nn.Module,
    data: Encoded,
    *,
    batch_size: int,
    runtime: Runtime,
    outputs: Sequence[str] = ("logits",),
    ragged: Sequence[str] = (),
    with_loss: bool = True,
    desc: str = "eval",
) -> dict:
    """Model outputs for every example, in the original order, plus the mean ``loss``.

    Batches run longest-first with per-batch padding under ``torch.inference_mode()``.
    Outputs named in ``ragged`` have a sequence axis: each example gets its own 1-D float32
    array cut to its own length. Others are stacked into one float32 array.
    ``loss`` (example-weighted mean) is included when ``with_loss`` and targets exist, else None.
    """
    model.eval()
    n = len(data)
    collected: dict[str, list] = {k: [None] * n for k in outputs}
    total_loss, count = 0.0, 0
    use_targets = with_loss and bool(data.targets)
    batches = length_sorted_batches(data.lengths, batch_size)
    with torch.inference_mode():
        for idx in _bar(batches, len(batches), desc):
            batch = data.batch(idx, runtime.device, with_targets=use_targets)
            with autocast(runtime.device, runtime.precision):
                out = model(**batch)
            if use_targets and out.loss is not None:
                total_loss += float(out.loss.float()) * len(idx)
                count += len(idx)
            for k in outputs:
                t = out[k].float().cpu().numpy()
                if k in ragged:
                    for row, i in enumerate(idx):
                        collected[k][i] = t[row, : data.lengths[i]]
                else:
                    for row, i in enumerate(idx):
                        collected[k][i] = t[row]
    result: dict = {k: (v if k in ragged else (np.stack(v) if n else np.zeros((0,), np.float32))) for k, v in collected.items()}
    result["loss"] = total_loss / count if count else None
    return result


# ---------------------------------------------------------------------------------------
# epochs, early stopping, best-state restore
# ---------------------------------------------------------------------------------------
def snapshot_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """Copies of everything training can change: trainable parameters and buffers."""
    state = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    state.update({f"buffer:{n}": b.detach().clone() for n, b in model.named_buffers()})
    return state


@torch.no_grad()
def restore_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    params = dict(model.named_parameters())
    buffers = dict(model.named_buffers())
    for key, value in state.items():
        if key.startswith("buffer:"):
            buffers[key[len("buffer:") :]].copy_(value)
        else:
            params[key].copy_(value)


@dataclass
class FitResult:
    best_epoch: int
    best_score: float
    curve: list[dict] = field(default_factory=list)
    epochs_run: int = 0
    stopped_early: bool = False


def fit(
    model: nn.Module,
    *,
    epochs: int,
    patience: int,
    train_one_epoch: Callable[[int], float],
    evaluate_dev: Callable[[], dict],
    logger: Callable[[dict], None] | None = None,
) -> FitResult:
    """Train up to ``epochs`` epochs, evaluating on dev after each; restore the best epoch.

    ``train_one_epoch(epoch) -> mean training loss``; ``evaluate_dev() -> {"score", "loss", ...}``.
    Stops once ``patience`` epochs in a row brought no strictly better dev score.
    ``curve`` has one ``{epoch, score, loss, dev_loss}`` per epoch (``loss`` = training loss).
    """
    if epochs < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if patience < 1:
        raise ValueError(f"patience must be >= 1, got {patience}")
    best_score, best_epoch, best_state = -math.inf, 0, None
    curve: list[dict] = []
    since_best = 0
    epoch = 0
    for epoch in range(1, epochs + 1):
        t0 = time.perf_counter()
        train_loss = float(train_one_epoch(epoch))
        t_train = time.perf_counter() - t0
        dev = evaluate_dev()
        score = float(dev["score"])
        dev_loss = dev.get("loss")
        elapsed = time.perf_counter() - t0
        improved = not math.isnan(score) and score > best_score
        if improved:
            best_score, best_epoch, since_best = score, epoch, 0
            best_state = snapshot_state(model)
        else:
            since_best += 1
        point = {
            "epoch": epoch,
            "score": score,
            "loss": train_loss,
            "dev_loss": None if dev_loss is None else float(dev_loss),
            "time_s": round(elapsed, 3),
        }
        curve.append(point)
        if logger is not None:
            logger({**point, "epochs": epochs, "train_time_s": t_train, "best_score": best_score,
                    "best_epoch": best_epoch, "improved": improved})
        if since_best >= patience and epoch < epochs:
            break
    if best_state is None:  # every dev score was NaN: keep the last epoch
        best_epoch, best_score = epoch, float("nan")
    else:
        restore_state(model, best_state)
    return FitResult(
        best_epoch=best_epoch,
        best_score=best_score,
        curve=curve,
        epochs_run=epoch,
        stopped_early=epoch < epochs,
    )


def format_epoch_line(p: dict, metric: str = "score") -> str:
    dev_loss = "" if p.get("dev_loss") is None else f" dev_loss {p['dev_loss']:.4f}"
    mark = " *" if p.get("improved") else ""
    return (
        f"epoch {p['epoch']}/{p['epochs']} train_loss {p['loss']:.4f}{dev_loss} "
        f"dev_{metric} {p['score']:.4f}{mark} (best {p['best_score']:.4f} @ epoch {p['best_epoch']}) "
        f"time {p['time_s']:.1f}s"
    )


def train_with_early_stopping(
    model: nn.Module,
    train: Encoded,
    evaluate_dev: Callable[[], dict],
    *,
    runtime: Runtime,
    seed: int,
    epochs: int,
    patience: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    rational_lr: float,
    rational_weight_decay: float,
    adam_eps: float = 1e-6,
    warmup_ratio: float = 0.0,
    rational_schedule: str = "linear",
    max_grad_norm: float | None = 1.0,
    metric_name: str = "score",
    desc: str = "finetune",
    step_model: nn.Module | None = None,
) -> tuple[FitResult, dict]:
    """AdamW (RAF coefficients in their own group) + linear schedule + `fit`.

    Returns the fit result and the derived optimisation settings (steps, warmup steps).
    The shuffling order comes from a generator seeded with ``seed``; dropout uses the global
    torch RNG (seed it before calling). ``step_model`` (default ``model``) runs the training
    steps, e.g. ``torch.compile(model)``; optimizer groups and best-epoch snapshots use ``model``.
    """
    from raft.optim import build_optimizer, build_scheduler

    optimizer = build_optimizer(
        model, lr=lr, weight_decay=weight_decay, rational_lr=rational_lr,
        rational_weight_decay=rational_weight_decay, eps=adam_eps,
    )
    per_epoch = steps_per_epoch(len(train), batch_size)
    total_steps = per_epoch * epochs
    warmup_steps = int(round(warmup_ratio * total_steps))
    scheduler = build_scheduler(optimizer, warmup_steps, total_steps, rational_schedule=rational_schedule)
    generator = torch.Generator().manual_seed(int(seed))

    def one_epoch(epoch: int) -> float:
        return train_epoch(
            model if step_model is None else step_model, train, batch_size=batch_size, optimizer=optimizer,
            scheduler=scheduler, generator=generator, runtime=runtime, max_grad_norm=max_grad_norm, desc=f"epoch {epoch}",
        )

    from raft.train.progress import Progress

    with Progress(total=epochs, log_every=1, desc=desc) as progress:

        def report(point: dict) -> None:
            progress.update(point["epoch"])
            progress.write(format_epoch_line(point, metric_name))

        result = fit(
            model, epochs=epochs, patience=patience, train_one_epoch=one_epoch, evaluate_dev=evaluate_dev,
            logger=report,
        )
    info = {
        "steps_per_epoch": per_epoch,
        "total_steps": total_steps,
        "warmup_steps": warmup_steps,
        "optimizer_groups": {g["name"]: sum(p.numel() for p in g["params"]) for g in optimizer.param_groups},
    }
    return result, info


def train_with_settings(model: nn.Module, train: Encoded, evaluate_dev: Callable[[], dict], settings, *,
                        runtime: Runtime, seed: int, metric_name: str, desc: str,
                        step_model: nn.Module | None = None) -> tuple[FitResult, dict]:
    """`train_with_early_stopping` with the optimisation settings of a `raft.settings.Finetune`
    (or `SquadFinetune`): epochs, patience, batch size, learning rates, decay, schedule, clipping;
    ``step_model``: the module that runs the training steps (default ``model``)."""
    return train_with_early_stopping(
        model, train, evaluate_dev,
        runtime=runtime, seed=seed, epochs=settings.epochs, patience=settings.patience,
        batch_size=settings.batch_size, lr=settings.lr, weight_decay=settings.weight_decay,
        rational_lr=settings.rational_lr, rational_weight_decay=settings.rational_weight_decay,
        adam_eps=settings.adam_eps, warmup_ratio=settings.warmup_ratio,
        rational_schedule=settings.rational_schedule, max_grad_norm=settings.max_grad_norm,
        metric_name=metric_name, desc=desc, step_model=step_model,
    )
