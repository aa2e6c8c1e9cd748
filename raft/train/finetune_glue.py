"""`raft finetune-glue`: fine-tune a pretrained BERT/RAFT on one GLUE task, one N, one seed.

Protocol (the paper's; data side owned by `raft.data.glue` and `raft.data.split`): the
official training set is split 75/25 with seed 96 into a train pool and a dev part; N training
and N dev examples are drawn per seed (``--n full``: all of both); the official validation set
is the test set (MNLI: matched and mismatched). AdamW (RAF coefficients in their own group, own
lr), linear decay, evaluation on dev after every epoch, early stopping, the best epoch restored
by the task's selection score, then one evaluation of every test set. Writes one metrics.json
(docs/architecture.md) atomically at the very end.

The run itself is `raft.train.finetune.run`; this module is its GLUE adapter (`GlueAdapter`:
head, labels, data, encoding, metrics) and the command (flags: the run-level ones and one per
field of `SETTINGS`).

Constant classifiers: the record's top-level ``distinct_predictions`` holds, per test set, the
number of distinct labels its predictions used (`raft.data.metrics.distinct_predictions`), and
``constant_predictions`` is true when some test set got one label for every example; both are
null for STS-B (a regression). They sit outside ``test``, whose entries stay metrics only. A tiny
or undertrained model that always predicts one class scores MCC 0 / that class's share, which
the tables and notebooks must not show as a result.
"""

from __future__ import annotations

import numpy as np

from raft import settings
from raft.train import finetune
from raft.train.loop import Encoded, predict
from raft.train.runtime import UsageError

PROG = "raft finetune-glue"
SETTINGS = settings.Finetune  # the command's hyperparameters: its flags and its record


def _tasks() -> tuple[str, ...]:
    from raft.data.tasks import GLUE_TASKS

    return tuple(GLUE_TASKS)


def add_arguments(parser) -> None:
    parser.add_argument("--task", required=True, choices=_tasks(), help="GLUE task")
    finetune.add_arguments(parser, SETTINGS)


def main(args) -> int:
    return finetune.command(PROG, args, SETTINGS, lambda a: GlueAdapter(a.task))


def model_overrides(info) -> dict:
    """Config overrides for a task head: labels (or regression) and the task name."""
    if info.is_regression:
        return {"num_labels": 1, "problem_type": "regression", "finetuning_task": info.name}
    names = list(info.label_names)
    return {
        "id2label": dict(enumerate(names)),
        "label2id": {name: i for i, name in enumerate(names)},
        "problem_type": "single_label_classification",
        "finetuning_task": info.name,
    }


def encode(dataset, tokenizer, max_length: int, regression: bool, cache_file_name: str | None = None) -> Encoded:
    """Tokenize a uniform GLUE Dataset once (batched fast tokenizer) into unpadded ids + labels.
    With ``cache_file_name`` through ``Dataset.map`` (`raft.data.glue.tokenize`: the Arrow file
    is kept for the next process); without, directly (a seed's draw: no table to write)."""
    from raft.data.glue import encode_batch, tokenize

    if cache_file_name is None:
        columns = dataset[:]
        enc = {**encode_batch(columns, tokenizer, max_length), "label": columns["label"]}
    else:
        table = tokenize(dataset, tokenizer, max_length=max_length, cache_file_name=cache_file_name)
        enc = {name: table[name] for name in table.column_names}
    labels = np.asarray(enc["label"], dtype=np.float32 if regression else np.int64)
    types = enc.get("token_type_ids")
    return Encoded(enc["input_ids"], types, pad_id=tokenizer.pad_token_id or 0, labels=labels)


class GlueAdapter(finetune.Adapter):
    """One GLUE task in the fine-tuning skeleton: a sequence-classification head."""

    head = "sequence-classification"
    id_column = "idx"

    def __init__(self, task: str):
        from raft.data import glue

        try:
            self.info = glue.task_info(task)
        except ValueError as exc:
            raise UsageError(str(exc)) from exc
        self.task = self.info.name
        self.data_name = f"GLUE {self.task}"
        self.selection_metric = glue.SELECTION_METRIC[self.task]

    def config_overrides(self) -> dict:
        return model_overrides(self.info)

    def load(self, data_dir):
        from raft.data import glue

        return glue.load_glue(self.task, data_dir)

    def encode(self, sample, tokenizer, settings, shared) -> finetune.Parts:
        def enc(ds, cache_file_name) -> Encoded:
            return encode(ds, tokenizer, settings.max_seq_length, self.info.is_regression, cache_file_name)

        parts = finetune.Parts(shared("train", sample.train, enc), shared("dev", sample.dev, enc),
                               {k: shared(f"test-{k}", v, enc) for k, v in sample.tests.items()})
        self._tests = dict(parts.tests)  # evaluate() knows a test set by identity
        self._distinct: dict[str, int | None] = {}
        return parts

    def evaluate(self, model, part: Encoded, rt, settings, *, with_loss: bool = True) -> dict:
        """The task's metrics (`raft.data.metrics.glue_metrics`: paper metrics + ``score``); for a
        test set, also notes how many labels its predictions used (see `provenance`)."""
        from raft.data.metrics import distinct_predictions, glue_metrics

        out = predict(model, part, batch_size=settings.eval_batch_size, runtime=rt, with_loss=with_loss)
        metrics = glue_metrics(self.task, out["logits"], part.targets["labels"])
        for name, test in getattr(self, "_tests", {}).items():
            if part is test:
                self._distinct[name] = distinct_predictions(self.task, out["logits"])
        return {"metrics": metrics, "score": metrics["score"], "loss": out["loss"]}

    def provenance(self, data) -> dict:
        """``distinct_predictions`` {test set: labels its predictions used} and
        ``constant_predictions`` (true when a test set's predictions used a single label: the
        run's scores then measure the class balance; false otherwise); both null for a
        regression (STS-B) or when no test set was evaluated."""
        distinct = dict(getattr(self, "_distinct", {}))
        known = {k: v for k, v in distinct.items() if v is not None}
        return {"distinct_predictions": known or None, "constant_predictions": constant_predictions(distinct)}


def constant_predictions(distinct: dict) -> bool | None:
    """True when some test set's ``distinct_predictions`` is 1 (at most 1); None when none is known."""
    known = [k for k in distinct.values() if k is not None]
    return any(k <= 1 for k in known) if known else None
