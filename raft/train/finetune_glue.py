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


def encode(dataset, tokenizer, max_length: int, regression: bool) -> Encoded:
    """Tokenize a uniform GLUE Dataset once (batched fast tokenizer) into unpadded ids + labels."""
    from raft.data.glue import tokenize

    enc = tokenize(dataset, tokenizer, max_length=max_length)
    labels = np.asarray(enc["label"], dtype=np.float32 if regression else np.int64)
    types = enc["token_type_ids"] if "token_type_ids" in enc.column_names else None
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

    def encode(self, sample, tokenizer, settings) -> finetune.Parts:
        def enc(ds) -> Encoded:
            return encode(ds, tokenizer, settings.max_seq_length, self.info.is_regression)

        return finetune.Parts(enc(sample.train), enc(sample.dev), {k: enc(v) for k, v in sample.tests.items()})

    def evaluate(self, model, part: Encoded, rt, settings, *, with_loss: bool = True) -> dict:
        from raft.data.metrics import glue_metrics

        out = predict(model, part, batch_size=settings.eval_batch_size, runtime=rt, with_loss=with_loss)
        metrics = glue_metrics(self.task, out["logits"], part.targets["labels"])
        return {"metrics": metrics, "score": metrics["score"], "loss": out["loss"]}
