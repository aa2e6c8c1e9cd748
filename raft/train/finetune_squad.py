"""`raft finetune-squad`: fine-tune a pretrained BERT/RAFT on SQuAD v1.1, one N, one seed.

Protocol (data side owned by `raft.data.squad`): train pool / dev part from the official
training set (75/25, seed 96), N questions of each drawn per seed (``--n full``: all); the
official dev set is the test set -- offline (no train file) the official dev set is split by
article and the held-out articles are the test part (labelled in the result). Windows of
``--max-seq-length`` tokens with ``--doc-stride`` overlap; span predictions post-processed
per question (best start+end over all windows); EM / F1 of the official v1.1 script.
Model selection: F1 on the dev part after every epoch, early stopping, best epoch restored,
then one evaluation on the test set. The authors froze the RAFs here: ``--mode frozen_rafs``.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from raft import checks
from raft.train import runinfo
from raft.train.loop import Encoded, Runtime, predict, train_with_args
from raft.train.runinfo import UsageError

log = logging.getLogger("raft.finetune_squad")

PROG = "raft finetune-squad"
LOW_DATA = (20, 10)  # default (epochs, patience) for an integer N
FULL = (10, 2)  # ... and for --n full


def add_arguments(parser) -> None:
    runinfo.add_common_arguments(parser, lr=1e-4, max_seq_length=384, low_data=LOW_DATA, full=FULL)
    q = parser.add_argument_group("question answering")
    q.add_argument("--doc-stride", type=int, default=128, help="tokens shared by two windows of a context (default 128)")
    q.add_argument("--max-query-length", type=int, default=64, help="questions are cut to this many tokens (default 64)")
    q.add_argument("--max-answer-length", type=int, default=30, help="longest predicted answer in tokens (default 30)")
    q.add_argument("--n-best", type=int, default=20, help="start/end candidates per window (default 20)")


def main(args) -> int:
    return runinfo.run_command(PROG, run, args)


def default_schedule(n) -> tuple[int, int]:
    return runinfo.default_schedule(n, LOW_DATA, FULL)


class EvalPart:
    """One evaluation part: examples, their window features (unpadded) and the references."""

    def __init__(self, examples, tokenizer, **feature_kwargs):
        from raft.data.squad import references, tokenize_eval

        feats = tokenize_eval(examples, tokenizer, padding=False, **feature_kwargs)
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


def encode_train(examples, tokenizer, **feature_kwargs) -> Encoded:
    from raft.data.squad import tokenize_train

    feats = tokenize_train(examples, tokenizer, padding=False, **feature_kwargs)
    types = feats["token_type_ids"] if "token_type_ids" in feats.column_names else None
    return Encoded(
        feats["input_ids"], types, pad_id=tokenizer.pad_token_id or 0,
        start_positions=np.asarray(feats["start_positions"], dtype=np.int64),
        end_positions=np.asarray(feats["end_positions"], dtype=np.int64),
    )


def run(args) -> int:
    t_start = time.perf_counter()
    runinfo.setup_logging()
    runinfo.check_common_arguments(args)
    for name in ("max_query_length", "max_answer_length", "n_best"):
        if getattr(args, name) < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    runinfo.set_num_threads(args.num_threads)

    from raft.data import squad
    from raft.data.metrics import squad_metrics
    from raft.data.sources import DataSourceError

    output, device, precision, epochs, patience = runinfo.prepare_run(args, LOW_DATA, FULL)

    # --- model (errors before any data work) ------------------------------------------
    model, tokenizer, variant, mode_summary, max_len = runinfo.load_finetuning_model(
        args, "question-answering", device, finetuning_task="squad")
    runinfo.check(checks.check_squad_window, max_len, args.doc_stride, args.max_query_length)
    feature_kwargs = {"max_seq_length": max_len, "doc_stride": args.doc_stride,
                      "max_query_length": args.max_query_length}

    # --- data ----------------------------------------------------------------------------
    try:
        data = squad.load_squad(args.data_dir)
    except (FileNotFoundError, DataSourceError, ValueError) as exc:
        raise UsageError(f"cannot load SQuAD v1.1: {exc}") from exc
    train_ds, dev_ds, tests, partial, data_notes = runinfo.sample_parts(data, args)

    t0 = time.perf_counter()
    train = encode_train(train_ds, tokenizer, **feature_kwargs)
    dev = EvalPart(dev_ds, tokenizer, **feature_kwargs)
    test_parts = {name: EvalPart(ds, tokenizer, **feature_kwargs) for name, ds in tests.items()}
    t_tokenize = time.perf_counter() - t0
    log.info(
        "%s squad n=%s seed=%d mode=%s: train %d questions (%d windows), dev %d (%d), test %s; "
        "%d trainable parameters; %s",
        variant, args.n, args.seed, args.mode, len(train_ds), len(train), len(dev), dev.num_features,
        {k: f"{len(v)} ({v.num_features})" for k, v in test_parts.items()},
        mode_summary["trainable_parameters"], runinfo.device_description(device, precision),
    )

    # --- training --------------------------------------------------------------------------
    runtime = Runtime.create(device, precision)

    def evaluate(part: EvalPart) -> dict:
        out = predict(model, part.encoded, batch_size=args.eval_batch_size, runtime=runtime,
                      outputs=("start_logits", "end_logits"), ragged=("start_logits", "end_logits"),
                      with_loss=False)
        answers = squad.postprocess_predictions(
            part.examples, part.meta, stack_ragged(out["start_logits"]), stack_ragged(out["end_logits"]),
            n_best=args.n_best, max_answer_length=args.max_answer_length,
        )
        metrics = squad_metrics(answers, part.references)
        return {"metrics": metrics, "score": metrics["score"], "loss": None}

    t0 = time.perf_counter()
    fit, opt_info = train_with_args(
        model, train, lambda: evaluate(dev), args, runtime=runtime, epochs=epochs, patience=patience,
        metric_name="f1", desc=f"squad {variant} n={args.n} seed={args.seed}",
    )
    t_train = time.perf_counter() - t0

    # --- test: the restored best epoch -------------------------------------------------------
    t0 = time.perf_counter()
    test = {name: evaluate(part)["metrics"] for name, part in test_parts.items()}
    t_test = time.perf_counter() - t0
    log.info("best epoch %d (dev f1 %.2f); test %s", fit.best_epoch, fit.best_score,
             {k: {m: round(v[m], 2) for m in ("exact_match", "f1")} for k, v in test.items()})

    if args.save_model:
        runinfo.save_model(model, tokenizer, args.save_model)

    record = runinfo.base_record(
        args, task="squad", variant=variant, data=data, fit=fit, test=test, train_ds=train_ds, dev_ds=dev_ds,
        tests=tests, id_column="id", partial=partial, data_notes=data_notes, mode_summary=mode_summary,
        model=model, device=device, precision=precision, epochs=epochs, patience=patience,
        max_seq_length=max_len, opt_info=opt_info, t_start=t_start,
        timings={"tokenize": t_tokenize, "train": t_train, "test": t_test},
        sizes_extra={"features": {"train": len(train), "dev": dev.num_features,
                                  "test": {k: v.num_features for k, v in test_parts.items()}}},
        hyperparameters_extra={"doc_stride": args.doc_stride, "max_query_length": args.max_query_length,
                               "max_answer_length": args.max_answer_length, "n_best": args.n_best},
        provenance_extra={"split": dict(data.split_info)},
    )
    runinfo.write_json_atomic(output, record)
    log.info("wrote %s (%.1fs)", output, record["wall_time_s"])
    return 0
