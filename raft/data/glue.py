"""GLUE: readers (Hub or GLUE-style TSV folders), the paper's split protocol, metrics.

Tasks are named as the Hub's configs: cola, sst2, mrpc, stsb, qqp, mnli, qnli, rte, wnli.
Every task is returned with the same columns:

    text_a  str     first sentence (CoLA/SST-2 sentence, MNLI premise, QNLI question, ...)
    text_b  str     second sentence, ``None`` for the single-sentence tasks (cola, sst2)
    label   int64   class id in the Hub's convention (see ``TASK_INFO[task].label_names``);
                    float32 similarity score 0-5 for stsb
    idx     int64   row number in the source split (Hub ``idx``; for local files the row
                    number after the header; for the QQP held-out test the GLUE pair id)

The paper's protocol (the authors' run_glue.py, reproduced exactly; implemented once for GLUE
and SQuAD in ``raft.data.split``, whose names are re-exported here):

* **pool / dev**: the official training set in its original row order is permuted with
  ``numpy.random.default_rng(96).permutation(n)`` -- identical to ``Dataset.shuffle(seed=96)``
  of the datasets library -- and the first ``int(0.75 * n)`` rows are the *train pool*, the
  rest the *dev part* (early stopping / model selection).  RTE 1,867 / 623, CoLA 6,413 / 2,138.
* **test**: the official validation set (MNLI: "matched" and "mismatched"; others "test").
* **low data** (``sample(data, n, seed)``): ``random.Random(seed).sample(range(len(pool)), n)``
  rows of the pool and, with a fresh ``random.Random(seed)``, ``n`` rows of the dev part, in
  the sampled order (= the authors' ``random.seed(seed); random.sample(...)``).  ``n=None``
  gives the whole pool and dev part ("full data").  As in run_glue.py (which samples the dev
  part only when ``max_eval_samples < len(eval_dataset)``), ``n >= len(dev part)`` keeps the
  whole dev part in its order (``whole_dev_part``); ``n`` above the pool is an error (``check_n``).
* **sizes without loading** (``split_sizes``): pool / dev part sizes from the row count of the
  local training file (or the official size for the Hub), without ``datasets``.

Offline gaps of the local copy are labelled in ``GlueData.sources`` / ``partial_data`` /
``data_notes``: MNLI, QNLI and QQP train from ~10k-example subsets (``train_subset.tsv``), and
QQP's test is a fixed held-out part of local GLUE *train* rows (``train_rows.tsv`` minus the
pairs that also occur in ``train_subset.tsv``), because the official QQP dev set is absent.
"""

from __future__ import annotations

import functools
import logging
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raft.checks import check_n  # noqa: F401  (re-exported: glue.check_n)
from raft.data import sources as src
from raft.data.metrics import glue_metrics
from raft.data.split import POOL_FRACTION, POOL_SEED, pool_rows, sample, split_pool_dev, whole_dev_part  # re-exported
from raft.data.tasks import GLUE_METRIC_NAMES, GLUE_TASKS, SELECTION_METRIC, TASK_INFO, TaskInfo, check_task

log = logging.getLogger(__name__)

__all__ = [
    "GLUE_TASKS",
    "TASK_INFO",
    "GlueData",
    "load_glue",
    "sample",
    "whole_dev_part",
    "split_sizes",
    "pool_rows",
    "split_pool_dev",
    "glue_metrics",
    "read_glue_tsv",
    "load_local_tables",
    "tokenize",
    "POOL_SEED",
    "POOL_FRACTION",
]


def task_info(task: str) -> TaskInfo:
    return TASK_INFO[check_task(task)]


def _features(task: str):
    from datasets import Features, Value

    info = task_info(task)
    return Features({
        "text_a": Value("string"),
        "text_b": Value("string"),
        "label": Value("float32") if info.is_regression else Value("int64"),
        "idx": Value("int64"),
    })


# ----------------------------------------------------------------------------------------
# Local TSV readers
# ----------------------------------------------------------------------------------------
class GlueFormatError(ValueError):
    """A local GLUE file does not have the expected format (the message names file and line)."""


_GLUED_LABEL = re.compile(r"^(.*) ([01])$", re.DOTALL)
STSB_MIN, STSB_MAX = 0.0, 5.0  # STS-B similarity scores (a finite float in this range)


def _read_lines(path: Path) -> list[str]:
    # MRPC starts with a UTF-8 byte-order mark (dropped); \r is kept here so we can drop CRLF ourselves
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:  # its message has a byte offset only: name the file and line
        line_start = data.rfind(b"\n", 0, exc.start) + 1
        lineno = data.count(b"\n", 0, exc.start) + 1
        raise GlueFormatError(
            f"{path}:{lineno}: not UTF-8 text: byte 0x{data[exc.start]:02x} at column {exc.start - line_start + 1} "
            f"({exc.reason}); GLUE files must be UTF-8 encoded"
        ) from None
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [ln[:-1] if ln.endswith("\r") else ln for ln in lines]


def _label_id(task: str, raw: str, path: Path, lineno: int):
    info = task_info(task)
    raw = raw.strip()
    try:
        if info.is_regression:
            score = float(raw)
            if math.isfinite(score) and STSB_MIN <= score <= STSB_MAX:
                return score
            raise ValueError(raw)
        if raw in info.label_names:
            return info.label_names.index(raw)
        value = int(raw)
        if 0 <= value < len(info.label_names):
            return value
    except ValueError:
        pass
    what = (f"a similarity score from {STSB_MIN:g} to {STSB_MAX:g}" if info.is_regression
            else f"one of {list(info.label_names)} or 0..{info.num_labels - 1}")
    raise GlueFormatError(f"{path}:{lineno}: bad {task} label {raw!r}; expected {what}")


def read_glue_tsv(task: str, path: str | os.PathLike, *, headerless: bool | None = None) -> dict[str, list]:
    """Parse one GLUE-style TSV file of ``task`` into uniform columns.

    Handles the local copies' quirks: CoLA has no header; MRPC starts with a UTF-8 byte-order
    mark and uses CRLF line ends; MNLI files may have 4 columns (index, sentence1, sentence2,
    gold_label) or GLUE's 12/15 columns -- columns are found by header name; STS-B has 10
    columns; QQP ``train_rows.tsv`` is headerless (id, qid1, qid2, question1, question2,
    is_duplicate) and a row may carry its label glued to question2 with a space ("...? 0").
    Quotes are not special (GLUE files are not CSV-quoted).  A row with the wrong number of
    fields raises ``GlueFormatError`` naming the file and line.

    Returns ``{"text_a": [...], "text_b": [...], "label": [...], "idx": [...]}``.
    """
    info = task_info(task)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"GLUE {info.name}: file {str(path)!r} not found; expected layout "
            f"<data-dir>/glue/{info.layout}"
        )
    lines = _read_lines(path)
    if headerless is None:
        headerless = info.name == "cola" or (info.name == "qqp" and path.name == "train_rows.tsv")
    out: dict[str, list] = {"text_a": [], "text_b": [], "label": [], "idx": []}
    if headerless:
        if info.name == "cola":
            ncols, ia, ib, il, iidx = 4, 3, None, 1, None
        elif info.name == "qqp":
            ncols, ia, ib, il, iidx = 6, 3, 4, 5, 0
        else:
            raise GlueFormatError(f"{path}: only CoLA and QQP train_rows files are headerless")
        first = 1
    else:
        if not lines:
            raise GlueFormatError(f"{path}: empty file (expected a header line)")
        header = lines[0].split("\t")
        ca, cb, cl = info.local_columns  # type: ignore[misc]
        missing = [c for c in (ca, cb, cl) if c is not None and c not in header]
        if missing:
            raise GlueFormatError(
                f"{path}:1: header {header} lacks column(s) {missing}; expected layout "
                f"<data-dir>/glue/{info.layout}"
            )
        ncols = len(header)
        ia, il = header.index(ca), header.index(cl)
        ib = header.index(cb) if cb is not None else None
        iidx = None
        first = 2
    for k, line in enumerate(lines[first - 1:] if not headerless else lines):
        lineno = k + first
        fields = line.split("\t")
        if info.name == "qqp" and len(fields) == ncols - 1:
            m = _GLUED_LABEL.match(fields[-1])
            if m:  # GLUE quirk: "...question2 0" with the label glued on by a space
                fields = fields[:-1] + [m.group(1), m.group(2)]
        if len(fields) != ncols:
            raise GlueFormatError(
                f"{path}:{lineno}: corrupt row with {len(fields)} tab-separated fields, expected {ncols}: "
                f"{line[:120]!r}"
            )
        out["text_a"].append(fields[ia])
        out["text_b"].append(fields[ib] if ib is not None else None)
        out["label"].append(_label_id(info.name, fields[il], path, lineno))
        if iidx is not None:
            try:
                out["idx"].append(int(fields[iidx]))
            except ValueError:
                raise GlueFormatError(f"{path}:{lineno}: bad id {fields[iidx]!r}") from None
        else:
            out["idx"].append(len(out["idx"]))
    if not out["label"]:
        raise GlueFormatError(f"{path}: no data rows")
    return out


def _dataset(task: str, columns: dict[str, list]):
    from datasets import Dataset

    return Dataset.from_dict(columns, features=_features(task))


def _task_dir(task: str, root: Path) -> Path:
    return root / "glue" / task_info(task).folder


def _missing(task: str, path: Path) -> FileNotFoundError:
    return FileNotFoundError(
        f"GLUE {task}: missing file {str(path)!r}; expected layout <data-dir>/glue/{task_info(task).layout}"
    )


@functools.lru_cache(maxsize=32)
def _load_local_cached(task: str, root: str) -> tuple[dict, dict, list]:
    """(tables, sources, notes) of a local task folder; cached per process (files are read-only)."""
    info = task_info(task)
    d = _task_dir(task, Path(root))
    tables: dict[str, Any] = {}
    sources: dict[str, str] = {}
    notes: list[str] = []

    # training set: full train.tsv, else the local subset
    if (d / "train.tsv").is_file():
        tables["train"] = _dataset(task, read_glue_tsv(task, d / "train.tsv"))
        sources["train"] = src.LOCAL
    elif (d / "train_subset.tsv").is_file():
        tables["train"] = _dataset(task, read_glue_tsv(task, d / "train_subset.tsv", headerless=False))
        sources["train"] = src.LOCAL_SUBSET
        notes.append(
            f"{task.upper()} training data: a local random sample of {len(tables['train']):,} of the "
            f"{info.full_train_size:,} official training examples (glue/{info.folder}/train_subset.tsv); "
            f"'full data' for {task.upper()} means this subset, and the train pool / dev part are "
            f"{POOL_FRACTION:.0%} / {1 - POOL_FRACTION:.0%} of it."
        )
    else:
        raise _missing(task, d / "train.tsv")

    # evaluation set(s): official dev files; QQP offline: held-out GLUE train rows
    if task == "qqp" and not (d / "dev.tsv").is_file():
        rows_path = d / "train_rows.tsv"
        if not rows_path.is_file():
            raise _missing(task, d / "dev.tsv")
        rows = read_glue_tsv(task, rows_path, headerless=True)
        train = tables["train"]
        seen = set(zip(train["text_a"], train["text_b"]))
        keep = [i for i, pair in enumerate(zip(rows["text_a"], rows["text_b"])) if pair not in seen]
        n_overlap = len(rows["label"]) - len(keep)
        held = {k: [v[i] for i in keep] for k, v in rows.items()}
        tables["test"] = _dataset(task, held)
        sources["test"] = src.HELD_OUT
        notes.append(
            f"QQP test: the official QQP validation set ({info.test_size['test']:,} pairs) is not in the "
            f"local copy; the test set is {len(keep):,} held-out GLUE QQP *training* rows "
            f"(glue/QQP/train_rows.tsv, {len(rows['label']):,} rows, minus {n_overlap:,} pairs that also "
            f"occur in the training subset); idx = GLUE pair id."
        )
    else:
        for name, fname in info.local_eval_files.items():
            p = d / fname
            if not p.is_file():
                raise _missing(task, p)
            tables[name] = _dataset(task, read_glue_tsv(task, p))
        sources["test"] = src.LOCAL
    return tables, sources, notes


def load_local_tables(task: str, data_dir: str | os.PathLike | None = None) -> dict[str, Any]:
    """The raw local tables of a task: ``{"train": Dataset, <eval set>: Dataset, ...}``.

    Eval sets are named "test" (MNLI: "matched", "mismatched"); QQP's offline test is the
    held-out part of ``train_rows.tsv``.  Raises ``FileNotFoundError`` when the task folder or
    a file is missing.
    """
    info = task_info(task)
    root = src.resolve_data_dir(data_dir)
    if root is None:
        raise FileNotFoundError(f"no local data root (give data_dir or set ${src.ENV_VAR})")
    d = _task_dir(info.name, root)
    if not d.is_dir():
        raise FileNotFoundError(
            f"GLUE {info.name}: folder {str(d)!r} not found; expected layout <data-dir>/glue/{info.layout}"
        )
    tables, _, _ = _load_local_cached(info.name, str(root))
    return dict(tables)


def clear_cache() -> None:
    """Forget parsed local tables and training-row counts (they are cached per process)."""
    _load_local_cached.cache_clear()
    _local_train_rows.cache_clear()


# ----------------------------------------------------------------------------------------
# Hub
# ----------------------------------------------------------------------------------------
def _uniform_from_hub(task: str, ds):
    """Hub GLUE split -> uniform columns (text_a, text_b, label, idx)."""
    info = task_info(task)
    ka, kb = info.hub_keys
    cols = {"text_a": ds[ka], "text_b": ds[kb] if kb else [None] * len(ds), "label": ds["label"]}
    cols["idx"] = ds["idx"] if "idx" in ds.column_names else list(range(len(ds)))
    return _dataset(task, cols)


def _load_hub(task: str, why: str) -> tuple[dict, dict, list]:
    info = task_info(task)
    dd = src.load_hub_dataset(src.HUB_GLUE, info.name, why=why)
    tables = {"train": _uniform_from_hub(task, dd["train"])}
    for name, split in info.hub_eval_splits.items():
        tables[name] = _uniform_from_hub(task, dd[split])
    return tables, {"train": src.HUB, "test": src.HUB}, []


# ----------------------------------------------------------------------------------------
# The paper's protocol
# ----------------------------------------------------------------------------------------
@dataclass
class GlueData(src.SplitMetadata):
    """One GLUE task split as in the paper.  ``tests`` maps eval-set name -> Dataset."""

    task: str
    pool: Any  # datasets.Dataset: train pool (75 % of the official train, seed 96)
    dev: Any  # datasets.Dataset: dev part (the other 25 %), for early stopping / selection
    tests: dict[str, Any]  # "test" (MNLI: "matched", "mismatched"): the official validation set(s)
    sources: dict[str, str]  # {"train": hub|local|local-subset, "test": hub|local|held-out}
    partial_data: bool  # True when any part is not the complete official set
    data_notes: list[str]  # human-readable notes on gaps/substitutions, for result files
    num_labels: int  # 1 for stsb (regression)
    label_names: list[str]  # [] for stsb
    is_regression: bool
    shuffle_seed: int = POOL_SEED
    pool_fraction: float = POOL_FRACTION
    metric_names: tuple[str, ...] = field(default=())
    selection_metric: str = ""

    def metrics(self, predictions, labels) -> dict[str, float]:
        return glue_metrics(self.task, predictions, labels)


def load_glue(task: str, data_dir: str | os.PathLike | None = None) -> GlueData:
    """Load one GLUE task and split it as in the paper.

    Source: ``<data_dir or $RAFT_DATA_DIR>/glue/<Task>/`` when that folder exists (a missing or
    broken file inside it is an error), else the Hub (``nyu-mll/glue``, config = task name).
    """
    info = task_info(task)
    root = src.resolve_data_dir(data_dir)
    notes: list[str] = []
    d = _task_dir(info.name, root) if root is not None else None
    if d is not None and d.is_dir():
        tables, sources, local_notes = _load_local_cached(info.name, str(root))
        notes += local_notes
    else:
        why = (f"no local folder {str(d)!r}" if d is not None
               else f"no local data root is set (--data-dir / ${src.ENV_VAR})")
        log.warning("GLUE %s: %s; using the Hugging Face Hub (%s)", info.name, why, src.HUB_GLUE)
        tables, sources, _ = _load_hub(info.name, why)
        if d is not None:
            notes.append(f"{info.name.upper()}: not found under the local data root ({d}); loaded from the Hub.")
    pool, dev = split_pool_dev(tables["train"])
    tests = {name: tables[name] for name in info.local_eval_files}
    partial = sources["train"] not in (src.LOCAL, src.HUB) or sources["test"] not in (src.LOCAL, src.HUB)
    return GlueData(
        task=info.name,
        pool=pool,
        dev=dev,
        tests=tests,
        sources=sources,
        partial_data=bool(partial),
        data_notes=notes,
        num_labels=info.num_labels,
        label_names=list(info.label_names),
        is_regression=info.is_regression,
        metric_names=GLUE_METRIC_NAMES[info.name],
        selection_metric=SELECTION_METRIC[info.name],
    )


@functools.lru_cache(maxsize=32)
def _local_train_rows(task: str, task_dir: str) -> tuple[int, str]:
    """(rows, source) of a local task folder's training file (train.tsv, else train_subset.tsv)."""
    d = Path(task_dir)
    if (d / "train.tsv").is_file():
        return len(read_glue_tsv(task, d / "train.tsv")["label"]), src.LOCAL
    if (d / "train_subset.tsv").is_file():
        return len(read_glue_tsv(task, d / "train_subset.tsv", headerless=False)["label"]), src.LOCAL_SUBSET
    raise _missing(task, d / "train.tsv")


def split_sizes(task: str, data_dir: str | os.PathLike | None = None) -> dict:
    """``{"pool", "dev_part", "source"}`` of a task as ``load_glue`` would split it, without
    ``datasets`` or the Hub: the local training file's rows (cached per process) when the task
    folder exists, else the official training size (source "hub")."""
    info = task_info(task)
    root = src.resolve_data_dir(data_dir)
    d = _task_dir(info.name, root) if root is not None else None
    if d is not None and d.is_dir():
        n, source = _local_train_rows(info.name, str(d))
    else:
        n, source = info.full_train_size, src.HUB
    k = pool_rows(n)
    return {"pool": k, "dev_part": n - k, "source": source}


def encode_batch(batch: dict, tokenizer, max_length: int = 128, padding: bool | str = False) -> dict:
    """A batch of uniform GLUE columns (text_a / text_b) -> input_ids, token_type_ids,
    attention_mask (truncation to max_length); single sentences when text_b is all None."""
    if all(b is None for b in batch["text_b"]):
        return dict(tokenizer(batch["text_a"], truncation=True, max_length=max_length, padding=padding))
    return dict(tokenizer(batch["text_a"], batch["text_b"], truncation=True, max_length=max_length, padding=padding))


def tokenize(dataset, tokenizer, max_length: int = 128, padding: bool | str = False, num_proc: int | None = None,
             cache_file_name: str | None = None):
    """`encode_batch` over a uniform GLUE Dataset with ``Dataset.map``; keeps ``label`` and
    ``idx``, drops the texts. ``cache_file_name``: the Arrow file datasets writes the result
    to, or loads it from when it exists (`raft.train.token_cache`)."""
    return dataset.map(encode_batch, batched=True, remove_columns=["text_a", "text_b"], num_proc=num_proc,
                       fn_kwargs={"tokenizer": tokenizer, "max_length": max_length, "padding": padding},
                       desc="tokenizing", cache_file_name=cache_file_name)
