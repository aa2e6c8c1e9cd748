"""`raft finetune-glue`: fine-tune a pretrained BERT/RAFT on one GLUE task, one N, one seed.

Protocol (the paper's; data side owned by `raft.data.glue`): the official training set is
split 75/25 with seed 96 into a train pool and a dev part; N training and N dev examples are
drawn per seed (``--n full``: all of both); the official validation set is the test set
(MNLI: matched and mismatched). AdamW (RAF coefficients in their own group, own lr),
linear decay without warmup, evaluation on dev after every epoch, early stopping, the best
epoch restored by the task's selection score, then one evaluation of every test set.
Writes one metrics.json (docs/architecture.md) atomically at the very end.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from raft.train import runinfo
from raft.train.loop import Encoded, Runtime, predict, train_with_args
from raft.train.runinfo import UsageError

log = logging.getLogger("raft.finetune_glue")

PROG = "raft finetune-glue"
LOW_DATA = (20, 10)  # default (epochs, patience) for an integer N
FULL = (3, 2)  # ... and for --n full


def _tasks() -> tuple[str, ...]:
    from raft.data.metrics import GLUE_TASKS

    return tuple(GLUE_TASKS)


def add_arguments(parser) -> None:
    parser.add_argument("--task", required=True, choices=_tasks(), help="GLUE task")
    runinfo.add_common_arguments(parser, lr=5e-5, max_seq_length=128, low_data=LOW_DATA, full=FULL)


def main(args) -> int:
    return runinfo.run_command(PROG, run, args)


def default_schedule(n) -> tuple[int, int]:
    return runinfo.default_schedule(n, LOW_DATA, FULL)


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


def run(args) -> int:
    t_start = time.perf_counter()
    runinfo.setup_logging()
    runinfo.check_common_arguments(args)
    runinfo.set_num_threads(args.num_threads)

    from raft.data import glue
    from raft.data.sources import DataSourceError

    try:
        info = glue.task_info(args.task)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    task = info.name
    output, device, precision, epochs, patience = runinfo.prepare_run(args, LOW_DATA, FULL)

    # --- model (errors before any data work) ------------------------------------------
    model, tokenizer, variant, mode_summary, max_len = runinfo.load_finetuning_model(
        args, "sequence-classification", device, **model_overrides(info))

    # --- data ----------------------------------------------------------------------------
    try:
        data = glue.load_glue(task, args.data_dir)
    except (FileNotFoundError, DataSourceError, ValueError) as exc:
        raise UsageError(f"cannot load GLUE {task}: {exc}") from exc
    train_ds, dev_ds, tests, partial, data_notes = runinfo.sample_parts(data, args)

    t0 = time.perf_counter()
    regression = info.is_regression
    train = encode(train_ds, tokenizer, max_len, regression)
    dev = encode(dev_ds, tokenizer, max_len, regression)
    test_sets = {k: encode(v, tokenizer, max_len, regression) for k, v in tests.items()}
    t_tokenize = time.perf_counter() - t0
    log.info(
        "%s %s n=%s seed=%d mode=%s: train %d, dev %d, test %s; %d trainable parameters; %s",
        variant, task, args.n, args.seed, args.mode, len(train), len(dev),
        {k: len(v) for k, v in test_sets.items()}, mode_summary["trainable_parameters"],
        runinfo.device_description(device, precision),
    )

    # --- training --------------------------------------------------------------------------
    runtime = Runtime.create(device, precision)

    def evaluate(part: Encoded, with_loss: bool = True) -> dict:
        out = predict(model, part, batch_size=args.eval_batch_size, runtime=runtime, with_loss=with_loss)
        metrics = data.metrics(out["logits"], part.targets["labels"])
        return {"metrics": metrics, "score": metrics["score"], "loss": out["loss"]}

    t0 = time.perf_counter()
    fit, opt_info = train_with_args(
        model, train, lambda: evaluate(dev), args, runtime=runtime, epochs=epochs, patience=patience,
        metric_name=data.selection_metric.replace(" ", ""), desc=f"{task} {variant} n={args.n} seed={args.seed}",
    )
    t_train = time.perf_counter() - t0

    # --- test: the restored best epoch, every eval set ---------------------------------------
    t0 = time.perf_counter()
    test = {name: evaluate(part, with_loss=False)["metrics"] for name, part in test_sets.items()}
    t_test = time.perf_counter() - t0
    log.info("best epoch %d (dev %s %.4f); test %s", fit.best_epoch, data.selection_metric, fit.best_score,
             {k: round(v["score"], 4) for k, v in test.items()})

    if args.save_model:
        runinfo.save_model(model, tokenizer, args.save_model)

    record = runinfo.base_record(
        args, task=task, variant=variant, data=data, fit=fit, test=test, train_ds=train_ds, dev_ds=dev_ds,
        tests=tests, id_column="idx", partial=partial, data_notes=data_notes, mode_summary=mode_summary,
        model=model, device=device, precision=precision, epochs=epochs, patience=patience,
        max_seq_length=max_len, opt_info=opt_info, t_start=t_start,
        timings={"tokenize": t_tokenize, "train": t_train, "test": t_test},
    )
    runinfo.write_json_atomic(output, record)
    log.info("wrote %s (%.1fs)", output, record["wall_time_s"])
    return 0
