"""The pre-activation record format and its quantiles, numpy only: the analysis layer and the
notebooks read records without importing torch (`raft.train.preacts` collects them).

This module owns the record format (the constants below; docs/architecture.md); `record` makes
one from a collection's raw sums. One layer's record (JSON): ``activation`` (the module's class:
Rational, GELUActivation, Tanh), ``tokens`` (real tokens seen), ``width`` (values per token: the
FFN's intermediate size, the pooler's hidden size), ``count`` (finite values = tokens x width),
``nonfinite`` (NaN / inf values, left out), ``edges`` (``BINS`` + 1 fixed edges on ``LIMITS``),
``counts`` (values in [edge_i, edge_i+1)), ``underflow`` / ``overflow`` (values below the first
edge / at or above the last), exact ``min``, ``max``, ``mean``, ``std`` and ``q005`` / ``q995``:
the 0.5 % and 99.5 % quantiles, read from the histogram (`quantile`: linear within a bin, so
within one bin width, 0.1, inside ``LIMITS``; in the under/overflow tail, between the edge and the
exact min / max). Statistics of an empty record are None. `raft pretrain` writes them to
``FILE``; fine-tuning stores them in metrics.json under ``FINETUNE_KEY``. The analysis of such
records is `raft.analysis.preacts`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

BINS = 200
LIMITS = (-10.0, 10.0)
EDGES = np.linspace(LIMITS[0], LIMITS[1], BINS + 1)
MASS = 0.99  # q005 / q995 of a record bound this central share of its values (the shapes notebook's interval too)
FILE = "preactivations.json"  # results/pretrain/{variant}/FILE
FINETUNE_KEY = "preactivations"  # fine-tuning metrics.json: {FINETUNE_KEY: {"dev": {layer: record}}}
POOLER = "pooler"


def record(raw: dict, activation: str) -> dict:
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
