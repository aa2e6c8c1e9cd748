"""FFN pre-activation histograms (the activation's *inputs*), collected from a running model.

`collect` (called by `raft pretrain` and by fine-tuning) puts a forward hook on the activation
module of every FFN layer ("layer.<i>": the RAF of a RAFT layer, the GELU of a BERT layer) and of
the pooler ("pooler": RAF or tanh, when the model has one) -- the keys of
``raft.modeling.rational_modules`` -- and histograms what the module receives over the given
batches, in eval mode. Only real tokens count: positions whose ``attention_mask`` is 0 (padding)
are left out; the pooler sees one token per sequence ([CLS]). `finetune_preactivations` does
this over a fine-tuning data part (`raft.train.loop.Encoded`).

The record format (constants, `record`, quantiles) is `raft.train.preact_records`'s.

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

from raft.train.preact_records import BINS, EDGES, POOLER, record

CHUNK = 1 << 24  # values histogrammed at a time (float64 copies of at most 128 MiB)
PATTERN_DTYPES = (torch.bfloat16, torch.float16)  # counted per bit pattern (`_Accumulator`)


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
    """One layer's running histogram and moments, kept on the model's device. 16-bit float inputs
    (autocast's) are counted per bit pattern (65,536 of them: one bincount, ~15x faster than
    bucketing every value) and folded into bins and moments, exactly, by `raw`."""

    def __init__(self, device: torch.device):
        self.edges = torch.tensor(EDGES, dtype=torch.float64, device=device)
        self.counts = torch.zeros(BINS + 2, dtype=torch.int64, device=device)  # [underflow, bins..., overflow]
        self.moments = torch.zeros(2, dtype=torch.float64, device=device)  # sum, sum of squares
        self.extremes = torch.tensor([math.inf, -math.inf], dtype=torch.float64, device=device)
        self.nonfinite = torch.zeros((), dtype=torch.int64, device=device)
        self.patterns: dict[torch.dtype, torch.Tensor] = {}  # 16-bit dtype -> count per bit pattern
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
        flat = x.detach().flatten()
        if flat.dtype in PATTERN_DTYPES:
            codes = flat.contiguous().view(torch.int16).int() + (1 << 15)
            seen = torch.bincount(codes, minlength=1 << 16)
            self.patterns[flat.dtype] = self.patterns[flat.dtype] + seen if flat.dtype in self.patterns else seen
            return
        for chunk in flat.split(CHUNK):  # bounded float64 copies
            self._add_values(chunk.double())

    def _add_values(self, x: torch.Tensor, weights: torch.Tensor | None = None) -> None:
        """Values (float64), each counted once or ``weights`` (int64) times."""
        finite = torch.isfinite(x)
        if not bool(finite.all()):  # the copy only where there is something to leave out
            self.nonfinite += (~finite).sum() if weights is None else weights[~finite].sum()
            x, weights = x[finite], None if weights is None else weights[finite]
        if x.numel() == 0:
            return
        bins = torch.bucketize(x, self.edges, right=True)
        if weights is None:
            self.counts += torch.bincount(bins, minlength=BINS + 2)
            self.moments += torch.stack([x.sum(), (x * x).sum()])
        else:
            self.counts.index_add_(0, bins, weights)
            self.moments += torch.stack([(weights * x).sum(), (weights * x * x).sum()])
        self.extremes = torch.stack([torch.minimum(self.extremes[0], x.min()), torch.maximum(self.extremes[1], x.max())])

    def raw(self) -> dict:
        """Plain numbers, mergeable across processes (`_merge`); the bit-pattern counts folded in
        on the CPU (every distinct 16-bit value once, with its count)."""
        own = {"counts": self.counts.cpu().tolist(), "moments": self.moments.cpu().tolist(),
               "extremes": self.extremes.cpu().tolist(), "nonfinite": int(self.nonfinite), "tokens": self.tokens,
               "width": self.width}
        if not self.patterns:
            return own
        folded = _Accumulator(torch.device("cpu"))
        for dtype, counts in self.patterns.items():
            counts = counts.cpu()
            codes = torch.nonzero(counts).flatten()
            folded._add_values((codes - (1 << 15)).to(torch.int16).view(dtype).double(), counts[codes])
        return _combine([own, folded.raw()])


def _combine(raws: list[dict]) -> dict:
    """One layer's raw accumulators (of several processes, or of both paths of one) added up."""
    return {"counts": np.sum([r["counts"] for r in raws], axis=0).tolist(),
            "moments": np.sum([r["moments"] for r in raws], axis=0).tolist(),
            "extremes": [min(r["extremes"][0] for r in raws), max(r["extremes"][1] for r in raws)],
            "nonfinite": sum(r["nonfinite"] for r in raws), "tokens": sum(r["tokens"] for r in raws),
            "width": next((r["width"] for r in raws if r["width"] is not None), None)}


def _merge(parts: list[dict[str, dict]]) -> dict[str, dict]:
    """Per layer: the raw accumulators of several processes (shards of the data) combined."""
    return {name: _combine([p[name] for p in parts]) for name in parts[0]}


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
    return {name: record(raw[name], type(modules[name]).__name__) for name in modules}


def finetune_preactivations(model: nn.Module, encoded_part, runtime, batch_size: int) -> dict[str, dict]:
    """`collect` over a fine-tuning data part (a `raft.train.loop.Encoded`, e.g. the dev part),
    batched as `raft.train.loop.predict` does (longest first, padded per batch; padding is not
    counted). Fine-tuning stores the result as metrics.json ``{"preactivations": {"dev": ...}}``."""
    from raft.train.loop import length_sorted_batches

    batches = (encoded_part.batch(idx, runtime.device, with_targets=False)
               for idx in length_sorted_batches(encoded_part.lengths, batch_size))
    return collect(model, batches, runtime)
