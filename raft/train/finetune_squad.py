"""`raft finetune-squad`: fine-tune a pretrained BERT/RAFT on SQuAD v1.1, one N, one seed.

Protocol (data side owned by `raft.data.squad` and `raft.data.split`): train pool / dev part
from the official training set (75/25, seed 96), N questions of each drawn per seed (``--n
full``: all); the official dev set is the test set -- offline (no train file) the official dev
set is split by article and the held-out articles are the test part (labelled in the result).
Windows of ``--max-seq-length`` tokens with ``--doc-stride`` overlap; span predictions
post-processed per question (best start+end over all windows); EM / F1 of the official v1.1
script. Model selection: F1 on the dev part after every epoch, early stopping, best epoch
restored, then one evaluation on the test set. The authors froze the RAFs here:
``--mode frozen_rafs``.

The run itself is `raft.train.finetune.run`; this module is its SQuAD adapter (`SquadAdapter`:
window checks, features, span post-processing, EM/F1, feature counts and split info in the
record) and the command (flags: the run-level ones and one per field of `SETTINGS`).
"""

from __future__ import annotations

import numpy as np

from raft import checks, settings
from raft.train import finetune, runtime
from raft.train.loop import Encoded, predict
from raft.train.runtime import UsageError

PROG = "raft finetune-squad"
SETTINGS = settings.SquadFinetune  # the command's hyperparameters: its flags and its record


def add_arguments(parser) -> None:
    finetune.add_arguments(parser, SETTINGS)


def main(args) -> int:
    return finetune.command(PROG, args, SETTINGS, lambda a: SquadAdapter())


class EvalPart:
    """One evaluation part: examples, their window features (unpadded) and the references."""

    def __init__(self, examples, tokenizer, cache_file_name: str | None = None, **feature_kwargs):
        from raft.data.squad import references, tokenize_eval

        feats = tokenize_eval(examples, tokenizer, padding=False, cache_file_name=cache_file_name, **feature_kwargs)
        self.examples = {"id": list(examples["id"]), "context": list(examples["context"])}
        self.references = references(examples)
        self.meta = {"example_id": list(feats["example_id"]), "offset_mapping": list(feats["offset_mapping"])}
        types = feats["token_type_ids"] if "token_type_ids" in feats.column_names else None
        self.encoded = Encoded(feats["input_ids"], types, pad_id=tokenizer.pad_token_id or 0)

    def __len__(self) -> int:
        return len(self.examples["id"])

    @property
    def num_features(self) -> int:
        return len(self.encoded)


def stack_ragged(rows: list[np.ndarray], fill: float = float(np.finfo(np.float32).min)) -> np.ndarray:
    """Per-window logits of different lengths -> one (windows, longest) array, padded with ``fill``."""
    width = max((len(r) for r in rows), default=0)
    out = np.full((len(rows), width), fill, dtype=np.float32)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out


def encode_train(examples, tokenizer, cache_file_name: str | None = None, **feature_kwargs) -> Encoded:
    from raft.data.squad import tokenize_train

    feats = tokenize_train(examples, tokenizer, padding=False, cache_file_name=cache_file_name, **feature_kwargs)
    types = feats["token_type_ids"] if "token_type_ids" in feats.column_names else None
    return Encoded(
        feats["input_ids"], types, pad_id=tokenizer.pad_token_id or 0,
        start_positions=np.asarray(feats["start_positions"], dtype=np.int64),
        end_positions=np.asarray(feats["end_positions"], dtype=np.int64),
    )


def window(settings) -> dict:
    """The feature settings of a run: window length, stride, question length."""
    return {"max_seq_length": settings.max_seq_length, "doc_stride": settings.doc_stride,
            "max_query_length": settings.max_query_length}


class SquadAdapter(finetune.Adapter):
    """SQuAD v1.1 in the fine-tuning skeleton: a span head over overlapping windows."""

    task = "squad"
    head = "question-answering"
    data_name = "SQuAD v1.1"
    id_column = "id"
    selection_metric = "f1"

    def config_overrides(self) -> dict:
        return {"finetuning_task": "squad"}

    def check(self, settings) -> None:
        for name in ("max_query_length", "max_answer_length", "n_best"):
            if getattr(settings, name) < 1:
                raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(settings, name)}")
        runtime.check(checks.check_squad_window, settings.max_seq_length, settings.doc_stride,
                      settings.max_query_length)

    def load(self, data_dir):
        from raft.data import squad

        return squad.load_squad(data_dir)

    def encoding(self, settings) -> dict:
        return window(settings)

    def encode(self, sample, tokenizer, settings, shared) -> finetune.Parts:
        kw = window(settings)

        def train(ds, cache_file_name):
            return encode_train(ds, tokenizer, cache_file_name, **kw)

        def evaluation(ds, cache_file_name):
            return EvalPart(ds, tokenizer, cache_file_name, **kw)

        return finetune.Parts(shared("train", sample.train, train), shared("dev", sample.dev, evaluation),
                              {k: shared(f"test-{k}", v, evaluation) for k, v in sample.tests.items()})

    def predict(self, model, part: EvalPart, rt, settings) -> dict[str, str]:
        """{example id: predicted answer text} (the best span over the example's windows)."""
        from raft.data.squad import postprocess_predictions

        out = predict(model, part.encoded, batch_size=settings.eval_batch_size, runtime=rt,
                      outputs=("start_logits", "end_logits"), ragged=("start_logits", "end_logits"),
                      with_loss=False)
        return postprocess_predictions(
            part.examples, part.meta, stack_ragged(out["start_logits"]), stack_ragged(out["end_logits"]),
            n_best=settings.n_best, max_answer_length=settings.max_answer_length,
        )

    def evaluate(self, model, part: EvalPart, rt, settings, *, with_loss: bool = True) -> dict:
        """Also ``predictions`` ({id: text}: the run's predictions.json, `raft.train.finetune`)."""
        from raft.data.metrics import squad_metrics

        answers = self.predict(model, part, rt, settings)
        metrics = squad_metrics(answers, part.references)
        return {"metrics": metrics, "score": metrics["score"], "loss": None, "predictions": answers}

    def describe(self, sample, parts: finetune.Parts) -> str:
        tests = {k: f"{len(v)} ({v.num_features})" for k, v in parts.tests.items()}
        return (f"train {len(sample.train)} questions ({len(parts.train)} windows), "
                f"dev {len(parts.dev)} ({parts.dev.num_features}), test {tests}")

    def sizes(self, parts: finetune.Parts) -> dict:
        return {"features": {"train": len(parts.train), "dev": parts.dev.num_features,
                             "test": {k: v.num_features for k, v in parts.tests.items()}}}

    def provenance(self, data) -> dict:
        return {"split": dict(data.split_info)}
