"""What the runs of a fine-tuning process share, loaded and checked before the first run.

`open_session` checks the settings (value rules argparse cannot express, the task's own rules,
the window against the model's positions), then loads the tokenizer, the pretrained weights
(into memory: each run's model gets a copy), and the task's data; every problem is a
`raft.train.runtime.UsageError` naming the flag. The `Session` it returns also holds the
tokenized-data cache (`raft.train.token_cache`) and hands the adapters their parts through
`Session.shared`.

`request_sha1` names what makes a run's result (settings, task, N, seed, mode, the data's
content, the weights' files, the package's source: `raft.fingerprint`); `reuse` finds a run
already recorded with that request (in ``--output`` or in ``--runs-dir``) whose checksum holds,
so a retry does only what is missing. A stored copy that is cut off, fails its checksum or names
another request is moved aside (``*.json.corrupt``) with a log line, and the run is computed
again. `drop_copies` removes the per-run copies once every run of the process has its record
in ``--output``: only a failed or killed job leaves copies behind, so a rerun that the user asks
for (``--forcerun``; Snakemake deletes a job's outputs first) recomputes. The runs themselves:
`raft.train.finetune`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from raft import checks, fingerprint
from raft import settings as settings_
from raft.data import split
from raft.train import runtime
from raft.train.runtime import UsageError
from raft.train.token_cache import TokenCache, ids_sha1

if TYPE_CHECKING:
    from raft.train.finetune import Adapter, Job

log = logging.getLogger("raft.finetune")

# value rules argparse cannot express, by field name (a field not named here is not checked)
POSITIVE = ("epochs", "patience", "batch_size", "eval_batch_size", "max_seq_length", "max_test_examples")
NON_NEGATIVE = ("lr", "rational_lr", "weight_decay", "rational_weight_decay", "max_grad_norm", "adam_eps")
OPTIONAL = ("max_test_examples",)  # None: off


@dataclass
class Session:
    """What the runs of one process share (see the module docstring); `open_session` makes it."""

    settings: Any
    adapter: Adapter
    runtime: runtime.Runtime
    pretrained_id: str  # SHA-1 of the weights files' names, sizes and times + config.json
    tokenizer: Any
    weights: dict  # the pretrained state dict; each run's model gets a copy
    data: Any
    cache: TokenCache
    data_sha1: str = ""  # content of the loaded parts (`data_fingerprint`)
    setup_s: float = 0.0

    def shared(self, sample: split.Sample):
        """``shared(name, dataset, build)`` for `Adapter.encode`: a whole part (the pool or dev
        part of a full-data run, a test set) comes from the cache; a seed's draw is built."""

        def get(name: str, dataset, build):
            whole = dataset is self.data.pool or dataset is self.data.dev or name in (f"test-{k}" for k in sample.tests)
            if not whole:
                return build(dataset, None)
            key = {"task": self.adapter.task, "part": name, "rows": len(dataset),
                   "ids": ids_sha1(dataset[self.adapter.id_column]), "sources": dict(self.data.sources),
                   "data": self.data_sha1, "tokenizer": self.cache.tokenizer_id(self.tokenizer),
                   "encoding": self.adapter.encoding(self.settings)}
            return self.cache.get(f"{self.adapter.task}-{name}", key, lambda path: build(dataset, path))

        return get


def open_session(settings, job: Job, adapter: Adapter, cache_dir) -> Session:
    """Checked settings, the runtime, tokenizer, weights and data; every error is a
    `UsageError`, raised before any data work but the data's own loading."""
    t0 = time.perf_counter()
    check_values(settings)
    adapter.check(settings)
    rt = runtime.Runtime.create(runtime.select_device(job.device), settings.precision)
    if getattr(settings, "compile", False):
        runtime.check_compile(rt.device)
    config = load_config(job.pretrained, **adapter.config_overrides())
    positions = int(getattr(config, "max_position_embeddings", settings.max_seq_length))
    runtime.check(checks.check_max_seq_length, settings.max_seq_length, positions)
    tokenizer = load_tokenizer(job.pretrained, lowercase=getattr(settings, "lowercase", True))
    weights, pretrained_id = load_weights(job.pretrained)
    session = Session(settings=settings, adapter=adapter, runtime=rt, pretrained_id=pretrained_id,
                      tokenizer=tokenizer, weights=weights, data=None, cache=TokenCache(cache_dir))
    session.data = load_data(adapter, job.data_dir)
    session.data_sha1 = data_fingerprint(session.data)
    session.setup_s = time.perf_counter() - t0
    return session


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


def load_config(path, **config_overrides):
    """`raft.modeling.load_config`, with its errors turned into `UsageError`."""
    from raft.modeling import load_config as load

    try:
        return load(path, **config_overrides)
    except (FileNotFoundError, ValueError, OSError, TypeError) as exc:
        raise UsageError(f"--pretrained: {exc}") from exc


def load_weights(path) -> tuple[dict, str]:
    """(state dict, id) of the pretrained directory's ``*.safetensors`` files; the id is the
    SHA-1 of their names, sizes and modification times and of config.json."""
    from safetensors.torch import load_file

    path = Path(path)
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise UsageError(f"--pretrained: {str(path)!r} holds no *.safetensors weights (written by `raft pretrain`)")
    h = hashlib.sha1((path / "config.json").read_bytes())
    weights = {}
    for f in files:
        st = f.stat()
        h.update(f"{f.name} {st.st_size} {st.st_mtime_ns}".encode())
        with runtime.reading_weights(f, "--pretrained: ", "copy it again or re-run `raft pretrain`"):
            weights.update(load_file(f))
    return weights, h.hexdigest()


def load_tokenizer(path, flag: str = "--pretrained", writer: str = "`raft pretrain`", lowercase: bool = True):
    """The fast tokenizer saved next to a model (``writer`` saves one); errors name ``flag``.
    ``lowercase=False`` (SQuAD's ``--no-lowercase``) loads it without lower-casing (and so without
    accent stripping), as a slow BERT tokenizer with ``do_lower_case=False``."""
    from transformers import AutoTokenizer

    path = Path(path)
    if not any((path / f).is_file() for f in ("tokenizer.json", "vocab.txt", "tokenizer_config.json")):
        raise UsageError(
            f"{flag}: {str(path)!r} holds no tokenizer (tokenizer.json / vocab.txt); "
            f"{writer} saves it next to the model"
        )
    try:
        tok = AutoTokenizer.from_pretrained(path, **({} if lowercase else {"do_lower_case": False}))
    except Exception as exc:  # broken or unknown tokenizer files
        raise UsageError(f"{flag}: cannot load the tokenizer in {str(path)!r}: {exc}") from exc
    if not getattr(tok, "is_fast", False):
        raise UsageError(f"{flag}: the tokenizer in {str(path)!r} is not a fast tokenizer")
    return tok


def load_data(adapter, data_dir):
    """``adapter.load(data_dir)`` (an `Adapter`, or anything with ``load`` and ``data_name``);
    a missing or broken source is a `UsageError` naming the data."""
    from raft.data.sources import DataSourceError

    try:
        return adapter.load(data_dir)
    except (FileNotFoundError, DataSourceError, ValueError) as exc:
        raise UsageError(f"cannot load {adapter.data_name}: {exc}") from exc


def data_fingerprint(data) -> str:
    """`raft.fingerprint.dataset_sha1` of the train pool, the dev part and the test sets."""
    t0 = time.perf_counter()
    digest = fingerprint.dataset_sha1(data.pool, data.dev, *(data.tests[k] for k in sorted(data.tests)))
    log.info("data fingerprint %s (%.1fs)", digest[:12], time.perf_counter() - t0)
    return digest


def request_sha1(session: Session, job: Job) -> str:
    """What makes a run's result: its settings, task, N, seed, mode, the data's content, the
    pretrained weights and the package's source (`raft.fingerprint.code_sha1`)."""
    request = {"settings": settings_.as_record(session.settings), "precision": session.runtime.precision,
               "task": session.adapter.task, "n": job.n, "seed": job.seed, "mode": job.mode,
               "data": session.data_sha1, "pretrained": session.pretrained_id, "code": fingerprint.code_sha1()}
    return hashlib.sha1(json.dumps(request, sort_keys=True, default=str).encode()).hexdigest()


def copy_path(runs_dir, request: str) -> Path:
    """Where ``--runs-dir`` keeps the record of ``request``."""
    return Path(runs_dir) / f"{request}.json"


def reuse(job: Job, request: str, runs_dir) -> bool:
    """True when ``job.output`` or the copy in ``runs_dir`` records ``request`` with a valid
    checksum (and the saved model is there when ``--save-model`` asks for one); the copy is then
    written to the output. A bad copy is moved aside (`stored_record`)."""
    if job.save_model and not (Path(job.save_model) / "config.json").is_file():
        return False
    for path in [Path(job.output)] + ([copy_path(runs_dir, request)] if runs_dir else []):
        rec = stored_record(path, request, is_copy=path != Path(job.output))
        if rec is None:
            continue
        if path != Path(job.output):
            runtime.write_json_atomic(job.output, rec)
        log.info("n=%s seed=%s: done before (%s), not run again", job.n, job.seed, path)
        return True
    return False


def stored_record(path: Path, request: str, *, is_copy: bool) -> dict | None:
    """The record in ``path`` if it is the one of ``request`` and its checksum holds, else None.
    A per-run copy (``is_copy``) that is unreadable, fails its checksum or names another
    request is moved aside with a log line; an output of other settings is simply not taken."""
    try:
        rec = json.loads(path.read_text())
        problem = None if isinstance(rec, dict) else "not a JSON object"
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        rec, problem = None, f"unreadable ({type(exc).__name__}: {exc})"
    if problem is None and rec.get("request_sha1") != request:
        if not is_copy:
            return None  # another request's output: computed again, overwritten
        problem = f"it records request {str(rec.get('request_sha1'))[:12]}, not its file name's"
    if problem is None and not fingerprint.checksum_ok(rec):
        problem = "its content does not match its checksum (record_sha1): changed or damaged after it was written"
    if problem is None:
        return rec
    where = fingerprint.move_aside(path) if is_copy else path
    log.warning("stored run record %s: %s; %s; the run is computed again", path, problem,
                f"moved aside to {where.name}" if is_copy else "not used")
    return None


def drop_copies(requests, runs_dir) -> int:
    """Remove the ``runs_dir`` copies of ``requests`` (every run of the process has its record in
    its output); returns how many there were."""
    if not runs_dir:
        return 0
    dropped = 0
    for request in requests:
        try:
            copy_path(runs_dir, request).unlink()
            dropped += 1
        except FileNotFoundError:
            pass
    return dropped
