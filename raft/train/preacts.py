"""FFN pre-activation histograms (the activation's *inputs*), collected from a running model.

`collect` (called by `raft pretrain` and by fine-tuning) puts a forward hook on the activation
module of every FFN layer ("layer.<i>": the RAF of a RAFT layer, the GELU of a BERT layer) and of
the pooler ("pooler": RAF or tanh, when the model has one) -- the keys of
``raft.modeling.rational_modules`` -- and histograms what the module receives over the given
batches, in eval mode. Only real tokens count: positions whose ``attention_mask`` is 0 (padding)
are left out; the pooler sees one token per sequence ([CLS]). `finetune_preactivations` does
this over a fine-tuning data part (`raft.train.loop.Encoded`).

This module owns the record format (the constants below; docs/architecture.md). One layer's
record (JSON): ``activation`` (the module's class: Rational, GELUActivation, Tanh), ``tokens``
(real tokens seen), ``width`` (values per token: the FFN's intermediate size, the pooler's hidden
size), ``count`` (finite values = tokens x width), ``nonfinite`` (NaN / inf values, left out),
``edges`` (``BINS`` + 1 fixed edges on ``LIMITS``), ``counts`` (values in [edge_i, edge_i+1)),
``underflow`` / ``overflow`` (values below the first edge / at or above the last), exact
``min``, ``max``, ``mean``, ``std`` and ``q005`` / ``q995``: the 0.5 % and 99.5 % quantiles,
read from the histogram (`quantile`: linear within a bin, so within one bin width, 0.1, inside
``LIMITS``; in the under/overflow tail, between the edge and the exact min / max). Statistics
of an empty record are None. `raft pretrain` writes them to ``FILE``; fine-tuning stores them in
metrics.json under ``FINETUNE_KEY``. The analysis of such records is `raft.analysis.preacts`.

Only torch / numpy and raft.train / raft.modeling are imported here: the training processes
do not load the analysis layer (pandas).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from contextlib import nullcontext

import numpy as np
import torch
from torch import nn

BINS = 200
LIMITS = (-10.0, 10.0)
EDGES = np.linspace(LIMITS[0], LIMITS[1], BINS + 1)
MASS = 0.99  # q005 / q995 of a record bound this central share of its values (the shapes notebook's interval too)
FILE = "preactivations.json"  # results/pretrain/{variant}/FILE
FINETUNE_KEY = "preactivations"  # fine-tuning metrics.json: {FINETUNE_KEY: {"dev": {layer: record}}}
POOLER = "pooler"
CHUNK = 1 << 24  # values histogrammed at a time (float64 copies of at most 128 MiB)


# ------------------------------------------------------------------ collection
def activation_modules(model: nn.Module) -> dict[str, nn.Module]:
    """The FFN activation module of every layer and the pooler's (when the model has a pooler),
    keyed as ``raft.modeling.rational_modules``."""
    base = getattr(model, model.base_model_prefix)
    out = {f"layer.{i}": layer.intermediate.intermediate_act_fn for i, layer in enumerate(base.encoder.layer)}
    pooler = getattr(base, "pooler", None)
    if pooler is not None:
        out[POOLER] = pooler.activation
    for name, module in out.items():
        if not isinstance(module, nn.Module):
            raise TypeError(f"{name}: the activation is a plain function ({module!r}), not a module to hook")
    if len({id(m) for m in out.values()}) != len(out):
        raise ValueError("activation modules are shared between layers: their inputs cannot be told apart")
    return out


class _Accumulator:
    """One layer's running histogram and moments, kept on the model's device."""

    def __init__(self, device: torch.device):
        self.edges = torch.tensor(EDGES, dtype=torch.float64, device=device)
        self.counts = torch.zeros(BINS + 2, dtype=torch.int64, device=device)  # [underflow, bins..., overflow]
        self.moments = torch.zeros(2, dtype=torch.float64, device=device)  # sum, sum of squares
        self.extremes = torch.tensor([math.inf, -math.inf], dtype=torch.float64, device=device)
        self.nonfinite = torch.zeros((), dtype=torch.int64, device=device)
        self.tokens, self.width = 0, None

    def add(self, x: torch.Tensor, mask: torch.Tensor | None) -> None:
        """``x``: (batch, seq, width) with ``mask`` (batch, seq) or None (all real), or (batch, width)."""
        if x.dim() == 3:
            if mask is not None and tuple(mask.shape) != tuple(x.shape[:2]):
                raise ValueError(f"attention mask {tuple(mask.shape)} does not fit inputs {tuple(x.shape)}")
            x = x[mask.bool()] if mask is not None else x.reshape(-1, x.shape[-1])
        elif x.dim() != 2:
            raise ValueError(f"expected (batch, seq, width) or (batch, width) inputs, got {tuple(x.shape)}")
        if self.width is not None and x.shape[-1] != self.width:
            raise ValueError(f"inputs of width {x.shape[-1]} after {self.width}")
        self.tokens += x.shape[0]
        self.width = int(x.shape[-1])
        for chunk in x.detach().flatten().split(CHUNK):  # bounded float64 copies
            self._add_values(chunk.double())

    def _add_values(self, x: torch.Tensor) -> None:
        finite = torch.isfinite(x)
        if not bool(finite.all()):  # the copy only where there is something to leave out
            self.nonfinite += (~finite).sum()
            x = x[finite]
        if x.numel() == 0:
            return
        self.counts += torch.bincount(torch.bucketize(x, self.edges, right=True), minlength=BINS + 2)
        self.moments += torch.stack([x.sum(), (x * x).sum()])
        self.extremes = torch.stack([torch.minimum(self.extremes[0], x.min()), torch.maximum(self.extremes[1], x.max())])

    def raw(self) -> dict:
        """Plain numbers, mergeable across processes (`_merge`)."""
        return {"counts": self.counts.cpu().tolist(), "moments": self.moments.cpu().tolist(),
                "extremes": self.extremes.cpu().tolist(), "nonfinite": int(self.nonfinite), "tokens": self.tokens,
                "width": self.width}


def _merge(parts: list[dict[str, dict]]) -> dict[str, dict]:
    """Per layer: the raw accumulators of several processes (shards of the data) combined."""
    out = {}
    for name in parts[0]:
        rs = [p[name] for p in parts]
        out[name] = {"counts": np.sum([r["counts"] for r in rs], axis=0).tolist(),
                     "moments": np.sum([r["moments"] for r in rs], axis=0).tolist(),
                     "extremes": [min(r["extremes"][0] for r in rs), max(r["extremes"][1] for r in rs)],
                     "nonfinite": sum(r["nonfinite"] for r in rs), "tokens": sum(r["tokens"] for r in rs),
                     "width": next((r["width"] for r in rs if r["width"] is not None), None)}
    return out


def _record(raw: dict, activation: str) -> dict:
    """A layer's JSON record (module docstring) from its raw accumulator."""
    counts = [int(c) for c in raw["counts"]]
    n = sum(counts)
    rec = {"activation": activation, "tokens": int(raw["tokens"]), "width": raw["width"], "count": n,
           "nonfinite": int(raw["nonfinite"]), "edges": [float(e) for e in EDGES], "counts": counts[1:-1],
           "underflow": counts[0], "overflow": counts[-1], "min": None, "max": None, "mean": None, "std": None,
           "q005": None, "q995": None}
    if n:
        mean = raw["moments"][0] / n
        rec.update(min=float(raw["extremes"][0]), max=float(raw["extremes"][1]), mean=float(mean),
                   std=float(math.sqrt(max(raw["moments"][1] / n - mean * mean, 0.0))))
        rec["q005"], rec["q995"] = mass_interval(rec, MASS)
    return rec


@torch.no_grad()
def collect(model: nn.Module, batches: Iterable[Mapping[str, torch.Tensor]], runtime=None,
            gather: Callable[[object], list] | None = None) -> dict[str, dict]:
    """``{layer: record}``: histograms of every activation module's inputs over ``batches``.

    Each batch is a mapping of the base model's inputs (``input_ids``, ``attention_mask`` (absent:
    every token is real), ``token_type_ids``); the base model (encoder + pooler, no head) runs in
    eval mode, on ``runtime.device`` under ``runtime.autocast()`` when a `raft.train.runtime.Runtime`
    is given. ``gather`` (e.g. `Dist.gather`): each process passes its own shard, and every
    process gets the records of all shards together."""
    modules = activation_modules(model)
    device = runtime.device if runtime is not None else next(model.parameters()).device
    accs = {name: _Accumulator(device) for name in modules}
    current: dict = {}
    handles = [m.register_forward_hook(lambda mod, args, out, acc=accs[name]: acc.add(args[0], current["mask"]))
               for name, m in modules.items()]
    was_training = model.training
    model.eval()
    base = getattr(model, model.base_model_prefix)
    try:
        for batch in batches:
            batch = {k: v.to(device) for k, v in batch.items() if v is not None}
            current["mask"] = batch.get("attention_mask")
            with runtime.autocast() if runtime is not None else nullcontext():
                base(**batch)
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    raw = {name: acc.raw() for name, acc in accs.items()}
    if gather is not None:
        raw = _merge(gather(raw))
    return {name: _record(raw[name], type(modules[name]).__name__) for name in modules}


def finetune_preactivations(model: nn.Module, encoded_part, runtime, batch_size: int) -> dict[str, dict]:
    """`collect` over a fine-tuning data part (a `raft.train.loop.Encoded`, e.g. the dev part),
    batched as `raft.train.loop.predict` does (longest first, padded per batch; padding is not
    counted). Fine-tuning stores the result as metrics.json ``{"preactivations": {"dev": ...}}``."""
    from raft.train.loop import length_sorted_batches

    batches = (encoded_part.batch(idx, runtime.device, with_targets=False)
               for idx in length_sorted_batches(encoded_part.lengths, batch_size))
    return collect(model, batches, runtime)


# ------------------------------------------------------------------ quantiles of a record (q005 / q995)
def _extended(rec: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(edges, counts) with the underflow / overflow as bins reaching the exact min / max."""
    edges = np.asarray(rec["edges"], dtype=np.float64)
    lo, hi = min(rec["min"], edges[0]), max(rec["max"], edges[-1])
    return (np.concatenate([[lo], edges, [hi]]),
            np.concatenate([[rec["underflow"]], np.asarray(rec["counts"], dtype=np.float64), [rec["overflow"]]]))


def quantile(rec: Mapping, q: float) -> float:
    """The q-quantile of a record's values, read from its histogram (linear within a bin,
    clipped to the exact min / max). Raises ValueError for an empty record."""
    if not rec.get("count"):
        raise ValueError("no values in this histogram")
    edges, counts = _extended(rec)
    cdf = np.concatenate([[0.0], np.cumsum(counts)])
    t = q * cdf[-1]
    i = int(np.clip(np.searchsorted(cdf, t, side="left"), 1, len(cdf) - 1))
    step = cdf[i] - cdf[i - 1]
    x = edges[i - 1] + ((t - cdf[i - 1]) / step if step > 0 else 0.0) * (edges[i] - edges[i - 1])
    return float(np.clip(x, rec["min"], rec["max"]))


def mass_interval(rec: Mapping, mass: float = MASS) -> tuple[float, float]:
    """(lo, hi): the central interval holding ``mass`` of the values ((1 - mass) / 2 cut off on
    each side), from the histogram (`quantile`)."""
    return quantile(rec, (1.0 - mass) / 2.0), quantile(rec, (1.0 + mass) / 2.0)
