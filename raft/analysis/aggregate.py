"""`raft aggregate`: result files -> tidy tables (results/tables/*.csv).

Reads only the result files fixed in docs/architecture.md ("Result files"):

- ``results/pretrain/{variant}/metrics.json`` (+ ``log.csv``, ``rationals.jsonl``)
- ``results/glue/{task}/{variant}/n{N}/seed{seed}/metrics.json``
- ``results/glue_efficient/**/metrics.json`` (modes raf_head / bias_head)
- ``results/squad/{variant}/n{N}/seed{seed}/metrics.json``
- ``results/zeroshot/{target}/{variant}/seed{seed}/metrics.json`` (`raft zeroshot`: an MNLI model
  on SNLI, a SQuAD model on TriviaQA; the target is the table's ``task``)

and writes, in ``--output`` (default ``<results>/tables``):

- ``pretrain.csv``: one row per pretraining run;
- ``glue.csv``, ``squad.csv``, ``glue_efficient.csv``: tidy long format, one row per
  run x eval set x metric (columns ``LONG_COLUMNS``);
- ``glue_summary.csv``, ``squad_summary.csv``, ``glue_efficient_summary.csv``: one row per
  task x eval set x metric x N (plus the GLUE average): mean / std / number of seeds of each
  variant, and the paired comparison Δ = raft - bert with bootstrap CI, p-values and verdict
  (columns ``SUMMARY_COLUMNS``);
- ``glue_selection.csv``, ``squad_selection.csv``, ``glue_efficient_selection.csv``: the searches
  (`select_candidates`; ``SELECTION_COLUMNS``): per task x N x variant x mode searched, every
  candidate's mean / std / count of dev scores over seeds and which one the tables keep (header
  only when nothing was searched);
- ``zeroshot.csv`` / ``zeroshot_summary.csv``: the same two shapes for the zero-shot transfer
  (``task`` = the target, snli / triviaqa), each followed by ``ZEROSHOT_COLUMNS``:
  ``source_task`` (mnli / squad) and ``substitute`` (true when the run, or for a summary row some
  run of the row, scored the Hub's rc.web TriviaQA dev set instead of the verified web dev set:
  metrics.json ``substitute``) and ``window_from_source`` (false when the run, or for a summary row
  some run of the row, was scored with another window than its fine-tuning run's: metrics.json
  ``window_from_source``, absent = true). Written with these headers also when there are no zero-shot runs.
  TriviaQA has three eval sets, one per score of the same predictions (`raft.data.triviaqa`):
  ``triviaqa`` (TriviaQA's own EM/F1, the headline: ``ZEROSHOT_HEADLINE``), ``all_pairs`` and
  ``has_ans``; a TriviaQA record written before them holds only ``test``, the HasAns score, and
  is read as ``has_ans`` (`zeroshot_test`).

Constant classifiers: a GLUE run's metrics.json records, outside ``test``,
``distinct_predictions`` ({eval set: how many labels the predictions used}; a count, never a
row of the long tables, also if a file puts it among a test set's entries) and
``constant_predictions`` (true when a test set got one label for every example). When some
run of a study records the flag, the long table gets the run-level column
``constant_predictions`` (true / false / empty = not recorded, e.g. older files or STS-B) and
the summary the columns ``bert_constant_runs`` / ``raft_constant_runs`` (how many of the row's
runs of each arm had constant predictions; empty when none of them recorded it): the
``*_OPTIONAL_COLUMNS``, appended at the end. Without the field in any input the tables are
exactly as before (byte-identical).

A missing study directory gives a header-only CSV. Row order is fixed (canonical task
order, numeric N with "full" last, variant bert before raft, numeric seeds) and floats are
written with ``FLOAT_FORMAT``, so the tables are byte-stable for the same inputs.
"""

from __future__ import annotations

import dataclasses
import errno
import functools
import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pandas as pd

from raft.analysis import stats
from raft.data import triviaqa
from raft.data.tasks import TASK_INFO
from raft.layout import MANIFEST, SEARCH_STUDIES

FLOAT_FORMAT = "%.6g"

GLUE_TASKS = list(TASK_INFO)
TASK_LABELS = {**{name: info.label for name, info in TASK_INFO.items()},
               "squad": "SQuAD v1.1", "average": "GLUE average",
               "snli": "SNLI", "triviaqa": "TriviaQA"}
EVAL_SET_ORDER = ["test", "matched", "mismatched", *triviaqa.EVAL_SETS, "validation", "all"]
VARIANTS = ["bert", "raft"]
VARIANT_LABELS = {"bert": "BERT (FAFT)", "raft": "RAFT"}

# metric key (as written by the fine-tuning stages, several spellings accepted) -> paper name
METRIC_LABELS = {
    "mcc": "MCC", "matthews_correlation": "MCC", "matthews": "MCC", "matthews_corrcoef": "MCC",
    "accuracy": "acc", "acc": "acc",
    "f1": "F1",
    "pearson": "Pearson", "pearsonr": "Pearson",
    "spearman": "Spearman", "spearmanr": "Spearman",
    "exact_match": "EM", "em": "EM", "exact": "EM",
    "score": "score",
}
METRIC_ORDER = ["MCC", "EM", "acc", "F1", "Pearson", "Spearman", "score"]
# the metrics the paper reports per task (by paper name)
PAPER_METRICS = {
    "cola": ["MCC"], "stsb": ["Pearson", "Spearman"], "mrpc": ["acc", "F1"],
    "qqp": ["acc", "F1"], "squad": ["EM", "F1"], "triviaqa": ["EM", "F1"],
}
DEFAULT_PAPER_METRICS = ["acc"]

STUDIES = {
    # study -> (results sub-directory, long csv, summary csv, compute GLUE average)
    "glue": ("glue", "glue.csv", "glue_summary.csv", True),
    "squad": ("squad", "squad.csv", "squad_summary.csv", False),
    "glue_efficient": ("glue_efficient", "glue_efficient.csv", "glue_efficient_summary.csv", True),
    "zeroshot": ("zeroshot", "zeroshot.csv", "zeroshot_summary.csv", False),
}
# a search's selection (`select_candidates`): per cell and candidate, the dev scores over seeds
SELECTION_COLUMNS = ["task", "n", "variant", "mode", "candidate", "dev_mean", "dev_std", "n_seeds", "chosen"]
# run-level columns of the zero-shot tables, after LONG_COLUMNS / SUMMARY_COLUMNS (see the docstring)
ZEROSHOT_COLUMNS = ["source_task", "substitute", "window_from_source"]
# target -> the eval set of its headline score (TriviaQA: its own EM/F1, not the SQuAD-style ones)
ZEROSHOT_HEADLINE = {"snli": "test", "triviaqa": triviaqa.HEADLINE}

PRETRAIN_COLUMNS = [
    "variant", "seed", "steps", "tokens_seen", "eval_loss", "perplexity", "wall_time_s",
    "tokens_per_s", "device", "data_source", "train_sequences", "validation_sequences",
    "source_file",
]
RUN_COLUMNS = [
    "task", "variant", "mode", "n", "seed", "partial_data", "train_source", "test_source",
    "trainable_parameters", "best_epoch", "best_dev_score", "wall_time_s", "device",
    "data_notes", "source_file", "constant_predictions", "settings", "candidate",
]
LONG_COLUMNS = [
    "task", "eval_set", "variant", "mode", "n", "seed", "metric", "value", "partial_data",
    "train_source", "test_source", "trainable_parameters", "data_notes", "source_file",
]
# written only when some run of the study records ``constant_predictions`` (see the docstring)
LONG_OPTIONAL_COLUMNS = ["constant_predictions"]
# written only when some setting differs between the study's table cells (`settings_labels`)
SETTINGS_COLUMN = "settings"
SUMMARY_SETTINGS_COLUMNS = ["bert_settings", "raft_settings"]
CELL = ["task", "variant", "mode", "n"]  # a table cell: its runs differ by seed only
SUMMARY_COLUMNS = [
    "task", "eval_set", "metric", "n", "bert_mode", "raft_mode",
    "bert_mean", "bert_std", "bert_n_seeds", "raft_mean", "raft_std", "raft_n_seeds",
    "n_paired", "delta", "ci_low", "ci_high", "p_ttest", "p_wilcoxon", "verdict",
    "bert_trainable_parameters", "raft_trainable_parameters",
    "partial_data", "train_source", "test_source", "data_notes",
]
SUMMARY_OPTIONAL_COLUMNS = ["bert_constant_runs", "raft_constant_runs"]
# names that are never metrics, should a test set's entries hold them (never rows of the long tables)
NON_METRIC_KEYS = {"distinct_predictions", "constant_predictions"}
NOTE_SEP = " | "
# columns written as integers (nullable)
INT_COLUMNS = {
    "seed", "n_seeds", "steps", "tokens_seen", "train_sequences", "validation_sequences",
    "trainable_parameters", "bert_n_seeds", "raft_n_seeds", "n_paired",
    "bert_trainable_parameters", "raft_trainable_parameters", "best_epoch",
    "bert_constant_runs", "raft_constant_runs",
}


# ------------------------------------------------------------------ ordering helpers
def n_key(n) -> tuple:
    s = str(n)
    return (1, 0) if s == "full" else (0, int(s)) if s.lstrip("-").isdigit() else (2, s)


def task_key(t) -> tuple:
    t = str(t)
    if t in GLUE_TASKS:
        return (0, GLUE_TASKS.index(t), "")
    if t == "average":
        return (2, 0, "")
    return (1, 0, t)


def _list_key(order: list[str]):
    return lambda v: (order.index(v), "") if v in order else (len(order), str(v))


def seed_key(s) -> tuple:
    return stats._seed_key(s)


def metric_label(metric: str) -> str:
    return METRIC_LABELS.get(str(metric).lower(), str(metric))


def paper_metrics(task: str) -> list[str]:
    return PAPER_METRICS.get(task, DEFAULT_PAPER_METRICS)


def _sort(df: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    keys = {
        "task": task_key, "n": n_key, "seed": seed_key, "variant": _list_key(VARIANTS),
        "eval_set": _list_key(EVAL_SET_ORDER), "metric": _list_key(METRIC_ORDER),
    }
    if df.empty:
        return df.reset_index(drop=True)
    tmp = df.copy()
    sort_cols = []
    for c in cols:
        if c not in tmp.columns:
            continue
        k = keys.get(c, lambda v: (0, str(v)))
        tmp[f"__{c}"] = [k(v) for v in tmp[c]]
        sort_cols.append(f"__{c}")
    tmp = tmp.sort_values(sort_cols, kind="stable")
    return tmp.drop(columns=sort_cols).reset_index(drop=True)


# ------------------------------------------------------------------ reading result files
class ResultFileError(ValueError):
    """A result file exists but cannot be used (cut off, not JSON, not a JSON object); the
    message names the file.  `raft aggregate` reports it and exits with 2, writing no table."""


def _read_json(path: Path) -> dict | None:
    """The JSON object in ``path``; None when the file does not exist.  A file that exists but
    cannot be read, is not valid JSON (e.g. cut off by a killed job) or is not a JSON object
    raises ``ResultFileError`` naming it -- it is never skipped silently."""
    path = Path(path)
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise ResultFileError(f"{path}: cannot read the result file ({exc})") from exc
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as exc:
        what = "empty" if not text.strip() else f"not valid JSON ({exc})"
        raise ResultFileError(
            f"{path}: broken result file: {what}; it is probably cut off -- re-run the step "
            "that writes it, or delete it to leave the run out"
        ) from None
    if not isinstance(obj, dict):
        raise ResultFileError(f"{path}: broken result file: expected a JSON object, got {type(obj).__name__}")
    return obj


def _rel(path: Path, root: Path) -> str:
    try:
        return Path(os.path.relpath(path, root)).as_posix()
    except ValueError:
        return path.as_posix()


def _norm_n(n) -> str:
    if n is None:
        return ""
    s = str(n).strip()
    if s.startswith("n") and s[1:]:
        s = s[1:]
    return s


def _from_path(path: Path, study: str) -> dict:
    """Fallback identification from the directory layout."""
    parts = path.parent.parts
    info: dict = {}
    for p in parts:
        if p.startswith("seed") and p[4:].lstrip("-").isdigit():
            info["seed"] = int(p[4:])
        elif p.startswith("n") and (p[1:].isdigit() or p[1:] == "full"):
            info["n"] = p[1:]
        elif p in VARIANTS:
            info["variant"] = p
    if study == "squad":
        info.setdefault("task", "squad")
    else:
        try:
            i = parts.index(STUDIES[study][0])
            info.setdefault("task", parts[i + 1])
        except (ValueError, IndexError):
            pass
    return info


def found_records(results: Path, study: str) -> list[Path]:
    """Every ``metrics.json`` under the study's folder of ``results`` (any config's)."""
    root = Path(results) / (STUDIES[study][0] if study in STUDIES else study)
    if study == "pretrain":
        return sorted(root.glob("*/metrics.json")) if root.is_dir() else []
    return sorted(root.rglob("metrics.json")) if root.is_dir() else []


def read_manifest(results: Path) -> dict | None:
    """``<results>/tables/records.json`` (written by `aggregate`), or None when there is none."""
    m = _read_json(Path(results) / "tables" / MANIFEST)
    return m if isinstance(m, dict) and isinstance(m.get("records"), dict) else None


def record_files(results: str | os.PathLike, study: str) -> list[Path]:
    """The records of a study that the tables hold: those listed in the manifest next to the
    tables (what `aggregate` read), else every record found (`found_records`)."""
    results = Path(results)
    manifest = read_manifest(results)
    if manifest is None:
        return found_records(results, study)
    return [results / p for p in manifest["records"].get(study, [])]


def _flag(v) -> bool | None:
    """A recorded true/false flag; None for anything else (missing, null, NaN)."""
    if isinstance(v, (bool, np.bool_)):
        return bool(v)
    return None


def constant_flag(m: dict, test: dict) -> bool | None:
    """A run's ``constant_predictions``: the recorded flag, else derived from the
    ``distinct_predictions`` counts (top level {eval set: count}, or inside the test sets'
    entries): true when one is at most 1; else None (not recorded)."""
    flag = _flag(m.get("constant_predictions"))
    if flag is not None:
        return flag
    top = m.get("distinct_predictions")
    counts = list(top.values()) if isinstance(top, dict) else []
    counts += [v.get("distinct_predictions") for v in test.values() if isinstance(v, dict)]
    counts = [int(c) for c in counts if isinstance(c, (int, float)) and not isinstance(c, bool)
              and math.isfinite(c)]
    return any(c <= 1 for c in counts) if counts else None


def zeroshot_test(m: dict, test: dict) -> dict:
    """A zero-shot record's test block. A TriviaQA record written before the three scores holds
    only ``test``: SQuAD EM/F1 of the pairs with an alias in their context, read as ``has_ans``
    (never as TriviaQA's own score)."""
    if m.get("target") == "triviaqa" and set(test) == {"test"}:
        return {"has_ans": test["test"]}
    return test


def load_runs(results: str | os.PathLike = "results", study: str = "glue",
              files: list[Path] | None = None) -> pd.DataFrame:
    """One row per fine-tuning run of a study (columns ``RUN_COLUMNS`` + ``test``, a dict
    eval_set -> {metric: value}, ``rationals`` and ``hyperparameters``, the run's
    metrics.json block as a dict, and ``sizes``). ``constant_predictions`` is True / False, or None
    when the file does not record it (`constant_flag`). Zero-shot runs (study "zeroshot") have
    their ``target`` as ``task`` and the ``ZEROSHOT_COLUMNS`` too (test block: `zeroshot_test`).
    Empty frame if nothing exists."""
    results = Path(results)
    extra = ZEROSHOT_COLUMNS if study == "zeroshot" else []
    rows = []
    for path in record_files(results, study) if files is None else files:
        m = _read_json(path)
        if not isinstance(m, dict):
            raise ResultFileError(f"{path}: a record of the study is missing (listed in {MANIFEST})")
        fb = _from_path(path, study)
        sources = m.get("sources") or {}
        notes = m.get("data_notes") or []
        if isinstance(notes, str):
            notes = [notes]
        test = m.get("test") or {}
        test = test if isinstance(test, dict) else {}
        test = zeroshot_test(m, test) if study == "zeroshot" else test
        hp = m.get("hyperparameters")
        rows.append({
            "task": str(m.get("task", m.get("target", fb.get("task", "squad" if study == "squad" else "")))),
            "variant": str(m.get("variant", fb.get("variant", ""))),
            "mode": str(m.get("mode") or "full"),
            "n": _norm_n(m.get("n", fb.get("n"))),
            "seed": m.get("seed", fb.get("seed")),
            "partial_data": bool(m.get("partial_data", False)),
            "train_source": str(sources.get("train", "")),
            "test_source": str(sources.get("test", "")),
            "trainable_parameters": m.get("trainable_parameters"),
            "best_epoch": m.get("best_epoch"),
            "best_dev_score": m.get("best_dev_score"),
            "wall_time_s": m.get("wall_time_s"),
            "device": m.get("device"),
            "data_notes": NOTE_SEP.join(str(x) for x in notes),
            "source_file": _rel(path, results.parent if results.name else results),
            "constant_predictions": constant_flag(m, test),
            "candidate": next((p for p in path.parent.parts if "=" in p), ""),  # a search's (raft.layout)
            "test": test,
            "rationals": m.get("rationals") or {},
            "hyperparameters": hp if isinstance(hp, dict) else {},
            "sizes": m.get("sizes") if isinstance(m.get("sizes"), dict) else {},
            "source_task": str(m.get("source_task", "")),
            "substitute": bool(m.get("substitute", False)),
            "window_from_source": bool(m.get("window_from_source", True)),
        })
    df = pd.DataFrame(rows, columns=[*RUN_COLUMNS, *extra, "test", "rationals", "hyperparameters", "sizes"])
    df[SETTINGS_COLUMN] = settings_labels(df)
    return _sort(df, ["task", "n", "variant", "mode", "seed"])


# ------------------------------------------------------------------ searches
def select_candidates(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(the runs the tables hold, the selection table). The runs of a cell (`CELL`) that are
    candidates of a search (``candidate``: their folder, `raft.layout.SEARCH_PATHS`) are reduced
    to the candidate with the best mean dev score (``best_dev_score``) over its seeds -- never a
    test score; ties go to the first candidate in label order. The selection table
    (``SELECTION_COLUMNS``) lists every candidate of every searched cell."""
    if runs.empty or not any(runs["candidate"]):
        return runs, pd.DataFrame(columns=SELECTION_COLUMNS)
    keep, rows = [], []
    for key, g in runs.groupby(CELL, sort=False):
        if not all(g["candidate"]):  # a plain run among them: nothing to select (check_cells judges)
            keep.append(g)
            continue
        scores = {c: stats.mean_std(pd.to_numeric(s, errors="coerce").dropna())
                  for c, s in g.groupby("candidate", sort=True)["best_dev_score"]}
        chosen = max(scores, key=lambda c: (-math.inf if math.isnan(scores[c][0]) else scores[c][0]))
        keep.append(g[g["candidate"] == chosen])
        rows += [{**dict(zip(CELL, key)), "candidate": c, "dev_mean": m, "dev_std": sd, "n_seeds": k,
                  "chosen": c == chosen} for c, (m, sd, k) in scores.items()]
    selection = _sort(pd.DataFrame(rows, columns=SELECTION_COLUMNS), ["task", "n", "variant", "mode", "candidate"])
    return _sort(pd.concat(keep), ["task", "n", "variant", "mode", "seed"]), selection


# ------------------------------------------------------------------ settings of the runs
class MixedSettingsError(ValueError):
    """The runs of one table cell were made with different settings (other than the seed): the
    message names the cell, the keys and which run has which value. `raft aggregate` exits 2."""


def run_settings(hyperparameters: dict) -> dict[str, str]:
    """The settings of a run (its record's ``hyperparameters`` that are fine-tuning settings,
    `raft.settings.SquadFinetune`, plus the resolved precision), each as compact JSON; values
    derived per run (the step counts of a seed's sample) are left out."""
    keys = _setting_keys()
    return {k: json.dumps(v, sort_keys=True) for k, v in (hyperparameters or {}).items() if k in keys}


@functools.cache
def _setting_keys() -> frozenset[str]:
    from raft import settings

    return frozenset({f.name for f in dataclasses.fields(settings.SquadFinetune)} | {"precision"})


def check_cells(runs: pd.DataFrame, study: str) -> None:
    """Raise `MixedSettingsError` when the runs of a cell (`CELL`) differ in a setting."""
    for key, g in runs.groupby(CELL, sort=False):
        each = [run_settings(hp) for hp in g["hyperparameters"]]
        differing = sorted({k for a in each for b in each for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
        if not differing:
            continue
        cell = " / ".join(f"{c}={v}" for c, v in zip(CELL, key))
        values = "; ".join(
            f"{k}: " + ", ".join(f"{a.get(k, 'absent')} in {f}" for a, f in zip(each, g["source_file"]))
            for k in differing)
        raise MixedSettingsError(
            f"{study} table cell {cell} mixes runs made with different settings ({', '.join(differing)}): "
            f"{values}. They come from different configs; the workflow's tables read only this config's "
            "records -- rerun it, or delete the stale records")


def settings_labels(runs: pd.DataFrame) -> list[str]:
    """Per run, the settings whose value differs between the study's runs, as ``key=value``
    joined by ";" (sorted; empty when nothing differs): what the tables compare."""
    each = [run_settings(hp) for hp in runs["hyperparameters"]]
    keys = sorted({k for a in each for b in each for k in a.keys() | b.keys() if a.get(k) != b.get(k)})
    return [";".join(f"{k}={a[k]}" for k in keys if k in a) for a in each]


def long_table(runs: pd.DataFrame) -> pd.DataFrame:
    """Tidy long format: one row per run x eval set x metric (``LONG_COLUMNS``, plus
    ``constant_predictions`` when some run records it). Entries in ``NON_METRIC_KEYS``
    (``distinct_predictions``) are not metrics and give no row."""
    columns = list(LONG_COLUMNS)
    if "constant_predictions" in runs.columns and any(_flag(v) is not None for v in runs["constant_predictions"]):
        columns += LONG_OPTIONAL_COLUMNS
    if SETTINGS_COLUMN in runs.columns and any(runs[SETTINGS_COLUMN]):
        columns.append(SETTINGS_COLUMN)
    rows = []
    for r in runs.to_dict("records"):
        for eval_set, metrics in (r["test"] or {}).items():
            if not isinstance(metrics, dict):
                continue
            for metric, value in metrics.items():
                if metric in NON_METRIC_KEYS:
                    continue
                try:
                    v = float(value)
                except (TypeError, ValueError):
                    continue
                rows.append({**{c: r.get(c) for c in RUN_COLUMNS if c in columns},
                             "eval_set": str(eval_set), "metric": metric_label(metric),
                             "value": v})
    df = pd.DataFrame(rows, columns=columns)
    return _sort(df, ["task", "n", "eval_set", "metric", "variant", "mode", "seed"])


def _join_unique(values: Iterable) -> str:
    """Sorted unique non-empty values joined by ";"."""
    out: set[str] = set()
    for v in values:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            continue
        out |= {p.strip() for p in str(v).split(";") if p.strip()}
    return ";".join(sorted(out))


def _notes(values: Iterable) -> str:
    out: list[str] = []
    for v in values:
        if not isinstance(v, str) or not v:
            continue
        for part in v.split(NOTE_SEP):
            if part and part not in out:
                out.append(part)
    return NOTE_SEP.join(out)


def _params(values) -> float:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.median(v)) if v else math.nan


def _mode_pairs(bert_modes: list[str], raft_modes: list[str]) -> list[tuple[str | None, str | None]]:
    """Which (bert mode, raft mode) arms to compare: the same mode where both have it,
    otherwise every raft mode against every bert mode (e.g. bias_head vs raf_head)."""
    if not bert_modes:
        return [(None, m) for m in raft_modes]
    if not raft_modes:
        return [(m, None) for m in bert_modes]
    pairs = []
    for r in raft_modes:
        if r in bert_modes:
            pairs.append((r, r))
        else:
            own = [b for b in bert_modes if b not in raft_modes]
            pairs += [(b, r) for b in (own or bert_modes)]
    for b in bert_modes:
        if not any(p[0] == b for p in pairs):
            pairs += [(b, r) for r in raft_modes]
    return pairs


def constant_runs(rows: pd.DataFrame) -> float:
    """How many runs (distinct ``source_file``) among long-table ``rows`` had constant
    predictions; NaN when none of them records the flag (or there are none)."""
    if "constant_predictions" not in rows.columns or rows.empty:
        return math.nan
    flags = [(f, _flag(v)) for f, v in zip(rows["source_file"], rows["constant_predictions"])]
    if all(v is None for _, v in flags):
        return math.nan
    return float(len({f for f, v in flags if v}))


def _summary_row(key: dict, bert: pd.DataFrame, raft: pd.DataFrame, bmode, rmode,
                 runs_meta: pd.DataFrame) -> dict:
    bvals = dict(zip(bert["seed"], bert["value"]))
    rvals = dict(zip(raft["seed"], raft["value"]))
    bm, bs, bn = stats.mean_std(bvals.values())
    rm, rs, rn = stats.mean_std(rvals.values())
    cmp = stats.compare_paired(bvals, rvals)
    return {
        **key,
        "bert_mode": bmode or "", "raft_mode": rmode or "",
        "bert_mean": bm, "bert_std": bs, "bert_n_seeds": bn,
        "raft_mean": rm, "raft_std": rs, "raft_n_seeds": rn,
        **cmp.as_dict(),
        "bert_trainable_parameters": _params(bert["trainable_parameters"]),
        "raft_trainable_parameters": _params(raft["trainable_parameters"]),
        "partial_data": bool(runs_meta["partial_data"].any()) if len(runs_meta) else False,
        "train_source": _join_unique(runs_meta["train_source"]),
        "test_source": _join_unique(runs_meta["test_source"]),
        "data_notes": _notes(runs_meta["data_notes"]),
    }


def summary_table(long: pd.DataFrame, *, average: bool = True) -> pd.DataFrame:
    """Per task x eval set x metric x N: both variants' mean/std/n_seeds and the paired Δ.

    With ``average``, add per N the GLUE average (task="average", eval_set="all",
    metric="score"): per seed, the mean over tasks of the task score (the selection
    ``score``; MNLI = mean of matched and mismatched), using only the seeds that have every
    task for the variant; tasks are those present for both variants at that N.

    When ``long`` has the column ``constant_predictions``, add ``bert_constant_runs`` /
    ``raft_constant_runs`` (`constant_runs`: the row's runs of each arm whose predictions were
    constant; for a GLUE-average row, the task runs at that N it is built from)."""
    rows = []
    if long.empty:
        return pd.DataFrame(columns=SUMMARY_COLUMNS)
    flagged = "constant_predictions" in long.columns
    labelled = SETTINGS_COLUMN in long.columns
    for (task, eval_set, metric, n), g in long.groupby(["task", "eval_set", "metric", "n"], sort=False):
        b_all, r_all = g[g["variant"] == "bert"], g[g["variant"] == "raft"]
        for bmode, rmode in _mode_pairs(sorted(b_all["mode"].unique()), sorted(r_all["mode"].unique())):
            b = b_all[b_all["mode"] == bmode] if bmode else b_all.iloc[0:0]
            r = r_all[r_all["mode"] == rmode] if rmode else r_all.iloc[0:0]
            meta = pd.concat([b, r])
            row = _summary_row({"task": task, "eval_set": eval_set, "metric": metric, "n": n},
                               b, r, bmode, rmode, meta)
            if flagged:
                row.update(bert_constant_runs=constant_runs(b), raft_constant_runs=constant_runs(r))
            if labelled:
                row.update(bert_settings=_join_unique(b[SETTINGS_COLUMN]), raft_settings=_join_unique(r[SETTINGS_COLUMN]))
            rows.append(row)
    if average:
        rows += _average_rows(long)
    columns = (SUMMARY_COLUMNS + (SUMMARY_OPTIONAL_COLUMNS if flagged else [])
               + (SUMMARY_SETTINGS_COLUMNS if labelled else []))
    df = pd.DataFrame(rows, columns=columns)
    return _sort(df, ["task", "n", "eval_set", "metric", "bert_mode", "raft_mode"])


def _average_rows(long: pd.DataFrame) -> list[dict]:
    sc = long[long["metric"] == "score"]
    rows = []
    for n, g in sc.groupby("n", sort=False):
        # task score per run: mean over eval sets (MNLI matched / mismatched)
        per_task = (g.groupby(["variant", "mode", "task", "seed"], sort=True)["value"].mean()
                    .reset_index())
        b_all, r_all = per_task[per_task["variant"] == "bert"], per_task[per_task["variant"] == "raft"]
        for bmode, rmode in _mode_pairs(sorted(b_all["mode"].unique()), sorted(r_all["mode"].unique())):
            b = b_all[b_all["mode"] == bmode] if bmode else b_all.iloc[0:0]
            r = r_all[r_all["mode"] == rmode] if rmode else r_all.iloc[0:0]
            if len(b) and len(r):
                tasks = sorted(set(b["task"]) & set(r["task"]), key=task_key)
            else:
                tasks = sorted(set(b["task"]) | set(r["task"]), key=task_key)
            if len(tasks) < 2:
                continue
            arms = []
            for arm in (b, r):
                arm = arm[arm["task"].isin(tasks)]
                counts = arm.groupby("seed")["task"].nunique()
                complete = [s for s, c in counts.items() if c == len(tasks)]
                avg = (arm[arm["seed"].isin(complete)].groupby("seed")["value"].mean().reset_index())
                arms.append((avg, counts))
            (bavg, bcounts), (ravg, rcounts) = arms
            tp = long[(long["n"] == n) & long["task"].isin(tasks)]
            meta = tp[((tp["variant"] == "bert") & (tp["mode"] == (bmode or "")))
                      | ((tp["variant"] == "raft") & (tp["mode"] == (rmode or "")))]
            for avg, params_src in ((bavg, "bert"), (ravg, "raft")):
                src = meta[meta["variant"] == params_src]
                avg["trainable_parameters"] = _params(src["trainable_parameters"])
            note = f"average over {len(tasks)} tasks: " + ", ".join(TASK_LABELS.get(t, t) for t in tasks)
            dropped = sorted((set(bcounts.index) - set(bavg["seed"])) | (set(rcounts.index) - set(ravg["seed"])),
                             key=seed_key)
            if dropped:
                note += "; seeds without every task left out: " + ", ".join(str(s) for s in dropped)
            row = _summary_row({"task": "average", "eval_set": "all", "metric": "score", "n": n},
                               bavg, ravg, bmode, rmode, meta)
            row["data_notes"] = _notes([note, row["data_notes"]])
            if "constant_predictions" in meta.columns:  # the task runs the average rests on
                row.update(bert_constant_runs=constant_runs(meta[meta["variant"] == "bert"]),
                           raft_constant_runs=constant_runs(meta[meta["variant"] == "raft"]))
            if SETTINGS_COLUMN in meta.columns:
                row.update(bert_settings=_join_unique(meta.loc[meta["variant"] == "bert", SETTINGS_COLUMN]),
                           raft_settings=_join_unique(meta.loc[meta["variant"] == "raft", SETTINGS_COLUMN]))
            rows.append(row)
    return rows


# ------------------------------------------------------------------ one study's tables
def study_tables(results: str | os.PathLike, study: str,
                 files: list[Path] | None = None) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """(runs, long, summary) of one study from its result files (``files``, default
    `record_files`); the zero-shot tables get the ``ZEROSHOT_COLUMNS`` (`zeroshot_columns`)."""
    return tables_of(select_candidates(load_runs(results, study, files))[0], study)


def tables_of(runs: pd.DataFrame, study: str) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """`study_tables` of runs already loaded and reduced to the searches' chosen candidates."""
    check_cells(runs, study)
    long = long_table(runs)
    summary = summary_table(long, average=STUDIES[study][3])
    if study == "zeroshot":
        long, summary = zeroshot_columns(runs, long, summary)
    return runs, long, summary


def zeroshot_columns(runs: pd.DataFrame, long: pd.DataFrame,
                     summary: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """``ZEROSHOT_COLUMNS`` after ``LONG_COLUMNS`` / ``SUMMARY_COLUMNS`` (before the optional
    columns): per run in the long table; per summary row, the row's task x N (its source tasks
    joined, substitute when any of its runs is, window_from_source when all of its runs are)."""
    by_file = runs.set_index("source_file") if len(runs) else None
    long = long.copy()
    for c in ZEROSHOT_COLUMNS:
        long[c] = long["source_file"].map(by_file[c]) if by_file is not None else pd.Series(dtype=object)
    groups = dict(list(long.groupby(["task", "n"], sort=False))) if len(long) else {}
    summary = summary.copy()
    keys = list(zip(summary["task"], summary["n"]))
    summary["source_task"] = [_join_unique(groups[k]["source_task"]) for k in keys]
    summary["substitute"] = [bool(groups[k]["substitute"].astype(bool).any()) for k in keys]
    summary["window_from_source"] = [bool(groups[k]["window_from_source"].astype(bool).all()) for k in keys]

    def order(df, base, optional):
        return df[base + ZEROSHOT_COLUMNS + [c for c in optional if c in df.columns]]

    return (order(long, LONG_COLUMNS, LONG_OPTIONAL_COLUMNS + [SETTINGS_COLUMN]),
            order(summary, SUMMARY_COLUMNS, SUMMARY_OPTIONAL_COLUMNS + SUMMARY_SETTINGS_COLUMNS))


# ------------------------------------------------------------------ pretraining
def load_pretrain(results: str | os.PathLike = "results", files: list[Path] | None = None) -> pd.DataFrame:
    """One row per pretraining record (``files``, default `record_files`)."""
    results = Path(results)
    rows = []
    for path in record_files(results, "pretrain") if files is None else files:
        m = _read_json(path)
        if not isinstance(m, dict):
            continue
        data = m.get("data") or {}
        rows.append({
            "variant": str(m.get("variant", path.parent.name)),
            "seed": m.get("seed"),
            "steps": m.get("steps"),
            "tokens_seen": m.get("tokens_seen"),
            "eval_loss": m.get("eval_loss"),
            "perplexity": m.get("perplexity"),
            "wall_time_s": m.get("wall_time_s"),
            "tokens_per_s": m.get("tokens_per_s"),
            "device": m.get("device"),
            "data_source": data.get("source"),
            "train_sequences": data.get("train_sequences"),
            "validation_sequences": data.get("validation_sequences"),
            "source_file": _rel(path, results.parent if results.name else results),
        })
    df = pd.DataFrame(rows, columns=PRETRAIN_COLUMNS)
    return _sort(df, ["variant", "seed"])


def load_pretrain_log(results: str | os.PathLike = "results") -> pd.DataFrame:
    """All variants' log.csv stacked (columns variant, step, tokens, loss, lr, val_loss,
    val_perplexity); empty validation cells become NaN."""
    cols = ["variant", "step", "tokens", "loss", "lr", "val_loss", "val_perplexity"]
    parts = []
    for path in (p.parent / "log.csv" for p in record_files(results, "pretrain")):
        try:
            df = pd.read_csv(path)
        except (OSError, pd.errors.EmptyDataError, pd.errors.ParserError):
            continue
        df.insert(0, "variant", path.parent.name)
        parts.append(df)
    if not parts:
        return pd.DataFrame(columns=cols)
    df = pd.concat(parts, ignore_index=True)
    for c in cols[1:]:
        if c not in df.columns:
            df[c] = np.nan
        df[c] = pd.to_numeric(df[c], errors="coerce")
    return _sort(df[cols], ["variant"])


def load_rational_snapshots(results: str | os.PathLike = "results", variant: str = "raft") -> list[dict]:
    """rationals.jsonl of one pretraining run: ``[{"step": int, "rationals": {...}}]`` by step."""
    path = Path(results) / "pretrain" / variant / "rationals.jsonl"
    snaps = []
    if path.is_file():
        with open(path) as f:
            for line in f:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(rec, dict) and isinstance(rec.get("rationals"), dict):
                    snaps.append({"step": int(rec.get("step", 0)), "rationals": rec["rationals"]})
    snaps.sort(key=lambda r: r["step"])
    return snaps


def pretrained_rationals(results: str | os.PathLike = "results", variant: str = "raft") -> dict:
    """The RAF coefficients at the end of pretraining: ``metrics.json`` ``rationals`` if it
    has them, else the last snapshot of ``rationals.jsonl``; ``{}`` if neither exists."""
    m = _read_json(Path(results) / "pretrain" / variant / "metrics.json")
    if isinstance(m, dict) and isinstance(m.get("rationals"), dict) and all(
            isinstance(v, dict) and "numerator" in v for v in m["rationals"].values()) and m["rationals"]:
        return m["rationals"]
    snaps = load_rational_snapshots(results, variant)
    return snaps[-1]["rationals"] if snaps else {}


def pretrain_init(results: str | os.PathLike = "results", variant: str = "raft") -> tuple[str, dict]:
    """(label, coefficients) of the RAF initialisation of a pretraining run: metrics.json
    ``rational.init`` (a name in raft/inits.json, or explicit coefficients) with
    ``rational.degrees``; else the step-0 snapshot of rationals.jsonl; else "gelu"."""
    from raft.analysis import shapes

    m = _read_json(Path(results) / "pretrain" / variant / "metrics.json")
    r = m.get("rational") if isinstance(m, dict) else None
    r = r if isinstance(r, dict) else {}
    init = r.get("init", r.get("rational_init"))
    degrees = r.get("degrees", r.get("rational_degrees", (5, 4)))
    try:
        if isinstance(init, dict) and "numerator" in init:
            return "init (rational)", {"numerator": list(init["numerator"]),
                                       "denominator": list(init["denominator"])}
        if isinstance(init, str):
            return f"{init} init (rational)", shapes.init_coefficients(init, degrees)
    except (ValueError, TypeError, KeyError):
        pass
    snaps = load_rational_snapshots(results, variant)
    if snaps and snaps[0]["step"] == 0:
        first = next(iter(snaps[0]["rationals"].values()))
        return "initialisation (step 0)", first
    return "gelu init (rational)", shapes.init_coefficients("gelu", (5, 4))


# ------------------------------------------------------------------ writing
def write_csv(df: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    out = df.copy()
    for c in out.columns:
        if c in INT_COLUMNS:
            num = pd.to_numeric(out[c], errors="coerce")
            if num.notna().any() and (num.dropna() == num.dropna().round()).all():
                out[c] = num.round().astype("Int64")
                continue
        if out[c].dtype == bool:
            out[c] = out[c].map({True: "true", False: "false"})
        elif out[c].dtype == object:
            out[c] = out[c].map(lambda v: "true" if v is True else "false" if v is False else v)
    _write_text(path, out.to_csv(index=False, float_format=FLOAT_FORMAT, na_rep="", lineterminator="\n"))


def _write_text(path: Path, text: str) -> Path:
    """``text`` to ``path`` through a temporary file (removed when the write fails)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        tmp.write_text(text)
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        exc.filename = exc.filename or str(path)
        raise
    return path


def aggregate(results: str | os.PathLike = "results", output: str | os.PathLike | None = None,
              records: dict[str, list[str]] | None = None) -> dict[str, Path]:
    """Every table in ``output`` (default ``<results>/tables``) and the manifest of the records
    they hold (``records.json``: ``{"records": {study: [path relative to results]},
    "ignored": {study: count}}``, read back by `record_files`). ``records``: the records of
    the study by study, paths relative to ``results`` (`raft.layout.study_records` less its
    ``results/``); the others found under ``results`` are ignored and counted (one line on
    stderr). Without it every record found is read."""
    results = Path(results)
    output = Path(output) if output is not None else results / "tables"
    found = {study: found_records(results, study) for study in ("pretrain", *STUDIES)}
    if records is None:
        records = {study: [_rel(p, results) for p in paths] for study, paths in found.items()}
    listed = {study: {results / p for p in records.get(study, [])} for study in found}
    ignored = {study: len(set(paths) - listed[study]) for study, paths in found.items()}
    if sum(ignored.values()):
        detail = ", ".join(f"{study}: {k}" for study, k in ignored.items() if k)
        print(f"raft aggregate: {sum(ignored.values())} records of other configs ignored ({detail}); "
              f"the tables hold the {sum(map(len, listed.values()))} records of this one", file=sys.stderr)
    manifest = {"records": {study: list(records.get(study, [])) for study in found}, "ignored": ignored}
    # read every result file before writing anything: a broken one (ResultFileError) or a table
    # cell of mixed settings (MixedSettingsError) leaves no partial set of tables behind
    files = {study: sorted(paths) for study, paths in listed.items()}
    tables = {"pretrain": (output / "pretrain.csv", load_pretrain(results, files["pretrain"]))}
    for study, (_, long_name, summary_name, _) in STUDIES.items():
        chosen, selection = select_candidates(load_runs(results, study, files[study]))
        _, long, summary = tables_of(chosen, study)
        tables[study] = (output / long_name, long)
        tables[f"{study}_summary"] = (output / summary_name, summary)
        if study in SEARCH_STUDIES:
            tables[f"{study}_selection"] = (output / f"{study}_selection.csv", selection)
    written: dict[str, Path] = {}
    for name, (path, df) in tables.items():
        write_csv(df, path)
        written[name] = path
    written["manifest"] = _write_text(output / MANIFEST, json.dumps(manifest, indent=1) + "\n")
    return written


def add_arguments(parser) -> None:
    parser.add_argument("--results", default="results", help="results directory (default: results)")
    parser.add_argument("--output", default=None, help="output directory (default: <results>/tables)")
    parser.add_argument("--study-config", default=None, metavar="JSON",
                        help="the workflow's checked config and its zero-shot targets, as JSON "
                             '({"config": ..., "zeroshot": [...]}): the tables read exactly its records '
                             "(raft.layout.study_records); other records under --results are ignored and "
                             "counted (default: every record found)")


def study_config_records(text: str) -> dict[str, list[str]]:
    """``--study-config`` -> the study's records, relative to the results folder."""
    from raft import layout

    spec = json.loads(text)
    records = layout.study_records(spec["config"], spec.get("zeroshot") or [])
    prefix = layout.RESULTS + "/"
    return {study: [p[len(prefix):] if p.startswith(prefix) else p for p in paths]
            for study, paths in records.items()}


def main(args) -> int:
    try:
        records = study_config_records(args.study_config) if args.study_config else None
        written = aggregate(args.results, args.output, records)
    except (ResultFileError, MixedSettingsError) as exc:
        print(f"raft aggregate: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
        from raft.train.runtime import disk_full_message  # (imports torch: only on this path)

        print(f"raft aggregate: error: {disk_full_message(exc.filename)}", file=sys.stderr)
        return 2
    for name, path in written.items():
        print(f"{name}: {path}")
    return 0
