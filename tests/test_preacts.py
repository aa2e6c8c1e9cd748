"""Pre-activation histograms: collection (`raft.train.preacts`: hooks count exactly the real tokens;
no analysis layer in the training process), the analysis (`raft.analysis.preacts`): the
interval and distance helpers, the file `raft pretrain` writes, and the shapes notebook's table,
findings and figure built from result files."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from tiny_corpus import _one_thread, make_tiny_corpus  # noqa: F401 (_one_thread: autouse fixture)

from raft.analysis import findings, plots, preacts, reference_rafs, shapes
from raft.modeling import RaftForSequenceClassification, make_config
from raft.train import loop, pretrain
from raft.train import preact_records as fmt
from raft.train import preacts as collection
from raft.train.runtime import Runtime

SIZES = {"vocab_size": 50, "hidden_size": 16, "num_hidden_layers": 2, "num_attention_heads": 2,
         "intermediate_size": 24, "max_position_embeddings": 32, "pad_token_id": 0}
STATS = ("count", "tokens", "underflow", "overflow", "min", "max")


def record_of(values, tokens: int | None = None) -> dict:
    """A record (as `collect` writes one) of the given values, histogrammed with numpy."""
    v = np.asarray(values, dtype=np.float64).ravel()
    counts, _ = np.histogram(v, fmt.EDGES)
    return {"edges": fmt.EDGES.tolist(), "counts": counts.tolist(), "count": v.size,
            "tokens": v.size if tokens is None else tokens, "underflow": int((v < fmt.LIMITS[0]).sum()),
            "overflow": int((v >= fmt.LIMITS[1]).sum()), "min": float(v.min()), "max": float(v.max()),
            "mean": float(v.mean()), "std": float(v.std())}


def tiny(variant: str):
    torch.manual_seed(0)
    kw = {"rational_layers": "all,pooler"} if variant == "raft" else {}
    model = RaftForSequenceClassification(make_config(variant, **SIZES, **kw)).eval()
    with torch.no_grad():  # spread layer 0's inputs beyond the histogram's limits
        model.bert.encoder.layer[0].intermediate.dense.weight.mul_(60.0)
    return model


def padded_batch():
    ids = torch.tensor([[2, 7, 9, 11, 13, 3], [2, 8, 3, 0, 0, 0], [2, 5, 6, 3, 0, 0]])
    return {"input_ids": ids, "attention_mask": (ids != 0).long()}


def manual_preactivations(model, batch) -> dict[str, np.ndarray]:
    """The activations' inputs computed apart from the hooks under test: the outputs of the
    dense layers before them, the real tokens picked with the mask by hand."""
    base, seen = model.bert, {}
    denses = {f"layer.{i}": layer.intermediate.dense for i, layer in enumerate(base.encoder.layer)}
    if base.pooler is not None:
        denses["pooler"] = base.pooler.dense
    handles = [m.register_forward_hook(lambda mod, a, out, k=k: seen.__setitem__(k, out.detach().double()))
               for k, m in denses.items()]
    with torch.no_grad():
        model(**batch)
    for h in handles:
        h.remove()
    mask = batch["attention_mask"].bool()
    return {k: (v if k == "pooler" else v[mask]).numpy() for k, v in seen.items()}


# ------------------------------------------------------------------ collection
@pytest.mark.parametrize("variant", ["raft", "bert"])
def test_hooks_count_exactly_the_real_tokens(variant):
    model, batch = tiny(variant), padded_batch()
    got = collection.collect(model, [batch])
    want = manual_preactivations(model, batch)
    assert list(got) == ["layer.0", "layer.1", "pooler"]
    real = int(batch["attention_mask"].sum())
    for name, values in want.items():
        rec, ref = got[name], record_of(values, tokens=len(values))
        assert rec["tokens"] == (3 if name == "pooler" else real)
        assert rec["width"] == (16 if name == "pooler" else 24) and rec["count"] == rec["tokens"] * rec["width"]
        assert rec["counts"] == ref["counts"] and rec["nonfinite"] == 0
        for key in STATS:
            assert rec[key] == ref[key], (name, key)
        assert rec["mean"] == pytest.approx(ref["mean"]) and rec["std"] == pytest.approx(ref["std"])
        assert (rec["q005"], rec["q995"]) == fmt.mass_interval(rec)
    assert got["layer.0"]["underflow"] > 0 and got["layer.0"]["overflow"] > 0
    assert got["layer.0"]["activation"] == ("Rational" if variant == "raft" else "GELUActivation")
    assert got["pooler"]["activation"] == ("Rational" if variant == "raft" else "Tanh")
    assert model.training is False and not any(m._forward_hooks for m in collection.activation_modules(model).values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_inputs_counted_per_bit_pattern_give_the_same_record(dtype):
    """Autocast's 16-bit activations take the bit-pattern path; the record equals the one of the
    same values counted one by one in float64 (edges, infinities and NaN included)."""
    torch.manual_seed(0)
    x = (torch.randn(40, 7, 24) * 6).to(dtype)
    x.view(-1)[:6] = torch.tensor([float("nan"), float("inf"), -float("inf"), 10.0, -10.0, 0.1]).to(dtype)
    mask = torch.ones(40, 7, dtype=torch.long)
    mask[3:, 5:] = 0
    fast, slow = collection._Accumulator(torch.device("cpu")), collection._Accumulator(torch.device("cpu"))
    for rows in (slice(0, 25), slice(25, 40)):  # two batches
        fast.add(x[rows], mask[rows])
        slow.add(x[rows].double(), mask[rows])
    assert set(fast.patterns) == {dtype} and not slow.patterns
    got, want = fast.raw(), slow.raw()
    assert got["counts"] == want["counts"] and got["counts"][0] > 0 and got["counts"][-1] > 0
    assert got["nonfinite"] == want["nonfinite"] == 3 and got["extremes"] == want["extremes"]
    assert (got["tokens"], got["width"]) == (want["tokens"], want["width"]) == (int(mask.sum()), 24)
    assert got["moments"] == pytest.approx(want["moments"], rel=1e-12)


def test_padding_does_not_change_the_counts():
    """The same sequences alone (no padding) and padded together give the same histograms."""
    model, batch = tiny("raft"), padded_batch()
    together = collection.collect(model, [batch])
    alone = collection.collect(model, [{"input_ids": ids[ids != 0][None]} for ids in batch["input_ids"]])
    for name in together:
        assert together[name]["tokens"] == alone[name]["tokens"]
        assert together[name]["count"] == alone[name]["count"]
        assert np.abs(np.subtract(together[name]["counts"], alone[name]["counts"])).sum() <= 4  # rounding at edges
        assert together[name]["mean"] == pytest.approx(alone[name]["mean"], rel=1e-4, abs=1e-5)


def test_gather_merges_shards():
    model, batch = tiny("bert"), padded_batch()
    shards = [{k: v[rows] for k, v in batch.items()} for rows in (slice(0, 1), slice(1, 3))]
    a, b = (collection.collect(model, [shard]) for shard in shards)
    parts = []

    def gather(raw):  # what two processes with one shard each exchange
        parts.append(raw)
        return parts if len(parts) == 2 else [raw]

    collection.collect(model, [shards[0]], gather=gather)
    merged = collection.collect(model, [shards[1]], gather=gather)
    whole = collection.collect(model, [batch])
    for name in merged:
        m = merged[name]
        assert m["counts"] == np.add(a[name]["counts"], b[name]["counts"]).tolist()
        assert (m["tokens"], m["count"]) == (a[name]["tokens"] + b[name]["tokens"], a[name]["count"] + b[name]["count"])
        assert (m["min"], m["max"]) == (min(a[name]["min"], b[name]["min"]), max(a[name]["max"], b[name]["max"]))
        assert m["tokens"] == whole[name]["tokens"] and m["mean"] == pytest.approx(whole[name]["mean"], rel=1e-5)
        assert m["std"] == pytest.approx(whole[name]["std"], rel=1e-5)


def test_finetune_preactivations_over_an_encoded_part():
    model = tiny("raft")
    part = loop.Encoded([[2, 7, 9, 3], [2, 8, 3], [2, 5, 6, 7, 11, 3], [2, 4, 3]], labels=[0, 1, 0, 1])
    got = collection.finetune_preactivations(model, part, Runtime(torch.device("cpu")), batch_size=3)
    assert got["layer.1"]["tokens"] == int(part.lengths.sum()) == 16
    assert got["pooler"]["tokens"] == 4
    json.dumps(got)  # JSON-able as it is



def test_one_owner_and_no_analysis_in_training():
    """The analysis module uses the record format's module, recording pulls in neither the
    analysis layer nor pandas, and the notebooks' analysis imports no torch (a faster kernel start)."""
    for name in ("BINS", "LIMITS", "EDGES", "MASS", "FILE", "FINETUNE_KEY", "POOLER", "quantile", "mass_interval"):
        assert getattr(preacts, name) is getattr(fmt, name), name
    code = ("import sys, raft.train.pretrain, raft.train.pretrain_record, raft.train.preacts; "
            "print([m for m in sys.modules if m.startswith('raft.analysis') or m == 'pandas'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
    code = ("import sys, raft.analysis.aggregate, raft.analysis.findings, raft.analysis.plots, raft.analysis.report; "
            "print([m for m in sys.modules if m == 'torch' or m.startswith('raft.train.preacts')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


# ------------------------------------------------------------------ intervals and distances
def test_mass_interval_on_known_distributions():
    rng = np.random.default_rng(0)
    x = rng.normal(0.5, 2.0, 400_000)
    lo, hi = preacts.mass_interval(record_of(x), 0.99)
    want = np.quantile(x, [0.005, 0.995])
    assert lo == pytest.approx(want[0], abs=0.02) and hi == pytest.approx(want[1], abs=0.02)
    assert preacts.quantile(record_of(np.linspace(-1, 1, 100_001)), 0.25) == pytest.approx(-0.5, abs=1e-3)
    # 2 % of the mass beyond the last edge: the upper end lies in the overflow, within [10, max]
    tail = np.concatenate([rng.uniform(-1, 1, 98_000), rng.uniform(12, 20, 2_000)])
    lo, hi = preacts.mass_interval(record_of(tail), 0.99)
    assert lo == pytest.approx(-0.99, abs=0.01) and 12 <= hi <= 20
    with pytest.raises(ValueError, match="no values"):
        preacts.quantile({**record_of([0.0]), "count": 0}, 0.5)


def test_distance_from_gelu():
    init = shapes.gelu_init_coefficients()
    d = preacts.distance_from_gelu(init["numerator"], init["denominator"], -3.0, 3.0)
    assert d["max_abs"] < 3e-3 and d["rms"] <= d["max_abs"]  # the init's fit error on [-3, 3]
    near_zero = record_of(np.random.default_rng(1).normal(0, 0.3, 50_000))
    last = 0.0
    for c in (0.05, 0.1, 0.2):
        num = [init["numerator"][0] + c, *init["numerator"][1:]]
        d = preacts.distance_from_gelu(num, init["denominator"], -3.0, 3.0, near_zero)
        assert d["max_abs"] == pytest.approx(c, abs=3e-3)  # F moves by c / Q(x), most at x = 0
        assert d["rms_mass"] == pytest.approx(c, rel=0.15) and d["rms"] < d["rms_mass"]  # inputs sit near 0
        assert d["max_abs"] > last
        last = d["max_abs"]
    far = preacts.distance_from_gelu(num, init["denominator"], 5.0, 6.0, near_zero)
    assert math.isnan(far["rms_mass"])  # no inputs there


# ------------------------------------------------------------------ raft pretrain writes them
@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    """Tiny bert and raft runs on a corpus whose validation sequences are partly padded."""
    from datasets import Dataset, load_from_disk

    root = tmp_path_factory.mktemp("preacts")
    corpus = make_tiny_corpus(root / "corpus", seq_len=16, n_train=64, n_validation=12)
    ids = np.array(load_from_disk(str(corpus / "validation"))["input_ids"])
    ids[::2, 10:] = 0  # [PAD]
    Dataset.from_dict({"input_ids": ids.tolist()}).save_to_disk(str(corpus / "validation-padded"))
    (corpus / "validation").rename(corpus / "validation-full")
    (corpus / "validation-padded").rename(corpus / "validation")
    parser = argparse.ArgumentParser()
    pretrain.add_arguments(parser)
    out = {}
    for variant in ("bert", "raft"):
        args = ["--corpus", str(corpus), "--output", str(root / variant), "--variant", variant, "--num-layers", "2",
                "--hidden-size", "32", "--num-heads", "2", "--intermediate-size", "48", "--max-steps", "2",
                "--batch-size", "8", "--save-steps", "2", "--eval-steps", "2", "--max-eval-sequences", "10"]
        assert pretrain.run(parser.parse_args(args)) == 0
        out[variant] = root / variant
    return out, int((ids[:10] != 0).sum())


@pytest.mark.parametrize("variant", ["bert", "raft"])
def test_pretrain_writes_histograms_of_every_layer(pretrained, variant):
    runs, real_tokens = pretrained
    rec = json.loads((runs[variant] / fmt.FILE).read_text())
    assert (rec["variant"], rec["steps"], rec["split"], rec["sequences"], rec["masked"]) == (variant, 2, "validation",
                                                                                           10, False)
    assert list(rec["layers"]) == ["layer.0", "layer.1"]  # the masked-LM model has no pooler
    for layer in rec["layers"].values():
        assert layer["tokens"] == real_tokens < 10 * 16  # real tokens x 1 per layer: padding left out
        assert layer["count"] == real_tokens * 48
        assert sum(layer["counts"]) + layer["underflow"] + layer["overflow"] == layer["count"]
        assert layer["activation"] == ("Rational" if variant == "raft" else "GELUActivation")
        assert layer["q005"] < layer["mean"] < layer["q995"]
    assert (runs[variant] / "metrics.json").is_file()


# ------------------------------------------------------------------ the shapes notebook's table and figure
def write_results(root, pretrained_runs) -> None:
    """results/pretrain/{variant}/ from the tiny runs, and one fine-tuning run recording its dev inputs."""
    import shutil

    for variant, run in pretrained_runs.items():
        shutil.copytree(run, root / "pretrain" / variant, ignore=shutil.ignore_patterns("model", "checkpoints"))
    raft = json.loads((root / "pretrain/raft" / preacts.FILE).read_text())["layers"]
    rafs = json.loads((root / "pretrain/raft/metrics.json").read_text())["rational"]["final"]
    run = root / "glue/rte/raft/n16/seed1/metrics.json"
    run.parent.mkdir(parents=True)
    run.write_text(json.dumps({"task": "rte", "variant": "raft", "n": 16, "seed": 1, "rationals": rafs,
                               "preactivations": {"dev": raft}}))


def test_table_findings_and_figure_from_result_files(pretrained, tmp_path):
    write_results(tmp_path, pretrained[0])
    acts = preacts.load_results(tmp_path)
    ours = json.loads((tmp_path / "pretrain/raft/metrics.json").read_text())["rational"]["final"]
    published = reference_rafs.published_rafs()
    table = preacts.interval_table(acts, ours, published)
    assert list(table.columns) == preacts.TABLE_COLUMNS and list(table["layer"]) == ["layer.0", "layer.1"]
    rec = acts.pretrain_layers("raft")["layer.0"]
    row = table.iloc[0]
    assert (row["lo"], row["hi"]) == preacts.mass_interval(rec) and row["tokens"] == pretrained[1]
    d = preacts.distance_from_gelu(ours["layer.0"]["numerator"], ours["layer.0"]["denominator"], row["lo"], row["hi"], rec)
    assert row["rms_from_gelu"] == d["rms_mass"] and row["max_from_gelu"] == d["max_abs"]
    assert row["finetuned_runs"] == 1 and row["finetuned_rms_from_gelu"] == pytest.approx(d["rms_mass"])
    assert row["published_max_from_gelu_fixed"] > 0 and not math.isnan(row["bert_lo"])
    display = preacts.interval_display(table)
    assert display.shape == (2, 8) and display.iloc[0]["RAF"] == "layer 1"
    text = findings.input_findings(table)
    assert "99 % of each layer's validation inputs" in text and "published RAFs" in text
    fig = plots.input_shapes(ours, published, acts, published_label=reference_rafs.LABEL)
    assert len(fig.axes) == 4  # a curve panel and a density panel per layer
    top, bottom = fig.axes[:2]
    assert top.get_xlim() == bottom.get_xlim() and top.get_xlim()[0] < row["lo"] and row["hi"] < top.get_xlim()[1]
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert f"RAFT inputs after pretraining (validation, {pretrained[1]:,} tokens per FFN layer)" in labels
    assert "RAFT inputs after fine-tuning (dev parts, 1 run pooled)" in labels
    plots.plt.close(fig)


def test_older_results_without_histograms(tmp_path):
    acts = preacts.load_results(tmp_path)
    table = preacts.interval_table(acts, {}, reference_rafs.published_rafs())
    assert table.empty and preacts.interval_display(table).empty
    assert plots.input_shapes({}, reference_rafs.published_rafs(), acts) is None
    assert "No pre-activation histograms" in findings.input_findings(table)
