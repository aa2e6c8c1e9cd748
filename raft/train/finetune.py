"""Fine-tuning runs: the skeleton shared by `raft finetune-glue` and `raft finetune-squad`.

One process runs one or more runs of one task with one pretrained model: the product of
``--n`` and ``--seed`` values (the workflow gives it every seed of a (task, variant, N)). What
the runs share is paid once (`raft.train.finetune_setup.Session`): imports, the checked
settings, device and precision (`raft.train.runtime`), the tokenizer, the pretrained weights in
memory, the task's data, and the tokenized parts that are not a seed's draw -- the test sets,
and the train pool / dev part when a run uses them whole (`raft.train.token_cache`, also kept
on disk with ``--cache-dir``).

`run(settings, jobs, adapter)` does, per run (`run_one`):

  model    seed; the model with the task's head from a fresh copy of the weights; the mode;
           ``--compile``
  data     the run's sample of the loaded data (`raft.data.split.draw`), encoded (the adapter)
  train    AdamW + schedule, a dev evaluation (the adapter) after every epoch, early stopping,
           the best epoch restored (`raft.train.loop`)
  test     every test set once (the adapter), then ``--save-model``
  record   metrics.json (docs/architecture.md), built in one place (`record`) from the run's
           state and written atomically as soon as the run ends; an adapter whose evaluation
           returns predictions (SQuAD) gets them written first, ``predictions.json`` next to it
           (`write_predictions`: {example id: predicted text}, as transformers' run_qa writes them)

A run is the same whether it runs alone or among others (same seed, same numbers). A crash
loses at most the run in progress: each record names its request (``request_sha1``: settings,
task, N, seed, mode, the data's content, pretrained weights, the package's source) and carries
a checksum (``record_sha1``), and a run whose ``--output`` -- or whose copy in ``--runs-dir``
(the workflow keeps one there, since Snakemake deletes a failed job's outputs) -- already holds
that request is not run again. The copies are dropped when every run of the process is
recorded, so only a failed or killed process leaves them (`raft.train.finetune_setup`).

``settings`` is a `raft.settings.Finetune` (SQuAD: `SquadFinetune`): every hyperparameter of
the run, written as the record's ``hyperparameters`` (plus derived values). ``jobs`` say which
runs (`Job`: the run-level flags); ``adapter`` is the task (`Adapter`; GLUE and SQuAD have one
each, in `raft.train.finetune_glue` / `finetune_squad`). Problems found before training are
`raft.train.runtime.UsageError` (``<prog>: error: ...``, exit code 2).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from raft import settings as settings_
from raft.data import split
from raft.train import runtime
from raft import fingerprint
from raft.train.finetune_setup import (Session, check_output_path, copy_path, drop_copies, open_session,
                                      request_sha1, reuse)
from raft.train.loop import FitResult, train_with_settings
from raft.train.preact_records import FINETUNE_KEY
from raft.train.preacts import finetune_preactivations
from raft.train.runtime import UsageError
from raft.train.token_cache import ids_sha1

log = logging.getLogger("raft.finetune")



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


def jobs_from_args(args: argparse.Namespace, task: str) -> list[Job]:
    """One `Job` per (N, seed) of ``--n`` x ``--seed``; with several, ``--output`` (and
    ``--save-model``) must hold the ``{n}`` / ``{seed}`` placeholders that tell them apart."""
    ns, seeds = list(dict.fromkeys(args.n)), list(dict.fromkeys(args.seed))
    for flag, pattern in (("--output", args.output), ("--save-model", args.save_model)):
        for name, values in (("n", ns), ("seed", seeds)):
            if pattern is not None and len(values) > 1 and "{%s}" % name not in pattern:
                raise UsageError(f"{flag} {pattern!r} needs a {{{name}}} placeholder: several "
                                 f"values of --{name} ({' '.join(map(str, values))}) would share it")

    def fill(pattern, n, seed):
        return None if pattern is None else pattern.replace("{n}", str(n)).replace("{seed}", str(seed))

    return [Job(pretrained=args.pretrained, task=task, n=n, seed=seed, output=fill(args.output, n, seed),
                mode=args.mode, data_dir=args.data_dir, save_model=fill(args.save_model, n, seed),
                device=args.device)
            for n, seed in itertools.product(ns, seeds)]


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

    def encoding(self, settings) -> dict:
        """The settings that shape the encoded parts (a tokenized-data cache key)."""
        return {"max_seq_length": settings.max_seq_length}

    def encode(self, sample: split.Sample, tokenizer, settings, shared) -> Parts:
        """The run's parts; each goes through ``shared(name, dataset, build)`` ("train", "dev",
        "test-<name>"), which returns ``build(dataset, cache_file_name)`` -- once per process and
        study for a part that is not a seed's draw (`Session.shared`)."""
        raise NotImplementedError

    def evaluate(self, model, part, rt: runtime.Runtime, settings, *, with_loss: bool = True) -> dict:
        """``{"metrics": {...}, "score": selection score, "loss": mean loss or None}`` of one part,
        plus ``"predictions"`` ({example id: predicted text}) where the task has a text answer (SQuAD)."""
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

    session: Session
    job: Job
    request: str  # request_sha1
    t_start: float
    index: tuple[int, int] = (1, 1)  # (this run, runs to do in the process)
    model: Any = None
    step_model: Any = None  # what runs training and evaluation steps: `model`, or torch.compile(model)
    variant: str = "bert"
    mode_summary: dict = field(default_factory=dict)
    sample: split.Sample | None = None
    parts: Parts | None = None
    fit: FitResult | None = None
    opt_info: dict = field(default_factory=dict)
    test: dict = field(default_factory=dict)
    preacts: dict = field(default_factory=dict)  # {"dev": FFN pre-activation histograms (raft.train.preacts)}
    timings: dict = field(default_factory=dict)

    @property
    def settings(self):
        return self.session.settings

    @property
    def adapter(self) -> Adapter:
        return self.session.adapter

    @property
    def data(self):
        return self.session.data

    @contextlib.contextmanager
    def timed(self, name: str):
        t0 = time.perf_counter()
        yield
        self.timings[name] = time.perf_counter() - t0

    def evaluate(self, part, with_loss: bool = True) -> dict:
        model = self.model if self.step_model is None else self.step_model
        return self.adapter.evaluate(model, part, self.session.runtime, self.settings, with_loss=with_loss)


# ------------------------------------------------------------------------------ the skeleton
def run(settings, jobs: list[Job], adapter: Adapter, *, cache_dir=None, runs_dir=None) -> int:
    """The runs of ``jobs`` (one task, one pretrained model) -> each ``job.output``; returns 0.
    Runs whose request is already recorded there (or in ``runs_dir``) are not run again."""
    for job in jobs:
        check_output_path(job.output)
    session = open_session(settings, jobs[0], adapter, cache_dir)
    requests = [request_sha1(session, job) for job in jobs]
    todo = [(job, request) for job, request in zip(jobs, requests) if not reuse(job, request, runs_dir)]
    log.info("%s: %d of %d runs to do (setup %.1fs)", adapter.task, len(todo), len(jobs), session.setup_s)
    for i, (job, request) in enumerate(todo, 1):
        run_one(session, job, request, index=(i, len(todo)), runs_dir=runs_dir)
    dropped = drop_copies(requests, runs_dir)
    if dropped:
        log.info("every run recorded in its output; per-run copies dropped from %s: %d", runs_dir, dropped)
    return 0


def run_one(session: Session, job: Job, request: str, *, index=(1, 1), runs_dir=None) -> dict:
    """One run -> ``job.output`` (and a copy in ``runs_dir``); returns the record."""
    state = Run(session=session, job=job, request=request, t_start=time.perf_counter(), index=index)
    adapter, settings = session.adapter, session.settings
    with state.timed("load"):
        build_model(state)
    state.sample = draw(session.data, job, settings)
    with state.timed("tokenize"):
        state.parts = adapter.encode(state.sample, session.tokenizer, settings, session.shared(state.sample))
    log.info("run %d/%d: %s %s n=%s seed=%d mode=%s: %s; %d trainable parameters; %s", *index, state.variant,
             adapter.task, job.n, job.seed, job.mode, adapter.describe(state.sample, state.parts),
             state.mode_summary["trainable_parameters"], session.runtime.describe())
    with state.timed("train"):
        state.fit, state.opt_info = train_with_settings(
            state.model, state.parts.train, lambda: state.evaluate(state.parts.dev), settings,
            runtime=session.runtime, seed=job.seed, metric_name=adapter.selection_metric.replace(" ", ""),
            desc=f"{adapter.task} {state.variant} n={job.n} seed={job.seed}", step_model=state.step_model,
        )
    with state.timed("test"):  # the restored best epoch, every test set
        tested = {name: state.evaluate(part, with_loss=False) for name, part in state.parts.tests.items()}
        state.test = {name: out["metrics"] for name, out in tested.items()}
    with state.timed("preactivations"):  # where the FFN activations act, on the dev sample
        dev = getattr(state.parts.dev, "encoded", state.parts.dev)  # SQuAD: the windows
        state.preacts = {"dev": finetune_preactivations(state.model, dev, session.runtime, settings.eval_batch_size)}
    log.info("best epoch %d (dev %s %.4f); test %s", state.fit.best_epoch, adapter.selection_metric,
             state.fit.best_score, {k: {m: round(v, 4) for m, v in t.items()} for k, t in state.test.items()})
    if job.save_model:
        save_model(state.model, session.tokenizer, job.save_model)
    result = fingerprint.with_checksum(record(state))
    predictions = {k: v for out in tested.values() for k, v in (out.get("predictions") or {}).items()}
    if predictions:
        write_predictions(job.output, predictions)
    runtime.write_json_atomic(job.output, result)
    if runs_dir:
        runtime.write_json_atomic(copy_path(runs_dir, request), result)
    log.info("wrote %s (%.1fs)", job.output, result["wall_time_s"])
    return result


PREDICTIONS = "predictions.json"  # a QA run's predictions, next to its metrics.json


def write_predictions(output, predictions: dict[str, str]) -> Path:
    """``predictions.json`` in the folder of the metrics.json ``output``: {example id: predicted
    text} (transformers' run_qa writes the same map), atomically; returns its path."""
    path = Path(output).parent / PREDICTIONS
    runtime.write_json_atomic(path, dict(predictions))
    return path


def build_model(state: Run) -> None:
    """Seed; the model with the task's head from a copy of the session's weights (the head is
    initialised from the seed, as when loading from disk); the mode; ``--compile``."""
    session, job = state.session, state.job
    runtime.seed_everything(job.seed)  # the new head's init follows the seed
    weights = {k: v.clone() for k, v in session.weights.items()}  # the model shares its storage
    state.model = load_model(job.pretrained, session.adapter.head, state_dict=weights,
                             **session.adapter.config_overrides())
    state.variant = getattr(state.model.config, "raft_variant", "bert")
    state.model.to(session.runtime.device)  # before apply_mode: bias_head's masks live on the parameters' device
    state.mode_summary = apply_mode(state.model, job, state.variant)
    state.step_model = compile_model(state.model) if getattr(state.settings, "compile", False) else state.model


def compile_model(model):
    """``--compile``: `torch.compile` for the training and evaluation steps. Batches are padded
    to their longest example, so sequence lengths (and the last batch's size) vary: dynamic
    shapes from the start instead of a recompilation per new shape. Saving and the record's
    RAF coefficients use the plain model (the compiled one shares its parameters)."""
    return torch.compile(model, dynamic=True)


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
        "device": state.session.runtime.describe(),
        "rationals": export_rationals(state.model),
        FINETUNE_KEY: state.preacts,
        # provenance beyond the contract
        "epochs_run": fit.epochs_run,
        "stopped_early": fit.stopped_early,
        "train_ids_sha1": ids_sha1(sample.train[adapter.id_column]),
        "dev_ids_sha1": ids_sha1(sample.dev[adapter.id_column]),
        **adapter.provenance(data),
        "mode_summary": state.mode_summary,
        "timings_s": {k: round(v, 3) for k, v in {"setup": state.session.setup_s, **state.timings}.items()},
        "request_sha1": state.request,
        "process": {"run": state.index[0], "runs": state.index[1]},  # its place among the process's runs
        "tokenized_cache": state.session.cache.take_events(),
        "versions": versions(),
    }


def hyperparameters(state: Run) -> dict:
    """Every setting (`raft.settings.as_record`) plus the derived values; ``precision`` is the
    resolved one (fp32 / bf16 / fp16, never None or "auto")."""
    hp = settings_.as_record(state.settings)
    hp.update(
        precision=state.session.runtime.precision,
        schedule="linear",
        warmup_steps=state.opt_info["warmup_steps"],
        total_steps=state.opt_info["total_steps"],
        split_seed=state.data.shuffle_seed,
        pool_fraction=state.data.pool_fraction,
    )
    return hp


def versions() -> dict[str, str]:
    import transformers

    import raft

    return {"raft": raft.__version__, "torch": torch.__version__, "transformers": transformers.__version__,
            "python": platform.python_version()}


# ------------------------------------------------------------------------------ checks and model
def load_model(path, head: str, state_dict: dict | None = None, **config_overrides):
    """`raft.modeling.load_pretrained` (from ``state_dict`` when given), errors as `UsageError`."""
    from raft.modeling import load_pretrained

    try:
        return load_pretrained(path, head, state_dict=state_dict, **config_overrides)
    except (FileNotFoundError, ValueError, OSError, TypeError) as exc:
        raise UsageError(f"--pretrained: {exc}") from exc


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
    g.add_argument("--n", required=True, nargs="+", type=split.n_arg, metavar="{INT,full}",
                   help="training examples (and as many dev examples) drawn per seed, or 'full'; several "
                        "values: one run per (N, seed), all in this process")
    g.add_argument("--seed", required=True, nargs="+", type=int,
                   help="seed of the data sample, head init, dropout, order (several: one run each)")
    g.add_argument("--mode", default="full", choices=MODES, help="which parameters train (default: full)")
    g.add_argument("--output", required=True, metavar="FILE",
                   help="metrics.json path (parent folders are created); with several runs a pattern "
                        "holding {n} and/or {seed}, e.g. out/n{n}/seed{seed}/metrics.json")
    g.add_argument("--data-dir", default=None, metavar="DIR",
                   help="local data root (default: $RAFT_DATA_DIR, else the Hugging Face Hub)")
    g.add_argument("--save-model", default=None, metavar="DIR",
                   help="also save the fine-tuned model (best epoch) and tokenizer here (default: not "
                        "kept); a pattern like --output with several runs")
    g.add_argument("--cache-dir", default=None, metavar="DIR",
                   help="keep tokenized test sets (and whole train/dev parts) here for the next process "
                        "(default: this process only)")
    g.add_argument("--runs-dir", default=None, metavar="DIR",
                   help="also keep each finished run's record here; a run recorded there with the same "
                        "request is not run again, its record is written to --output")
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
        return run(settings, jobs_from_args(args, adapter.task), adapter, cache_dir=args.cache_dir,
                   runs_dir=args.runs_dir)

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
