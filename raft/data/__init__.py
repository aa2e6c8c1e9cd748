"""Data layer: data sources (local root or Hub), pretraining corpus, GLUE, SQuAD, metrics.

Submodules: ``sources`` (local data root / Hub ids), ``corpus`` (`raft prepare-corpus`),
``glue`` (readers, the paper's split protocol), ``squad`` (readers, protocol, features),
``metrics`` (GLUE metrics via scikit-learn/scipy, official SQuAD EM/F1).

The names below are re-exported lazily, so ``import raft.data`` stays cheap.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "resolve_data_dir": "raft.data.sources",
    "GLUE_TASKS": "raft.data.metrics",
    "glue_metrics": "raft.data.metrics",
    "squad_metrics": "raft.data.metrics",
    "GlueData": "raft.data.glue",
    "load_glue": "raft.data.glue",
    "sample": "raft.data.glue",
    "SquadData": "raft.data.squad",
    "load_squad": "raft.data.squad",
    "prepare_train_features": "raft.data.squad",
    "prepare_eval_features": "raft.data.squad",
    "postprocess_predictions": "raft.data.squad",
    "prepare_corpus": "raft.data.corpus",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'raft.data' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + list(_EXPORTS))
