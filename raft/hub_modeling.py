"""RAFT models (BERT with learnable rational activations) in plain torch + transformers.

`raft export` copies this file verbatim into an exported model folder as `modeling_raft.py`;
its `config.json` points `AutoConfig` and the three `AutoModelFor...` classes here (`auto_map`),
so `AutoModelForMaskedLM.from_pretrained(folder, trust_remote_code=True)` (or the
sequence-classification / question-answering class) loads the model where the `raft` package is
not installed. The file imports only torch and transformers (and must keep doing so).

It is one template inside the package rather than a second copy written out by the export
command: the file the tests import (`raft.hub_modeling`) is byte for byte the file that
is shipped, and `tests/test_export.py` checks it against the package (the formula, its
gradients and whole models' outputs against `raft.modeling`). It cannot import the package's
`raft.rational` (that would need `raft` installed), so the formula below repeats the package's
eager one: same Horner order, fp32 math for half inputs, and the same gradient for a
denominator coefficient at exactly 0 (copysign-style).

    F(x) = (a0 + a1 x + ... + am x^m) / (1 + |b1| |x| + |b2| |x|^2 + ... + |bn| |x|^n)

The architecture options of the authors' BERT variant are rebuilt from the config as the package
builds them: `deepnorm` (each post-LN sublayer computes LayerNorm(alpha * x + f(x)),
alpha = (2 num_hidden_layers)^(1/4): the stock residual modules change class in place) and
`embedding_layernorm` (false: no LayerNorm after the embeddings, an `nn.Identity`).

Differences from `raft.modeling`: the config's `model_type` is "raft-bert-hub" (not the package's
"raft-bert", so a process that has imported `raft` never mistakes one class for the other), the
initial coefficients come from the config (`rational_init_coefficients`, resolved by the export
from the package's init table), the RAF is the plain autograd formula, not a fused kernel, and
`weight_init` is kept in the config but not applied: a head the exported weights lack starts from
BERT's initialisation.
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import (
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
)
from transformers import initialization as hf_init
from transformers.models.bert.modeling_bert import BertOutput, BertSelfOutput

VARIANTS = ("bert", "raft")


def rational(x: torch.Tensor, numerator: torch.Tensor, denominator: torch.Tensor) -> torch.Tensor:
    """F(x) elementwise; fp32 math for fp32 / fp16 / bf16 inputs (fp64 for fp64), result in x's dtype."""
    xf = x.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    a, b = numerator.to(xf.dtype), denominator.to(xf.dtype)
    b = b * torch.copysign(torch.ones_like(b), b).detach()  # |b|, with d|b|/db = +-1 also at b = +-0
    ax = xf.abs()
    p = a[-1] * xf + a[-2]
    for k in range(a.numel() - 3, -1, -1):
        p = p * xf + a[k]
    q = b[-1] * ax
    for j in range(b.numel() - 2, -1, -1):
        q = (q + b[j]) * ax
    return (p / (q + 1)).to(x.dtype)


class Rational(nn.Module):
    """One learnable rational activation: parameters `numerator` (a0..am) and `denominator` (b1..bn)."""

    def __init__(self, numerator, denominator):
        super().__init__()
        self.numerator = nn.Parameter(torch.tensor([float(v) for v in numerator], dtype=torch.float32))
        self.denominator = nn.Parameter(torch.tensor([float(v) for v in denominator], dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return rational(x, self.numerator, self.denominator)

    def extra_repr(self) -> str:
        return f"degrees=({self.numerator.numel() - 1}, {self.denominator.numel()})"


class DeepNormSelfOutput(BertSelfOutput):
    """`BertSelfOutput` with DeepNorm's residual: LayerNorm(dropout(dense(h)) + alpha * x)."""

    alpha: float = 1.0

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(hidden_states + self.alpha * input_tensor)


class DeepNormOutput(BertOutput):
    """`BertOutput` (the FFN's second matrix) with DeepNorm's residual, as `DeepNormSelfOutput`."""

    alpha: float = 1.0

    def forward(self, hidden_states: torch.Tensor, input_tensor: torch.Tensor) -> torch.Tensor:
        hidden_states = self.dropout(self.dense(hidden_states))
        return self.LayerNorm(hidden_states + self.alpha * input_tensor)


class RaftConfig(BertConfig):
    """`BertConfig` plus the RAF placement (layers, pooler), degrees, initial coefficients and the
    architecture options (deepnorm, embedding_layernorm; weight_init recorded only)."""

    model_type = "raft-bert-hub"

    def __init__(
        self,
        raft_variant: str = "bert",
        rational_layers=(),
        rational_pooler: bool = False,
        rational_init="gelu",
        rational_degrees=(5, 4),
        rational_init_coefficients=None,
        deepnorm: bool = False,
        embedding_layernorm: bool = True,
        weight_init: str = "bert",
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.deepnorm = bool(deepnorm)
        self.embedding_layernorm = bool(embedding_layernorm)
        self.weight_init = weight_init
        if raft_variant not in VARIANTS:
            raise ValueError(f"unknown variant {raft_variant!r}; expected one of {VARIANTS}")
        self.raft_variant = raft_variant
        self.rational_layers = [int(i) for i in rational_layers]
        self.rational_pooler = bool(rational_pooler)
        self.rational_init = rational_init  # the name the coefficients were resolved from (or the pair itself)
        self.rational_degrees = [int(d) for d in rational_degrees]
        self.rational_init_coefficients = rational_init_coefficients
        if raft_variant == "bert" and (self.rational_layers or self.rational_pooler):
            raise ValueError("variant 'bert' has no rational activations; use variant 'raft'")
        if self.rational_layers or self.rational_pooler:
            self.init_coefficients()  # validate early

    def init_coefficients(self) -> tuple[list[float], list[float]]:
        """(numerator, denominator) every RAF starts from."""
        coef, (m, n) = self.rational_init_coefficients, self.rational_degrees
        if not isinstance(coef, dict) or len(coef.get("numerator", ())) != m + 1 \
                or len(coef.get("denominator", ())) != n:
            raise ValueError(f"rational_init_coefficients must be {{'numerator': {m + 1} numbers, "
                             f"'denominator': {n} numbers}} for rational_degrees {[m, n]}, got {coef!r}")
        return list(coef["numerator"]), list(coef["denominator"])


class _RaftMixin:
    """Installs the RAFs after the stock constructor; initialises RAFs missing from a checkpoint."""

    config_class = RaftConfig

    def _install(self, config: RaftConfig) -> None:
        base = getattr(self, self.base_model_prefix)
        if config.deepnorm:
            alpha = (2 * config.num_hidden_layers) ** 0.25
            for layer in base.encoder.layer:
                for module, cls in ((layer.attention.output, DeepNormSelfOutput), (layer.output, DeepNormOutput)):
                    module.__class__ = cls
                    module.alpha = alpha
        if not config.embedding_layernorm:
            base.embeddings.LayerNorm = nn.Identity()
        for i in config.rational_layers:
            base.encoder.layer[i].intermediate.intermediate_act_fn = Rational(*config.init_coefficients())
        if config.rational_pooler and getattr(base, "pooler", None) is not None:
            base.pooler.activation = Rational(*config.init_coefficients())

    @torch.no_grad()
    def initialize_weights(self):
        # Stock init first; then the RAFs that were not loaded from the checkpoint (e.g. the pooler
        # RAF when a masked-LM checkpoint gets a classification head): `hf_init.copy_` skips the rest.
        super().initialize_weights()
        rafs = [m for m in self.modules() if isinstance(m, Rational)]
        if not rafs:
            return
        num, den = self.config.init_coefficients()
        for module in rafs:
            hf_init.copy_(module.numerator, torch.tensor(num, dtype=module.numerator.dtype))
            hf_init.copy_(module.denominator, torch.tensor(den, dtype=module.denominator.dtype))


class RaftForMaskedLM(_RaftMixin, BertForMaskedLM):
    def __init__(self, config):
        super().__init__(config)
        self._install(config)


class RaftForSequenceClassification(_RaftMixin, BertForSequenceClassification):
    def __init__(self, config):
        super().__init__(config)
        self._install(config)


class RaftForQuestionAnswering(_RaftMixin, BertForQuestionAnswering):
    def __init__(self, config):
        super().__init__(config)
        self._install(config)
