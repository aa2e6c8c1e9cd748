"""Masking (80/10/10, special tokens, determinism) and the sparse masked-LM head (its speed and
loss against the dense head: `raft bench`, tests/test_bench.py)."""

from __future__ import annotations

import pytest
import torch

from raft.modeling import RaftForMaskedLM, make_config
from raft.train.mlm import (
    IGNORE_INDEX,
    mask_eval_set,
    mask_tokens,
    mask_train_batch,
    masked_positions,
    mlm_loss_sum,
    sparse_mlm_loss,
)
from tiny_corpus import _one_thread  # noqa: F401 (autouse fixture)

PAD, UNK, CLS, SEP, MASK = 0, 1, 2, 3, 4
SPECIAL = [PAD, UNK, CLS, SEP, MASK]
VOCAB = 200
MASK_KW = dict(mask_token_id=MASK, vocab_size=VOCAB, special_ids=SPECIAL, probability=0.15)
SIZES = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
             intermediate_size=128, max_position_embeddings=32, pad_token_id=PAD)


def _ids(n=64, seq=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(5, VOCAB, (n, seq), generator=g)
    ids[:, 0], ids[:, -1] = CLS, SEP
    ids[::7, 5] = UNK
    ids[::5, -4:-1] = PAD
    return ids


def test_masking_never_hits_special_tokens_and_follows_80_10_10():
    ids = _ids(n=4000, seq=64)
    inputs, labels = mask_train_batch(ids, seed=1, step=0, **MASK_KW)
    special = torch.isin(ids, torch.tensor(SPECIAL))
    selected = labels != IGNORE_INDEX
    assert not (selected & special).any()
    assert torch.equal(inputs[special], ids[special])  # special positions are untouched
    assert torch.equal(labels[selected], ids[selected])
    assert torch.equal(inputs[~selected], ids[~selected])  # unselected positions unchanged
    n_sel = int(selected.sum())
    assert n_sel / int((~special).sum()) == pytest.approx(0.15, abs=0.005)
    masked = inputs[selected] == MASK
    kept = inputs[selected] == ids[selected]
    other = ~masked & ~kept  # replaced by a random (different) id
    # expected: 80 % [MASK]; 10 % random (of which 1/VOCAB draw the same id -> counted as kept); 10 % kept
    assert float(masked.float().mean()) == pytest.approx(0.80, abs=0.01)
    assert float(other.float().mean()) == pytest.approx(0.10 * (1 - 1 / VOCAB), abs=0.01)
    assert float(kept.float().mean()) == pytest.approx(0.10 + 0.10 / VOCAB, abs=0.01)


def test_masks_are_deterministic_per_seed_and_step_and_eval_masks_are_chunked():
    ids = _ids()
    a = mask_train_batch(ids, seed=3, step=5, **MASK_KW)
    b = mask_train_batch(ids, seed=3, step=5, **MASK_KW)
    c = mask_train_batch(ids, seed=3, step=6, **MASK_KW)
    d = mask_train_batch(ids, seed=4, step=5, **MASK_KW)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1]) and not torch.equal(a[1], d[1])
    big = _ids(n=300)
    full = mask_eval_set(big, chunk=128, **MASK_KW)
    part = mask_eval_set(big[:256], chunk=128, **MASK_KW)  # a prefix of whole chunks gets the same masks
    assert torch.equal(full[0][:256], part[0]) and torch.equal(full[1][:256], part[1])


@pytest.mark.parametrize("variant", ["bert", "raft"])
def test_sparse_loss_and_gradients_equal_the_dense_model(variant):
    torch.manual_seed(0)
    model = RaftForMaskedLM(make_config(variant, **SIZES)).eval()
    ids = _ids(n=8)
    inputs, labels = mask_tokens(ids, generator=torch.Generator().manual_seed(0), **MASK_KW)
    attn = (ids != PAD).long()
    dense = model(input_ids=inputs, attention_mask=attn, labels=labels).loss
    dense.backward()
    dense_grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad()
    sparse = sparse_mlm_loss(model, inputs, labels, attention_mask=attn)
    sparse.backward()
    assert sparse.item() == pytest.approx(dense.item(), rel=1e-6)
    for name, grad in dense_grads.items():
        torch.testing.assert_close(dict(model.named_parameters())[name].grad, grad, rtol=1e-4, atol=1e-6)
    positions, targets = masked_positions(labels)
    total = mlm_loss_sum(model, inputs, positions, targets, attn)
    assert total.item() / positions.numel() == pytest.approx(dense.item(), rel=1e-6)


@pytest.mark.parametrize("variant", ["bert", "raft"])
def test_loss_decreases_on_a_repeated_batch(variant):
    from raft.optim import build_optimizer

    torch.manual_seed(0)
    model = RaftForMaskedLM(make_config(variant, **SIZES)).train()
    opt = build_optimizer(model, lr=2e-3, weight_decay=0.01, rational_lr=5e-3, rational_weight_decay=0.1)
    inputs, labels = mask_tokens(_ids(n=16), generator=torch.Generator().manual_seed(1), **MASK_KW)
    losses = []
    for _ in range(25):
        loss = sparse_mlm_loss(model, inputs, labels)
        loss.backward()
        opt.step()
        opt.zero_grad()
        losses.append(loss.item())
    assert losses[-1] < 0.7 * losses[0]

