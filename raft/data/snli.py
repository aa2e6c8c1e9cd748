"""SNLI 1.0 test set for the zero-shot transfer MNLI -> SNLI (`raft zeroshot --target snli`).

Sources, in this order (the rule of the GLUE / SQuAD readers, `raft.data.sources`):

* **local**: ``<data-dir>/snli/`` holding a file of the official SNLI 1.0 release --
  ``snli_1.0_test.jsonl`` (one JSON object a line: ``gold_label``, ``sentence1``,
  ``sentence2``, ``pairID``, ...) or, when there is no jsonl, its tab-separated twin
  ``snli_1.0_test.txt`` (a header line naming ``gold_label``, ``sentence1``, ``sentence2``, ...).
  When the ``snli/`` folder exists, a missing or broken file is an error, never a download.
* **Hub**: ``stanfordnlp/snli``, split ``test`` (``premise``, ``hypothesis``, ``label``; -1 where
  the annotators reached no gold label) -- the same 10,000 pairs, so not a substitute.

Pairs without a gold label (``"-"`` in the release, -1 on the Hub: 176 of 10,000) are left out,
as in the paper: 9,824 pairs are scored. Examples come in the GLUE readers' columns
(`raft.data.glue`), so the GLUE encoding and metrics apply unchanged::

    text_a  premise (sentence1)     text_b  hypothesis (sentence2)
    label   SNLI class id (``SNLI_LABELS``: 0 entailment, 1 neutral, 2 contradiction)
    idx     row number in the file / Hub split (dropped rows keep their numbers)

Scoring with an MNLI model goes through the model's own label ids: `model_label_ids` maps each
SNLI class, by the MNLI class name in ``SNLI_TO_MNLI``, to ``config.label2id`` of the model.

`missing_files` / `uses_hub` tell the workflow, without torch or datasets, whether the local
copy is complete and whether the Hub would be used.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from raft.data import sources as src

log = logging.getLogger(__name__)

HUB_SNLI = "stanfordnlp/snli"
HUB_SPLIT = "test"
LOCAL_RELDIR = Path("snli")
LOCAL_FILES = ("snli_1.0_test.jsonl", "snli_1.0_test.txt")  # the first one present is read
LAYOUT = ("<data-dir>/snli/snli_1.0_test.jsonl (or snli_1.0_test.txt): the test file of the official "
          "SNLI 1.0 release, unchanged")
OFFICIAL_TEST_ROWS = 10_000  # pairs in the official test file
SCORED_TEST_ROWS = 9_824  # ... of which have a gold label (the paper's SNLI test size)

SNLI_LABELS = ("entailment", "neutral", "contradiction")  # SNLI class ids 0, 1, 2 (the Hub's ClassLabel)
NO_GOLD = "-"  # the release's gold_label without annotator consensus (-1 on the Hub)
HUB_NO_GOLD = -1
# SNLI class -> the MNLI class it is scored as; the id comes from the model's config.label2id
SNLI_TO_MNLI = {"entailment": "entailment", "neutral": "neutral", "contradiction": "contradiction"}


class SnliFormatError(ValueError):
    """A local SNLI file does not have the release's format (the message names file and line)."""


@dataclass
class SnliData:
    """The scored SNLI test pairs and where they came from."""

    test: Any  # datasets.Dataset: text_a, text_b, label (SNLI id), idx
    source: str  # "local" | "hub"
    sizes: dict  # {"rows": pairs read, "no_gold_label": left out}
    data_notes: list[str] = field(default_factory=list)
    substitute: bool = False  # never: local and Hub hold the same official test set


# ------------------------------------------------------------------------------ what is there
def local_dir(data_dir: str | os.PathLike | None = None) -> Path | None:
    """``<root>/snli`` when a data root is set (it may not exist), else None."""
    return src.local_path(data_dir, LOCAL_RELDIR)


def local_file(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The release file that would be read: the jsonl, else the txt; None when neither exists."""
    d = local_dir(data_dir)
    if d is None:
        return None
    return next((d / name for name in LOCAL_FILES if (d / name).is_file()), None)


def missing_files(data_dir: str | os.PathLike | None = None) -> list[str]:
    """The files a complete local copy needs that are absent: ``[]`` when a release file is
    there, else the jsonl's path (``<data-dir>/...`` when no root is set). No torch, no datasets."""
    if local_file(data_dir) is not None:
        return []
    d = local_dir(data_dir)
    return [str((d if d is not None else Path("<data-dir>") / LOCAL_RELDIR) / LOCAL_FILES[0])]


def uses_hub(data_dir: str | os.PathLike | None = None) -> bool:
    """True when `load_snli` would use the Hub: no data root, or no ``<root>/snli/`` folder."""
    d = local_dir(data_dir)
    return d is None or not d.is_dir()


# ------------------------------------------------------------------------------ readers
def _empty_columns() -> dict[str, list]:
    return {"text_a": [], "text_b": [], "label": [], "idx": []}


def _add_row(cols: dict[str, list], gold: str, premise, hypothesis, row: int, where: str) -> bool:
    """Append one pair (False when it has no gold label); a bad label or text raises."""
    if gold == NO_GOLD:
        return False
    if gold not in SNLI_LABELS:
        raise SnliFormatError(f"{where}: bad gold_label {gold!r}; expected one of {list(SNLI_LABELS)} or {NO_GOLD!r}")
    if not isinstance(premise, str) or not isinstance(hypothesis, str):
        raise SnliFormatError(f"{where}: sentence1 / sentence2 must be strings")
    cols["text_a"].append(premise)
    cols["text_b"].append(hypothesis)
    cols["label"].append(SNLI_LABELS.index(gold))
    cols["idx"].append(row)
    return True


def read_snli_jsonl(path: str | os.PathLike) -> tuple[dict[str, list], int]:
    """(columns, rows read) of the release's ``snli_1.0_*.jsonl``; pairs without a gold label
    are left out. A line that is not a JSON object with ``gold_label`` / ``sentence1`` /
    ``sentence2`` raises `SnliFormatError` naming the file and line."""
    path = Path(path)
    cols, rows = _empty_columns(), 0
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                obj = json.loads(line)
                gold, premise, hypothesis = obj["gold_label"], obj["sentence1"], obj["sentence2"]
            except (json.JSONDecodeError, KeyError, TypeError) as exc:
                raise SnliFormatError(f"{where}: not an SNLI 1.0 jsonl line ({type(exc).__name__}: {exc}); "
                                      f"expected {LAYOUT}") from None
            _add_row(cols, gold, premise, hypothesis, rows, where)
            rows += 1
    return cols, rows


def read_snli_txt(path: str | os.PathLike) -> tuple[dict[str, list], int]:
    """(columns, rows read) of the release's tab-separated ``snli_1.0_*.txt`` (columns found by
    the header's names); pairs without a gold label are left out."""
    path = Path(path)
    with open(path, encoding="utf-8", newline="") as f:
        lines = [ln.rstrip("\r\n") for ln in f]
    header = lines[0].split("\t") if lines else []
    missing = [c for c in ("gold_label", "sentence1", "sentence2") if c not in header]
    if missing:
        raise SnliFormatError(f"{path}:1: header lacks column(s) {missing}; expected {LAYOUT}")
    ig, ia, ib = (header.index(c) for c in ("gold_label", "sentence1", "sentence2"))
    cols, rows = _empty_columns(), 0
    for lineno, line in enumerate(lines[1:], start=2):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != len(header):
            raise SnliFormatError(f"{path}:{lineno}: {len(fields)} tab-separated fields, expected {len(header)}")
        _add_row(cols, fields[ig], fields[ia], fields[ib], rows, f"{path}:{lineno}")
        rows += 1
    return cols, rows


def read_snli(path: str | os.PathLike) -> tuple[dict[str, list], int]:
    """`read_snli_jsonl` or `read_snli_txt` by the file's suffix."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"SNLI file {str(path)!r} not found; expected {LAYOUT}")
    reader = read_snli_jsonl if path.suffix == ".jsonl" else read_snli_txt
    cols, rows = reader(path)
    if not cols["label"]:
        raise SnliFormatError(f"{path}: no pairs with a gold label")
    return cols, rows


# ------------------------------------------------------------------------------ loading
def _dataset(cols: dict[str, list]):
    from datasets import Dataset, Features, Value

    features = Features({"text_a": Value("string"), "text_b": Value("string"), "label": Value("int64"),
                         "idx": Value("int64")})
    return Dataset.from_dict(cols, features=features)


def _load_hub(why: str) -> tuple[dict[str, list], int]:
    ds = src.load_hub_dataset(HUB_SNLI, why=why, split=HUB_SPLIT)
    names = list(getattr(ds.features["label"], "names", []))
    if names != list(SNLI_LABELS):
        raise src.DataSourceError(f"{HUB_SNLI} ({HUB_SPLIT}): label names {names}, expected {list(SNLI_LABELS)}")
    cols = _empty_columns()
    for row, (premise, hypothesis, label) in enumerate(zip(ds["premise"], ds["hypothesis"], ds["label"])):
        gold = NO_GOLD if label == HUB_NO_GOLD else SNLI_LABELS[label] if 0 <= label < len(SNLI_LABELS) else str(label)
        _add_row(cols, gold, premise, hypothesis, row, f"{HUB_SNLI} {HUB_SPLIT} row {row}")
    return cols, len(ds)


def load_snli(data_dir: str | os.PathLike | None = None) -> SnliData:
    """The SNLI test pairs with a gold label: local when ``<root>/snli/`` exists (a missing file
    there is a ``FileNotFoundError`` naming it), else the Hub (see the module docstring)."""
    notes: list[str] = []
    if uses_hub(data_dir):
        d = local_dir(data_dir)
        why = (f"no local folder {str(d)!r}" if d is not None
               else f"no local data root is set (--data-dir / ${src.ENV_VAR})")
        log.warning("SNLI: %s; using the Hugging Face Hub (%s)", why, HUB_SNLI)
        cols, rows = _load_hub(why)
        source = src.HUB
        if d is not None:
            notes.append(f"SNLI: not found under the local data root ({d}); loaded from the Hub ({HUB_SNLI}).")
    else:
        path = local_file(data_dir)
        if path is None:
            raise FileNotFoundError(f"SNLI: missing {missing_files(data_dir)[0]!r}; expected {LAYOUT}")
        cols, rows = read_snli(path)
        source = src.LOCAL
    dropped = rows - len(cols["label"])
    notes.append(f"SNLI test: {dropped:,} of {rows:,} pairs have no gold label and are left out "
                 f"({len(cols['label']):,} scored).")
    return SnliData(test=_dataset(cols), source=source, sizes={"rows": rows, "no_gold_label": dropped},
                    data_notes=notes)


# ------------------------------------------------------------------------------ labels
def model_label_ids(label2id: Mapping[str, int], num_labels: int | None = None) -> dict[int, int]:
    """{SNLI class id: the model's class id} through ``SNLI_TO_MNLI`` and the model's
    ``config.label2id`` (names compared case-insensitively). A model whose labels do not name
    the three MNLI classes (e.g. ``LABEL_0``...: not fine-tuned on MNLI) raises ``ValueError``."""
    by_name = {str(k).lower(): int(v) for k, v in dict(label2id).items()}
    wanted = [SNLI_TO_MNLI[name] for name in SNLI_LABELS]
    missing = [name for name in wanted if name not in by_name]
    if missing:
        raise ValueError(f"the model's labels {dict(label2id)} do not name the MNLI class(es) {missing}; "
                         "expected a model fine-tuned on MNLI (`raft finetune-glue --task mnli --save-model`)")
    ids = {k: by_name[SNLI_TO_MNLI[name]] for k, name in enumerate(SNLI_LABELS)}
    limit = num_labels if num_labels is not None else len(ids)
    if len(set(ids.values())) != len(ids) or not all(0 <= v < limit for v in ids.values()):
        raise ValueError(f"the model's label ids {dict(label2id)} are not {len(ids)} distinct ids below {limit}")
    return ids
