"""A tiny pretraining corpus in the on-disk format of `raft prepare-corpus` (for tests).

OUT/train, OUT/validation: `datasets.save_to_disk`, column `input_ids` (int32, fixed length,
[CLS] ... [SEP]); OUT/tokenizer: a BertTokenizerFast from a small vocab file; OUT/stats.json.
The token stream is a noisy deterministic chain (next = f(previous) most of the time), so a
tiny model can learn something in a few steps.

Also `_one_thread`, a module-scoped autouse fixture that a test module turns on by importing it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny models: one thread is as fast, and far faster when other jobs share the cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def make_tiny_corpus(out, *, vocab_words: int = 120, seq_len: int = 32, n_train: int = 256,
                     n_validation: int = 48, seed: int = 0) -> Path:
    from datasets import Dataset
    from transformers import BertTokenizerFast

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    vocab = SPECIAL + [f"w{i}" for i in range(vocab_words)]
    (out / "vocab.txt").write_text("\n".join(vocab) + "\n")
    try:  # transformers >= 5: vocab dict
        tok = BertTokenizerFast(vocab={w: i for i, w in enumerate(vocab)}, do_lower_case=True)
    except TypeError:  # transformers 4.x
        tok = BertTokenizerFast(vocab_file=str(out / "vocab.txt"), do_lower_case=True)
    assert len(tok) == len(vocab)
    tok.save_pretrained(out / "tokenizer")
    rng = np.random.default_rng(seed)
    first = len(SPECIAL)

    def sequences(n):
        body = np.empty((n, seq_len - 2), dtype=np.int64)
        cur = rng.integers(0, vocab_words, n)
        for j in range(seq_len - 2):
            body[:, j] = cur
            noise = rng.random(n) < 0.2
            cur = np.where(noise, rng.integers(0, vocab_words, n), (cur * 7 + 3) % vocab_words)
        ids = np.concatenate([np.full((n, 1), 2), body + first, np.full((n, 1), 3)], axis=1)
        return ids.astype(np.int32)

    for split, n in (("train", n_train), ("validation", n_validation)):
        Dataset.from_dict({"input_ids": sequences(n).tolist()}).save_to_disk(str(out / split))
    stats = {"source": "synthetic", "seq_len": seq_len,
             "train": {"sequences": n_train}, "validation": {"sequences": n_validation}}
    (out / "stats.json").write_text(json.dumps(stats) + "\n")
    return out
