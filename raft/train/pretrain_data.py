"""The data of `raft pretrain`: the prepared corpus in memory and the order of its sequences.

The token ids of a corpus written by `raft prepare-corpus` are held in memory as one int16/int32
tensor (`load_corpus`); the sequence order is a seeded permutation per epoch (`EpochStream`;
epochs wrap around); optimisation step s uses positions [s*B, (s+1)*B) of that stream, masked
with a generator seeded by (seed, step) (`Data.masked_batch`) and split into per-process slices
and micro-batches (`Batches`). The validation set is capped and masked once, with fixed masks
(`load_data`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from raft import checks
from raft.settings import Pretrain
from raft.train.mlm import DATA_TAG, generator, mask_eval_set, mask_train_batch
from raft.train.runtime import Dist, UsageError, check


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


@dataclass
class Data:
    """The corpus of a run: train ids, the (capped) validation set with its fixed masks, tokenizer."""

    train: torch.Tensor  # (train sequences, seq_len)
    validation: torch.Tensor  # (validation sequences, seq_len)
    val_inputs: torch.Tensor  # masked validation ids
    val_labels: torch.Tensor
    tokenizer: object
    stats: dict  # the corpus's stats.json
    mask_kw: dict  # mask_tokens' arguments
    stream: EpochStream  # the order of the train sequences

    @property
    def n_train(self) -> int:
        return len(self.train)

    @property
    def seq_len(self) -> int:
        return self.train.shape[1]

    @property
    def pad_id(self):
        return self.tokenizer.pad_token_id

    def masked_batch(self, step: int, size: int, seed: int):
        """(ids, masked inputs, labels) of global batch `step` (positions [step*size, (step+1)*size))."""
        batch = self.train[self.stream.indices(step * size, size)]
        return (batch, *mask_train_batch(batch, seed, step, **self.mask_kw))


def load_data(corpus: Path, pretrain: Pretrain) -> Data:
    train_ids, val_ids, tokenizer, stats = load_corpus(corpus)
    if pretrain.max_eval_sequences is not None:
        val_ids = val_ids[: max(0, pretrain.max_eval_sequences)]
    mask_kw = {"mask_token_id": tokenizer.mask_token_id, "vocab_size": len(tokenizer),
               "special_ids": sorted(set(tokenizer.all_special_ids)), "probability": pretrain.mlm_probability}
    val_inputs, val_labels = mask_eval_set(val_ids, **mask_kw)
    return Data(train_ids, val_ids, val_inputs, val_labels, tokenizer, stats, mask_kw,
                EpochStream(len(train_ids), pretrain.seed))


@dataclass(frozen=True)
class Batches:
    """How one global batch splits: `world` processes x `accumulation` micro-batches of `per_device`."""

    size: int
    per_device: int
    accumulation: int
    world: int
    rank: int

    @classmethod
    def plan(cls, pretrain: Pretrain, world: Dist) -> Batches:
        if pretrain.batch_size <= 0 or pretrain.max_steps <= 0:
            raise UsageError("--batch-size and --max-steps must be positive")
        accumulation = check(checks.check_batch, pretrain.batch_size, pretrain.per_device_batch_size, world.world)
        per_device = pretrain.batch_size // world.world // accumulation
        return cls(pretrain.batch_size, per_device, accumulation, world.world, world.rank)

    def rows(self, j: int) -> slice:
        """This process's rows of micro-batch `j` in a global batch."""
        first = self.rank * (self.size // self.world) + j * self.per_device
        return slice(first, first + self.per_device)
