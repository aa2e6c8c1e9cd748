"""Settings: one dataclass per concern, the one home of every default.

A field's name is its config key (in the section named by ``SECTION``) and, with the
section's ``PREFIX``, its command-line flag: ``Rational.lr`` is config ``rational.lr`` and
flag ``--rational-lr``. The `raft` commands generate their flags from these classes
(`add_flags`), the workflow builds their command lines from the config with the same names
(`raft.study`), the schema's defaults agree with these (a test checks it both ways), and a
result file's ``hyperparameters`` are the settings as written (`as_record`). A field marked
``identity`` belongs to a pretraining checkpoint's identity: a checkpoint written with other
identity values is not resumed, and the workflow keys its checkpoint folder by their digest.
The paper's values live in config/paper.yaml, not here.
"""

from __future__ import annotations

import argparse
import dataclasses
import typing
from dataclasses import dataclass, field
from typing import ClassVar

from raft.checks import AUTO_PRECISION, PRECISIONS


def setting(default, help: str, *, identity: bool = False, choices=None):
    return field(default=default, metadata={"help": help, "identity": identity, "choices": choices})


@dataclass(frozen=True)
class Model:
    SECTION: ClassVar[str] = "model"
    PREFIX: ClassVar[str] = ""
    num_layers: int = setting(2, "Transformer layers", identity=True)
    hidden_size: int = setting(128, "hidden size", identity=True)
    num_heads: int = setting(2, "attention heads", identity=True)
    intermediate_size: int = setting(512, "FFN size", identity=True)
    max_position_embeddings: int | None = setting(
        None, "position embeddings (default: the corpus sequence length)", identity=True)
    dropout: float = setting(0.1, "hidden and attention dropout", identity=True)
    deepnorm: bool = setting(False, "DeepNorm residuals: every post-LN sublayer computes LayerNorm(a x + f(x)), "
                                    "a = (2 num_layers)^(1/4) (the authors' code)", identity=True)
    embedding_layernorm: bool = setting(True, "LayerNorm after the embeddings (--no-embedding-layernorm: none, "
                                              "as in the authors' code)", identity=True)
    weight_init: str = setting(
        "bert", "initial weights: bert (N(0, 0.02)), deepnet (Xavier-normal, gain (8 num_layers)^(-1/4) for value, "
        "attention output and FFN, 1 for query and key), authors (what the authors' code effectively used: BERT's, "
        "but the FFN input, pooler and MLM transform as torch's Linear default, the FFN input of RAF layers "
        "Xavier-normal with gain (8 num_layers)^(-1/4), ~3x smaller)", identity=True,
        choices=("bert", "deepnet", "authors"))


@dataclass(frozen=True)
class Rational:
    SECTION: ClassVar[str] = "rational"
    PREFIX: ClassVar[str] = "rational_"
    layers: str = setting("all,pooler", "RAF placement: 'all', 'none', '0-11', '0,2', plus ',pooler'", identity=True)
    init: str = setting("gelu", "initial RAF shape (a name from raft/inits.json)", identity=True)
    degrees: str = setting("5,4", "numerator,denominator degrees", identity=True)
    lr: float = setting(5e-3, "learning rate of the RAF coefficients", identity=True)
    weight_decay: float = setting(0.1, "weight decay of the RAF coefficients", identity=True)
    schedule: str = setting("constant", "RAF lr after warmup", identity=True, choices=("constant", "linear"))


@dataclass(frozen=True)
class Corpus:
    SECTION: ClassVar[str] = "corpus"
    PREFIX: ClassVar[str] = ""
    source: str = setting("wikiextractor", "wikiextractor (WikiExtractor output), text (plain text), hub",
                          identity=True, choices=("wikiextractor", "text", "hub"))
    path: str | None = setting(None, "input folder/file for wikiextractor/text (default: under --data-dir)",
                               identity=True)
    text_unit: str = setting("blank-line", "source text: what one document is", identity=True,
                             choices=("blank-line", "line", "file"))
    hub_dataset: str = setting("wikimedia/wikipedia", "source hub: the dataset", identity=True)
    hub_config: str | None = setting(None, "source hub: its config (default 20231101.en for wikimedia/wikipedia)",
                                     identity=True)
    max_documents: int | None = setting(None, "use only the first N documents (default: all)", identity=True)
    vocab_file: str | None = setting(
        None, "WordPiece vocab.txt (default: <data-dir>/vocab/bert-base-uncased-vocab.txt, else the Hub's)",
        identity=True)
    vocab_size: int | None = setting(None, "train a WordPiece vocabulary of this size instead", identity=True)
    seq_len: int = setting(128, "tokens per packed sequence ([CLS] + text + [SEP])", identity=True)
    validation_fraction: float = setting(0.01, "share of documents held out for validation", identity=True)
    seed: int = setting(0, "seed of the document split", identity=True)


@dataclass(frozen=True)
class Pretrain:
    SECTION: ClassVar[str] = "pretrain"
    PREFIX: ClassVar[str] = ""
    max_steps: int = setting(23000, "optimiser steps", identity=True)
    batch_size: int = setting(4096, "global batch in sequences (accumulation fills it)", identity=True)
    per_device_batch_size: int | None = setting(None, "micro-batch per process (default: batch / processes)")
    lr: float = setting(7e-4, "peak learning rate", identity=True)
    warmup_ratio: float = setting(0.01, "fraction of steps with linear warmup", identity=True)
    weight_decay: float = setting(0.01, "AdamW weight decay (bias/LayerNorm 0)", identity=True)
    adam_beta1: float = setting(0.9, "AdamW beta1", identity=True)
    adam_beta2: float = setting(0.98, "AdamW beta2", identity=True)
    adam_eps: float = setting(1e-8, "AdamW epsilon", identity=True)
    max_grad_norm: float = setting(0.0, "gradient clipping (0 = none)", identity=True)
    mlm_probability: float = setting(0.15, "masked share of tokens", identity=True)
    output_bias: str = setting(
        "zero", "initial MLM output bias: zero (BERT), or unigram (the train split's log token frequencies; "
        "keeps small models from collapsing onto the frequency-only prediction)", identity=True,
        choices=("zero", "unigram"))
    save_steps: int = setting(500, "checkpoint interval (0: only at the end / on a signal)")
    eval_steps: int = setting(500, "validation interval (0: only at the end)")
    logging_steps: int = setting(50, "steps per progress line")
    snapshot_steps: int = setting(500, "RAF coefficient snapshot interval (0: start and end)")
    keep_checkpoints: int = setting(2, "newest checkpoints to keep (0: all)")
    max_eval_sequences: int | None = setting(None, "cap on validation sequences (default: all)")
    seed: int = setting(0, "seed of weights, data order and masks", identity=True)
    compile: bool = setting(False, "torch.compile the model for training (not identity: compiled and eager "
                                   "attempts resume each other)")


@dataclass(frozen=True)
class Finetune:
    """One GLUE fine-tuning run's hyperparameters (SQuAD: `SquadFinetune`)."""

    SECTION: ClassVar[str] = "glue"
    PREFIX: ClassVar[str] = ""
    epochs: int = setting(20, "maximum epochs")
    patience: int = setting(10, "early-stopping patience in epochs")
    lr: float = setting(5e-5, "learning rate")
    rational_lr: float = setting(1e-3, "learning rate of the RAF coefficients")
    weight_decay: float = setting(0.1, "AdamW weight decay (bias/LayerNorm 0)")
    rational_weight_decay: float = setting(0.1, "weight decay of the RAF coefficients")
    rational_schedule: str = setting("linear", "schedule of the RAF learning rate", choices=("linear", "constant"))
    warmup_ratio: float = setting(0.0, "fraction of steps with linear warmup")
    max_grad_norm: float = setting(1.0, "gradient clipping norm (0 = off)")
    adam_eps: float = setting(1e-6, "AdamW epsilon")
    batch_size: int = setting(32, "training batch size")
    eval_batch_size: int = setting(128, "evaluation batch size")
    max_seq_length: int = setting(128, "max tokens per sequence")
    precision: str | None = setting(None, f"{AUTO_PRECISION} (default: auto)",
                                    choices=PRECISIONS)
    max_test_examples: int | None = setting(
        None, "testing only: evaluate the first K examples of each test set (labelled partial)")
    compile: bool = setting(False, "torch.compile the model for training and evaluation steps")


@dataclass(frozen=True)
class SquadFinetune(Finetune):
    SECTION: ClassVar[str] = "squad"
    epochs: int = setting(10, "maximum epochs")
    patience: int = setting(3, "early-stopping patience in epochs")
    lr: float = setting(1e-4, "learning rate")
    max_seq_length: int = setting(384, "tokens per window (question + context)")
    doc_stride: int = setting(128, "tokens two windows of one context share")
    max_query_length: int = setting(64, "questions are cut to this many tokens")
    max_answer_length: int = setting(30, "longest predicted answer in tokens")
    n_best: int = setting(20, "start/end candidates per window")
    lowercase: bool = setting(True, "lower-case the text as the uncased vocabulary expects (--no-lowercase: keep "
                                    "the case, as the authors' run_squad.py did without --do_lower_case)")


# ------------------------------------------------------------------------------ flags
def _scalar_type(cls, name: str):
    hint = typing.get_type_hints(cls)[name]
    args = [a for a in typing.get_args(hint) if a is not type(None)]
    return args[0] if args else hint


def true_by_default() -> set[str]:
    """Flag names (with prefix, underscores) of the boolean fields whose default is True: the
    command line writes them only when false (``--no-x``)."""
    return {cls.PREFIX + f.name for cls in SECTIONS.values() for f in dataclasses.fields(cls) if f.default is True}


def flag(cls, name: str) -> str:
    return "--" + (cls.PREFIX + name).replace("_", "-")


def add_flags(parser: argparse.ArgumentParser, cls, title: str | None = None) -> None:
    """One flag per field of ``cls``, with its default, type, choices and help."""
    group = parser.add_argument_group(title or cls.SECTION)
    for f in dataclasses.fields(cls):
        meta, kind = f.metadata, _scalar_type(cls, f.name)
        default = f" (default {f.default})" if f.default is not None else ""
        if kind is bool:  # --x / --no-x
            group.add_argument(flag(cls, f.name), dest=cls.PREFIX + f.name, default=f.default,
                               action=argparse.BooleanOptionalAction, help=meta["help"])
            continue
        group.add_argument(flag(cls, f.name), dest=cls.PREFIX + f.name, type=kind,
                           default=f.default, choices=meta["choices"], help=meta["help"] + default)


def from_args(cls, args: argparse.Namespace):
    """The settings object of a parsed command line."""
    return cls(**{f.name: getattr(args, cls.PREFIX + f.name) for f in dataclasses.fields(cls)})


def as_record(obj) -> dict:
    """The settings as written to a result file (config key names)."""
    return dataclasses.asdict(obj)


def identity(obj) -> dict:
    """The fields of ``obj`` that belong to a pretraining checkpoint's identity."""
    return {f.name: getattr(obj, f.name) for f in dataclasses.fields(obj) if f.metadata["identity"]}


def replace(obj, **changes):
    return dataclasses.replace(obj, **changes)


SECTIONS = {cls.SECTION: cls for cls in (Model, Rational, Corpus, Pretrain, Finetune, SquadFinetune)}
