"""`raft zeroshot`: score a fine-tuned model on another data set without further training
(the paper's zero-shot transfer table: MNLI -> SNLI, SQuAD -> TriviaQA).

Targets (``TARGETS``):

* ``snli``: a model fine-tuned on MNLI (saved by ``raft finetune-glue --task mnli --save-model
  DIR``) on the SNLI 1.0 test pairs with a gold label (9,824; `raft.data.snli`). SNLI classes go
  to the model's label ids by name (`raft.data.snli.model_label_ids` over the model's
  ``config.label2id``). Encoding and metrics are the GLUE ones (`raft.train.finetune_glue.encode`,
  `raft.data.metrics.glue_metrics` of MNLI: accuracy, score); the labels the predictions used
  are recorded like a GLUE run's (``distinct_predictions`` / ``constant_predictions``).
* ``triviaqa``: a model fine-tuned on SQuAD v1.1 (``raft finetune-squad --save-model DIR``) on
  every question-document pair of TriviaQA verified web dev converted to SQuAD format
  (`raft.data.triviaqa`), through the SQuAD windows and answer extraction
  (`raft.train.finetune_squad.EvalPart`, `SquadAdapter.predict`); the one prediction per pair is
  scored three ways (`raft.data.triviaqa.score`), the record's test blocks ``triviaqa``
  (TriviaQA's own EM/F1: the headline), ``all_pairs`` (the authors' SQuAD EM/F1 over every pair)
  and ``has_ans`` (SQuAD EM/F1 over the pairs whose context holds an alias), and written as
  ``predictions.json`` next to metrics.json. Without a local copy the Hub's rc.web dev set is
  scored instead and the record says ``substitute: true``.

Settings: the evaluation uses the windows the model was fine-tuned with. ``--source-metrics``
(the fine-tuning run's metrics.json) supplies them (its ``hyperparameters``: ``max_seq_length``;
for TriviaQA also ``doc_stride``, ``max_query_length``, ``max_answer_length``, ``n_best``) and
the run's identity (task, variant, N, seed, mode, training data); a flag that contradicts the
record is an error, except TriviaQA's window (``--max-seq-length``, ``--doc-stride``) with
``--override-window`` (the authors scored TriviaQA with 384-token windows whatever the fine-tuning
run's: config ``zeroshot.triviaqa_window``): the record then says ``window_from_source: false``
and a ``data_notes`` line names both windows. Without the record, the flags or the fine-tuning
commands' defaults apply.
``--eval-batch-size`` (default: the record's, else 128) and ``--precision`` (default auto) are free.

Writes one metrics.json (docs/architecture.md, "Result files":
``results/zeroshot/{target}/{variant}/seed{seed}/metrics.json``) atomically at the very end
(TriviaQA: ``predictions.json`` just before it).
Problems found before the evaluation are `raft.train.runtime.UsageError` (exit code 2).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raft import checks
from raft import settings as settings_
from raft.data import snli, split, triviaqa
from raft.train import finetune, finetune_setup, runtime
from raft.train.runtime import UsageError

log = logging.getLogger("raft.zeroshot")
PROG = "raft zeroshot"
QA_FIELDS = ("max_seq_length", "doc_stride", "max_query_length", "max_answer_length", "n_best")
WINDOW_FIELDS = ("max_seq_length", "doc_stride")  # what --override-window lets differ from the record


# ------------------------------------------------------------------------------ evaluation
@dataclass
class Scored:
    """What a target's evaluation gives the record."""

    test: dict  # {eval set: {metric: value}}: the record's test block
    sizes: dict = field(default_factory=dict)  # record ``sizes`` entries (``test``: examples per eval set)
    extra: dict = field(default_factory=dict)  # further record fields
    predictions: dict | None = None  # {example id: predicted text} -> predictions.json (QA targets)


def evaluate_snli(model, tokenizer, test, settings, rt) -> Scored:
    """An MNLI model on the SNLI pairs: accuracy, and the labels the predictions used."""
    from raft.data.metrics import distinct_predictions, glue_metrics
    from raft.train.finetune_glue import constant_predictions, encode
    from raft.train.loop import predict

    ids = snli.model_label_ids(model.config.label2id, model.config.num_labels)
    test = test.remove_columns("label").add_column("label", [ids[y] for y in test["label"]])
    part = encode(test, tokenizer, settings.max_seq_length, regression=False)
    out = predict(model, part, batch_size=settings.eval_batch_size, runtime=rt, with_loss=False)
    metrics = glue_metrics("mnli", out["logits"], part.targets["labels"])
    distinct = {"test": distinct_predictions("mnli", out["logits"])}
    return Scored({"test": metrics}, {"test": {"test": len(test)}},
                  {"distinct_predictions": distinct, "constant_predictions": constant_predictions(distinct)})


def evaluate_triviaqa(model, tokenizer, test, settings, rt) -> Scored:
    """A SQuAD model on every converted TriviaQA pair: one prediction each, three scores."""
    from raft.train.finetune_squad import EvalPart, SquadAdapter, window

    part = EvalPart(test, tokenizer, **window(settings))
    predictions = SquadAdapter().predict(model, part, rt, settings)
    blocks, sizes = triviaqa.score(predictions, test)
    return Scored(blocks, {"test": sizes, "features": {"test": part.num_features}}, predictions=predictions)


@dataclass(frozen=True)
class Target:
    """One zero-shot target: the fine-tuning task its models come from, and how it is scored."""

    name: str
    source_task: str  # the fine-tuning record's task of a fitting model
    head: str  # `raft.modeling` head
    settings_cls: type  # the fine-tuning settings whose defaults apply
    fields: tuple[str, ...]  # settings taken from the fine-tuning run
    data_name: str
    load: Callable[[Any], Any]  # data_dir -> SnliData / TriviaqaData
    evaluate: Callable[..., Scored]
    command: str  # how a fitting model is made, for messages
    extra_hyperparameters: dict = field(default_factory=dict)


TARGETS = {
    "snli": Target("snli", "mnli", "sequence-classification", settings_.Finetune, ("max_seq_length",),
                   "SNLI 1.0 test", snli.load_snli, evaluate_snli, "raft finetune-glue --task mnli --save-model DIR"),
    "triviaqa": Target("triviaqa", "squad", "question-answering", settings_.SquadFinetune, QA_FIELDS,
                       "TriviaQA verified web dev", triviaqa.load_triviaqa, evaluate_triviaqa,
                       "raft finetune-squad --save-model DIR", {"max_num_tokens": triviaqa.MAX_NUM_TOKENS}),
}


# ------------------------------------------------------------------------------ the command
def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("run")
    g.add_argument("--model", required=True, metavar="DIR",
                   help="fine-tuned model folder (model + tokenizer: `raft finetune-glue/-squad --save-model`)")
    g.add_argument("--target", required=True, choices=tuple(TARGETS), help="snli (MNLI model), triviaqa (SQuAD model)")
    g.add_argument("--output", required=True, metavar="FILE", help="metrics.json path (parent folders are created)")
    g.add_argument("--source-metrics", default=None, metavar="FILE",
                   help="metrics.json of the fine-tuning run that saved --model: its identity, windows (recommended)")
    g.add_argument("--seed", type=int, default=None, help="the fine-tuning run's seed (default: --source-metrics's)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="local data root (default: $RAFT_DATA_DIR, else the Hugging Face Hub)")
    g.add_argument("--max-test-examples", type=int, default=None,
                   help="testing only: score the first K examples (labelled partial)")
    g.add_argument("--num-threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--device", default=None, help=argparse.SUPPRESS)  # testing: force cpu / cuda:N
    h = parser.add_argument_group("evaluation (default: the --source-metrics run's, else the fine-tuning default)")
    fields = {f.name: f for f in dataclasses.fields(settings_.SquadFinetune)}
    for name in (*QA_FIELDS, "eval_batch_size"):
        h.add_argument(settings_.flag(settings_.SquadFinetune, name), type=int, default=None,
                       help=fields[name].metadata["help"])
    h.add_argument("--precision", default=None, choices=checks.PRECISIONS, help=fields["precision"].metadata["help"])
    h.add_argument("--override-window", action="store_true",
                   help="TriviaQA: let --max-seq-length / --doc-stride differ from the --source-metrics run's "
                        "(recorded: window_from_source false, and a data_notes line)")


def main(args) -> int:
    def go(args) -> int:
        finetune.setup_logging()
        runtime.set_num_threads(args.num_threads)
        return run(args)

    return runtime.run_command(PROG, go, args)


@dataclass
class Run:
    """What one evaluation found, step by step; the record is built from it."""

    target: Target
    args: argparse.Namespace
    source: dict
    settings: Any
    from_source: list[str]
    window_notes: list[str]
    runtime: runtime.Runtime
    t_start: float
    variant: str = "bert"
    identity: dict = field(default_factory=dict)
    data: Any = None
    n_test: int = 0
    cap_note: str | None = None
    scored: Scored | None = None


def run(args) -> int:
    """One zero-shot evaluation -> ``args.output`` (metrics.json); returns 0."""
    target = TARGETS[args.target]
    output = finetune_setup.check_output_path(args.output)
    source = read_source_metrics(args.source_metrics)
    settings, from_source, overrides = resolve_settings(args, target, source.get("hyperparameters") or {})
    rt = runtime.Runtime.create(runtime.select_device(args.device), settings.precision)
    state = Run(target, args, source, settings, from_source, overrides, rt, time.perf_counter())
    model, tokenizer = load_model(args.model, target), finetune_setup.load_tokenizer(args.model, "--model", "`raft finetune-* --save-model`")
    state.variant = getattr(model.config, "raft_variant", "bert")
    state.identity = source_identity(args, source, target, state.variant)
    positions = int(getattr(model.config, "max_position_embeddings", settings.max_seq_length))
    runtime.check(checks.check_max_seq_length, settings.max_seq_length, positions)
    model.to(rt.device)
    state.data = finetune_setup.load_data(target, args.data_dir)
    tests, state.cap_note = split.cap_test_sets({"test": state.data.test}, settings.max_test_examples)
    state.n_test = len(tests["test"])
    log.info("%s %s -> %s: %d examples (%s); %s", state.variant, target.source_task, target.name, state.n_test,
             state.data.source + (", substitute" if state.data.substitute else ""), rt.describe())
    state.scored = target.evaluate(model, tokenizer, tests["test"], settings, rt)
    log.info("%s: %s", target.name, {name: {k: round(v, 4) for k, v in metrics.items()}
                                      for name, metrics in state.scored.test.items()})
    result = record(state)
    if state.scored.predictions is not None:
        finetune.write_predictions(output, state.scored.predictions)
    runtime.write_json_atomic(output, result)
    log.info("wrote %s (%.1fs)", output, result["wall_time_s"])
    return 0


# ------------------------------------------------------------------------------ inputs
def read_source_metrics(path) -> dict:
    """The fine-tuning run's metrics.json (``{}`` without ``--source-metrics``)."""
    if path is None:
        return {}
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UsageError(f"--source-metrics {str(path)!r}: cannot read it ({type(exc).__name__}: {exc})") from None
    if not isinstance(obj, dict) or "task" not in obj:
        raise UsageError(f"--source-metrics {str(path)!r}: not a fine-tuning metrics.json (no 'task')")
    return obj


def resolve_settings(args, target: Target, recorded: dict) -> tuple[Any, list[str], list[str]]:
    """The evaluation settings: flag, else the fine-tuning record's value, else the default; a
    flag contradicting the record, or a QA flag for SNLI, is a `UsageError` -- except a window
    flag (`WINDOW_FIELDS`) with ``--override-window``. Also returns the names taken from the
    record and a note per overridden window setting (the record's ``data_notes``)."""
    values: dict[str, Any] = {}
    taken: list[str] = []
    overridden: dict[str, tuple[int, int]] = {}
    override = bool(getattr(args, "override_window", False))
    if override and target.name != "triviaqa":
        raise UsageError("--override-window applies to --target triviaqa only")
    for name in QA_FIELDS:
        given, flag = getattr(args, name), settings_.flag(target.settings_cls, name)
        if name not in target.fields:
            if given is not None:
                raise UsageError(f"{flag} applies to --target triviaqa only")
            continue
        old = recorded.get(name)
        if given is not None and old is not None and int(given) != int(old):
            if not (override and name in WINDOW_FIELDS):
                hint = " or pass --override-window" if name in WINDOW_FIELDS else ""
                raise UsageError(f"{flag} {given} contradicts the fine-tuning run's {name} {old} "
                                 f"(--source-metrics {args.source_metrics}); evaluate with the fine-tuning "
                                 f"windows{hint}")
            overridden[name] = (int(given), int(old))
        value = given if given is not None else old
        if value is not None:
            values[name] = int(value)
            if given is None:
                taken.append(name)
    batch = args.eval_batch_size if args.eval_batch_size is not None else recorded.get("eval_batch_size")
    if batch is not None:
        values["eval_batch_size"] = int(batch)
    settings = target.settings_cls(**values, precision=args.precision, max_test_examples=args.max_test_examples)
    finetune_setup.check_values(settings)
    if target.name == "triviaqa":
        from raft.train.finetune_squad import SquadAdapter

        SquadAdapter().check(settings)
    return settings, taken, window_notes(overridden)


def window_notes(overridden: dict[str, tuple[int, int]]) -> list[str]:
    """``{name: (used, fine-tuned)}`` -> the record's ``data_notes`` lines (none when empty)."""
    notes = []
    if "max_seq_length" in overridden:
        used, old = overridden["max_seq_length"]
        notes.append(f"scored with {used}-token windows; fine-tuned with {old} (--override-window)")
    if "doc_stride" in overridden:
        used, old = overridden["doc_stride"]
        notes.append(f"scored with doc_stride {used}; fine-tuned with {old} (--override-window)")
    return notes


def source_identity(args, source: dict, target: Target, variant: str) -> dict:
    """N, seed, mode and training data of the fine-tuning run, checked against the model and flags."""
    where = f"--source-metrics {args.source_metrics}"
    if source and source.get("task") != target.source_task:
        raise UsageError(f"{where}: a {source.get('task')!r} run; --target {target.name} needs a "
                         f"{target.source_task} run ({target.command})")
    if source and source.get("variant") not in (None, variant):
        raise UsageError(f"{where}: variant {source.get('variant')!r}, but --model {args.model} is {variant!r}")
    seed = source.get("seed") if args.seed is None else args.seed
    if args.seed is not None and source.get("seed") not in (None, args.seed):
        raise UsageError(f"--seed {args.seed} contradicts {where} (seed {source.get('seed')})")
    if seed is None:
        raise UsageError("give --source-metrics (the fine-tuning run's metrics.json) or --seed")
    notes = [] if source else [("no --source-metrics: the fine-tuning run's N, mode and training data are not "
                                 "recorded (N taken as 'full').")]
    if source.get("partial_data"):
        notes += [f"fine-tuned model: {note}" for note in source.get("data_notes") or []]
    sources = source.get("sources") or {}
    return {"n": source.get("n", split.FULL), "seed": int(seed), "mode": source.get("mode", "full"),
            "train_source": sources.get("train"), "partial": bool(source.get("partial_data")), "notes": notes}


def load_model(path, target: Target):
    """The fine-tuned model with the target's head; a model not fine-tuned on the target's
    source task (or, for SNLI, without MNLI's label names) is a `UsageError`."""
    from safetensors import SafetensorError

    from raft.modeling import load_pretrained

    runtime.check_weights(sorted(Path(path).glob("*.safetensors")), "--model: ")
    try:
        model = load_pretrained(path, target.head)
    except (FileNotFoundError, ValueError, OSError, TypeError, SafetensorError) as exc:
        raise UsageError(f"--model: {exc}") from exc
    task = getattr(model.config, "finetuning_task", None)
    if task != target.source_task:
        raise UsageError(f"--model {str(path)!r} was fine-tuned on {task!r}, not {target.source_task!r}: "
                         f"--target {target.name} needs a model saved by `{target.command}`")
    if target.name == "snli":
        try:
            snli.model_label_ids(model.config.label2id, model.config.num_labels)
        except ValueError as exc:
            raise UsageError(f"--model {str(path)!r}: {exc}") from exc
    return model


# ------------------------------------------------------------------------------ the record
def record(state: Run) -> dict:
    """The metrics.json record (docs/architecture.md), fields in their order."""
    t, ident, data, args = state.target, state.identity, state.data, state.args
    sources = {"train": ident["train_source"], "test": data.source} if ident["train_source"] else {"test": data.source}
    return {
        "target": t.name,
        "source_task": t.source_task,
        "variant": state.variant,
        "n": ident["n"],
        "seed": ident["seed"],
        "mode": ident["mode"],
        "model": str(args.model),
        "source_metrics": None if args.source_metrics is None else str(args.source_metrics),
        "test": state.scored.test,
        "sizes": {**data.sizes, **state.scored.sizes},
        "sources": sources,
        "substitute": bool(data.substitute),
        "partial_data": state.cap_note is not None or ident["partial"],
        "window_from_source": not state.window_notes,
        "data_notes": [*data.data_notes, *([state.cap_note] if state.cap_note else []), *ident["notes"],
                       *state.window_notes],
        "hyperparameters": hyperparameters(state),
        "wall_time_s": round(time.perf_counter() - state.t_start, 3),
        "device": state.runtime.describe(),
        **state.scored.extra,
        "source_test": state.source.get("test"),
        "versions": finetune.versions(),
    }


def hyperparameters(state: Run) -> dict:
    """The settings used (``precision`` resolved), the target's fixed ones, and which came from
    the fine-tuning record (``from_source_metrics``)."""
    s = state.settings
    used = {name: getattr(s, name) for name in state.target.fields}
    return {**used, "eval_batch_size": s.eval_batch_size, "precision": state.runtime.precision,
            **state.target.extra_hyperparameters, "from_source_metrics": list(state.from_source)}

