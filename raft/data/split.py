"""The paper's split protocol, shared by GLUE (`raft.data.glue`) and SQuAD (`raft.data.squad`).

* **pool / dev** (`split_pool_dev`): the official training set in its original row order is
  permuted with ``numpy.random.default_rng(POOL_SEED).permutation(n)`` -- identical to
  ``Dataset.shuffle(seed=96)`` of the datasets library -- and the first
  ``pool_rows(n) = int(POOL_FRACTION * n)`` rows are the *train pool*, the rest the *dev part*
  (early stopping / model selection), as in the authors' run_glue.py.
* **N** (`parse_n`, `n_arg`): a positive integer (low data) or full data ("full"; None).
* **low data** (`sample`): ``random.Random(seed).sample(range(len(pool)), n)`` rows of the pool
  and, with a fresh ``random.Random(seed)``, ``n`` rows of the dev part, in the sampled order
  (= the authors' ``random.seed(seed); random.sample(...)``).  As in run_glue.py (which samples
  the dev part only when ``max_eval_samples < len(eval_dataset)``), ``n >= len(dev part)``
  keeps the whole dev part in its order (`whole_dev_part`); ``n`` above the pool is an error
  (`raft.checks.check_n`, a `SettingError`).
* **test cap** (`cap_test_sets`): a testing option that keeps the first K examples of each
  test set (the run is then labelled partial).
* `draw`: all of the above for one run -> a `Sample` (train, dev, tests, partial flag, notes,
  how the dev part was sampled).

Works on any split object with ``pool``, ``dev``, ``tests``, ``partial_data``, ``data_notes``
and ``task`` (`GlueData`, `SquadData`); no torch, no datasets import here.
"""

from __future__ import annotations

import argparse
import random
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from raft.checks import check_n

__all__ = [
    "POOL_SEED",
    "POOL_FRACTION",
    "pool_rows",
    "split_pool_dev",
    "parse_n",
    "n_arg",
    "whole_dev_part",
    "dev_sampling",
    "sample",
    "cap_test_sets",
    "Sample",
    "draw",
]

POOL_SEED = 96
POOL_FRACTION = 0.75
FULL = "full"


# ------------------------------------------------------------------------------ pool / dev part
def pool_rows(n: int, fraction: float = POOL_FRACTION) -> int:
    """Size of the train pool of ``n`` training rows: ``int(fraction * n)`` (the rest is the dev part)."""
    return int(n * fraction)


def split_pool_dev(dataset, seed: int = POOL_SEED, fraction: float = POOL_FRACTION):
    """(pool, dev): ``default_rng(seed).permutation(n)`` (= ``Dataset.shuffle(seed)``), first
    ``pool_rows(n, fraction)`` rows -> pool, the rest -> dev, as in the authors' run_glue.py."""
    n = len(dataset)
    perm = np.random.default_rng(seed).permutation(n)
    k = pool_rows(n, fraction)
    return dataset.select(perm[:k]), dataset.select(perm[k:])


# ------------------------------------------------------------------------------ N
def parse_n(n) -> int | None:
    """N of a run: a positive integer, or None for full data (None, "full", "none", "all")."""
    if n is None or (isinstance(n, str) and n.lower() in (FULL, "none", "all")):
        return None
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) and not (isinstance(n, str) and n.isdigit()):
        raise ValueError(f"N must be a positive integer or None/'full', got {n!r}")
    n = int(n)
    if n < 1:
        raise ValueError(f"N must be >= 1, got {n}")
    return n


def n_arg(value) -> int | str:
    """``--n`` (an argparse type): a positive integer (low data) or "full" ("all" too)."""
    s = str(value).strip().lower()
    if s in (FULL, "all"):
        return FULL
    try:
        n = int(s)
    except ValueError:
        n = 0
    if n < 1:
        raise argparse.ArgumentTypeError(f"N must be a positive integer or 'full', got {value!r}")
    return n


# ------------------------------------------------------------------------------ sampling
def whole_dev_part(dev_size: int, n) -> bool:
    """True when a run with ``n`` (int or "full"/None) keeps the whole dev part because
    ``n >= dev_size`` (the authors' run_glue.py samples it only when N is smaller); False
    for full data and for ``n < dev_size``."""
    n = parse_n(n)
    return n is not None and n >= dev_size


def dev_sampling(dev_size: int, n) -> str:
    """How a run's dev sample is drawn: "full" (full data), "whole" (N >= the dev part, kept
    whole in order) or "sampled" (N drawn with the seed)."""
    if parse_n(n) is None:
        return FULL
    return "whole" if whole_dev_part(dev_size, n) else "sampled"


def sample(data, n, seed: int):
    """(train, dev) for one run: ``n`` examples of the pool and ``n`` of the dev part.

    ``n=None`` (or "full") returns the whole pool and dev part.  Sampling reproduces the
    authors' ``random.seed(seed); random.sample(range(len(part)), n)`` for each part; when
    ``n >= len(dev part)`` the whole dev part is kept in its order (``whole_dev_part``).  Works
    for ``GlueData`` and ``SquadData``.  ``n`` larger than the pool raises (``check_n``).
    """
    n = parse_n(n)
    if n is None:
        return data.pool, data.dev
    check_n(n, len(data.pool), getattr(data, "task", "data"))  # a ValueError
    train = data.pool.select(random.Random(seed).sample(range(len(data.pool)), n))
    if whole_dev_part(len(data.dev), n):
        return train, data.dev
    dev = data.dev.select(random.Random(seed).sample(range(len(data.dev)), n))
    return train, dev


def cap_test_sets(tests: dict, max_examples: int | None) -> tuple[dict, str | None]:
    """``--max-test-examples`` (testing/smoke runs): keep the first K examples of each test set.

    Returns the (possibly) capped sets and a data note when anything was cut (the run is then
    labelled partial: its test numbers are not comparable with full evaluations).
    """
    if not max_examples:
        return dict(tests), None
    out, cut = {}, []
    for name, ds in tests.items():
        if len(ds) > max_examples:
            out[name] = ds.select(range(max_examples))
            cut.append(f"{name} {len(ds):,} -> {max_examples:,}")
        else:
            out[name] = ds
    if not cut:
        return out, None
    return out, (f"test sets capped to their first {max_examples:,} examples by --max-test-examples "
                 f"(a testing option: {', '.join(cut)}); not comparable with full evaluations")


# ------------------------------------------------------------------------------ one run
@dataclass
class Sample:
    """The data of one run: drawn train and dev parts, the (capped) test sets, and the labels."""

    train: Any
    dev: Any
    tests: dict[str, Any]
    partial: bool  # any part is not the complete official set (or the test sets were capped)
    notes: list[str] = field(default_factory=list)  # the data's notes plus this run's
    dev_sampling: str = "sampled"  # "full" | "whole" | "sampled"


def draw(data, n, seed: int, max_test_examples: int | None = None) -> Sample:
    """The ``n`` / ``seed`` sample of a loaded split (`sample`) and the test cap (`cap_test_sets`).

    The notes are the data's, plus one when N >= the dev part keeps it whole (the authors' rule,
    not partial data) and one when the test sets were capped (partial). Raises `SettingError`
    (N above the pool) or `ValueError` (a bad N).
    """
    train, dev = sample(data, n, seed)
    notes = list(data.data_notes)
    dev_size = len(data.dev)
    if whole_dev_part(dev_size, n):
        n = parse_n(n)
        notes.append(
            f"N={n} {'exceeds' if n > dev_size else 'equals'} the dev part ({dev_size:,} "
            f"examples): the whole dev part is used for early stopping and model selection "
            f"(the authors' rule in run_glue.py)"
        )
    tests, cap_note = cap_test_sets(data.tests, max_test_examples)
    if cap_note:
        notes.append(cap_note)
    return Sample(train=train, dev=dev, tests=tests, partial=bool(data.partial_data) or cap_note is not None,
                  notes=notes, dev_sampling=dev_sampling(dev_size, n))
