"""Display helpers for the result notebooks: formatted tables with data-quality marks, and
figure saving/embedding.

Every number shown comes from the result files through ``raft.analysis.aggregate``; the
notebooks only call these helpers and display what they return. The auto-written findings are
in ``raft.analysis.findings`` (which formats with the helpers here).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from raft.analysis import aggregate as agg
from raft.analysis import shapes

# Display scale per study: GLUE metrics are fractions (raft/data/metrics.py) -> shown x 100
# like the paper; SQuAD EM/F1 are already percent.
SCALE = {"glue": 100.0, "glue_efficient": 100.0, "squad": 1.0}
PARTIAL_MARK = "†"
HELDOUT_MARK = "‡"
CONSTANT_MARK = "§"  # a cell resting on runs that predicted one class for every test example


# ------------------------------------------------------------------ loading
def load_study(results_dir, study: str):
    """(runs, long, summary) of one study, built from the metrics.json files as `raft aggregate`
    builds its tables (`aggregate.study_tables`: the searches' chosen candidates only)."""
    return agg.study_tables(results_dir, study)


def selection_display(results_dir, study: str) -> pd.DataFrame:
    """The searches of a study (`aggregate.select_candidates`) for reading: a row per task, N,
    variant (and mode): the chosen candidate, then each candidate's mean ± std dev score over its
    seeds (× the study's scale; the chosen one marked *). Empty when nothing was searched."""
    _, selection = agg.select_candidates(agg.load_runs(results_dir, study))
    scale, rows = SCALE.get(study, 1.0), []
    for key, g in selection.groupby(["task", "n", "variant", "mode"], sort=False):
        row = {"task": task_label(key[0], ""), "N": key[1], "variant": agg.VARIANT_LABELS.get(key[2], key[2])}
        if key[3] != "full":
            row["mode"] = key[3]
        row["chosen (by dev)"] = g.loc[g["chosen"], "candidate"].iloc[0].replace(",", ", ")
        for r in g.itertuples(index=False):
            row[r.candidate.replace(",", ", ")] = (f"{fmt(r.dev_mean * scale)} ± {fmt(r.dev_std * scale)}"
                                                   f" ({r.n_seeds}){' *' if r.chosen else ''}")
        rows.append(row)
    return pd.DataFrame(rows).fillna("")


def show_selection(results_dir, study: str):
    """Display `selection_display`, or a line saying that no setting was searched."""
    from IPython.display import HTML, Markdown, display

    table = selection_display(results_dir, study)
    if table.empty:
        display(Markdown("_No setting was searched in this study: every run used the configured values._"))
        return
    display(HTML(html_table(table)))


# ------------------------------------------------------------------ formatting
def fmt(v, digits: int = 2, signed: bool = False) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:+.{digits}f}" if signed else f"{v:.{digits}f}"


def fmt_p(p) -> str:
    if p is None or (isinstance(p, float) and math.isnan(p)):
        return "–"
    return "< 0.001" if p < 0.001 else f"{p:.3f}"


def fmt_int(v) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{int(round(v)):,}"


def marks(row) -> str:
    m = ""
    train = str(getattr(row, "train_source", "") or "")
    test = str(getattr(row, "test_source", "") or "")
    if bool(getattr(row, "partial_data", False)) or "local-subset" in train.split(";"):
        m += PARTIAL_MARK
    if "held-out" in test.split(";"):
        m += HELDOUT_MARK
    return m


def _count(v) -> int:
    """A summary count (``bert_constant_runs`` ...) as an int; 0 when missing / NaN."""
    try:
        f = float(v)
    except (TypeError, ValueError):
        return 0
    return int(f) if math.isfinite(f) else 0


def constant_marks(row, arm: str | None = None) -> str:
    """``CONSTANT_MARK`` when the row's runs of ``arm`` ("bert" / "raft"; None: either) include
    runs whose predictions were constant (summary ``bert_constant_runs`` / ``raft_constant_runs``,
    present when the result files record ``constant_predictions``)."""
    arms = (arm,) if arm else ("bert", "raft")
    return CONSTANT_MARK if any(_count(getattr(row, f"{a}_constant_runs", None)) for a in arms) else ""


# eval sets shown next to the task's name (MNLI; TriviaQA's SQuAD-style scores -- its own is plain "TriviaQA")
EVAL_SET_LABELS = {"matched": "{}-m", "mismatched": "{}-mm", "all_pairs": "{} all pairs (SQuAD EM/F1)",
                   "has_ans": "{} HasAns (SQuAD EM/F1)"}


def task_label(task: str, eval_set: str) -> str:
    if task == "average":
        return agg.TASK_LABELS["average"]
    label = agg.TASK_LABELS.get(task, task)
    return EVAL_SET_LABELS.get(eval_set, "{}").format(label)


def display_rows(summary: pd.DataFrame, n, study: str, *, paper_only: bool = True) -> pd.DataFrame:
    """The rows of one N shown in a table: the paper's metric(s) per task (+ the average)."""
    d = summary[summary["n"] == str(n)]
    if paper_only:
        keep = [(t == "average") or (m in agg.paper_metrics(t)) for t, m in zip(d["task"], d["metric"])]
        d = d[keep]
    return d.reset_index(drop=True)


def _text(value) -> str:
    """A table cell as text: NaN / None (an empty CSV cell) -> ""."""
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def format_table(summary: pd.DataFrame, n, study: str, *, paper_only: bool = True,
                 show_params: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """String table for one N (rows: task x metric) and its footnotes. Marks: † partial data,
    ‡ held-out test substitute (whole row), § constant predictions (the arm's cell whose runs
    include constant ones, and the task label and Δ)."""
    scale = SCALE.get(study, 1.0)
    d = display_rows(summary, n, study, paper_only=paper_only)
    bert_col, raft_col = ("BERT bias+head", "RAFT RAF+head") if study == "glue_efficient" \
        else ("BERT (FAFT)", "RAFT")
    rows, notes = [], []
    for r in d.itertuples(index=False):
        mk = marks(r)
        cmk = constant_marks(r)
        bert = (f"{fmt(r.bert_mean * scale)} ± {fmt(r.bert_std * scale)}{mk}{constant_marks(r, 'bert')}"
                if r.bert_n_seeds else "–")
        raft = (f"{fmt(r.raft_mean * scale)} ± {fmt(r.raft_std * scale)}{mk}{constant_marks(r, 'raft')}"
                if r.raft_n_seeds else "–")
        delta = "–"
        if not math.isnan(r.delta):
            delta = fmt(r.delta * scale, signed=True)
            if not math.isnan(r.ci_low):
                delta += f" [{fmt(r.ci_low * scale, signed=True)}, {fmt(r.ci_high * scale, signed=True)}]"
            delta += mk + cmk
        row = {
            "task": task_label(r.task, r.eval_set) + mk + cmk,
            "metric": r.metric,
            bert_col: bert,
            raft_col: raft,
            "Δ RAFT − BERT [95 % CI]": delta,
            "p (paired t)": fmt_p(r.p_ttest),
            "p (Wilcoxon)": fmt_p(r.p_wilcoxon),
            "verdict": r.verdict,
            "seeds (BERT/RAFT/paired)": f"{r.bert_n_seeds}/{r.raft_n_seeds}/{r.n_paired}",
        }
        if show_params:
            row["trainable params (BERT/RAFT)"] = (f"{fmt_int(r.bert_trainable_parameters)} / "
                                                   f"{fmt_int(r.raft_trainable_parameters)}")
        settings = [_text(getattr(r, f"{arm}_settings", "")) for arm in agg.VARIANTS]
        if any(settings):  # the settings that differ between the study's cells (aggregate.settings_labels)
            row["settings (BERT / RAFT)"] = " / ".join(v.replace(";", ", ") or "–" for v in settings)
        modes = {m for m in (r.bert_mode, r.raft_mode) if m}
        if study != "glue_efficient" and modes - {"full"}:
            row["modes (BERT/RAFT)"] = f"{r.bert_mode or '–'} / {r.raft_mode or '–'}"
        rows.append(row)
        if mk and r.data_notes:
            note = f"{task_label(r.task, r.eval_set)}{mk}: {r.data_notes}"
            if note not in notes:
                notes.append(note)
        elif r.task == "average" and r.data_notes:
            note = f"{agg.TASK_LABELS['average']}: {r.data_notes}"
            if note not in notes:
                notes.append(note)
        if cmk:
            note = f"{task_label(r.task, r.eval_set)}{CONSTANT_MARK}: {_constant_counts(r, study)}"
            if note not in notes:
                notes.append(note)
    table = pd.DataFrame(rows)
    for column in ("modes (BERT/RAFT)", "settings (BERT / RAFT)"):
        if not table.empty and column in table.columns:
            table[column] = table[column].fillna("")
    foot = []
    if any(PARTIAL_MARK in m for m in (marks(r) for r in d.itertuples(index=False))):
        foot.append(f"{PARTIAL_MARK} built on a local subset of the data (metrics.json `partial_data` / "
                    "`sources.train` = local-subset): not comparable with the paper's numbers.")
    if any(HELDOUT_MARK in m for m in (marks(r) for r in d.itertuples(index=False))):
        foot.append(f"{HELDOUT_MARK} evaluated on a held-out substitute for the official test set "
                    "(metrics.json `sources.test` = held-out).")
    if any(constant_marks(r) for r in d.itertuples(index=False)):
        foot.append(f"{CONSTANT_MARK} rests on runs whose predictions were constant: the model gave every test "
                    f"example the same label (metrics.json `constant_predictions`): {CONSTANT_MEANING}")
    return table, foot + notes


def html_table(table: pd.DataFrame) -> str:
    if table.empty:
        return "<p><em>no rows</em></p>"
    return table.to_html(index=False, border=0, classes="raft-table", escape=True)


def show_tables(summary: pd.DataFrame, study: str, *, paper_only: bool = True, show_params: bool = False):
    """Display one table per N (heading, table, footnotes)."""
    from IPython.display import HTML, Markdown, display

    if summary.empty:
        display(Markdown(f"_No results found for this study (`{study}`)._"))
        return
    unit = " (values × 100)" if SCALE.get(study, 1.0) == 100 else ""
    for n in sorted(summary["n"].unique(), key=agg.n_key):
        table, foot = format_table(summary, n, study, paper_only=paper_only, show_params=show_params)
        display(Markdown(f"### N = {n}{unit}"))
        display(HTML(html_table(table)))
        if foot:
            display(Markdown("\n".join(f"- {f}" for f in foot)))


# ------------------------------------------------------------------ figures
def show_figure(fig, figures_dir, name: str):
    """Save ``fig`` as ``figures_dir/name.png`` (byte-stable: Agg, fixed dpi, no timestamp
    metadata) and display exactly that file. Does nothing for ``fig is None``."""
    import matplotlib.pyplot as plt
    from IPython.display import Image, display

    if fig is None:
        return None
    path = Path(figures_dir) / f"{name}.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png", dpi=fig.dpi, bbox_inches="tight", metadata={"Software": None})
    plt.close(fig)
    display(Image(filename=str(path)))
    return None


def show_markdown(text: str):
    from IPython.display import Markdown, display

    display(Markdown(text))


# ------------------------------------------------------------------ constant predictions
CONSTANT_MEANING = ("these scores measure the class balance of the test set (accuracy = the share of the "
                    "predicted class, MCC = 0), not the model; Δ and verdicts on them say nothing about the "
                    "activation function.")


def _arm_names(study: str) -> dict[str, str]:
    return ({"bert": "BERT bias+head", "raft": "RAFT RAF+head"} if study == "glue_efficient"
            else {"bert": "BERT", "raft": "RAFT"})


def _constant_bits(r, study: str) -> list[str]:
    """Per arm with constant runs: '3 of 3 BERT runs' (a task row) or '3 BERT task runs' (a
    GLUE-average row: the averaged task runs that had constant predictions)."""
    names = _arm_names(study)
    bits = []
    for arm in ("bert", "raft"):
        k = _count(getattr(r, f"{arm}_constant_runs", None))
        if not k:
            continue
        name = names[arm]
        mode = str(getattr(r, f"{arm}_mode", "") or "")
        if study != "glue_efficient" and mode not in ("", "full"):
            name += f" [{mode}]"
        if r.task == "average":
            bits.append(f"{k} {name} task run{'s' if k != 1 else ''}")
        else:
            total = _count(getattr(r, f"{arm}_n_seeds", None))
            bits.append(f"{k} of {total} {name} run{'s' if total != 1 else ''}")
    return bits


def _constant_counts(r, study: str) -> str:
    """'3 of 3 BERT runs and 1 of 3 RAFT runs predicted one class for every test example'."""
    bits = _and(_constant_bits(r, study))
    if r.task == "average":
        return f"includes {bits} that predicted one class for every test example"
    return f"{bits} predicted one class for every test example"


def constant_rows(summary: pd.DataFrame) -> pd.DataFrame:
    """Summary rows (one per task x N x mode pair, the selection ``score`` row of the first eval
    set; GLUE-average rows included) whose runs include constant predictions."""
    if summary.empty or not set(agg.SUMMARY_OPTIONAL_COLUMNS) <= set(summary.columns):
        return summary.iloc[0:0]
    keep = [bool(constant_marks(r)) and r.metric == "score" for r in summary.itertuples(index=False)]
    d = summary[keep]
    return d.drop_duplicates(subset=["task", "n", "bert_mode", "raft_mode"], keep="first")


# ------------------------------------------------------------------ pretraining
def pretrain_table(pre: pd.DataFrame) -> pd.DataFrame:
    if pre.empty:
        return pre
    out = pd.DataFrame({
        "variant": [agg.VARIANT_LABELS.get(v, v) for v in pre["variant"]],
        "validation perplexity": [fmt(v, 3) for v in pre["perplexity"]],
        "validation MLM loss": [fmt(v, 4) for v in pre["eval_loss"]],
        "steps": [fmt_int(v) for v in pre["steps"]],
        "tokens seen": [fmt_int(v) for v in pre["tokens_seen"]],
        "wall time (h)": [fmt(v / 3600 if v is not None else math.nan, 2) for v in pre["wall_time_s"]],
        "tokens/s": [fmt_int(v) for v in pre["tokens_per_s"]],
        "device": [str(v) for v in pre["device"]],
        "corpus source": [str(v) for v in pre["data_source"]],
        "train sequences": [fmt_int(v) for v in pre["train_sequences"]],
    })
    return out


# ------------------------------------------------------------------ shapes
def amplitude_table(rafs: Mapping[str, Mapping], x=None) -> pd.DataFrame:
    x = shapes.grid() if x is None else x
    rows = []
    for name in shapes.sorted_layers(rafs):
        y = shapes.evaluate(rafs[name], x)
        rows.append({"layer": name, "max_abs_F": float(np.max(np.abs(y))), "F_min": float(y.min()),
                     "F_max": float(y.max())})
    return pd.DataFrame(rows, columns=["layer", "max_abs_F", "F_min", "F_max"])


def closest_display(table: pd.DataFrame) -> pd.DataFrame:
    if table.empty:
        return table
    return pd.DataFrame({
        "RAF": [shapes.layer_label(v) for v in table["layer"]],
        "closest activation": table["closest"],
        "fit: γ·g(α x + β) + δ": [f"α={fmt(a, 3)}, β={fmt(b, 3)}, γ={fmt(g, 3)}, δ={fmt(d, 3)}"
                                   for a, b, g, d in zip(table["alpha"], table["beta"], table["gamma"],
                                                         table["delta"])],
        "RMSE on [-4, 4]": [fmt(v, 4) for v in table["rmse"]],
        "max |error|": [fmt(v, 4) for v in table["max_abs_error"]],
        "RMSE / range": [fmt(v, 3) for v in table["rel_error"]],
        "runner-up (RMSE)": [f"{a} ({fmt(b, 4)})" for a, b in zip(table["runner_up"], table["runner_up_rmse"])],
    })


def finetuned_closest(runs: pd.DataFrame, x=None) -> pd.DataFrame:
    """Closest standard activation of the seed-mean fine-tuned curve per task x N x layer."""
    x = shapes.grid() if x is None else x
    rows = []
    with_r = runs[runs["rationals"].map(bool).astype(bool)]
    for (task, n), g in with_r.groupby(["task", "n"], sort=False):
        curves = shapes.mean_curves(list(g["rationals"]), x)
        for name, y in curves.items():
            rows.append({"task": task, "n": n, "layer": name, **shapes.closest_for_curve(y, x)})
    df = pd.DataFrame(rows, columns=["task", "n", "layer", *shapes.CLOSEST_COLUMNS])
    if df.empty:
        return df
    df["__l"] = [shapes.layer_sort_key(v) for v in df["layer"]]
    df = agg._sort(df, ["n", "task", "__l"]).drop(columns="__l")
    return df


def finetuned_closest_pivot(fc: pd.DataFrame, n) -> pd.DataFrame:
    d = fc[fc["n"] == str(n)]
    if d.empty:
        return d
    tasks = sorted(d["task"].unique(), key=agg.task_key)
    layers = shapes.sorted_layers(d["layer"])
    cell = {(r.layer, r.task): f"{r.closest} ({fmt(r.rmse, 3)})" for r in d.itertuples(index=False)}
    return pd.DataFrame([[cell.get((lay, t), "–") for t in tasks] for lay in layers],
                        index=[shapes.layer_label(v) for v in layers],
                        columns=[agg.TASK_LABELS.get(t, t) for t in tasks])


def movement_summary(movement: pd.DataFrame) -> pd.DataFrame:
    """Mean over seeds of the fine-tuning movement per N x task x layer (+ number of seeds)."""
    if movement.empty:
        return pd.DataFrame(columns=["n", "task", "layer", "distance", "n_seeds"])
    g = movement.groupby(["n", "task", "layer"], sort=False)["distance"]
    df = pd.concat([g.mean(), g.count().rename("n_seeds")], axis=1).reset_index()
    df["__l"] = [shapes.layer_sort_key(v) for v in df["layer"]]
    return agg._sort(df, ["n", "task", "__l"]).drop(columns="__l").reset_index(drop=True)


# ------------------------------------------------------------------ notebook-level helpers
def show_table(df: pd.DataFrame, *, index: bool = False, empty: str = "no rows"):
    from IPython.display import HTML, display

    if df is None or df.empty:
        display(HTML(f"<p><em>{empty}</em></p>"))
        return
    display(HTML(df.to_html(index=index, border=0, classes="raft-table", escape=True)))


def show_finetuned_grids(runs: pd.DataFrame, pretrained: Mapping, figures_dir):
    """One grid per task: fine-tuned RAFs (all N) against the pretrained ones."""
    from raft.analysis import plots

    tasks = sorted({t for t, r in zip(runs["task"], runs["rationals"]) if r}, key=agg.task_key)
    if not tasks:
        show_markdown("_No fine-tuned RAFT coefficients found._")
    for task in tasks:
        show_markdown(f"### {agg.TASK_LABELS.get(task, task)}")
        show_figure(plots.finetuned_task_grid(task, runs, pretrained), figures_dir, f"finetuned_{task}")


def show_task_overlays(runs: pd.DataFrame, pretrained: Mapping, figures_dir):
    from raft.analysis import plots

    ns = sorted({n for n, r in zip(runs["n"], runs["rationals"]) if r}, key=agg.n_key)
    if not ns:
        show_markdown("_No fine-tuned RAFT coefficients found._")
    for n in ns:
        show_markdown(f"### N = {n}")
        show_figure(plots.tasks_overlay(runs, pretrained, n), figures_dir, f"tasks_n{n}")


def show_finetuned_closest(fc: pd.DataFrame):
    if fc.empty:
        show_markdown("_No fine-tuned RAFT coefficients found._")
        return
    for n in sorted(fc["n"].unique(), key=agg.n_key):
        show_markdown(f"### N = {n}: closest activation of the seed-mean curve (fit RMSE)")
        show_table(finetuned_closest_pivot(fc, n), index=True)


# ------------------------------------------------------------------ SQuAD windows
SQUAD_WINDOW_COLUMNS = [
    "variant", "n", "runs", "seeds", "max_seq_length", "doc_stride", "seeds_agree", "settings",
    "pretrain_seq_len", "max_position_embeddings",
]


def _int_or_none(v) -> int | None:
    if v is None or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return int(f) if math.isfinite(f) and f == int(f) else None


def _and(items) -> str:
    items = [str(i) for i in items]
    if len(items) <= 1:
        return "".join(items)
    return ", ".join(items[:-1]) + " and " + items[-1]


def _seed_list(seeds) -> list[str]:
    return [str(x if _int_or_none(x) is None else _int_or_none(x)) for x in sorted(seeds, key=agg.seed_key)]


def _seeds_text(seeds) -> str:
    s = _seed_list(seeds)
    return f"seed{'s' if len(s) != 1 else ''} {', '.join(s)}"


def _setting_text(window, stride) -> str:
    w = f"{window} tokens" if window is not None else "window not recorded"
    return w + (f", doc_stride {stride}" if stride is not None else ", doc_stride not recorded")


def pretrain_lengths(results_dir) -> dict[str, dict]:
    """variant -> ``{"seq_len", "max_position_embeddings"}`` of its pretraining run, from
    ``results/pretrain/*/metrics.json`` (``data.seq_len``, else ``model.seq_len``;
    ``model.max_position_embeddings``); None where not recorded."""
    out: dict[str, dict] = {}
    root = Path(results_dir) / "pretrain"
    if not root.is_dir():
        return out
    for path in sorted(root.glob("*/metrics.json")):
        m = agg._read_json(path)
        if not isinstance(m, dict):
            continue
        data = m.get("data") if isinstance(m.get("data"), dict) else {}
        model = m.get("model") if isinstance(m.get("model"), dict) else {}
        seq_len = _int_or_none(data.get("seq_len"))
        out[str(m.get("variant", path.parent.name))] = {
            "seq_len": seq_len if seq_len is not None else _int_or_none(model.get("seq_len")),
            "max_position_embeddings": _int_or_none(model.get("max_position_embeddings")),
        }
    return out


def squad_windows(results_dir, runs: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per variant x N: the windows the SQuAD fine-tuning runs used (metrics.json
    ``hyperparameters.max_seq_length`` / ``doc_stride``) and the variant's pretraining
    sequence length and position count (``pretrain_lengths``).

    Columns ``SQUAD_WINDOW_COLUMNS``: ``max_seq_length`` / ``doc_stride`` are the sorted
    distinct recorded values over the runs (one each when the seeds agree, empty when not
    recorded); ``seeds_agree`` is False when runs differ in (window, stride); ``settings``
    says which seeds used which; ``pretrain_seq_len`` / ``max_position_embeddings`` are None
    without a pretraining record. ``runs``: the frame of ``agg.load_runs(results_dir, "squad")``
    when already loaded (read here when None)."""
    runs = agg.load_runs(results_dir, "squad") if runs is None else runs
    pre = pretrain_lengths(results_dir)
    rows = []
    for (variant, n), g in runs.groupby(["variant", "n"], sort=False):
        by_setting: dict[tuple, list] = {}
        for seed, hp in zip(g["seed"], g["hyperparameters"]):
            hp = hp if isinstance(hp, dict) else {}
            key = (_int_or_none(hp.get("max_seq_length")), _int_or_none(hp.get("doc_stride")))
            by_setting.setdefault(key, []).append(seed)
        order = sorted(by_setting, key=lambda k: tuple((v is None, v or 0) for v in k))
        lengths = pre.get(variant, {})
        rows.append({
            "variant": variant, "n": n, "runs": len(g),
            "seeds": ", ".join(_seed_list(g["seed"])),
            "max_seq_length": tuple(sorted({w for w, _ in by_setting if w is not None})),
            "doc_stride": tuple(sorted({s for _, s in by_setting if s is not None})),
            "seeds_agree": len(by_setting) <= 1,
            "settings": "; ".join(f"{_seeds_text(by_setting[k])}: {_setting_text(*k)}" for k in order),
            "pretrain_seq_len": lengths.get("seq_len"),
            "max_position_embeddings": lengths.get("max_position_embeddings"),
        })
    df = pd.DataFrame(rows, columns=SQUAD_WINDOW_COLUMNS)
    return agg._sort(df, ["n", "variant"])


def _values_text(values: tuple, unit: str = "") -> str:
    return _and([f"{v}" for v in values]) + unit if values else "not recorded"


def _untrained_range(row) -> str:
    L, windows = row.pretrain_seq_len, row.max_seq_length
    if L is None or (isinstance(L, float) and math.isnan(L)) or not windows:
        return "–"
    return f"{int(L)}..{max(windows) - 1}" if max(windows) > L else "none"


def squad_windows_display(table: pd.DataFrame) -> pd.DataFrame:
    """String table of ``squad_windows`` for the notebook (one row per N x variant)."""
    if table.empty:
        return pd.DataFrame()
    out = pd.DataFrame({
        "N": list(table["n"]),
        "variant": [agg.VARIANT_LABELS.get(v, v) for v in table["variant"]],
        "runs": [str(v) for v in table["runs"]],
        "window (max_seq_length)": [_values_text(w) + ("" if ok else " (seeds disagree)")
                                    for w, ok in zip(table["max_seq_length"], table["seeds_agree"])],
        "doc_stride": [_values_text(s) for s in table["doc_stride"]],
        "pretraining seq len": [fmt_int(v) for v in table["pretrain_seq_len"]],
        "position embeddings": [fmt_int(v) for v in table["max_position_embeddings"]],
        "positions never trained in pretraining": [_untrained_range(r) for r in table.itertuples(index=False)],
    })
    if not table["seeds_agree"].all():
        out["settings per seed"] = [("" if ok else s) for s, ok in zip(table["settings"], table["seeds_agree"])]
    return out


# ------------------------------------------------------------------ zero-shot transfer
SUBSTITUTE_MARK = "¶"  # scored on a stand-in for the paper's test set (metrics.json `substitute`)
SUBSTITUTE_MEANING = ("scored on the Hub's TriviaQA rc.web dev set (every web dev question with every evidence "
                      "document) because the verified web dev set the paper used was not available "
                      "(metrics.json `substitute`): not comparable with the paper's number.")
WINDOW_MARK = "∥"  # scored with another window than the fine-tuning run's (metrics.json `window_from_source`)
WINDOW_MEANING = ("scored with other windows than the model was fine-tuned with (`zeroshot.triviaqa_window`, "
                  "`raft zeroshot --override-window`; metrics.json `window_from_source: false`, its `data_notes` "
                  "name both windows), as the authors did for TriviaQA.")
# each target is shown like the study of its fine-tuning task: SNLI accuracy x 100 (GLUE), TriviaQA EM/F1 (SQuAD)
ZEROSHOT_DISPLAY = {"snli": "glue", "triviaqa": "squad"}
ZEROSHOT_SCALES = ("SNLI accuracy × 100; TriviaQA EM / F1 in percent, three scores of the same predictions "
                   "(one per question–document pair of verified web dev): **TriviaQA** = TriviaQA's own EM/F1 "
                   "(its evaluation script: every pair, the best of the answer's aliases, its normalisation; "
                   "the headline), **all pairs** = SQuAD v1.1 EM/F1 over every pair, gold \"\" where the context "
                   "holds no alias (the authors' evaluation), **HasAns** = SQuAD v1.1 EM/F1 over the pairs whose "
                   "context holds an alias, against the alias found.")


def load_zeroshot(results_dir):
    """(runs, long, summary) of the zero-shot transfer (`aggregate.study_tables`: with
    ``source_task`` and ``substitute``)."""
    return agg.study_tables(results_dir, "zeroshot")


def substitute_mark(row) -> str:
    """¶ on a substitute row, ∥ on a row scored with another window than the fine-tuning run's."""
    window = "" if bool(getattr(row, "window_from_source", True)) else WINDOW_MARK
    return (SUBSTITUTE_MARK if bool(getattr(row, "substitute", False)) else "") + window


def window_differs(summary: pd.DataFrame) -> bool:
    """Some row was scored with another window than its fine-tuning run's (older tables: none)."""
    return "window_from_source" in summary and not summary["window_from_source"].astype(bool).all()


def format_zeroshot_table(summary: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """One string table over the targets and N (`format_table` per target, with its source
    study's scale and metrics), a "fine-tuned on" column, ¶ on substitute rows and ∥ on rows scored
    with another window than the fine-tuning run's; footnotes."""
    tables, foot = [], []
    for target, study in ZEROSHOT_DISPLAY.items():
        d = summary[summary["task"] == target]
        for n in sorted(d["n"].unique(), key=agg.n_key):
            table, notes = format_table(d, n, study)
            rows = display_rows(d, n, study)
            table["task"] = [t + substitute_mark(r) for t, r in zip(table["task"], rows.itertuples(index=False))]
            table.insert(1, "fine-tuned on", [agg.TASK_LABELS.get(s, s) for s in rows["source_task"]])
            table.insert(2, "N", str(n))
            tables.append(table)
            foot += [x for x in notes if x not in foot]
    if window_differs(summary):
        foot.insert(0, f"{WINDOW_MARK} {WINDOW_MEANING}")
    if summary["substitute"].astype(bool).any():
        foot.insert(0, f"{SUBSTITUTE_MARK} {SUBSTITUTE_MEANING}")
    table = pd.concat(tables, ignore_index=True).fillna("") if tables else pd.DataFrame()
    return table, [ZEROSHOT_SCALES] + foot


def show_zeroshot(summary: pd.DataFrame):
    """Display the zero-shot table and its footnotes (a line saying so when there are no runs)."""
    from IPython.display import HTML, Markdown, display

    if summary.empty:
        display(Markdown("_No zero-shot results found (results/zeroshot/)._"))
        return
    table, foot = format_zeroshot_table(summary)
    display(HTML(html_table(table)))
    display(Markdown("\n".join(f"- {f}" for f in foot)))
