"""Run plumbing shared by the fine-tuning commands.

Seeding, device / precision selection, thread count, loading a pretrained directory with a
clean CLI error, atomic JSON writing and the `UsageError` -> exit code 2 convention; the
flags, run preamble (device, model + mode), data sampling and metrics.json record shared by
`raft finetune-glue` and `raft finetune-squad`. Nothing here knows about a particular task.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import platform
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from raft import checks
from raft.checks import SettingError

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "fp32", "bf16", "fp16")


class UsageError(Exception):
    """A problem found before any training (bad model dir, task/mode mismatch, N too large...).

    The commands print its message as ``raft <command>: error: <message>`` and exit with 2.
    """


# ---------------------------------------------------------------------------------------
# seeding, threads, device, precision
# ---------------------------------------------------------------------------------------
def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from one integer."""
    seed = int(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if torch.cuda.is_available():
        torch.cuda.manual_seed_all(seed)


def set_num_threads(num_threads: int | None) -> None:
    if num_threads:
        torch.set_num_threads(int(num_threads))


def select_device(name: str | None = None) -> torch.device:
    """``name`` if given ("cpu", "cuda", "cuda:1"), else the first CUDA device, else the CPU."""
    if name:
        dev = torch.device(name)
        if dev.type == "cuda" and not torch.cuda.is_available():
            raise UsageError(f"device {name!r} requested but CUDA is not available")
        return dev
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def resolve_precision(precision: str, device: torch.device) -> str:
    """Concrete precision for ``precision`` on ``device``: "fp32", "bf16" or "fp16".

    "auto" is bf16 on a CUDA device that supports it (else fp16), fp32 on the CPU (CPU bf16
    autocast is slower than fp32 on most CPUs). fp16 needs a CUDA device (it uses a grad scaler).
    """
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; expected one of {PRECISIONS}")
    if precision == "auto":
        if device.type == "cuda":
            return "bf16" if torch.cuda.is_bf16_supported() else "fp16"
        return "fp32"
    check(checks.check_precision, precision, device.type)
    return precision


def autocast(device: torch.device, precision: str):
    """Autocast context for a resolved precision (a no-op for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def configure_backends(device: torch.device) -> None:
    """TF32 matmuls on CUDA (fp32 master weights keep their precision)."""
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def device_description(device: torch.device, precision: str | None = None) -> str:
    if device.type == "cuda":
        idx = device.index if device.index is not None else torch.cuda.current_device()
        desc = f"cuda ({torch.cuda.get_device_name(idx)})"
    else:
        desc = f"cpu ({platform.machine() or 'unknown'}, {torch.get_num_threads()} threads)"
    return f"{desc}, {precision}" if precision else desc


# ---------------------------------------------------------------------------------------
# pretrained model + tokenizer
# ---------------------------------------------------------------------------------------
def load_model(path, head: str, **config_overrides):
    """`raft.modeling.load_pretrained`, with its errors turned into `UsageError`."""
    from safetensors import SafetensorError

    from raft.modeling import load_pretrained

    try:
        return load_pretrained(path, head, **config_overrides)
    except (FileNotFoundError, ValueError, OSError, TypeError) as exc:
        raise UsageError(f"--pretrained: {exc}") from exc
    except SafetensorError as exc:  # a truncated / corrupt weights file; its message names no file
        files = sorted(Path(path).glob("*.safetensors"))
        where = str(files[0]) if len(files) == 1 else f"the *.safetensors files in {str(path)!r}"
        raise UsageError(
            f"--pretrained: cannot read the model weights {where}: {exc} (the file is truncated or "
            "corrupt; copy it again or re-run `raft pretrain`)"
        ) from exc


def load_tokenizer(path):
    """The tokenizer saved next to the pretrained model (`raft pretrain` saves one)."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise UsageError(
            f"--pretrained: {str(path)!r} holds no tokenizer (tokenizer.json / vocab.txt); "
            "`raft pretrain` saves it next to the model"
        )
    try:
        tok = AutoTokenizer.from_pretrained(path)
    except Exception as exc:  # broken or unknown tokenizer files
        raise UsageError(f"--pretrained: cannot load the tokenizer in {str(path)!r}: {exc}") from exc
    if not getattr(tok, "is_fast", False):
        raise UsageError(f"--pretrained: the tokenizer in {str(path)!r} is not a fast tokenizer")
    return tok


# ---------------------------------------------------------------------------------------
# result files
# ---------------------------------------------------------------------------------------
def _jsonable(obj):
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, torch.Tensor):
        return _jsonable(obj.tolist())
    return obj


def write_json_atomic(path, obj) -> Path:
    """Write ``obj`` as indented JSON to ``path`` via a temporary file + rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(_jsonable(obj), f, indent=2, allow_nan=True)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def ids_sha1(ids) -> str:
    """SHA-1 of a sequence of example ids (ints or strings), order included."""
    h = hashlib.sha1()
    for i in ids:
        h.update(str(i).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------
# command wrapper
# ---------------------------------------------------------------------------------------
def setup_logging(verbose: bool = False) -> None:
    root = logging.getLogger()
    if not root.handlers:
        logging.basicConfig(
            level=logging.DEBUG if verbose else logging.INFO,
            format="%(asctime)s %(levelname)s %(name)s: %(message)s",
            datefmt="%H:%M:%S",
            stream=sys.stderr,
        )
    # library chatter (weight-init reports, tokenizer warnings) stays out of the run log
    for name in ("transformers", "datasets", "httpx", "huggingface_hub", "filelock"):
        logging.getLogger(name).setLevel(logging.WARNING)
    with contextlib.suppress(Exception):
        import transformers

        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()
    with contextlib.suppress(Exception):
        import datasets

        datasets.disable_progress_bars()  # tokenization is quick; bars would litter log files


def run_command(prog: str, fn, args) -> int:
    """Call ``fn(args)``; a `UsageError` becomes ``<prog>: error: <message>`` and exit code 2."""
    try:
        return int(fn(args) or 0)
    except UsageError as exc:
        print(f"{prog}: error: {exc}", file=sys.stderr)
        return 2


def check_output_path(path) -> Path:
    """The metrics.json path (its parent folders are created when it is written); refuses a directory."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--output {str(path)!r} is a directory; give the metrics.json file path")
    return path


# ---------------------------------------------------------------------------------------
# command-line arguments shared by the fine-tuning commands
# ---------------------------------------------------------------------------------------
def parse_n(value) -> int | str:
    """``--n``: a positive integer (low-data) or "full"."""
    import argparse

    s = str(value).strip().lower()
    if s in ("full", "all"):
        return "full"
    try:
        n = int(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"N must be a positive integer or 'full', got {value!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"N must be a positive integer or 'full', got {value!r}")
    return n


def default_schedule(n, low_data: tuple[int, int], full: tuple[int, int]) -> tuple[int, int]:
    """(epochs, patience) by default: ``full`` for ``--n full``, ``low_data`` for an integer N."""
    return full if n == "full" else low_data


def add_common_arguments(parser, *, lr: float, max_seq_length: int,
                         low_data: tuple[int, int], full: tuple[int, int]) -> None:
    """Flags shared by `raft finetune-glue` and `raft finetune-squad`.

    ``lr`` / ``max_seq_length``: the command's defaults; ``low_data`` / ``full``: its default
    (epochs, patience) for an integer N / for ``--n full`` (named in the help of both flags).
    """
    import argparse

    from raft.modes import MODES

    g = parser.add_argument_group("run")
    g.add_argument("--pretrained", required=True, metavar="DIR",
                   help="pretrained model directory (the 'model' folder written by `raft pretrain`)")
    g.add_argument("--n", required=True, type=parse_n, metavar="{INT,full}",
                   help="training examples (and as many dev examples) drawn per seed, or 'full'")
    g.add_argument("--seed", required=True, type=int, help="seed of the data sample, head init, dropout, order")
    g.add_argument("--mode", default="full", choices=MODES, help="which parameters train (default: full)")
    g.add_argument("--output", required=True, metavar="FILE", help="metrics.json path (parent folders are created)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="local data root (default: $RAFT_DATA_DIR, else the Hugging Face Hub)")
    g.add_argument("--save-model", default=None, metavar="DIR",
                   help="also save the fine-tuned model (best epoch) and tokenizer here (default: not kept)")

    h = parser.add_argument_group("hyperparameters")
    h.add_argument("--epochs", type=int, default=None,
                   help=f"maximum epochs (default {low_data[0]} for integer N, {full[0]} for full data)")
    h.add_argument("--patience", type=int, default=None,
                   help=f"early-stopping patience in epochs (default {low_data[1]} low-data, {full[1]} full)")
    h.add_argument("--lr", type=float, default=lr, help=f"learning rate (default {lr:g})")
    h.add_argument("--rational-lr", type=float, default=1e-3, help="learning rate of the RAF coefficients (default 1e-3)")
    h.add_argument("--weight-decay", type=float, default=0.1, help="AdamW weight decay (default 0.1; bias/LayerNorm 0)")
    h.add_argument("--rational-weight-decay", type=float, default=0.1, help="weight decay of the RAF coefficients (default 0.1)")
    h.add_argument("--rational-schedule", default="linear", choices=("linear", "constant"),
                   help="schedule of the RAF learning rate (default linear, like the rest)")
    h.add_argument("--batch-size", type=int, default=32, help="training batch size (default 32)")
    h.add_argument("--eval-batch-size", type=int, default=256, help="evaluation batch size (default 256)")
    h.add_argument("--max-seq-length", type=int, default=max_seq_length, help=f"max tokens per sequence (default {max_seq_length})")
    h.add_argument("--max-grad-norm", type=float, default=1.0, help="gradient clipping norm (default 1.0; 0 = off)")
    h.add_argument("--adam-eps", type=float, default=1e-6, help="AdamW epsilon (default 1e-6)")
    h.add_argument("--warmup-ratio", type=float, default=0.0, help="fraction of steps with linear warmup (default 0)")

    s = parser.add_argument_group("system")
    s.add_argument("--precision", default="auto", choices=PRECISIONS,
                   help="auto: bf16 autocast on GPU, fp32 on CPU (default auto)")
    s.add_argument("--num-threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    s.add_argument("--device", default=None, help=argparse.SUPPRESS)  # testing: force cpu / cuda:N
    s.add_argument("--max-test-examples", type=int, default=None, metavar="K",
                   help="smoke/testing runs: evaluate on the first K examples of each test set only "
                        "(the result is labelled partial_data with a note)")


def check_common_arguments(args) -> None:
    """Value checks argparse cannot express; raise `UsageError` naming the value."""
    for name in ("batch_size", "eval_batch_size", "max_seq_length"):
        v = getattr(args, name)
        if v is None or v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    for name in ("epochs", "patience", "max_test_examples"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 1, got {v}")
    if not 0.0 <= args.warmup_ratio < 1.0:
        raise UsageError(f"--warmup-ratio must be in [0, 1), got {args.warmup_ratio}")
    for name in ("lr", "rational_lr", "weight_decay", "rational_weight_decay", "max_grad_norm", "adam_eps"):
        v = getattr(args, name)
        if v < 0:
            raise UsageError(f"--{name.replace('_', '-')} must be >= 0, got {v}")


def prepare_run(args, low_data: tuple[int, int], full: tuple[int, int]):
    """The checked output path, device, precision and (epochs, patience) of a fine-tuning run.

    Returns ``(output, device, precision, epochs, patience)``; ``--epochs`` / ``--patience``
    override the `default_schedule`.
    """
    output = check_output_path(args.output)
    device = select_device(args.device)
    precision = resolve_precision(args.precision, device)
    configure_backends(device)
    epochs, patience = default_schedule(args.n, low_data, full)
    return output, device, precision, args.epochs or epochs, args.patience or patience


def load_finetuning_model(args, head: str, device: torch.device, **config_overrides):
    """Seed, load ``--pretrained`` with a ``head`` and its tokenizer, move it to ``device``, apply ``--mode``.

    Returns ``(model, tokenizer, variant, mode_summary, max_seq_length)`` (the effective max
    length: ``--max-seq-length`` capped by the model's positions). Errors are `UsageError`.
    """
    from raft.modes import apply_mode

    seed_everything(args.seed)  # the new head's init follows the seed
    model = load_model(args.pretrained, head, **config_overrides)
    tokenizer = load_tokenizer(args.pretrained)
    variant = getattr(model.config, "raft_variant", "bert")
    model.to(device)  # before apply_mode: bias_head's gradient masks live on the parameters' device
    try:
        mode_summary = apply_mode(model, args.mode, seed=args.seed)
    except ValueError as exc:
        raise UsageError(f"--mode {args.mode} with a {variant!r} model ({args.pretrained}): {exc}") from exc
    return model, tokenizer, variant, mode_summary, checked_max_length(args.max_seq_length, model)


def sample_parts(data, args):
    """``--n`` / ``--seed`` sample of a loaded task (`raft.data.glue.sample`) and the ``--max-test-examples`` cap.

    Returns ``(train_ds, dev_ds, tests, partial, data_notes)``: the drawn train and dev parts,
    the (possibly capped) test sets, and the data's partial flag and notes (plus the cap's note,
    and a note when N >= the dev part keeps it whole -- the authors' rule, not partial data).
    """
    from raft.data.glue import sample, whole_dev_part

    try:
        train_ds, dev_ds = sample(data, None if args.n == "full" else args.n, args.seed)
    except SettingError as exc:
        raise UsageError(exc.as_flag()) from exc
    except ValueError as exc:
        raise UsageError(f"--n {args.n}: {exc}") from exc
    data_notes = list(data.data_notes)
    partial = bool(data.partial_data)
    if whole_dev_part(len(data.dev), args.n):
        data_notes.append(
            f"N={args.n} {'exceeds' if args.n > len(data.dev) else 'equals'} the dev part ({len(data.dev):,} "
            f"examples): the whole dev part is used for early stopping and model selection "
            f"(the authors' rule in run_glue.py)"
        )
    tests, cap_note = cap_test_sets(data.tests, args.max_test_examples)
    if cap_note:
        partial = True
        data_notes.append(cap_note)
    return train_ds, dev_ds, tests, partial, data_notes


def base_record(args, *, task: str, variant: str, data, fit, test: dict, train_ds, dev_ds, tests: dict,
                id_column: str, partial: bool, data_notes: list, mode_summary: dict, model,
                device: torch.device, precision: str, epochs: int, patience: int, max_seq_length: int,
                opt_info: dict, t_start: float, timings: dict, sizes_extra: dict | None = None,
                hyperparameters_extra: dict | None = None, provenance_extra: dict | None = None) -> dict:
    """The metrics.json record of a fine-tuning run (docs/architecture.md), fields in their order.

    ``sizes_extra`` ends the ``sizes`` block, ``hyperparameters_extra`` comes before the split
    settings in ``hyperparameters``, ``provenance_extra`` after the sampled ids' hashes.
    ``dev_sampling``: "full" (``--n full``), "whole" (N >= the dev part) or "sampled".
    """
    from raft.data.glue import whole_dev_part
    from raft.modeling import export_rationals

    if args.n == "full":
        dev_sampling = "full"
    else:
        dev_sampling = "whole" if whole_dev_part(len(data.dev), args.n) else "sampled"

    return {
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
            "train": len(train_ds),
            "dev": len(dev_ds),
            "test": {k: len(v) for k, v in tests.items()},
            **(sizes_extra or {}),
        },
        "dev_sampling": dev_sampling,
        "sources": dict(data.sources),
        "partial_data": partial,
        "data_notes": data_notes,
        "trainable_parameters": int(mode_summary["trainable_parameters"]),
        "hyperparameters": hyperparameters(
            args, epochs=epochs, patience=patience, max_seq_length=max_seq_length, precision=precision,
            opt_info=opt_info, **(hyperparameters_extra or {}),
            split_seed=data.shuffle_seed, pool_fraction=data.pool_fraction,
        ),
        "wall_time_s": round(time.perf_counter() - t_start, 3),
        "device": device_description(device, precision),
        "rationals": export_rationals(model),
        # provenance beyond the contract
        "epochs_run": fit.epochs_run,
        "stopped_early": fit.stopped_early,
        "train_ids_sha1": ids_sha1(train_ds[id_column]),
        "dev_ids_sha1": ids_sha1(dev_ds[id_column]),
        **(provenance_extra or {}),
        "mode_summary": mode_summary,
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
        "versions": versions(),
    }


def versions() -> dict[str, str]:
    import transformers

    import raft

    return {"raft": raft.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


def hyperparameters(args, *, epochs: int, patience: int, max_seq_length: int, precision: str,
                    opt_info: dict, **extra) -> dict:
    """The ``hyperparameters`` block of a fine-tuning metrics.json."""
    return {
        "epochs": epochs,
        "patience": patience,
        "lr": args.lr,
        "rational_lr": args.rational_lr,
        "weight_decay": args.weight_decay,
        "rational_weight_decay": args.rational_weight_decay,
        "schedule": "linear",
        "rational_schedule": args.rational_schedule,
        "warmup_ratio": args.warmup_ratio,
        "warmup_steps": opt_info["warmup_steps"],
        "total_steps": opt_info["total_steps"],
        "batch_size": args.batch_size,
        "eval_batch_size": args.eval_batch_size,
        "max_seq_length": max_seq_length,
        "max_grad_norm": args.max_grad_norm,
        "adam_eps": args.adam_eps,
        "precision": precision,
        **extra,
    }


def checked_max_length(requested: int, model) -> int:
    """``--max-seq-length``, refused when it exceeds the model's position embeddings."""
    limit = int(getattr(model.config, "max_position_embeddings", requested))
    check(checks.check_max_seq_length, requested, limit)
    return requested


def check(rule, *args) -> None:
    """Run a `raft.checks` rule; its error becomes a `UsageError` naming the flag."""
    try:
        rule(*args)
    except SettingError as exc:
        raise UsageError(exc.as_flag()) from None


def save_model(model, tokenizer, directory) -> None:
    """``--save-model``: the fine-tuned (best-epoch) model and its tokenizer."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)


def cap_test_sets(tests: dict, max_examples: int | None) -> tuple[dict, str | None]:
    """``--max-test-examples`` (testing/smoke runs): keep the first K examples of each test set.

    Returns the (possibly) capped sets and a data note when anything was cut (the run is then
    labelled partial: its test numbers are not comparable with full evaluations).
    """
    if not max_examples:
        return dict(tests), None
    out, cut = {}, []
    for name, ds in tests.items():
        if len(ds) > max_examples:
            out[name] = ds.select(range(max_examples))
            cut.append(f"{name} {len(ds):,} -> {max_examples:,}")
        else:
            out[name] = ds
    if not cut:
        return out, None
    return out, (f"test sets capped to their first {max_examples:,} examples by --max-test-examples "
                 f"(a testing option: {', '.join(cut)}); not comparable with full evaluations")
