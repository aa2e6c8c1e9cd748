"""Where the RAFs act: analysis of the FFN pre-activation histograms (the activation's *inputs*).

The records are collected from a running model by `raft.train.preacts` (`collect`, called by
`raft pretrain` and by fine-tuning); `raft.train.preact_records` (numpy only: no torch in the
notebooks) owns and describes the record format and its constants (``BINS``, ``LIMITS``,
``EDGES``, ``MASS``, ``FILE``, ``FINETUNE_KEY``, ``POOLER``; re-exported here);
docs/architecture.md has the files.

Analysis (pure numpy on such records): `quantile` / `mass_interval` (the central interval holding
a given mass; from `raft.train.preact_records`, which fills a record's ``q005`` / ``q995`` with them),
`bin_density`, `pool` (records of several runs summed), `distance_from_gelu` (a RAF against exact
GELU on an interval: RMS and max |F - GELU|, and the RMS weighted by the histogram's mass); the
result-file readers `load_pretrain` / `load_finetuned` / `load_results` and the per-layer table
`interval_table` (+ `interval_display`) of the shapes notebook.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from raft.analysis import aggregate as agg
from raft.analysis import shapes
from raft.analysis.report import fmt, fmt_int
from raft.train.preact_records import (  # noqa: F401 (re-exported: the record format and its quantiles)
    BINS,
    EDGES,
    FILE,
    FINETUNE_KEY,
    LIMITS,
    MASS,
    POOLER,
    _extended,
    mass_interval,
    quantile,
)

FIXED = (shapes.X_MIN, shapes.X_MAX)  # the range the other shape figures plot


# ------------------------------------------------------------------ histogram analysis
def bin_density(rec: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(edges, density) of the fixed bins: counts / (all finite values x bin width), so the
    area over the bins is the share of values inside ``LIMITS``."""
    edges = np.asarray(rec["edges"], dtype=np.float64)
    counts = np.asarray(rec["counts"], dtype=np.float64)
    return edges, counts / max(rec["count"], 1) / np.diff(edges)


def _density_at(rec: Mapping, x: np.ndarray) -> np.ndarray:
    """Piecewise-constant density of the values at ``x`` (under/overflow spread up to min / max)."""
    edges, counts = _extended(rec)
    widths = np.diff(edges)
    dens = np.divide(counts, widths, out=np.zeros_like(counts), where=widths > 0)
    i = np.searchsorted(edges, x, side="right") - 1
    inside = (i >= 0) & (i < len(counts))
    return np.where(inside, dens[np.clip(i, 0, len(counts) - 1)], 0.0)


def distance_from_gelu(numerator, denominator, lo: float, hi: float, rec: Mapping | None = None,
                       n: int = 801) -> dict[str, float]:
    """The RAF F against exact GELU on [lo, hi], over ``n`` evenly spaced points: ``rms`` and
    ``max_abs`` of F - GELU (unweighted) and, with a record, ``rms_mass``: the RMS weighted by
    the histogram's density, i.e. over the inputs the layer received in [lo, hi]."""
    x = np.linspace(lo, hi, n)
    d = shapes.evaluate((numerator, denominator), x) - shapes.gelu(x)
    out = {"rms": float(np.sqrt(np.mean(d * d))), "max_abs": float(np.max(np.abs(d)))}
    if rec is not None:
        w = _density_at(rec, x)
        out["rms_mass"] = float(np.sqrt(np.sum(w * d * d) / np.sum(w))) if np.sum(w) > 0 else math.nan
    return out


def pool(records: list[Mapping]) -> dict:
    """One record of the values of several (same edges): counts summed, extremes and moments combined."""
    recs = [r for r in records if r.get("count")]
    if not recs:
        return dict(records[0]) if records else {}
    if any(list(r["edges"]) != list(recs[0]["edges"]) for r in recs):
        raise ValueError("records with different bin edges cannot be pooled")
    n = sum(r["count"] for r in recs)
    mean = sum(r["mean"] * r["count"] for r in recs) / n
    second = sum((r["std"] ** 2 + r["mean"] ** 2) * r["count"] for r in recs) / n
    out = {**recs[0], "tokens": sum(r["tokens"] for r in recs), "count": n,
           "nonfinite": sum(r.get("nonfinite", 0) for r in recs),
           "counts": np.sum([r["counts"] for r in recs], axis=0).astype(int).tolist(),
           "underflow": sum(r["underflow"] for r in recs), "overflow": sum(r["overflow"] for r in recs),
           "min": min(r["min"] for r in recs), "max": max(r["max"] for r in recs), "mean": mean,
           "std": math.sqrt(max(second - mean * mean, 0.0))}
    out["q005"], out["q995"] = mass_interval(out, MASS)
    return out


# ------------------------------------------------------------------ result files
FINETUNED_COLUMNS = ["task", "n", "seed", "variant", "layers", "rationals"]


def load_pretrain(results_dir, variant: str) -> dict:
    """results/pretrain/{variant}/preactivations.json; {} when the run wrote none (older results)."""
    m = agg._read_json(Path(results_dir) / "pretrain" / variant / FILE)
    return m if isinstance(m, dict) else {}


def load_finetuned(results_dir, study: str = "glue") -> pd.DataFrame:
    """One row per fine-tuning run whose metrics.json records ``preactivations.dev`` (older
    results do not): ``layers`` {layer: record} and the run's ``rationals``."""
    rows = []
    for path in agg.record_files(results_dir, study):
        m = agg._read_json(path)
        pre = m.get(FINETUNE_KEY) if isinstance(m, dict) else None
        dev = pre.get("dev") if isinstance(pre, dict) else None
        if not isinstance(dev, dict) or not dev:
            continue
        fb = agg._from_path(path, study)
        rows.append({"task": str(m.get("task", fb.get("task", ""))), "n": agg._norm_n(m.get("n", fb.get("n"))),
                     "seed": m.get("seed", fb.get("seed")), "variant": str(m.get("variant", fb.get("variant", ""))),
                     "layers": dev, "rationals": m.get("rationals") or {}})
    return pd.DataFrame(rows, columns=FINETUNED_COLUMNS)


@dataclass
class Preacts:
    """The pre-activation records of a results tree (`load_results`)."""

    raft: dict = field(default_factory=dict)  # results/pretrain/raft/preactivations.json, or {}
    bert: dict = field(default_factory=dict)  # results/pretrain/bert/preactivations.json, or {}
    finetuned: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=FINETUNED_COLUMNS))

    def pretrain_layers(self, variant: str) -> dict[str, dict]:
        return (self.raft if variant == "raft" else self.bert).get("layers") or {}

    def finetuned_layers(self, variant: str = "raft") -> tuple[dict[str, dict], int]:
        """({layer: record pooled over the variant's fine-tuning runs}, number of runs)."""
        runs = self.finetuned[self.finetuned["variant"] == variant]["layers"]
        names = shapes.sorted_layers({k for r in runs for k in r})
        return {k: pool([r[k] for r in runs if k in r]) for k in names}, len(runs)


def load_results(results_dir, study: str = "glue") -> Preacts:
    return Preacts(load_pretrain(results_dir, "raft"), load_pretrain(results_dir, "bert"),
                   load_finetuned(results_dir, study))


# ------------------------------------------------------------------ the table of the shapes notebook
TABLE_COLUMNS = ["layer", "lo", "hi", "tokens", "rms_from_gelu", "max_from_gelu", "published_rms_from_gelu",
                 "published_max_from_gelu", "published_max_from_gelu_fixed", "bert_lo", "bert_hi",
                 "finetuned_runs", "finetuned_lo", "finetuned_hi", "finetuned_rms_from_gelu"]


def _pretrain_cells(rec: Mapping | None, raf: Mapping | None, published: Mapping | None) -> dict:
    """The interval of one layer's RAFT inputs after pretraining, and the distances on it."""
    out = {}
    if published is not None:
        out["published_max_from_gelu_fixed"] = distance_from_gelu(*shapes._coeffs(published), *FIXED)["max_abs"]
    if not rec or not rec.get("count"):
        return out
    lo, hi = mass_interval(rec)
    out.update(lo=lo, hi=hi, tokens=rec["tokens"])
    for prefix, c in (("", raf), ("published_", published)):
        if c is not None:
            d = distance_from_gelu(*shapes._coeffs(c), lo, hi, rec)
            out.update({f"{prefix}rms_from_gelu": d["rms_mass"], f"{prefix}max_from_gelu": d["max_abs"]})
    return out


def _finetuned_cells(finetuned: pd.DataFrame) -> dict[str, dict]:
    """Per layer, the mean over RAFT fine-tuning runs of the interval of its dev inputs and of its
    RAF's input-weighted RMS from GELU on it."""
    per: dict[str, list] = {}
    for r in finetuned[finetuned["variant"] == "raft"].itertuples(index=False):
        for name, rec in r.layers.items():
            if rec.get("count") and name in r.rationals:
                lo, hi = mass_interval(rec)
                d = distance_from_gelu(*shapes._coeffs(r.rationals[name]), lo, hi, rec)["rms_mass"]
                per.setdefault(name, []).append((lo, hi, d))
    return {name: dict(zip(["finetuned_lo", "finetuned_hi", "finetuned_rms_from_gelu"], np.mean(v, axis=0)),
                       finetuned_runs=len(v)) for name, v in per.items()}


def interval_table(acts: Preacts, ours: Mapping, published: Mapping) -> pd.DataFrame:
    """Per layer (``TABLE_COLUMNS``): the interval [lo, hi] holding ``MASS`` of the RAFT model's
    validation inputs after pretraining (``tokens`` of them); on it, this run's RAF against exact
    GELU (``rms_from_gelu``: RMS weighted by those inputs; ``max_from_gelu``: max |F - GELU|) and
    the published RAF's (same weights; ``published_max_from_gelu_fixed``: max on [-4, 4]); the
    BERT model's interval (its GELU inputs); after fine-tuning, the mean over RAFT runs that
    record their dev inputs of the interval and of the RMS from GELU (each run's RAF, weighted by
    its own inputs). Layers without recorded inputs have no row."""
    raft, bert = acts.pretrain_layers("raft"), acts.pretrain_layers("bert")
    finetuned = _finetuned_cells(acts.finetuned)
    rows = []
    for name in shapes.sorted_layers(set(raft) | set(finetuned)):
        if not raft.get(name, {}).get("count") and name not in finetuned:
            continue
        row = {"layer": name, **_pretrain_cells(raft.get(name), ours.get(name), published.get(name)),
               **finetuned.get(name, {})}
        if bert.get(name, {}).get("count"):
            row["bert_lo"], row["bert_hi"] = mass_interval(bert[name])
        rows.append(row)
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def _span(lo, hi) -> str:
    return "–" if pd.isna(lo) else f"[{fmt(lo)}, {fmt(hi)}]"


def _pair(rms, mx) -> str:
    return "–" if pd.isna(rms) else f"{fmt(rms, 3)} / {fmt(mx, 3)}"


def interval_display(table: pd.DataFrame) -> pd.DataFrame:
    """`interval_table` formatted for the notebook (columns without any value are left out)."""
    if table.empty:
        return table
    pct = f"{MASS * 100:g} %"
    t = table
    out = pd.DataFrame({
        "RAF": [shapes.layer_label(v) for v in t["layer"]],
        f"{pct} of RAFT inputs (validation, after pretraining)": list(map(_span, t["lo"], t["hi"])),
        "tokens": ["–" if pd.isna(v) else fmt_int(v) for v in t["tokens"]],
        "this run: RMS (input-weighted) / max |F − GELU|": list(map(_pair, t["rms_from_gelu"], t["max_from_gelu"])),
        "published, same inputs: RMS / max |F − GELU|": list(map(_pair, t["published_rms_from_gelu"],
                                                               t["published_max_from_gelu"])),
        "published: max |F − GELU| on [-4, 4]": ["–" if pd.isna(v) else fmt(v, 3)
                                                  for v in t["published_max_from_gelu_fixed"]],
        f"{pct} of BERT (GELU) inputs": list(map(_span, t["bert_lo"], t["bert_hi"])),
        f"after fine-tuning (dev, mean over runs): {pct} of inputs, RMS": [
            "–" if pd.isna(r) else f"{_span(lo, hi)}, {fmt(d, 3)} ({int(r)} run{'s' if r != 1 else ''})"
            for lo, hi, d, r in zip(t["finetuned_lo"], t["finetuned_hi"], t["finetuned_rms_from_gelu"],
                                    t["finetuned_runs"])],
    })
    return out.loc[:, [c for c in out.columns if (out[c] != "–").any()]]
