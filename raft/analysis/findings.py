"""Auto-written findings for the result notebooks: the paragraphs that say what the result files
show (per study, pretraining, RAF shapes and where they act, SQuAD fine-tuning windows,
constant predictions).

They are built from the tables of ``raft.analysis.aggregate`` / ``report`` and written with
``report``'s number formats and data-quality marks; the notebooks call them as
``report.<name>`` (``report`` forwards these names here).
"""

from __future__ import annotations

import math

import pandas as pd

from raft.analysis import aggregate as agg
from raft.analysis import preacts, shapes, stats
from raft.data import triviaqa
from raft.analysis.report import (
    CONSTANT_MARK,
    CONSTANT_MEANING,
    HELDOUT_MARK,
    PARTIAL_MARK,
    SCALE,
    _and,
    _constant_bits,
    _constant_counts,
    _int_or_none,
    _values_text,
    constant_marks,
    constant_rows,
    fmt,
    fmt_int,
    fmt_p,
    marks,
    movement_summary,
    task_label,
)

PAPER_PRETRAIN_TOKENS = 23_000 * 4_096 * 128  # the paper's budget (steps x batch x seq len)
FEW_SEEDS = 5  # below this many paired seeds, the findings say the evidence is thin
PAPER_SQUAD_WINDOWS = ("the authors' full-data comparison, the paper's +2.05 F1, set RAFT at 128 tokens "
                       "against BERT at 384")


# ------------------------------------------------------------------ constant predictions
def constant_findings(summary: pd.DataFrame, study: str) -> str | None:
    """The findings paragraph on runs whose predictions were constant (None when there are none):
    per task and N, how many runs of each arm predicted one class for every test example."""
    d = constant_rows(summary)
    if d.empty:
        return None
    items, averages = [], []
    for n in sorted(d["n"].unique(), key=agg.n_key):
        for r in d[d["n"] == n].itertuples(index=False):
            if r.task == "average":
                averages.append(f"N = {n} ({_and(_constant_bits(r, study))})")
            else:
                items.append(f"{agg.TASK_LABELS.get(r.task, r.task)} N = {n}: {_constant_counts(r, study)}")
    text = f"**⚠ Constant predictions ({CONSTANT_MARK}).** "
    if items:
        text += "; ".join(items) + f" — {CONSTANT_MEANING}"
    if averages:
        text += (f" The {agg.TASK_LABELS['average']} includes such runs at " + "; ".join(averages)
                 + f", so it is marked {CONSTANT_MARK} too.")
    return text + (f" The cells concerned are marked {CONSTANT_MARK} in the tables "
                   "(metrics.json `constant_predictions`, `distinct_predictions`).")


# ------------------------------------------------------------------ studies
def _verdict_lists(rows: pd.DataFrame) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for r in rows.itertuples(index=False):
        out.setdefault(r.verdict, []).append(task_label(r.task, r.eval_set) + marks(r) + constant_marks(r))
    return out


def _delta_sentence(r, scale: float, what: str) -> str:
    s = (f"{what}: RAFT {fmt(r.raft_mean * scale)} vs BERT {fmt(r.bert_mean * scale)}, "
         f"Δ = {fmt(r.delta * scale, signed=True)}")
    if not math.isnan(r.ci_low):
        s += f" [95 % CI {fmt(r.ci_low * scale, signed=True)}, {fmt(r.ci_high * scale, signed=True)}]"
    if not math.isnan(r.p_ttest):
        p = fmt_p(r.p_ttest)
        s += f", paired t p {p}" if p.startswith("<") else f", paired t p = {p}"
    s += f", {r.n_paired} paired seed{'s' if r.n_paired != 1 else ''} → **{r.verdict}**"
    return s


def study_findings(summary: pd.DataFrame, study: str) -> str:
    """A short paragraph per N: the headline comparison, per-task verdicts, and caveats."""
    title = {"glue": "GLUE", "squad": "SQuAD v1.1", "glue_efficient": "parameter-efficient GLUE"}[study]
    if summary.empty:
        return (f"**Findings.** No {title} results were found under the results directory yet, so "
                "there is nothing to report.")
    scale = SCALE.get(study, 1.0)
    unit = " (×100)" if scale == 100 else ""
    parts = ["**Findings (written automatically from the result files).** Δ = RAFT − BERT, paired by "
             "seed; 95 % paired bootstrap CI; verdict at the 95 % level (paired t-test and CI agree)."]
    constant = constant_findings(summary, study)
    if constant:
        parts.append(constant)
    few: list[str] = []
    partial_names: set[str] = set()
    for n in sorted(summary["n"].unique(), key=agg.n_key):
        d = summary[summary["n"] == n]
        head = d[(d["task"] == "average")]
        score_rows = d[(d["task"] != "average") & (d["metric"] == "score")]
        bits = []
        if len(head):
            bits.append(_delta_sentence(head.iloc[0], scale, f"GLUE average{unit}"))
        if study == "squad":
            for m in ("EM", "F1"):
                r = d[d["metric"] == m]
                if len(r):
                    bits.append(_delta_sentence(r.iloc[0], scale, m))
        elif len(score_rows) == 1:
            bits.append(_delta_sentence(score_rows.iloc[0], scale,
                                        f"{task_label(score_rows.iloc[0]['task'], score_rows.iloc[0]['eval_set'])} "
                                        f"selection score{unit}"))
        elif len(score_rows) > 1:
            v = _verdict_lists(score_rows)
            tally = "; ".join(f"{k}: {', '.join(v[k])}" for k in
                              (stats.RAFT_BETTER, stats.NO_DIFFERENCE, stats.BERT_BETTER,
                               stats.TOO_FEW, stats.ONE_VARIANT) if k in v)
            bits.append(f"per task (selection score) — {tally}")
        parts.append(f"**N = {n}**: " + "; ".join(bits) + ".")
        max_paired = int(d["n_paired"].max()) if len(d) else 0
        if max_paired < FEW_SEEDS:
            few.append(f"N = {n}: {max_paired}")
        partial_names |= {task_label(r.task, r.eval_set) for r in d.itertuples(index=False)
                          if marks(r) and r.task != "average"}
    caveats = []
    if few:
        caveats.append(f"few paired seeds ({'; '.join(few)}; fewer than {FEW_SEEDS}): the intervals are wide, "
                       "the tests have little power, and 'no detectable difference' is not evidence of equality")
    if partial_names:
        caveats.append(f"{', '.join(sorted(partial_names))} use partial data or a held-out test substitute "
                       f"({PARTIAL_MARK}/{HELDOUT_MARK}, see the footnotes); averages that include them are "
                       "marked too and are not comparable with the paper's numbers")
    if caveats:
        parts.append("**Caveats**: " + "; ".join(caveats) + ".")
    return "\n\n".join(parts)


# ------------------------------------------------------------------ pretraining
def pretrain_findings(pre: pd.DataFrame) -> str:
    if pre.empty:
        return "**Findings.** No pretraining results were found yet."
    by = {r.variant: r for r in pre.itertuples(index=False)}
    parts = ["**Findings (written automatically from the result files).**"]
    if "bert" in by and "raft" in by:
        b, r = by["bert"], by["raft"]
        rel = (r.perplexity / b.perplexity - 1) * 100 if b.perplexity else math.nan
        better = "lower" if r.perplexity < b.perplexity else "higher" if r.perplexity > b.perplexity else "equal"
        parts.append(f"RAFT reached a validation perplexity of {fmt(r.perplexity, 3)} against BERT's "
                     f"{fmt(b.perplexity, 3)} ({fmt(rel, 1, signed=True)} %, {better} for RAFT) after "
                     f"{fmt_int(r.tokens_seen)} and {fmt_int(b.tokens_seen)} tokens.")
        if r.tokens_seen != b.tokens_seen or r.steps != b.steps:
            parts.append("The two runs did not see the same number of tokens/steps, so the comparison is "
                         "not like for like.")
    else:
        for v, r in by.items():
            parts.append(f"Only {agg.VARIANT_LABELS.get(v, v)} has finished: validation perplexity "
                         f"{fmt(r.perplexity, 3)}.")
    parts.append("There is one pretraining run per variant, so no uncertainty estimate is possible: a "
                 "difference of a few percent may be within run-to-run noise.")
    tokens = [t for t in pre["tokens_seen"] if t is not None and not (isinstance(t, float) and math.isnan(t))]
    if tokens and max(tokens) < PAPER_PRETRAIN_TOKENS:
        frac = max(tokens) / PAPER_PRETRAIN_TOKENS * 100
        parts.append(f"The budget is {frac:.2g} % of the paper's (23,000 steps × 4,096 sequences × "
                     "128 tokens): a reduced-scale reproduction, not the paper's checkpoints.")
    return " ".join(parts)


# ------------------------------------------------------------------ shapes
def shapes_findings(ours_closest: pd.DataFrame, published_closest: pd.DataFrame, amplitude: pd.DataFrame,
                    movement: pd.DataFrame) -> str:
    parts = ["**Findings (written automatically from the result files).**"]
    if ours_closest.empty:
        parts.append("No pretrained RAFT coefficients were found (results/pretrain/raft), so only the "
                     "published reference shapes are shown.")
    else:
        groups: dict[str, list[str]] = {}
        for r in ours_closest.itertuples(index=False):
            groups.setdefault(r.closest, []).append(shapes.layer_label(r.layer))
        desc = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(groups.items()))
        parts.append(f"After pretraining, the closest standard activation (up to an affine rescaling of "
                     f"input and output) is — {desc} (fit RMSE on [-4, 4] between "
                     f"{fmt(ours_closest['rmse'].min(), 3)} and {fmt(ours_closest['rmse'].max(), 3)}).")
        if not amplitude.empty:
            small = amplitude[amplitude["max_abs_F"] < 1]
            parts.append(f"{len(small)} of {len(amplitude)} RAFs stay within |F| < 1 on [-4, 4] (the paper "
                         "reports small amplitudes for its checkpoint).")
    if not published_closest.empty:
        groups = {}
        for r in published_closest.itertuples(index=False):
            groups.setdefault(r.closest, []).append(shapes.layer_label(r.layer))
        desc = "; ".join(f"{k}: {', '.join(v)}" for k, v in sorted(groups.items()))
        parts.append(f"For the published checkpoint (reference, not our run): {desc}.")
    if not movement.empty:
        ms = movement_summary(movement)
        top = ms.sort_values(["distance"], ascending=False, kind="stable").iloc[0]
        parts.append(f"During fine-tuning the largest mean movement is {shapes.layer_label(top['layer'])} on "
                     f"{agg.TASK_LABELS.get(top['task'], top['task'])} at N = {top['n']} "
                     f"(max |ΔF| = {fmt(top['distance'], 3)}, mean of {int(top['n_seeds'])} seed(s)).")
        per_layer = ms.groupby("layer")["distance"].mean()
        layers = [lay for lay in shapes.sorted_layers(per_layer.index) if lay != "pooler"]
        if len(layers) >= 2:
            half = len(layers) // 2
            lower = float(per_layer[layers[:half]].mean())
            upper = float(per_layer[layers[half:]].mean())
            s = (f"Averaged over tasks and N, the upper half of the layers moved {fmt(upper, 3)} against "
                 f"{fmt(lower, 3)} for the lower half")
            if "pooler" in per_layer.index:
                s += f" and {fmt(float(per_layer['pooler']), 3)} for the pooler"
            parts.append(s + " (the paper reports that upper layers and the pooler move most).")
        n_seeds = int(ms["n_seeds"].min())
        if n_seeds < FEW_SEEDS:
            parts.append(f"Some cells average only {n_seeds} seed(s); the heat map is descriptive, without "
                         "uncertainty.")
    return " ".join(parts)


def _range_text(values, digits: int = 3) -> str:
    lo, hi = float(values.min()), float(values.max())
    return fmt(lo, digits) if lo == hi else f"{fmt(lo, digits)} to {fmt(hi, digits)}"


def input_findings(table: pd.DataFrame) -> str:
    """Where the RAFs act, from ``preacts.interval_table``: the intervals holding ``preacts.MASS`` of
    the layers' inputs, the layers whose [-4, 4] plots reach beyond them, and how far this run's and
    the published RAFs are from GELU there."""
    pre = table.dropna(subset=["lo"]) if not table.empty else table
    if pre.empty:
        return ("**Where the RAFs act.** No pre-activation histograms after pretraining were found "
                "(results/pretrain/raft/preactivations.json; runs written before it lack the file), so the "
                "shapes cannot be related to the inputs the layers receive.")
    label, pct = shapes.layer_label, f"{preacts.MASS * 100:g} %"
    widest = pre.loc[(pre["hi"] - pre["lo"]).idxmax()]
    parts = [(f"**Where the RAFs act (written automatically from the result files).** After pretraining, {pct} "
              f"of each layer's validation inputs lie within [{fmt(pre['lo'].min())}, {fmt(pre['hi'].max())}] "
              f"(widest: {label(widest['layer'])}, [{fmt(widest['lo'])}, {fmt(widest['hi'])}]).")]
    beyond = [label(r.layer) for r in pre.itertuples(index=False) if r.lo > shapes.X_MIN or r.hi < shapes.X_MAX]
    if beyond:
        parts.append(f"For {len(beyond)} of {len(pre)} layers ({', '.join(beyond)}) part of [-4, 4] lies outside "
                     "that interval: there the [-4, 4] plots show values the layer (almost) never computes.")
    ours = pre.dropna(subset=["rms_from_gelu"])
    if not ours.empty:
        top = ours.loc[ours["rms_from_gelu"].idxmax()]
        parts.append(f"On these intervals this run's RAFs differ from GELU by an input-weighted RMS of "
                     f"{_range_text(ours['rms_from_gelu'])} (largest: {label(top['layer'])}, max |F − GELU| "
                     f"{fmt(top['max_from_gelu'], 3)}).")
    pub = pre.dropna(subset=["published_rms_from_gelu"])
    if not pub.empty:
        parts.append(f"The published RAFs, evaluated on the same inputs, differ by {_range_text(pub['published_rms_from_gelu'])} "
                     f"(max |F − GELU| on [-4, 4]: {_range_text(pub['published_max_from_gelu_fixed'])}); they were "
                     "trained on other data at another scale, so this compares shapes, not runs.")
    ft = table.dropna(subset=["finetuned_lo"])
    if not ft.empty:
        parts.append(f"After fine-tuning (dev parts, mean over up to {int(ft['finetuned_runs'].max())} run(s) per "
                     f"layer) the intervals reach [{fmt(ft['finetuned_lo'].min())}, {fmt(ft['finetuned_hi'].max())}] "
                     f"and the input-weighted RMS from GELU is {_range_text(ft['finetuned_rms_from_gelu'])}.")
    return " ".join(parts)


# ------------------------------------------------------------------ SQuAD windows
def _ns_text(ns) -> str:
    return "N = " + _and(sorted(ns, key=agg.n_key))


def _window_of(row) -> str:
    w = f"{_values_text(row.max_seq_length, ' tokens')}"
    return w + (f" (doc_stride {_values_text(row.doc_stride)})" if row.doc_stride else "")


def _compare_windows(table: pd.DataFrame, ns: list) -> tuple[dict[str, list], list, list, list, list]:
    """Per N, how the two variants' windows compare: ``(same {window: [N]}, differ, stride_differ,
    unknown, single)``; ``differ`` and ``stride_differ`` hold one text per N."""
    label = agg.VARIANT_LABELS
    same: dict[str, list] = {}
    differ, stride_differ, unknown, single = [], [], [], []
    for n in ns:
        by = {r.variant: r for r in table[table["n"] == n].itertuples(index=False)}
        if "bert" not in by or "raft" not in by:
            single.append(n)
            continue
        b, r = by["bert"], by["raft"]
        if not b.max_seq_length or not r.max_seq_length:
            unknown.append(n)
        elif b.max_seq_length != r.max_seq_length:
            differ.append(f"N = {n}: {label['bert']} {_window_of(b)}, {label['raft']} {_window_of(r)}")
        elif b.doc_stride != r.doc_stride:
            stride_differ.append(f"N = {n}: {label['bert']} {_window_of(b)}, {label['raft']} {_window_of(r)}")
        else:
            same.setdefault(_window_of(b), []).append(n)
    return same, differ, stride_differ, unknown, single


def _windows_verdict(same: dict[str, list], differ: list) -> str:
    """Opening of the windows paragraph: the different-windows warning, or the same windows."""
    same_text = "; ".join(f"{w} at {_ns_text(v)}" for w, v in same.items())
    if differ:
        s = ("**⚠ Warning: the variants were fine-tuned with different windows** (metrics.json "
             "`hyperparameters.max_seq_length`) — " + "; ".join(differ) + ". At "
             + ("this N" if len(differ) == 1 else "these N")
             + ", Δ mixes the method (the activation function) with the window choice and is not a "
             f"like-for-like comparison ({PAPER_SQUAD_WINDOWS}).")
        if same:
            s += f" Both variants used the same windows at the other N: {same_text}."
        return s
    if same:
        return (f"**Fine-tuning windows (from the result files).** Both variants used the same windows: "
                f"{same_text}, so Δ compares the variants at equal windows (unlike the paper: {PAPER_SQUAD_WINDOWS}).")
    return "**Fine-tuning windows (from the result files).** No N has runs of both variants with recorded windows."


def _windows_caveats(stride_differ: list, unknown: list, single: list) -> str:
    """Sentences on N with a different doc_stride only, a missing window, or one variant only."""
    s = ""
    if stride_differ:
        s += (" The variants used the same window but different doc_stride at " + "; ".join(stride_differ)
              + ", so they saw differently cut contexts.")
    if unknown:
        s += (f" At {_ns_text(unknown)} the window is missing from the runs of at least one variant "
              "(`hyperparameters.max_seq_length`), so it cannot be compared.")
    if single:
        s += f" At {_ns_text(single)} only one variant has runs, so there is nothing to compare."
    return s


def _seed_disagreement(table: pd.DataFrame) -> str:
    """One sentence per (variant, N) whose seeds used different settings."""
    label = agg.VARIANT_LABELS
    s = ""
    for r in table.itertuples(index=False):
        if not r.seeds_agree:
            s += f" The seeds of {label.get(r.variant, r.variant)} at N = {r.n} disagree ({r.settings})."
    return s


def _windows_paragraph(table: pd.DataFrame, ns: list) -> str:
    """Whether both variants used the same windows at every N, with the caveats and seed notes."""
    same, differ, stride_differ, unknown, single = _compare_windows(table, ns)
    return (_windows_verdict(same, differ) + _windows_caveats(stride_differ, unknown, single)
            + _seed_disagreement(table))


def _untrained_windows(table: pd.DataFrame) -> tuple[dict[tuple[int, int], dict[str, list]], set, bool]:
    """``(untrained {(L, W): {variant: [N]}}, variants without a pretraining length, checked)`` for
    windows W longer than the pretraining length L; ``checked``: some window could be checked."""
    untrained: dict[tuple[int, int], dict[str, list]] = {}
    no_length = set()
    checked = False
    for r in table.itertuples(index=False):
        L = _int_or_none(r.pretrain_seq_len)
        if not r.max_seq_length:
            continue
        if L is None:
            no_length.add(r.variant)
            continue
        checked = True
        for w in r.max_seq_length:
            if w > L:
                untrained.setdefault((L, w), {}).setdefault(r.variant, []).append(r.n)
    return untrained, no_length, checked


def _untrained_bits(untrained: dict[tuple[int, int], dict[str, list]]) -> list[str]:
    """One clause per (L, W): which variants at which N use positions L..W-1."""
    label = agg.VARIANT_LABELS
    bits = []
    for (L, w), by_variant in sorted(untrained.items()):
        groups: dict[tuple, list[str]] = {}
        for v in sorted(by_variant, key=agg._list_key(agg.VARIANTS)):
            groups.setdefault(tuple(by_variant[v]), []).append(label.get(v, v))
        who = "; ".join(f"{_and(vs)} at {_ns_text(n_list)}" for n_list, vs in groups.items())
        bits.append(f"{who} (windows of {w} tokens): positions {L}..{w - 1} were never trained during "
                    f"pretraining (pretraining sequences had {L} tokens)")
    return bits


def _uneven_untrained(table: pd.DataFrame, ns: list, untrained: dict[tuple[int, int], dict[str, list]]) -> list:
    """N with runs of both variants where the untrained windows differ between them."""
    uneven = []
    for n in ns:
        by = {v: {w for (_, w), bv in untrained.items() if n in bv.get(v, [])} for v in ("bert", "raft")}
        present = set(table.loc[table["n"] == n, "variant"])
        if {"bert", "raft"} <= present and by["bert"] != by["raft"]:
            uneven.append(n)
    return uneven


def _untrained_paragraph(table: pd.DataFrame, ns: list, untrained, bits: list[str]) -> str:
    """The untrained-positions caveat, noting N where it affects the variants differently."""
    text = ("**Untrained positions.** " + "; ".join(bits) + ". Tokens there rely on position "
            "embeddings that only fine-tuning trains.")
    uneven = _uneven_untrained(table, ns, untrained)
    if uneven:
        text += (f" At {_ns_text(uneven)} this affects the variants differently, another difference "
                 "that Δ absorbs.")
    return text


def _pretrain_length_note(no_length: set, checked: bool, bits: list[str]) -> str | None:
    """Why untrained positions could not be checked, or that every window fits (None: nothing to add)."""
    label = agg.VARIANT_LABELS
    if no_length:
        return ("The pretraining sequence length of "
                + _and(label.get(v, v) for v in sorted(no_length, key=agg._list_key(agg.VARIANTS)))
                + " is not recorded (results/pretrain/{variant}/metrics.json `data.seq_len`), so "
                "untrained positions cannot be checked.")
    if checked and not bits:
        return ("Every window fits within its variant's pretraining sequence length, so fine-tuning "
                "uses only positions trained in pretraining.")
    return None


def squad_window_findings(table: pd.DataFrame) -> str:
    """Auto-written statement on the SQuAD windows of ``squad_windows``: whether both
    variants used the same windows at every N (else a warning that Δ mixes the method with
    the window choice), seeds that disagree, and the untrained-positions caveat for every
    window longer than its variant's pretraining sequence length."""
    if table.empty:
        return ("**Fine-tuning windows.** No SQuAD runs were found under the results directory, so "
                "there are no windows to report.")
    ns = sorted(table["n"].unique(), key=agg.n_key)
    parts = [_windows_paragraph(table, ns)]
    untrained, no_length, checked = _untrained_windows(table)
    bits = _untrained_bits(untrained)
    if bits:
        parts.append(_untrained_paragraph(table, ns, untrained, bits))
    note = _pretrain_length_note(no_length, checked, bits)
    if note is not None:
        parts.append(note)
    return "\n\n".join(parts)


# ------------------------------------------------------------------ zero-shot transfer
ZEROSHOT_METRICS = {"snli": ["acc"], "triviaqa": ["EM", "F1"]}  # the metrics the paper's table reports


def zeroshot_findings(summary: pd.DataFrame) -> str:
    """A short paragraph on the zero-shot transfer: per target and N the headline comparison
    (the target's headline eval set, `aggregate.ZEROSHOT_HEADLINE`: TriviaQA's own EM/F1), then
    the caveats (substitute test set, windows other than the fine-tuning run's, partial data, few seeds)."""
    from raft.analysis.report import (
        SUBSTITUTE_MARK,
        WINDOW_MARK,
        ZEROSHOT_DISPLAY,
        substitute_mark,
        window_differs,
    )

    if summary.empty:
        return ("**Findings.** No zero-shot results were found under the results directory yet "
                "(results/zeroshot/), so there is nothing to report.")
    parts = [("**Findings (written automatically from the result files).** Fine-tuned models scored without "
              "further training; Δ = RAFT − BERT, paired by seed; 95 % paired bootstrap CI.")]
    few, partial = [], set()
    for target, metrics in ZEROSHOT_METRICS.items():
        scale = SCALE[ZEROSHOT_DISPLAY[target]]
        unit = " (×100)" if scale == 100 else ""
        d = summary[(summary["task"] == target) & summary["metric"].isin(metrics)
                    & (summary["eval_set"] == agg.ZEROSHOT_HEADLINE[target])]
        for n in sorted(d["n"].unique(), key=agg.n_key):
            rows = list(d[d["n"] == n].itertuples(index=False))
            label = agg.TASK_LABELS[target] + marks(rows[0]) + substitute_mark(rows[0])
            source = agg.TASK_LABELS.get(rows[0].source_task, rows[0].source_task)
            bits = [_delta_sentence(r, scale, f"{r.metric}{unit}") for r in rows]
            what = ", TriviaQA's own EM/F1" if target == "triviaqa" else ""
            parts.append(f"**{label}** (models fine-tuned on {source}, N = {n}{what}): " + "; ".join(bits) + ".")
            paired = max(r.n_paired for r in rows)
            if paired < FEW_SEEDS:
                few.append(f"{agg.TASK_LABELS[target]}: {paired}")
            if marks(rows[0]):
                partial.add(agg.TASK_LABELS[target] + marks(rows[0]))
    caveats = []
    if summary["substitute"].astype(bool).any():
        caveats.append(f"TriviaQA{SUBSTITUTE_MARK} was scored on the Hub's rc.web dev set, a substitute for the "
                       "paper's verified web dev set: its numbers are not comparable with the paper's")
    if window_differs(summary):
        caveats.append(f"TriviaQA{WINDOW_MARK}: some models were scored with other windows than they were fine-tuned "
                       "with (e.g. 384 tokens after fine-tuning at 128, as the authors did; the records' data_notes "
                       "name both): a difference between the variants may come from the window too")
    if partial:
        caveats.append(f"{', '.join(sorted(partial))}: partial data (e.g. models fine-tuned on a local "
                       "subset, or capped test sets; see the footnotes): not comparable with the paper's numbers")
    if few:
        caveats.append(f"few paired seeds ({'; '.join(few)}; fewer than {FEW_SEEDS}): the intervals are wide")
    if caveats:
        parts.append("**Caveats**: " + "; ".join(caveats) + ".")
    return "\n\n".join(parts)


# what the authors' code logs (github.com/UKPLab/2022-RAFT, commit cffff41): why the paper's number is "likely" one
AUTHORS_TRIVIAQA_LOG = (
    "The authors' run_squad.py (github.com/UKPLab/2022-RAFT) scores the converted file with transformers' "
    "`squad_evaluate` (run_squad.py:481) and logs its `f1` / `exact` — the average over every pair, a pair without "
    "an alias scored against the gold \"\" — as `pred_f1` / `pred_em` (run_squad.py:1079); the HasAns figures "
    "appear only inside its final `Results` log line, and TriviaQA's own evaluation script is never called.")
TRIVIAQA_SET_NAMES = {"triviaqa": "TriviaQA's own", "all_pairs": "all pairs", "has_ans": "HasAns"}


def _no_alias_sentence(runs: pd.DataFrame) -> str:
    """How many scored pairs hold no alias in their context (the records' ``sizes``)."""
    d = runs[runs["task"] == "triviaqa"] if len(runs) else runs
    counts = sorted({(int(z.get("no_answer", 0)), int(z.get("documents", 0))) for z in d.get("sizes", [])
                     if isinstance(z, dict) and z.get("documents")})
    if len(counts) != 1:
        return "The records do not agree on (or do not record) how many pairs hold no alias in their context."
    no, pairs = counts[0]
    return (f"{fmt_int(no)} of the {fmt_int(pairs)} question–document pairs ({fmt(100 * no / pairs, 1)} %) hold no "
            "answer alias in their context: the all-pairs score counts them against the gold \"\" (0 for any "
            "answer), HasAns leaves them out, TriviaQA's own score credits a prediction matching any alias there too.")


def _arm_mean(r) -> tuple[str, float]:
    """(arm, mean) of a summary row: BERT's, else RAFT's (an arm without runs has NaN)."""
    return ("BERT", r.bert_mean) if not math.isnan(r.bert_mean) else ("RAFT", r.raft_mean)


def triviaqa_scoring_findings(summary: pd.DataFrame, runs: pd.DataFrame) -> str:
    """The three TriviaQA scores side by side (per N: F1 and EM, BERT / RAFT means), how many pairs
    hold no alias, and which score the paper's table likely shows, reasoned from what the
    authors' code logs (``AUTHORS_TRIVIAQA_LOG``). "" without TriviaQA runs."""
    d = summary[summary["task"] == "triviaqa"]
    if d.empty:
        return ""
    title = "**Which TriviaQA score the paper likely shows.**"
    if set(triviaqa.EVAL_SETS) - set(d["eval_set"]):
        return (f"{title} Some TriviaQA records hold only the HasAns score (written before TriviaQA's own and the "
                "all-pairs scores were recorded); rerun `raft zeroshot --target triviaqa` to compare the three.")
    parts = [title]
    ns = sorted(d["n"].unique(), key=agg.n_key)
    for n in ns:
        rows = {(r.eval_set, r.metric): r for r in d[d["n"] == n].itertuples(index=False)}
        per_metric = [f"{m} " + ", ".join(f"{TRIVIAQA_SET_NAMES[e]} {fmt(rows[e, m].bert_mean)} / "
                                          f"{fmt(rows[e, m].raft_mean)}" for e in triviaqa.EVAL_SETS if (e, m) in rows)
                      for m in ("F1", "EM")]
        parts.append(f"N = {n}, mean over seeds, BERT / RAFT: " + "; ".join(per_metric) + ".")
    parts.append(_no_alias_sentence(runs))
    parts.append(AUTHORS_TRIVIAQA_LOG)
    last = d[(d["n"] == ns[-1]) & (d["metric"] == "F1")]
    f1 = {r.eval_set: _arm_mean(r) for r in last.itertuples(index=False)}
    if set(f1) == set(triviaqa.EVAL_SETS):
        arm, gap = f1["all_pairs"][0], f1["all_pairs"][1] - f1["triviaqa"][1]
        parts.append(f"So the paper's TriviaQA column likely holds the all-pairs score: here ({arm} F1, N = {ns[-1]}) "
                     f"{fmt(f1['has_ans'][1] - f1['all_pairs'][1])} points below HasAns and {fmt(abs(gap))} points "
                     f"{'below' if gap < 0 else 'above'} TriviaQA's own score, which these tables lead with.")
    return " ".join(parts)
