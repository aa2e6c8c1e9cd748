"""RAFT models: stock Hugging Face BERT with rational activations (RAFs) swapped in.

A RAFT model is a `BertFor...` model whose feed-forward activation in the chosen layers
(and optionally the pooler's tanh) is replaced by an independent `Rational`. The choice
lives in the config (`RaftConfig`), so `save_pretrained` -> `from_pretrained` (with this
module imported) rebuilds the RAF modules and loads their learned coefficients. The GELU
model ("bert", the paper's FAFT) is the same code path with no RAF.

Initialisation: the RAFs are created *after* the stock weight initialisation and draw no
random numbers, so a BERT and a RAFT model built under the same seed share every non-RAF
weight. (The authors' code initialised RAFT's FFN input weights ~3x smaller than FAFT's;
by default we do not, so that the activation is the only difference: `weight_init="authors"`
replays it, see below.)

Three options of the authors' BERT variant (UKPLab/2022-RAFT at cffff41,
transformers_modified/modeling.py, "academic BERT"; config configs/config_12_academic_postln.json),
all stored in the config so that save/load and `raft export` rebuild them, all off by default
(a default model is stock BERT, bit for bit):

* ``deepnorm``: DeepNorm residuals (Wang et al. 2022): each post-LN sublayer computes
  LayerNorm(alpha * x + f(x)) instead of LayerNorm(x + f(x)), alpha = (2 N)^(1/4), N = the
  number of layers (modeling.py:345-346 ``deepnorm(x, fx, n=12)``, used at :520-521 and
  :542-543; their n is fixed at 12, their layer count). The residual input is scaled by
  `DeepNormSelfOutput` / `DeepNormOutput`, the stock modules' classes swapped in place
  (same parameters, same state-dict keys, no random numbers drawn).
* ``embedding_layernorm``: False removes the LayerNorm after the embeddings
  (``"layernorm_embedding": false``, modeling.py:313-316, :333-334): the encoder gets word +
  position + token-type embeddings after dropout. The module becomes an `nn.Identity`, so its
  weights are not in the state dict.
* ``weight_init``: "bert" (stock: N(0, 0.02) weights, zero biases); "deepnet" (DeepNet's
  initialisation: Xavier-normal weights, gain beta = (8 N)^(-1/4) for the attention value and
  output and both FFN matrices, gain 1 for query and key, biases zero as in BERT; the authors'
  code writes it at modeling.py:339-343, :364-367, :420-421, :471-472, with n fixed at 12, and
  for the FFN input only in RAF layers, :454 against :456-458); or "authors" (what
  their pretraining actually started from: `BertLMHeadModel.__init__` calls `init_weights()`
  (:1086), whose `_init_weights` (:800-811) redraws every `nn.Linear` and `nn.Embedding` as
  N(0, 0.02) with zero biases -- overwriting all of the DeepNet initialisation above -- except
  the layers built as their fused `LinearActivation` (not an `nn.Linear`), which keep their own
  `reset_parameters` (:190-198): torch's Linear default (Kaiming-uniform, a = sqrt 5, biases
  U(+-1/sqrt fan_in)) for the FFN input of GELU layers (:456-458), the pooler (:686-695) and the
  MLM-head transform (:709-713), but Xavier-normal with gain beta for the FFN input of RAF layers
  (:454, ``use_deepnet=config.use_deepnet``), biases U(+-1/sqrt fan_in) too. At BERT-base
  (768 -> 3072, N = 12): std 0.0073 for RAF layers against 0.0208 for GELU layers (2.9x),
  the "~3x smaller" FFN-in weights of RAFT.

Adding another encoder family (e.g. RoBERTa, whose layers are named the same way) needs a
config subclass and the three thin model subclasses below.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import nn
from transformers import initialization as hf_init
from transformers import (
    AutoConfig,
    AutoModelForMaskedLM,
    AutoModelForQuestionAnswering,
    AutoModelForSequenceClassification,
    BertConfig,
    BertForMaskedLM,
    BertForQuestionAnswering,
    BertForSequenceClassification,
)

from raft.checks import POOLER, parse_layer_spec
from raft.hub_modeling import DeepNormOutput, DeepNormSelfOutput  # defined once, in the file `raft export` ships
from raft.rational import Rational, init_coefficients

VARIANTS = ("bert", "raft")
WEIGHT_INITS = ("bert", "deepnet", "authors")


def deepnorm_alpha(num_layers: int) -> float:
    """DeepNorm's residual scale for an encoder of `num_layers` layers: (2 N)^(1/4)."""
    return (2 * num_layers) ** 0.25


def deepnorm_beta(num_layers: int) -> float:
    """DeepNet's initialisation gain for an encoder of `num_layers` layers: (8 N)^(-1/4)."""
    return (8 * num_layers) ** -0.25


class RaftConfig(BertConfig):
    """`BertConfig` plus the RAF placement (which FFN layers, the pooler, init and degrees) and
    the authors' architecture options (`deepnorm`, `embedding_layernorm`, `weight_init`)."""

    model_type = "raft-bert"

    def __init__(
        self,
        raft_variant: str = "bert",
        rational_layers=(),
        rational_pooler: bool = False,
        rational_init="gelu",
        rational_degrees=(5, 4),
        deepnorm: bool = False,
        embedding_layernorm: bool = True,
        weight_init: str = "bert",
        **kwargs,
    ):
        super().__init__(**kwargs)
        if raft_variant not in VARIANTS:
            raise ValueError(f"unknown variant {raft_variant!r}; expected one of {VARIANTS}")
        if weight_init not in WEIGHT_INITS:
            raise ValueError(f"unknown weight_init {weight_init!r}; expected one of {WEIGHT_INITS}")
        self.deepnorm = bool(deepnorm)
        self.embedding_layernorm = bool(embedding_layernorm)
        self.weight_init = weight_init
        self.raft_variant = raft_variant
        self.rational_layers = [int(i) for i in rational_layers]
        self.rational_pooler = bool(rational_pooler)
        # explicit coefficients are stored as lists so the config stays JSON-serialisable
        self.rational_init = rational_init if isinstance(rational_init, str) else [list(c) for c in rational_init]
        self.rational_degrees = [int(d) for d in rational_degrees]
        if raft_variant == "bert" and (self.rational_layers or self.rational_pooler):
            raise ValueError("variant 'bert' has no rational activations; use variant 'raft'")

    @property
    def num_rational_scalars(self) -> int:
        """Number of learnable RAF scalars (the paper's RAFT-base: 13 x 10 = 130)."""
        per_raf = self.rational_degrees[0] + 1 + self.rational_degrees[1]
        return (len(self.rational_layers) + int(self.rational_pooler)) * per_raf


def make_config(
    variant: str,
    *,
    rational_layers="all,pooler",
    rational_init="gelu",
    rational_degrees=(5, 4),
    **bert_kwargs,
) -> RaftConfig:
    """Build a config for variant "bert" (GELU everywhere) or "raft" (RAFs per `rational_layers`).

    `bert_kwargs` are ordinary `BertConfig` arguments (vocab_size, hidden_size, ...) and the
    `RaftConfig` options deepnorm, embedding_layernorm, weight_init.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if variant == "bert":
        return RaftConfig(raft_variant="bert", **bert_kwargs)
    num_layers = bert_kwargs.get("num_hidden_layers", BertConfig().num_hidden_layers)
    layers, pooler = parse_layer_spec(rational_layers, num_layers)
    init_coefficients(rational_init, tuple(rational_degrees))  # validate early, naming the bad value
    return RaftConfig(
        raft_variant="raft",
        rational_layers=layers,
        rational_pooler=pooler,
        rational_init=rational_init,
        rational_degrees=rational_degrees,
        **bert_kwargs,
    )


def _init_spec(config: RaftConfig):
    return config.rational_init if isinstance(config.rational_init, str) else tuple(config.rational_init)


def _new_rational(config: RaftConfig) -> Rational:
    return Rational(degrees=tuple(config.rational_degrees), init=_init_spec(config))


def _install_architecture(model: nn.Module, config: RaftConfig) -> None:
    """`deepnorm` and `embedding_layernorm` on the stock modules (no parameter is created or
    renamed, no random number drawn: the residual modules change class, in place)."""
    base = getattr(model, model.base_model_prefix)
    if getattr(config, "deepnorm", False):
        alpha = deepnorm_alpha(config.num_hidden_layers)
        for layer in base.encoder.layer:
            for module, cls in ((layer.attention.output, DeepNormSelfOutput), (layer.output, DeepNormOutput)):
                module.__class__ = cls
                module.alpha = alpha
    if not getattr(config, "embedding_layernorm", True):
        base.embeddings.LayerNorm = nn.Identity()


@torch.no_grad()
def _apply_weight_init(model: nn.Module, config: RaftConfig) -> None:
    """`weight_init` "deepnet" / "authors" (module docstring) over the stock initialisation.
    The `transformers.initialization` functions leave alone what `from_pretrained` loaded."""
    scheme = getattr(config, "weight_init", "bert")
    if scheme == "bert":
        return
    base = getattr(model, model.base_model_prefix)
    beta = deepnorm_beta(config.num_hidden_layers)
    if scheme == "deepnet":
        for layer in base.encoder.layer:
            attention = layer.attention.self
            for linear, gain in ((attention.query, 1.0), (attention.key, 1.0), (attention.value, beta),
                                 (layer.attention.output.dense, beta), (layer.intermediate.dense, beta),
                                 (layer.output.dense, beta)):
                hf_init.xavier_normal_(linear.weight, gain=gain)  # biases: zero, as BERT's
        return
    rafs = set(getattr(config, "rational_layers", ()))
    linears = [(layer.intermediate.dense, beta if i in rafs else None) for i, layer in enumerate(base.encoder.layer)]
    pooler = getattr(base, "pooler", None)
    head = getattr(getattr(model, "cls", None), "predictions", None)
    linears += [(m.dense, None) for m in (pooler, getattr(head, "transform", None)) if m is not None]
    for linear, gain in linears:
        if gain is None:  # torch's nn.Linear default (the authors' LinearActivation.reset_parameters)
            hf_init.kaiming_uniform_(linear.weight, a=math.sqrt(5))
        else:
            hf_init.xavier_normal_(linear.weight, gain=gain)
        bound = 1 / math.sqrt(linear.in_features)
        hf_init.uniform_(linear.bias, -bound, bound)


def _install_rationals(model: nn.Module, config: RaftConfig) -> None:
    base = getattr(model, model.base_model_prefix)
    layers = base.encoder.layer
    for i in config.rational_layers:
        layers[i].intermediate.intermediate_act_fn = _new_rational(config)
    if config.rational_pooler and getattr(base, "pooler", None) is not None:
        base.pooler.activation = _new_rational(config)


class _RaftMixin:
    """Installs the RAFs after the stock constructor; initialises RAFs missing from a checkpoint."""

    config_class = RaftConfig

    def _install(self, config):
        if not isinstance(config, RaftConfig):
            raise TypeError(f"{type(self).__name__} needs a RaftConfig, got {type(config).__name__}")
        _install_architecture(self, config)
        _install_rationals(self, config)

    @torch.no_grad()
    def initialize_weights(self):
        # Stock init first; then RAFs whose coefficients were not loaded from a checkpoint
        # (e.g. the pooler RAF when a masked-LM checkpoint gets a classification head).
        # `hf_init.copy_` skips tensors that from_pretrained marked as loaded.
        # `weight_init` other than "bert" redraws some matrices after the stock init.
        super().initialize_weights()
        if not isinstance(self.config, RaftConfig):
            return
        _apply_weight_init(self, self.config)
        num, den = init_coefficients(_init_spec(self.config), tuple(self.config.rational_degrees))
        for module in rational_modules(self).values():
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


AutoConfig.register(RaftConfig.model_type, RaftConfig, exist_ok=True)
AutoModelForMaskedLM.register(RaftConfig, RaftForMaskedLM, exist_ok=True)
AutoModelForSequenceClassification.register(RaftConfig, RaftForSequenceClassification, exist_ok=True)
AutoModelForQuestionAnswering.register(RaftConfig, RaftForQuestionAnswering, exist_ok=True)

HEADS = {
    "masked-lm": RaftForMaskedLM,
    "sequence-classification": RaftForSequenceClassification,
    "question-answering": RaftForQuestionAnswering,
}


def load_config(path, **config_overrides) -> RaftConfig:
    """The config of a pretrained RAFT/BERT directory (from `raft pretrain`), with overrides.

    Raises a clear error when the directory is missing or is not a raft model directory.
    """
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"pretrained model directory {str(path)!r} does not exist")
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{str(path)!r} is not a model directory: no config.json (expected the 'model' "
            "folder written by `raft pretrain`)"
        )
    config = AutoConfig.from_pretrained(path)
    if not isinstance(config, RaftConfig):
        raise ValueError(
            f"{str(path)!r} holds a {config.model_type!r} model, not a raft model "
            f"({RaftConfig.model_type!r}, written by `raft pretrain`)"
        )
    for key, value in config_overrides.items():
        setattr(config, key, value)
    return config


def load_pretrained(path, head: str, state_dict: dict | None = None, **config_overrides):
    """Load a pretrained RAFT/BERT directory (from `raft pretrain`) with a task head.

    ``state_dict``: the directory's weights already in memory (``safetensors.torch.load_file``);
    the model then takes them instead of reading the files (and shares their storage: pass a
    copy when the model will train). Weights missing from it (the head) are initialised exactly
    as when loading from disk. Errors as in `load_config`.
    """
    if head not in HEADS:
        raise ValueError(f"unknown head {head!r}; expected one of {sorted(HEADS)}")
    config = load_config(path, **config_overrides)
    if state_dict is not None:
        return HEADS[head].from_pretrained(None, config=config, state_dict=state_dict)
    return HEADS[head].from_pretrained(Path(path), config=config)


def rational_modules(model: nn.Module) -> dict[str, Rational]:
    """Every RAF of a model, keyed "layer.<i>" and "pooler", in layer order."""
    base = getattr(model, model.base_model_prefix)
    out = {}
    for i, layer in enumerate(base.encoder.layer):
        act = layer.intermediate.intermediate_act_fn
        if isinstance(act, Rational):
            out[f"layer.{i}"] = act
    pooler = getattr(base, "pooler", None)
    if pooler is not None and isinstance(pooler.activation, Rational):
        out[POOLER] = pooler.activation
    return out


def export_rationals(model: nn.Module) -> dict[str, dict[str, list[float]]]:
    """JSON-ready coefficients of every RAF: {name: {"numerator": [...], "denominator": [...]}}."""
    return {
        name: {
            "numerator": module.numerator.detach().double().cpu().tolist(),
            "denominator": module.denominator.detach().double().cpu().tolist(),
        }
        for name, module in rational_modules(model).items()
    }


def count_parameters(model: nn.Module, trainable_only: bool = True) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)
