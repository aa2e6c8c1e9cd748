"""Shared fixtures. Tests read the local data copy at ../shared/data (or $RAFT_DATA_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _find_data_dir() -> Path | None:
    env = os.environ.get("RAFT_DATA_DIR")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "data")
    for c in candidates:
        if (c / "glue").is_dir():
            return c
    return None


@pytest.fixture(scope="session")
def data_dir() -> Path:
    d = _find_data_dir()
    if d is None:
        pytest.skip("no local data folder (set RAFT_DATA_DIR or provide ../shared/data)")
    return d


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


# --- tiny pretrained models for the fine-tuning tests (finetune engineer) -------------------
TINY_SIZES = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=2, intermediate_size=128,
                  max_position_embeddings=512)


@pytest.fixture(scope="session")
def tiny_pretrained(data_dir, tmp_path_factory) -> dict[str, Path]:
    """{"bert": dir, "raft": dir}: tiny (2 layers x 64) masked-LM models saved as `raft pretrain`
    would (save_pretrained + a BertTokenizerFast on the real BERT uncased vocabulary)."""
    import torch

    from raft.data.sources import bert_tokenizer_from_vocab
    from raft.modeling import RaftForMaskedLM, make_config

    tokenizer = bert_tokenizer_from_vocab(data_dir / "vocab" / "bert-base-uncased-vocab.txt")
    root = tmp_path_factory.mktemp("tiny_pretrained")
    out = {}
    for variant in ("bert", "raft"):
        torch.manual_seed(0)
        model = RaftForMaskedLM(make_config(variant, vocab_size=len(tokenizer), **TINY_SIZES))
        d = root / variant
        model.save_pretrained(d)
        tokenizer.save_pretrained(d)
        out[variant] = d
    return out
