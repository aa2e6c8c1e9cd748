"""Setting rules shared by the `raft` commands and the workflow's pre-flight check.

Every constraint that a command enforces on its settings lives here once. The commands call
these functions on their arguments (the error then names the flag, ``--doc-stride 200 ...``);
the Snakefile calls the same functions for every job of the DAG before anything runs (the
error then names the config key, ``squad.doc_stride``). Pure Python -- no torch import -- so
that the check of a thousand-job DAG takes a moment.
"""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path

INITS_PATH = Path(__file__).with_name("inits.json")
POOLER = "pooler"
SQUAD_SPECIAL_TOKENS = 3  # [CLS] question [SEP] context [SEP]
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTO_PRECISION = "auto: bf16 on a GPU that has it, else fp16; on a CPU bf16 where native, else fp32"  # help text


class SettingError(ValueError):
    """A setting that breaks a rule: ``key`` (the setting's name), its ``value`` and why.

    ``str(err)`` is ``"key=value why"``; `as_flag` and the workflow re-label the key as a
    command-line flag or a config path.
    """

    def __init__(self, key: str, value, why: str):
        self.key, self.value, self.why = key, value, why
        super().__init__(f"{key}={value} {why}")

    def as_flag(self) -> str:
        return f"--{self.key.replace('_', '-')} {self.value} {self.why}"


# ------------------------------------------------------------------------------ the model
@functools.lru_cache(maxsize=None)
def inits_table() -> dict:
    """raft/inits.json's fits by name (the names `rational.init` accepts)."""
    with open(INITS_PATH) as f:
        return json.load(f)["inits"]


def parse_layer_spec(spec, num_layers: int) -> tuple[list[int], bool]:
    """Parse a RAF placement spec into (sorted layer indices, pooler flag).

    Accepts "all", "none", "pooler", single indices and inclusive ranges joined by
    commas ("0-11", "0,2,5", "0-3,8-11,pooler", "all,pooler"), or a list of such items.
    """
    items = spec if isinstance(spec, (list, tuple)) else str(spec).split(",")
    layers: set[int] = set()
    pooler = False
    for raw in items:
        item = str(raw).strip().lower()
        if item in ("", "none"):
            continue
        if item == "all":
            layers.update(range(num_layers))
        elif item == POOLER:
            pooler = True
        elif re.fullmatch(r"\d+", item):
            layers.add(int(item))
        elif m := re.fullmatch(r"(\d+)-(\d+)", item):
            lo, hi = int(m[1]), int(m[2])
            if lo > hi:
                raise ValueError(f"rational layer spec {spec!r}: range {item!r} is empty (start > end)")
            layers.update(range(lo, hi + 1))
        else:
            raise ValueError(
                f"rational layer spec {spec!r}: cannot parse {item!r} "
                "(use 'all', 'none', 'pooler', 'i' or 'i-j' joined by commas)"
            )
    bad = sorted(i for i in layers if i >= num_layers)
    if bad:
        raise ValueError(
            f"rational layer spec {spec!r} names layer(s) {bad}, but the model has "
            f"{num_layers} layers (valid: 0-{num_layers - 1})"
        )
    return sorted(layers), pooler


def check_rational(layers: str, init: str, num_layers: int) -> None:
    """The RAF placement fits the model and the initial shape is a known fit."""
    try:
        parse_layer_spec(layers, num_layers)
    except ValueError as exc:
        raise SettingError("rational_layers", repr(layers), f"does not fit the model: {exc}") from None
    if init not in inits_table():
        raise SettingError("rational_init", repr(init), f"is not a known shape; known: {', '.join(sorted(inits_table()))}")


def check_mode(mode: str, has_rafs: bool) -> None:
    """frozen_rafs / raf_head need RAFs; bias_head is the GELU baseline's mode."""
    if mode in ("frozen_rafs", "raf_head") and not has_rafs:
        raise SettingError("mode", mode, "needs a RAFT model, but this model has no rational activations")
    if mode == "bias_head" and has_rafs:
        raise SettingError("mode", mode, "is the GELU baseline's mode; use it with a 'bert' model, not a RAFT")


def check_model(hidden_size: int, num_heads: int) -> None:
    if hidden_size % num_heads:
        raise SettingError("num_heads", num_heads, f"does not divide hidden_size {hidden_size}")


def check_positions(max_position_embeddings: int | None, seq_len: int) -> None:
    """Pretraining sequences must fit the position embeddings (None: as many as seq_len)."""
    if max_position_embeddings is not None and max_position_embeddings < seq_len:
        raise SettingError("max_position_embeddings", max_position_embeddings,
                           f"is smaller than the pretraining sequence length {seq_len}")


# ------------------------------------------------------------------------------ training
def check_batch(batch_size: int, per_device_batch_size: int | None, world_size: int) -> int:
    """The global batch splits into world_size x per-device micro-batches; returns the accumulation."""
    if batch_size % world_size:
        raise SettingError("batch_size", batch_size, f"is not divisible by the {world_size} processes (GPUs)")
    per_rank = batch_size // world_size
    per_device = per_device_batch_size or per_rank
    if per_rank % per_device:
        raise SettingError("batch_size", batch_size,
                           f"is not divisible by per_device_batch_size {per_device} x {world_size} processes")
    return per_rank // per_device


def check_precision(precision: str, device_type: str) -> None:
    """fp16 needs a CUDA device (a grad scaler); the other precisions run anywhere."""
    if precision == "fp16" and device_type != "cuda":
        raise SettingError("precision", precision, "needs a CUDA device (GPU); use fp32, bf16 or auto")


def check_max_seq_length(max_seq_length: int, positions: int) -> None:
    """Fine-tuning sequences must fit the pretrained model's position embeddings."""
    if max_seq_length > positions:
        raise SettingError("max_seq_length", max_seq_length,
                           f"exceeds the pretrained model's {positions} position embeddings "
                           "(model.max_position_embeddings; by default the corpus sequence length)")


def check_squad_window(max_seq_length: int, doc_stride: int, max_query_length: int) -> None:
    """The stride (tokens two windows share) fits the context part of a window."""
    room = max_seq_length - max_query_length - SQUAD_SPECIAL_TOKENS
    if room <= 0:
        raise SettingError("max_seq_length", max_seq_length,
                           f"leaves no room for context after a {max_query_length}-token question")
    if not 0 <= doc_stride < room:
        raise SettingError(
            "doc_stride", doc_stride,
            f"must be smaller than the context part of a window, max_seq_length {max_seq_length} - "
            f"max_query_length {max_query_length} - {SQUAD_SPECIAL_TOKENS} = {room} "
            f"(e.g. windows of 384 with stride 128, or windows of 128 with stride <= {room - 1})",
        )


# ------------------------------------------------------------------------------ data
def check_n(n: int, pool_size: int, task: str) -> None:
    """N training examples must exist in the task's train pool (the dev part may be smaller:
    then the whole dev part is used, the authors' rule)."""
    if n > pool_size:
        raise SettingError("n", n, f"is larger than the {task} train pool ({pool_size:,} examples); "
                                   f"use N <= {pool_size:,} or 'full'")
