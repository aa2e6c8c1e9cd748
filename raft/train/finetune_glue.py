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
import torch

from raft.train import runinfo
from raft.train.loop import Encoded, Runtime, predict, train_with_early_stopping
from raft.train.runinfo import UsageError

log = logging.getLogger("raft.finetune_glue")

PROG = "raft finetune-glue"
LOW_DATA_EPOCHS, LOW_DATA_PATIENCE = 20, 10
FULL_EPOCHS, FULL_PATIENCE = 3, 2


def _tasks() -> tuple[str, ...]:
    from raft.data.metrics import GLUE_TASKS

    return tuple(GLUE_TASKS)


def add_arguments(parser) -> None:
    parser.add_argument("--task", required=True, choices=_tasks(), help="GLUE task")
    runinfo.add_common_arguments(
        parser, lr=5e-5, max_seq_length=128,
        epochs_help=f"maximum epochs (default {LOW_DATA_EPOCHS} for integer N, {FULL_EPOCHS} for full data)",
        patience_help=f"early-stopping patience in epochs (default {LOW_DATA_PATIENCE} low-data, {FULL_PATIENCE} full)",
    )


def main(args) -> int:
    return runinfo.run_command(PROG, run, args)


def default_schedule(n) -> tuple[int, int]:
    return (FULL_EPOCHS, FULL_PATIENCE) if n == "full" else (LOW_DATA_EPOCHS, LOW_DATA_PATIENCE)


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
    from raft.modeling import export_rationals
    from raft.modes import apply_mode

    try:
        info = glue.task_info(args.task)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    task = info.name
    output = runinfo.check_output_path(args.output)
    device = runinfo.select_device(args.device)
    precision = runinfo.resolve_precision(args.precision, device)
    runinfo.configure_backends(device)
    epochs, patience = default_schedule(args.n)
    epochs = args.epochs or epochs
    patience = args.patience or patience

    # --- model (errors before any data work) ------------------------------------------
    runinfo.seed_everything(args.seed)  # classifier init follows the seed
    model = runinfo.load_model(args.pretrained, "sequence-classification", **model_overrides(info))
    tokenizer = runinfo.load_tokenizer(args.pretrained)
    variant = getattr(model.config, "raft_variant", "bert")
    model.to(device)  # before apply_mode: bias_head's gradient masks live on the parameters' device
    try:
        mode_summary = apply_mode(model, args.mode, seed=args.seed)
    except ValueError as exc:
        raise UsageError(f"--mode {args.mode} with a {variant!r} model ({args.pretrained}): {exc}") from exc
    max_len = runinfo.effective_max_length(args.max_seq_length, model)

    # --- data ----------------------------------------------------------------------------
    try:
        data = glue.load_glue(task, args.data_dir)
    except (FileNotFoundError, DataSourceError, ValueError) as exc:
        raise UsageError(f"cannot load GLUE {task}: {exc}") from exc
    try:
        train_ds, dev_ds = glue.sample(data, None if args.n == "full" else args.n, args.seed)
    except ValueError as exc:
        raise UsageError(f"--n {args.n}: {exc}") from exc
    data_notes = list(data.data_notes)
    partial = bool(data.partial_data)
    tests, cap_note = runinfo.cap_test_sets(data.tests, args.max_test_examples)
    if cap_note:
        partial = True
        data_notes.append(cap_note)

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
    fit, opt_info = train_with_early_stopping(
        model, train, lambda: evaluate(dev),
        runtime=runtime, seed=args.seed, epochs=epochs, patience=patience, batch_size=args.batch_size,
        lr=args.lr, weight_decay=args.weight_decay, rational_lr=args.rational_lr,
        rational_weight_decay=args.rational_weight_decay, adam_eps=args.adam_eps,
        warmup_ratio=args.warmup_ratio, rational_schedule=args.rational_schedule,
        max_grad_norm=args.max_grad_norm, metric_name=data.selection_metric.replace(" ", ""),
        desc=f"{task} {variant} n={args.n} seed={args.seed}",
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

    record = {
        "task": task,
        "variant": variant,
        "n": args.n,
        "seed": args.seed,
        "mode": args.mode,
        "pretrained": str(args.pretrained),
        "test": test,
        "selection_metric": data.selection_metric,
        "best_dev_score": fit.best_score,
        "best_epoch": fit.best_epoch,
        "dev_curve": fit.curve,
        "sizes": {
            "pool": len(data.pool),
            "dev_part": len(data.dev),
            "train": len(train),
            "dev": len(dev),
            "test": {k: len(v) for k, v in test_sets.items()},
        },
        "sources": dict(data.sources),
        "partial_data": partial,
        "data_notes": data_notes,
        "trainable_parameters": int(mode_summary["trainable_parameters"]),
        "hyperparameters": runinfo.hyperparameters(
            args, epochs=epochs, patience=patience, max_seq_length=max_len, precision=precision,
            opt_info=opt_info, split_seed=data.shuffle_seed, pool_fraction=data.pool_fraction,
        ),
        "wall_time_s": round(time.perf_counter() - t_start, 3),
        "device": runinfo.device_description(device, precision),
        "rationals": export_rationals(model),
        # provenance beyond the contract
        "epochs_run": fit.epochs_run,
        "stopped_early": fit.stopped_early,
        "train_ids_sha1": runinfo.ids_sha1(train_ds["idx"]),
        "dev_ids_sha1": runinfo.ids_sha1(dev_ds["idx"]),
        "mode_summary": mode_summary,
        "timings_s": {"tokenize": round(t_tokenize, 3), "train": round(t_train, 3), "test": round(t_test, 3)},
        "versions": runinfo.versions(),
    }
    runinfo.write_json_atomic(output, record)
    log.info("wrote %s (%.1fs)", output, record["wall_time_s"])
    return 0
