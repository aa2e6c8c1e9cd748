"""Figures of the result notebooks (matplotlib/seaborn, Agg backend, byte-stable PNGs).

Every function returns a ``matplotlib.figure.Figure`` (or ``None`` when there is nothing to
draw); ``raft.analysis.report.show_figure`` saves it under ``figures_dir`` and displays it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import matplotlib

matplotlib.use("Agg", force=True)

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from raft.analysis import aggregate as agg  # noqa: E402
from raft.analysis import preacts, report  # noqa: E402
from raft.analysis import shapes  # noqa: E402

VARIANT_COLORS = {"bert": "#4c72b0", "raft": "#dd8452"}
PUBLISHED_COLOR = "#2ca02c"
DPI = 100


def setup() -> None:
    """Deterministic, headless plotting defaults."""
    matplotlib.use("Agg", force=True)
    sns.set_theme(style="whitegrid", context="notebook")
    matplotlib.rcParams.update({
        "svg.hashsalt": "raft",
        "figure.dpi": DPI,
        "savefig.dpi": DPI,
        "figure.max_open_warning": 0,
        "axes.titlesize": "medium",
    })


def _grid(n_panels: int, ncols: int = 5, size: float = 2.6):
    ncols = max(1, min(ncols, n_panels))
    nrows = max(1, math.ceil(n_panels / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols + 0.6, size * nrows + 0.4),
                             sharex=True, squeeze=False)
    flat = axes.ravel()
    for ax in flat[n_panels:]:
        ax.set_visible(False)
    return fig, flat[:n_panels]


def _legend_below(fig, handles, labels, ncol=None):
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=ncol or min(len(labels), 5),
                   frameon=False, bbox_to_anchor=(0.5, -0.02))


def _unique_legend(axes):
    seen: dict[str, object] = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab and not lab.startswith("_") and lab not in seen:
                seen[lab] = h
    return list(seen.values()), list(seen.keys())


# ------------------------------------------------------------------ pretraining
def pretrain_curves(log: pd.DataFrame):
    if log.empty:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 3.8))
    xcol = "tokens" if log["tokens"].notna().any() else "step"
    for variant in sorted(log["variant"].unique(), key=agg._list_key(agg.VARIANTS)):
        d = log[log["variant"] == variant].sort_values("step", kind="stable")
        color = VARIANT_COLORS.get(variant)
        label = agg.VARIANT_LABELS.get(variant, variant)
        tr = d[d["loss"].notna()]
        ax1.plot(tr[xcol], tr["loss"], color=color, label=label, lw=1.4)
        va = d[d["val_perplexity"].notna()]
        ax2.plot(va[xcol], va["val_perplexity"], color=color, label=label, marker="o", ms=4, lw=1.4)
    for ax in (ax1, ax2):
        ax.xaxis.set_major_formatter(matplotlib.ticker.EngFormatter())
    ax1.set(xlabel=xcol, ylabel="training MLM loss", title="Training loss")
    ax2.set(xlabel=xcol, ylabel="validation perplexity", title="Validation perplexity")
    if (log["val_perplexity"].dropna() > 0).any():
        ax2.set_yscale("log")
    ax1.legend(frameon=False)
    fig.tight_layout()
    return fig


def raf_evolution(snapshots: list[dict], x=None):
    """Small multiples per RAF; one curve per snapshot, coloured by step; GELU dotted."""
    if not snapshots:
        return None
    x = shapes.grid() if x is None else x
    names = shapes.sorted_layers({k for s in snapshots for k in s["rationals"]})
    steps = [s["step"] for s in snapshots]
    norm = matplotlib.colors.Normalize(vmin=min(steps), vmax=max(max(steps), min(steps) + 1))
    cmap = matplotlib.colormaps["viridis"]
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        ax.plot(x, shapes.gelu(x), color="black", ls=":", lw=1, label="GELU")
        for s in snapshots:
            if name in s["rationals"]:
                ax.plot(x, shapes.evaluate(s["rationals"][name], x), color=cmap(norm(s["step"])), lw=1)
        ax.set_title(shapes.layer_label(name))
        ax.axhline(0, color="0.7", lw=0.5)
    fig.tight_layout(rect=(0, 0, 0.92, 1))
    cax = fig.add_axes((0.94, 0.15, 0.015, 0.7))
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap=cmap), cax=cax, label="pretraining step")
    return fig


# ------------------------------------------------------------------ shapes
def pretrained_shapes(ours: Mapping, published: Mapping, init: Mapping, x=None,
                      published_label: str = "published", init_label: str = "GELU init (rational)"):
    names = shapes.sorted_layers(set(ours) | set(published))
    if not names:
        return None
    x = shapes.grid() if x is None else x
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        ax.plot(x, shapes.gelu(x), color="black", ls=":", lw=1, label="GELU")
        ax.plot(x, shapes.evaluate(init, x), color="0.5", ls="--", lw=1, label=init_label)
        if name in published:
            ax.plot(x, shapes.evaluate(published[name], x), color=PUBLISHED_COLOR, lw=1.3,
                    label=published_label)
        if name in ours:
            ax.plot(x, shapes.evaluate(ours[name], x), color=VARIANT_COLORS["raft"], lw=1.8,
                    label="this reproduction (after pretraining)")
        ax.set_title(shapes.layer_label(name))
        ax.axhline(0, color="0.7", lw=0.5)
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _legend_below(fig, *_unique_legend(axes), ncol=4)
    return fig


def _input_series(acts) -> list[tuple[str, str, str, str, dict]]:
    """(label, short label, colour, line style, {layer: record}) of every recorded set of inputs:
    RAFT and BERT after pretraining (validation), RAFT after fine-tuning (dev parts, pooled over runs)."""
    def tokens(layers):
        return max((r["tokens"] for k, r in layers.items() if k != preacts.POOLER), default=0)

    series = []
    for variant in ("raft", "bert"):
        layers = acts.pretrain_layers(variant)
        name = agg.VARIANT_LABELS.get(variant, variant)
        if layers:
            series.append((f"{name} inputs after pretraining (validation, {tokens(layers):,} tokens per FFN layer)",
                           f"{name} inputs after pretraining", VARIANT_COLORS[variant], "-", layers))
    layers, runs = acts.finetuned_layers("raft")
    if layers:
        series.append((f"RAFT inputs after fine-tuning (dev parts, {runs} run{'s' if runs != 1 else ''} pooled)",
                       "RAFT inputs after fine-tuning", VARIANT_COLORS["raft"], "--", layers))
    return series


def _input_panel(top, bottom, name: str, ours: Mapping, published: Mapping, series, published_label: str) -> None:
    """One layer: the curves over its inputs' range (top), their densities below (shared x); the
    first series' 99 % interval shaded, every series' interval marked by dotted lines."""
    recorded = [(label, short, color, ls, layers[name]) for label, short, color, ls, layers in series
                if layers.get(name, {}).get("count")]
    intervals = [preacts.mass_interval(rec) for *_, rec in recorded]
    lo, hi = min(i[0] for i in intervals), max(i[1] for i in intervals)
    pad = 0.08 * (hi - lo) or 0.5
    x = np.linspace(lo - pad, hi + pad, 401)
    top.plot(x, shapes.gelu(x), color="black", ls=":", lw=1, label="GELU")
    if name in published:
        top.plot(x, shapes.evaluate(published[name], x), color=PUBLISHED_COLOR, lw=1.3, label=published_label)
    if name in ours:
        top.plot(x, shapes.evaluate(ours[name], x), color=VARIANT_COLORS["raft"], lw=1.8,
                 label="this reproduction (after pretraining)")
    pct = f"{preacts.MASS * 100:g} %"
    top.axvspan(*intervals[0], color=recorded[0][2], alpha=0.1, lw=0, label=f"{pct} of {recorded[0][1]}")
    for (label, _, color, ls, rec), (a, b) in zip(recorded, intervals):
        edges, density = preacts.bin_density(rec)
        bottom.stairs(density, edges, color=color, ls=ls, lw=1.2, label=label)
        for v in (a, b):
            bottom.axvline(v, color=color, ls=":", lw=0.9)
    top.set_xlim(x[0], x[-1])
    top.set_title(shapes.layer_label(name))
    top.axhline(0, color="0.7", lw=0.5)
    top.tick_params(labelbottom=False)
    bottom.tick_params(labelsize="x-small")
    bottom.set_ylim(bottom=0)


def input_shapes(ours: Mapping, published: Mapping, acts, published_label: str = "published"):
    """Per layer with recorded inputs (`raft.analysis.preacts`): the RAFs and GELU over the range
    of the layer's inputs, and below them (shared x) the density of those inputs (FFN
    pre-activations); None when no inputs were recorded."""
    series = _input_series(acts)
    names = shapes.sorted_layers({k for *_, layers in series for k, r in layers.items() if r.get("count")})
    if not names:
        return None
    ncols = min(5, len(names))
    nrows = math.ceil(len(names) / ncols)
    fig = plt.figure(figsize=(2.9 * ncols + 0.4, 3.4 * nrows + 1.0), layout="constrained")
    outer = fig.add_gridspec(nrows, ncols)
    axes = []
    for k, name in enumerate(names):
        inner = outer[k // ncols, k % ncols].subgridspec(2, 1, height_ratios=(3, 1.4), hspace=0.05)
        top = fig.add_subplot(inner[0])
        bottom = fig.add_subplot(inner[1], sharex=top)
        _input_panel(top, bottom, name, ours, published, series, published_label)
        if k % ncols == 0:
            bottom.set_ylabel("density", fontsize="small")
        axes += [top, bottom]
    fig.suptitle(f"RAFs over the inputs they receive; below: density of the FFN pre-activations, "
                 f"{preacts.MASS * 100:g} % interval marked")
    fig.legend(*_unique_legend(axes), loc="outside lower center", ncol=2, frameon=False, fontsize="small")
    return fig


def _pretrained_panel(ax, name: str, pretrained: Mapping, x) -> None:
    """Title, zero line and (if known) the pretrained RAF of one fine-tuned-shapes panel."""
    if name in pretrained:
        ax.plot(x, shapes.evaluate(pretrained[name], x), color="black", lw=1.6, ls="--", label="pretrained")
    ax.set_title(shapes.layer_label(name))
    ax.axhline(0, color="0.7", lw=0.5)


def finetuned_task_grid(task: str, runs: pd.DataFrame, pretrained: Mapping, x=None):
    """One panel per RAF: the pretrained RAF and, per N, the mean fine-tuned curve over seeds
    (thin lines: individual seeds)."""
    runs = runs[(runs["task"] == task) & runs["rationals"].map(bool).astype(bool)]
    if runs.empty:
        return None
    x = shapes.grid() if x is None else x
    ns = sorted(runs["n"].unique(), key=agg.n_key)
    names = shapes.sorted_layers({k for r in runs["rationals"] for k in r})
    palette = dict(zip(ns, sns.color_palette("Set1", max(len(ns), 3))))
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        _pretrained_panel(ax, name, pretrained, x)
        for n in ns:
            curves = [shapes.evaluate(r[name], x) for r in runs[runs["n"] == n]["rationals"] if name in r]
            for c in curves:
                ax.plot(x, c, color=palette[n], lw=0.4, alpha=0.35)
            if curves:
                ax.plot(x, np.mean(curves, axis=0), color=palette[n], lw=1.4, label=f"N = {n}")
    fig.suptitle(f"{agg.TASK_LABELS.get(task, task)}: RAFs after fine-tuning (mean over seeds)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _legend_below(fig, *_unique_legend(axes))
    return fig


def tasks_overlay(runs: pd.DataFrame, pretrained: Mapping, n: str, x=None):
    runs = runs[(runs["n"] == n) & runs["rationals"].map(bool).astype(bool)]
    if runs.empty:
        return None
    x = shapes.grid() if x is None else x
    tasks = sorted(runs["task"].unique(), key=agg.task_key)
    names = shapes.sorted_layers({k for r in runs["rationals"] for k in r})
    palette = dict(zip(tasks, sns.color_palette("tab10", len(tasks))))
    fig, axes = _grid(len(names))
    for ax, name in zip(axes, names):
        _pretrained_panel(ax, name, pretrained, x)
        for task in tasks:
            curves = [shapes.evaluate(r[name], x) for r in runs[runs["task"] == task]["rationals"] if name in r]
            if curves:
                ax.plot(x, np.mean(curves, axis=0), color=palette[task], lw=1.2,
                        label=agg.TASK_LABELS.get(task, task))
    fig.suptitle(f"All tasks, N = {n}: fine-tuned RAFs (mean over seeds)")
    fig.tight_layout(rect=(0, 0.06, 1, 1))
    _legend_below(fig, *_unique_legend(axes), ncol=min(len(tasks) + 1, 6))
    return fig


def movement_heatmap(movement: pd.DataFrame):
    """Layer x task heat maps (one per N) of max |F_task - F_pretrained|, mean over seeds."""
    if movement.empty:
        return None
    mean = movement.groupby(["n", "task", "layer"], sort=False)["distance"].mean().reset_index()
    ns = sorted(mean["n"].unique(), key=agg.n_key)
    tasks = sorted(mean["task"].unique(), key=agg.task_key)
    layers = shapes.sorted_layers(mean["layer"])
    vmax = float(mean["distance"].max()) or 1.0
    ncols = min(2, len(ns))
    nrows = math.ceil(len(ns) / ncols)
    figsize = (ncols * (1.6 + 0.7 * len(tasks)), nrows * (0.8 + 0.36 * len(layers)))
    fig, axes = plt.subplots(nrows, ncols, figsize=figsize, squeeze=False)
    flat = axes.ravel()
    for ax in flat[len(ns):]:
        ax.set_visible(False)
    for i, (ax, n) in enumerate(zip(flat, ns)):
        piv = (mean[mean["n"] == n].pivot(index="layer", columns="task", values="distance")
               .reindex(index=layers, columns=tasks))
        piv.index = [shapes.layer_label(v) for v in piv.index]
        piv.columns = [agg.TASK_LABELS.get(t, t) for t in piv.columns]
        sns.heatmap(piv, ax=ax, vmin=0, vmax=vmax, cmap="mako_r", annot=True, fmt=".2f",
                    annot_kws={"size": 7}, cbar=(i % ncols == ncols - 1) or i == len(ns) - 1, linewidths=0.5)
        ax.set(title=f"N = {n}", xlabel="", ylabel="")
    fig.suptitle("How far each RAF moved during fine-tuning: max |F_task - F_pretrained| on [-4, 4]")
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ scores and deltas
def _task_eval_label(task: str, eval_set: str) -> str:
    label = agg.TASK_LABELS.get(task, task)
    if eval_set == "matched":
        return f"{label}-m"
    if eval_set == "mismatched":
        return f"{label}-mm"
    return label


def scores_plot(long: pd.DataFrame, metric: str = "score", scale: float = 1.0, ylabel: str = ""):
    """Per N: each task's metric for both variants, mean and individual seeds."""
    d = long[long["metric"] == metric].copy()
    if d.empty:
        return None
    mark = {}
    for (t, e), g in d.groupby(["task", "eval_set"], sort=False):
        mark[(t, e)] = "".join(sorted({m for r in g.itertuples(index=False) for m in report.marks(r)}))
    d["label"] = [_task_eval_label(t, e) + mark[(t, e)] for t, e in zip(d["task"], d["eval_set"])]
    d["value"] = d["value"] * scale
    d["variant_label"] = d["variant"].map(lambda v: agg.VARIANT_LABELS.get(v, v))
    ns = sorted(d["n"].unique(), key=agg.n_key)
    order = list(dict.fromkeys(_task_eval_label(t, e) + mark[(t, e)] for t, e in
                               agg._sort(d[["task", "eval_set"]].drop_duplicates(), ["task", "eval_set"])
                               .itertuples(index=False)))
    hue_order = [agg.VARIANT_LABELS[v] for v in agg.VARIANTS if v in set(d["variant"])]
    palette = {agg.VARIANT_LABELS[v]: VARIANT_COLORS[v] for v in agg.VARIANTS}
    fig, axes = plt.subplots(1, len(ns), figsize=(0.9 * len(order) * len(ns) + 2.5 * len(ns), 3.8),
                             squeeze=False, sharey=True)
    for ax, n in zip(axes[0], ns):
        dn = d[d["n"] == n]
        sns.barplot(data=dn, x="label", y="value", hue="variant_label", order=order, hue_order=hue_order,
                    palette=palette, errorbar="sd", ax=ax, alpha=0.8, capsize=0.1, err_kws={"linewidth": 1})
        sns.stripplot(data=dn, x="label", y="value", hue="variant_label", order=order, hue_order=hue_order,
                      palette=palette, dodge=True, ax=ax, size=3, color="black", legend=False, jitter=False)
        ax.set(title=f"N = {n}", xlabel="", ylabel=ylabel)
        ax.tick_params(axis="x", rotation=30)
        if ax is not axes[0][-1] and ax.get_legend():
            ax.get_legend().remove()
        elif ax.get_legend():
            ax.legend(frameon=False, fontsize="small")
    fig.tight_layout()
    return fig


def delta_plot(summary: pd.DataFrame, metric="score", scale: float = 1.0, xlabel: str = ""):
    """Forest plot per N: Δ = RAFT - BERT with its 95 % paired bootstrap CI (one row per task
    and eval set; with several metrics, one row per metric too)."""
    metrics = [metric] if isinstance(metric, str) else list(metric)
    d = summary[summary["metric"].isin(metrics) & summary["delta"].notna()]
    if d.empty:
        return None
    ns = sorted(d["n"].unique(), key=agg.n_key)
    height = max(1.8, 0.9 + 0.4 * int(d.groupby("n").size().max()))
    fig, axes = plt.subplots(1, len(ns), figsize=(3.6 * len(ns) + 0.8, height), squeeze=False)
    colors = {"RAFT better": VARIANT_COLORS["raft"], "BERT better": VARIANT_COLORS["bert"]}
    for ax, n in zip(axes[0], ns):
        dn = d[d["n"] == n].reset_index(drop=True)
        labels = [(_task_eval_label(t, e) if t != "average" else "GLUE average")
                  + (f" {m}" if len(metrics) > 1 else "") + report.marks(r)
                  for t, e, m, r in zip(dn["task"], dn["eval_set"], dn["metric"], dn.itertuples(index=False))]
        y = np.arange(len(dn))[::-1]
        for yi, row in zip(y, dn.itertuples(index=False)):
            c = colors.get(row.verdict, "0.3")
            if not (math.isnan(row.ci_low) or math.isnan(row.ci_high)):
                ax.plot([row.ci_low * scale, row.ci_high * scale], [yi, yi], color=c, lw=2)
            ax.plot([row.delta * scale], [yi], "o", color=c, ms=6 if row.task == "average" else 4.5)
        ax.axvline(0, color="black", lw=0.8)
        ax.set_yticks(y, labels)
        ax.set_ylim(-0.6, len(dn) - 0.4)
        ax.margins(x=0.12)
        ax.set(title=f"N = {n}", xlabel=xlabel)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------ zero-shot transfer
# target -> (headline metric, display scale, panel title); of its headline eval set (aggregate.ZEROSHOT_HEADLINE)
ZEROSHOT_HEADLINE = {"snli": ("acc", 100.0, "SNLI accuracy (×100), MNLI models"),
                     "triviaqa": ("F1", 1.0, "TriviaQA F1 (TriviaQA's own), SQuAD models")}


def zeroshot_plot(long: pd.DataFrame):
    """One panel per zero-shot target: its headline metric per variant (bar: mean ± sd over seeds,
    dots: seeds); "¶ substitute" in the title when some run scored a substitute test set. None
    when there is nothing to draw."""
    if len(long):
        long = long[long["eval_set"] == long["task"].map(agg.ZEROSHOT_HEADLINE)]
    panels = [(t, spec) for t, spec in ZEROSHOT_HEADLINE.items()
              if len(long) and ((long["task"] == t) & (long["metric"] == spec[0])).any()]
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.4 * len(panels) + 0.6, 3.4), squeeze=False)
    palette = {agg.VARIANT_LABELS[v]: VARIANT_COLORS[v] for v in agg.VARIANTS}
    for ax, (target, (metric, scale, title)) in zip(axes[0], panels):
        d = long[(long["task"] == target) & (long["metric"] == metric)].copy()
        d["value"] = d["value"] * scale
        several_n = d["n"].nunique() > 1
        d["label"] = [agg.VARIANT_LABELS.get(v, v) + (f"\nN = {n}" if several_n else "")
                      for v, n in zip(d["variant"], d["n"])]
        d["variant_label"] = d["variant"].map(lambda v: agg.VARIANT_LABELS.get(v, v))
        order = list(dict.fromkeys(agg._sort(d, ["n", "variant"])["label"]))
        sns.barplot(data=d, x="label", y="value", hue="variant_label", order=order, palette=palette, errorbar="sd",
                    ax=ax, alpha=0.8, capsize=0.1, err_kws={"linewidth": 1}, legend=False)
        sns.stripplot(data=d, x="label", y="value", order=order, color="black", size=3, jitter=False, ax=ax)
        substitute = d["substitute"].astype(bool).any()
        ax.set(title=title + (f"\n{report.SUBSTITUTE_MARK} substitute test set" if substitute else ""), xlabel="",
               ylabel="")
    fig.tight_layout()
    return fig
