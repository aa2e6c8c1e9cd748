"""Fine-tuning modes: which parameters of a BERT/RAFT model train.

- "full":        everything;
- "frozen_rafs": everything except the RAF coefficients;
- "raf_head":    only the RAF coefficients and the task head (the paper's parameter-efficient RAFT);
- "bias_head":   a random subset of encoder bias entries, as many scalars as the RAFT model
                 has RAF scalars, plus the task head (the parameter-efficient GELU baseline).
The task head is every parameter outside the encoder (`model.bert`), e.g. `classifier`.
"""

from __future__ import annotations

import torch
from torch import nn

from raft.checks import check_mode
from raft.modeling import count_parameters, rational_modules

MODES = ("full", "frozen_rafs", "raf_head", "bias_head")


def _head_parameters(model: nn.Module):
    prefix = model.base_model_prefix + "."
    return [p for name, p in model.named_parameters() if not name.startswith(prefix)]


def default_bias_budget(config) -> int:
    """RAF scalars of the paper's RAFT counterpart: one RAF per layer plus the pooler."""
    m, n = config.rational_degrees
    return (config.num_hidden_layers + 1) * (m + 1 + n)


def apply_mode(model: nn.Module, mode: str, seed: int = 0, num_bias: int | None = None) -> dict:
    """Set `requires_grad` (and gradient masks for "bias_head"); return a summary with counts."""
    if mode not in MODES:
        raise ValueError(f"unknown fine-tuning mode {mode!r}; expected one of {MODES}")
    rafs = [p for m in rational_modules(model).values() for p in m.parameters()]
    check_mode(mode, bool(rafs))

    for p in model.parameters():
        p.requires_grad_(mode in ("full", "frozen_rafs"))
    for p in rafs:
        p.requires_grad_(mode in ("full", "raf_head"))
    head = _head_parameters(model)
    for p in head:
        p.requires_grad_(True)
    summary = {"mode": mode}
    trainable = count_parameters(model)
    if mode == "bias_head":
        budget = default_bias_budget(model.config) if num_bias is None else int(num_bias)
        selected = _select_bias_subset(model, budget, seed)
        trainable += selected
        summary["bias_scalars"] = selected
    if mode == "raf_head":
        summary["rational_scalars"] = sum(p.numel() for p in rafs)
    summary["head_parameters"] = sum(p.numel() for p in head)
    summary["trainable_parameters"] = trainable
    return summary


def _select_bias_subset(model: nn.Module, budget: int, seed: int) -> int:
    """Make `budget` randomly chosen encoder bias entries trainable through gradient masks."""
    prefix = model.base_model_prefix + "."
    biases = [(n, p) for n, p in model.named_parameters() if n.startswith(prefix) and n.endswith("bias")]
    sizes = torch.tensor([p.numel() for _, p in biases])
    total = int(sizes.sum())
    if not 0 < budget <= total:
        raise ValueError(f"bias budget {budget} must be between 1 and the {total} encoder bias entries")
    gen = torch.Generator().manual_seed(int(seed))
    chosen = torch.randperm(total, generator=gen)[:budget]
    flat_mask = torch.zeros(total, dtype=torch.bool)
    flat_mask[chosen] = True
    for (name, p), mask in zip(biases, flat_mask.split(sizes.tolist())):
        if mask.any():
            p.requires_grad_(True)
            mask = mask.view_as(p)  # moved to the gradient's device in the hook: works after model.to(...)
            p.register_hook(lambda g, mask=mask: g * mask.to(g.device, g.dtype))
    return budget
