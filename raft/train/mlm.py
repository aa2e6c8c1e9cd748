"""Masked-LM pieces: deterministic 80/10/10 masking and the sparse prediction head.

Masking (BERT / Hugging Face `DataCollatorForLanguageModeling` semantics): every non-special
token is selected with probability `probability`; of the selected, 80 % become [MASK], 10 % a
uniformly random vocabulary id, 10 % stay unchanged; labels are the original id at selected
positions and -100 elsewhere. Special tokens ([CLS], [SEP], [PAD], [UNK], [MASK]) are never
selected. Masks are drawn on the CPU from a generator seeded by (seed, purpose, index), so
they do not depend on the device, the number of processes or on resuming.

Sparse head (as in the authors' code): the encoder runs on every position, but only masked
positions go through the vocabulary projection (`model.cls`), which removes most of the
cost of the 30k-way output layer (measured against the dense head by `raft bench`, section
`raft.bench_pretrain.sparse_head_rows`).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

IGNORE_INDEX = -100
TRAIN_TAG, EVAL_TAG, DATA_TAG = 1, 2, 3
EVAL_MASK_SEED = 20230101  # validation masks are the same for every run (comparable perplexities)
EVAL_MASK_CHUNK = 1024  # validation masks are drawn per chunk of this many sequences


def derive_seed(*keys: int) -> int:
    """A 63-bit seed from integer keys (numpy SeedSequence: well mixed, stable across versions)."""
    state = np.random.SeedSequence([int(k) for k in keys]).generate_state(2, dtype=np.uint32)
    return int(state[0]) << 31 | int(state[1]) >> 1


def generator(*keys: int) -> torch.Generator:
    return torch.Generator().manual_seed(derive_seed(*keys))


def mask_tokens(input_ids: torch.Tensor, *, mask_token_id: int, vocab_size: int, special_ids,
                probability: float = 0.15, generator: torch.Generator | None = None):
    """Return (inputs, labels) int64 CPU tensors for a CPU batch of token ids."""
    ids = input_ids.long()
    prob = torch.full(ids.shape, float(probability))
    prob.masked_fill_(torch.isin(ids, torch.as_tensor(list(special_ids), dtype=torch.long)), 0.0)
    selected = torch.bernoulli(prob, generator=generator).bool()
    labels = torch.where(selected, ids, IGNORE_INDEX)
    to_mask = torch.bernoulli(torch.full(ids.shape, 0.8), generator=generator).bool() & selected
    to_random = torch.bernoulli(torch.full(ids.shape, 0.5), generator=generator).bool() & selected & ~to_mask
    random_ids = torch.randint(vocab_size, ids.shape, generator=generator)
    inputs = ids.clone()
    inputs[to_mask] = mask_token_id
    inputs[to_random] = random_ids[to_random]
    return inputs, labels


def mask_train_batch(input_ids, seed: int, step: int, **mask_kw):
    """Masks of the global batch of optimisation step `step` (0-based) of a run with `seed`."""
    return mask_tokens(input_ids, generator=generator(seed, TRAIN_TAG, step), **mask_kw)


def mask_eval_set(input_ids, seed: int = EVAL_MASK_SEED, chunk: int = EVAL_MASK_CHUNK, **mask_kw):
    """Fixed masks for a validation set, drawn per chunk of `chunk` sequences."""
    parts = [mask_tokens(input_ids[i:i + chunk], generator=generator(seed, EVAL_TAG, i // chunk), **mask_kw)
             for i in range(0, len(input_ids), chunk)]
    if not parts:
        empty = torch.empty((0,) + tuple(input_ids.shape[1:]), dtype=torch.long)
        return empty, empty.clone()
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def unigram_log_frequencies(ids: torch.Tensor, vocab_size: int, smoothing: float = 0.1) -> torch.Tensor:
    """Log relative frequency of each token id in `ids` (add-`smoothing` counts): the output bias
    with which a masked-LM starts at the frequency-only prediction instead of learning it."""
    counts = torch.bincount(ids.reshape(-1).long(), minlength=vocab_size).double() + smoothing
    return (counts / counts.sum()).log().float()


def masked_positions(labels: torch.Tensor):
    """Flat indices of the masked positions of a (batch, seq) label tensor, and their targets."""
    flat = labels.reshape(-1)
    positions = (flat != IGNORE_INDEX).nonzero().squeeze(1)
    return positions, flat[positions]


def mlm_loss_sum(model, input_ids, positions, targets, attention_mask=None) -> torch.Tensor:
    """Summed cross-entropy over the masked positions only (sparse prediction head).

    `model` is a `BertForMaskedLM`-like model (`model.<base_model_prefix>` encoder + `model.cls`).
    """
    encoder = getattr(model, model.base_model_prefix)
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
    hidden = hidden.reshape(-1, hidden.shape[-1]).index_select(0, positions)
    logits = model.cls(hidden)
    return F.cross_entropy(logits.float(), targets, reduction="sum")


def sparse_mlm_loss(model, input_ids, labels, attention_mask=None) -> torch.Tensor:
    """Mean masked-token cross-entropy, computed with the sparse head (equals the dense loss)."""
    positions, targets = masked_positions(labels)
    return mlm_loss_sum(model, input_ids, positions, targets, attention_mask) / max(1, positions.numel())


class SparseMLM(torch.nn.Module):
    """`forward(input_ids, positions, targets)` -> summed masked-token loss; wraps a masked-LM
    model so that DistributedDataParallel sees the sparse head as the module's forward."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, input_ids, positions, targets, attention_mask=None):
        return mlm_loss_sum(self.model, input_ids, positions, targets, attention_mask)

