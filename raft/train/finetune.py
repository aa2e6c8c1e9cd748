"""One fine-tuning run: the skeleton shared by `raft finetune-glue` and `raft finetune-squad`.

`run(settings, job, adapter)` does, in this order:

  prepare  check the settings; the output path; device and precision (`raft.train.runtime`);
           seed, the pretrained model with the task's head, its tokenizer, the mode;
           max_seq_length against the model's position embeddings
  data     load (the adapter) and draw the run's sample (`raft.data.split.draw`)
  encode   (the adapter)
  train    AdamW + schedule, a dev evaluation (the adapter) after every epoch, early stopping,
           the best epoch restored (`raft.train.loop`)
  test     every test set once (the adapter), then ``--save-model``
  record   metrics.json (docs/architecture.md), built in one place (`record`) from the run's
           state and written atomically

``settings`` is a `raft.settings.Finetune` (SQuAD: `SquadFinetune`): every hyperparameter of
the run, written as the record's ``hyperparameters`` (plus derived values). ``job`` says which
run (`Job`: the run-level flags); ``adapter`` is the task (`Adapter`; GLUE and SQuAD have one
each, in `raft.train.finetune_glue` / `finetune_squad`). Problems found before training are
`raft.train.runtime.UsageError` (``<prog>: error: ...``, exit code 2).
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from raft import checks
from raft import settings as settings_
from raft.data import split
from raft.train import runtime
from raft.train.loop import FitResult, train_with_settings
from raft.train.runtime import UsageError

log = logging.getLogger("raft.finetune")

# value rules argparse cannot express, by field name (a field not named here is not checked)
POSITIVE = ("epochs", "patience", "batch_size", "eval_batch_size", "max_seq_length", "max_test_examples")
NON_NEGATIVE = ("lr", "rational_lr", "weight_decay", "rational_weight_decay", "max_grad_norm", "adam_eps")
OPTIONAL = ("max_test_examples",)  # None: off


# ------------------------------------------------------------------------------ the run's description
@dataclass(frozen=True)
class Job:
    """Which run: everything about it that is not a hyperparameter (the run-level flags)."""

    pretrained: str  # the 'model' folder written by `raft pretrain`
    task: str  # GLUE task name, or "squad"
    n: int | str  # training (and dev) examples drawn with the seed, or "full"
    seed: int
    output: str  # the metrics.json path
    mode: str = "full"
    data_dir: str | None = None  # local data root (None: $RAFT_DATA_DIR, else the Hub)
    save_model: str | None = None  # also save the fine-tuned model here
    device: str | None = None  # None: CUDA when present, else the CPU

    @classmethod
    def from_args(cls, args: argparse.Namespace, task: str) -> Job:
        return cls(pretrained=args.pretrained, task=task, n=args.n, seed=args.seed, output=args.output,
                   mode=args.mode, data_dir=args.data_dir, save_model=args.save_model, device=args.device)


@dataclass
class Parts:
    """The encoded data of a run: the training part, the dev part and the test sets (by name)."""

    train: Any  # a `raft.train.loop.Encoded`
    dev: Any  # whatever the adapter evaluates
    tests: dict[str, Any]


class Adapter:
    """What a task adds to the skeleton. Subclasses set the attributes and define `load`,
    `encode` and `evaluate`; the other hooks have defaults."""

    task: str = ""  # the record's task ("rte", ..., "squad")
    head: str = ""  # a `raft.modeling` head: "sequence-classification", "question-answering"
    data_name: str = ""  # for error messages: "GLUE rte", "SQuAD v1.1"
    id_column: str = "idx"  # example ids (their hashes go into the record)
    selection_metric: str = "score"  # name of the dev score that selects the best epoch (for logs)

    def config_overrides(self) -> dict:
        """Model config changes for the head (labels, problem type, task name)."""
        return {}

    def check(self, settings) -> None:
        """The task's own rules on the settings; raise a `UsageError` naming the flag."""

    def load(self, data_dir):
        """The task's data split as in the paper (`GlueData`, `SquadData`)."""
        raise NotImplementedError

    def encode(self, sample: split.Sample, tokenizer, settings) -> Parts:
        raise NotImplementedError

    def evaluate(self, model, part, rt: runtime.Runtime, settings, *, with_loss: bool = True) -> dict:
        """``{"metrics": {...}, "score": selection score, "loss": mean loss or None}`` of one part."""
        raise NotImplementedError

    def describe(self, sample: split.Sample, parts: Parts) -> str:
        """The sizes in the run's first log line."""
        tests = {k: len(v) for k, v in parts.tests.items()}
        return f"train {len(parts.train)}, dev {len(parts.dev)}, test {tests}"

    def sizes(self, parts: Parts) -> dict:
        """Extra entries at the end of the record's ``sizes``."""
        return {}

    def provenance(self, data) -> dict:
        """Extra record fields after the sampled ids' hashes."""
        return {}


@dataclass
class Run:
    """The state of one run, filled in step by step; the record is built from it."""

    settings: Any
    job: Job
    adapter: Adapter
    output: Path
    runtime: runtime.Runtime
    t_start: float
    model: Any = None
    step_model: Any = None  # what runs training and evaluation steps: `model`, or torch.compile(model)
    tokenizer: Any = None
    variant: str = "bert"
    mode_summary: dict = field(default_factory=dict)
    data: Any = None
    sample: split.Sample | None = None
    parts: Parts | None = None
    fit: FitResult | None = None
    opt_info: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    timings: dict = field(default_factory=dict)

    @contextlib.contextmanager
    def timed(self, name: str):
        t0 = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t0

    def evaluate(self, part, with_loss: bool = True) -> dict:
        model = self.model if self.step_model is None else self.step_model
        return self.adapter.evaluate(model, part, self.runtime, self.settings, with_loss=with_loss)


# ------------------------------------------------------------------------------ the skeleton
def run(settings, job: Job, adapter: Adapter) -> int:
    """One fine-tuning run -> ``job.output`` (metrics.json); returns 0."""
    state = prepare(settings, job, adapter, t_start=time.perf_counter())
    state.data = load_data(adapter, job.data_dir)
    state.sample = draw(state.data, job, settings)
    with state.timed("tokenize"):
        state.parts = adapter.encode(state.sample, state.tokenizer, settings)
    log.info("%s %s n=%s seed=%d mode=%s: %s; %d trainable parameters; %s", state.variant, adapter.task, job.n,
             job.seed, job.mode, adapter.describe(state.sample, state.parts),
             state.mode_summary["trainable_parameters"], state.runtime.describe())
    with state.timed("train"):
        state.fit, state.opt_info = train_with_settings(
            state.model, state.parts.train, lambda: state.evaluate(state.parts.dev), settings,
            runtime=state.runtime, seed=job.seed, metric_name=adapter.selection_metric.replace(" ", ""),
            desc=f"{adapter.task} {state.variant} n={job.n} seed={job.seed}", step_model=state.step_model,
        )
    with state.timed("test"):  # the restored best epoch, every test set
        state.test = {name: state.evaluate(part, with_loss=False)["metrics"]
                      for name, part in state.parts.tests.items()}
    log.info("best epoch %d (dev %s %.4f); test %s", state.fit.best_epoch, adapter.selection_metric,
             state.fit.best_score, {k: {m: round(v, 4) for m, v in t.items()} for k, t in state.test.items()})
    if job.save_model:
        save_model(state.model, state.tokenizer, job.save_model)
    result = record(state)
    runtime.write_json_atomic(state.output, result)
    log.info("wrote %s (%.1fs)", state.output, result["wall_time_s"])
    return 0


def prepare(settings, job: Job, adapter: Adapter, t_start: float) -> Run:
    """Checked settings and output path, the runtime, and the model (head, tokenizer, mode);
    every error is a `UsageError`, raised before any data work."""
    check_values(settings)
    adapter.check(settings)
    output = check_output_path(job.output)
    rt = runtime.Runtime.create(runtime.select_device(job.device), settings.precision)
    state = Run(settings=settings, job=job, adapter=adapter, output=output, runtime=rt, t_start=t_start)
    runtime.seed_everything(job.seed)  # the new head's init follows the seed
    state.model = load_model(job.pretrained, adapter.head, **adapter.config_overrides())
    state.tokenizer = load_tokenizer(job.pretrained)
    state.variant = getattr(state.model.config, "raft_variant", "bert")
    state.model.to(rt.device)  # before apply_mode: bias_head's gradient masks live on the parameters' device
    state.mode_summary = apply_mode(state.model, job, state.variant)
    state.step_model = compile_model(state.model) if getattr(settings, "compile", False) else state.model
    positions = int(getattr(state.model.config, "max_position_embeddings", settings.max_seq_length))
    runtime.check(checks.check_max_seq_length, settings.max_seq_length, positions)
    return state


def compile_model(model):
    """``--compile``: `torch.compile` for the training and evaluation steps. Batches are padded
    to their longest example, so sequence lengths (and the last batch's size) vary: dynamic
    shapes from the start instead of a recompilation per new shape. Saving and the record's
    RAF coefficients use the plain model (the compiled one shares its parameters)."""
    return torch.compile(model, dynamic=True)


def load_data(adapter: Adapter, data_dir):
    from raft.data.sources import DataSourceError

    try:
        return adapter.load(data_dir)
    except (FileNotFoundError, DataSourceError, ValueError) as exc:
        raise UsageError(f"cannot load {adapter.data_name}: {exc}") from exc


def draw(data, job: Job, settings) -> split.Sample:
    """The run's sample (`raft.data.split.draw`); N above the pool names ``--n``."""
    try:
        return runtime.check(split.draw, data, job.n, job.seed, settings.max_test_examples)
    except ValueError as exc:
        raise UsageError(f"--n {job.n}: {exc}") from exc


# ------------------------------------------------------------------------------ the record
def record(state: Run) -> dict:
    """The metrics.json record of a run (docs/architecture.md), fields in their order."""
    from raft.modeling import export_rationals

    job, data, sample, fit, adapter = state.job, state.data, state.sample, state.fit, state.adapter
    return {
        "task": adapter.task,
        "variant": state.variant,
        "n": job.n,
        "seed": job.seed,
        "mode": job.mode,
        "pretrained": str(job.pretrained),
        "test": state.test,
        "selection_metric": data.selection_metric,
        "best_dev_score": fit.best_score,
        "best_epoch": fit.best_epoch,
        "dev_curve": fit.curve,
        "sizes": {"pool": len(data.pool), "dev_part": len(data.dev), "train": len(sample.train),
                  "dev": len(sample.dev), "test": {k: len(v) for k, v in sample.tests.items()},
                  **adapter.sizes(state.parts)},
        "dev_sampling": sample.dev_sampling,
        "sources": dict(data.sources),
        "partial_data": sample.partial,
        "data_notes": sample.notes,
        "trainable_parameters": int(state.mode_summary["trainable_parameters"]),
        "hyperparameters": hyperparameters(state),
        "wall_time_s": round(time.perf_counter() - state.t_start, 3),
        "device": state.runtime.describe(),
        "rationals": export_rationals(state.model),
        # provenance beyond the contract
        "epochs_run": fit.epochs_run,
        "stopped_early": fit.stopped_early,
        "train_ids_sha1": ids_sha1(sample.train[adapter.id_column]),
        "dev_ids_sha1": ids_sha1(sample.dev[adapter.id_column]),
        **adapter.provenance(data),
        "mode_summary": state.mode_summary,
        "timings_s": {k: round(v, 3) for k, v in state.timings.items()},
        "versions": versions(),
    }


def hyperparameters(state: Run) -> dict:
    """Every setting (`raft.settings.as_record`) plus the derived values; ``precision`` is the
    resolved one (fp32 / bf16 / fp16, never None or "auto")."""
    hp = settings_.as_record(state.settings)
    hp.update(
        precision=state.runtime.precision,
        schedule="linear",
        warmup_steps=state.opt_info["warmup_steps"],
        total_steps=state.opt_info["total_steps"],
        split_seed=state.data.shuffle_seed,
        pool_fraction=state.data.pool_fraction,
    )
    return hp


def ids_sha1(ids) -> str:
    """SHA-1 of a sequence of example ids (ints or strings), order included."""
    h = hashlib.sha1()
    for i in ids:
        h.update(str(i).encode("utf-8"))
        h.update(b"\n")
    return h.hexdigest()


def versions() -> dict[str, str]:
    import transformers

    import raft

    return {"raft": raft.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


# ------------------------------------------------------------------------------ checks and model
def check_values(settings) -> None:
    """Value rules argparse cannot express; a `UsageError` naming the flag and the value."""
    cls = type(settings)
    for name in POSITIVE:
        value = getattr(settings, name)
        if value is None and name in OPTIONAL:
            continue
        if value is None or value < 1:
            raise UsageError(f"{settings_.flag(cls, name)} must be >= 1, got {value}")
    if not 0.0 <= settings.warmup_ratio < 1.0:
        raise UsageError(f"--warmup-ratio must be in [0, 1), got {settings.warmup_ratio}")
    for name in NON_NEGATIVE:
        if getattr(settings, name) < 0:
            raise UsageError(f"{settings_.flag(cls, name)} must be >= 0, got {getattr(settings, name)}")


def check_output_path(path) -> Path:
    """The metrics.json path (its parent folders are created when it is written); refuses a directory."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"--output {str(path)!r} is a directory; give the metrics.json file path")
    return path


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


def apply_mode(model, job: Job, variant: str) -> dict:
    """``--mode`` (`raft.modes.apply_mode`); a mode that does not fit the model is a `UsageError`."""
    from raft.modes import apply_mode as apply

    try:
        return apply(model, job.mode, seed=job.seed)
    except ValueError as exc:
        raise UsageError(f"--mode {job.mode} with a {variant!r} model ({job.pretrained}): {exc}") from exc


def save_model(model, tokenizer, directory) -> None:
    """``--save-model``: the fine-tuned (best-epoch) model and its tokenizer."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(d)
    tokenizer.save_pretrained(d)


# ------------------------------------------------------------------------------ the commands
def add_arguments(parser: argparse.ArgumentParser, settings_cls) -> None:
    """The run-level flags of a fine-tuning command, then one flag per field of ``settings_cls``
    (`raft.settings.add_flags`: names, defaults, types and choices come from the dataclass)."""
    from raft.modes import MODES

    g = parser.add_argument_group("run")
    g.add_argument("--pretrained", required=True, metavar="DIR",
                   help="pretrained model directory (the 'model' folder written by `raft pretrain`)")
    g.add_argument("--n", required=True, type=split.n_arg, metavar="{INT,full}",
                   help="training examples (and as many dev examples) drawn per seed, or 'full'")
    g.add_argument("--seed", required=True, type=int, help="seed of the data sample, head init, dropout, order")
    g.add_argument("--mode", default="full", choices=MODES, help="which parameters train (default: full)")
    g.add_argument("--output", required=True, metavar="FILE", help="metrics.json path (parent folders are created)")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="local data root (default: $RAFT_DATA_DIR, else the Hugging Face Hub)")
    g.add_argument("--save-model", default=None, metavar="DIR",
                   help="also save the fine-tuned model (best epoch) and tokenizer here (default: not kept)")
    g.add_argument("--num-threads", type=int, default=None, help="CPU threads for torch (default: torch's choice)")
    g.add_argument("--device", default=None, help=argparse.SUPPRESS)  # testing: force cpu / cuda:N
    settings_.add_flags(parser, settings_cls, "hyperparameters")


def command(prog: str, args: argparse.Namespace, settings_cls, make_adapter) -> int:
    """A fine-tuning command's ``main``: the settings of ``args``, ``make_adapter(args)`` -> the
    task, then `run`; a `UsageError` is ``<prog>: error: <message>`` and exit code 2."""

    def go(args) -> int:
        setup_logging()
        settings = settings_.from_args(settings_cls, args)
        adapter = make_adapter(args)
        runtime.set_num_threads(args.num_threads)
        return run(settings, Job.from_args(args, adapter.task), adapter)

    return runtime.run_command(prog, go, args)


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
