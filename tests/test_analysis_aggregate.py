"""`raft aggregate` on synthetic result trees with known answers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from test_analysis_synthetic import (
    glue_test_metrics,
    make_results,
    rafs,
    write_pretrain,
    write_run,
    write_zeroshot,
    zeroshot_tree,
)

from raft import cli
from raft.analysis import aggregate as agg

SEEDS = [2022, 202206, 20220602, 2259, 5309]
TABLES = ["pretrain.csv", "glue.csv", "glue_summary.csv", "squad.csv", "squad_summary.csv",
          "glue_efficient.csv", "glue_efficient_summary.csv", "zeroshot.csv", "zeroshot_summary.csv"]


def _read(path):
    return pd.read_csv(path, dtype={"n": str}, keep_default_na=False, na_values=[""])


def _known_tree(root, gains, tasks=("cola", "mnli"), n=100, seeds=SEEDS):
    """RAFT = BERT + gains[i] on every metric of seed i."""
    for task in tasks:
        for i, seed in enumerate(seeds):
            base = 0.5 + 0.01 * i + (0.1 if task == "mnli" else 0.0)
            write_run(root, "glue", task, "bert", n, seed, glue_test_metrics(task, base))
            write_run(root, "glue", task, "raft", n, seed, glue_test_metrics(task, base + gains[i]))
    return root


def test_cli_writes_every_table_and_header_only_when_missing(tmp_path):
    results = tmp_path / "results"
    results.mkdir()
    assert cli.main(["aggregate", "--results", str(results)]) == 0
    for name in TABLES:
        text = (results / "tables" / name).read_text()
        assert text.count("\n") == 1, name  # header only
    assert (results / "tables/glue.csv").read_text().strip().split(",") == agg.LONG_COLUMNS
    assert (results / "tables/glue_summary.csv").read_text().strip().split(",") == agg.SUMMARY_COLUMNS
    assert (results / "tables/pretrain.csv").read_text().strip().split(",") == agg.PRETRAIN_COLUMNS


def test_nonexistent_results_dir_does_not_crash(tmp_path):
    out = tmp_path / "tables"
    assert cli.main(["aggregate", "--results", str(tmp_path / "nope"), "--output", str(out)]) == 0
    from raft import layout

    assert sorted(p.name for p in out.iterdir()) == sorted([*(f"{t}.csv" for t in layout.TABLES), "records.json"])


def test_constant_gain_known_answer(tmp_path):
    results = _known_tree(tmp_path / "results", [0.01] * 5)
    agg.aggregate(results)
    s = _read(results / "tables/glue_summary.csv")
    assert set(s["verdict"]) == {"RAFT better"}
    np.testing.assert_allclose(s["delta"], 0.01, rtol=1e-5)
    np.testing.assert_allclose(s["ci_low"], 0.01, rtol=1e-5)
    np.testing.assert_allclose(s["ci_high"], 0.01, rtol=1e-5)
    assert set(s["n_paired"]) == {5} and set(s["bert_n_seeds"]) == {5} and set(s["raft_n_seeds"]) == {5}
    # rows: CoLA (MCC, score), MNLI matched/mismatched (acc, score), average
    assert list(zip(s["task"], s["eval_set"], s["metric"])) == [
        ("cola", "test", "MCC"), ("cola", "test", "score"),
        ("mnli", "matched", "acc"), ("mnli", "matched", "score"),
        ("mnli", "mismatched", "acc"), ("mnli", "mismatched", "score"),
        ("average", "all", "score"),
    ]
    # GLUE average per seed = mean(cola score, mean(mnli matched, mnli mismatched))
    avg = s[s["task"] == "average"].iloc[0]
    per_seed = [np.mean([0.5 + 0.01 * i, ((0.6 + 0.01 * i) + (0.6 + 0.01 * i - 0.01)) / 2]) for i in range(5)]
    assert avg["bert_mean"] == pytest.approx(np.mean(per_seed), abs=1e-6)
    assert avg["bert_std"] == pytest.approx(np.std(per_seed, ddof=1), abs=1e-6)
    assert avg["raft_mean"] == pytest.approx(np.mean(per_seed) + 0.01, abs=1e-6)
    assert "average over 2 tasks: CoLA, MNLI" in avg["data_notes"]


def test_mixed_signs_no_detectable_difference(tmp_path):
    results = _known_tree(tmp_path / "results", [0.03, -0.02, 0.01, -0.03, 0.005], tasks=("cola",))
    agg.aggregate(results)
    s = _read(results / "tables/glue_summary.csv")
    assert set(s["verdict"]) == {"no detectable difference"}
    assert (s["ci_low"] < 0).all() and (s["ci_high"] > 0).all()
    assert "average" not in set(s["task"])  # one task: no average


def test_long_table_is_tidy_and_traceable(tmp_path):
    results = _known_tree(tmp_path / "results", [0.01] * 5, tasks=("mrpc",), seeds=SEEDS[:2])
    agg.aggregate(results)
    long = _read(results / "tables/glue.csv")
    assert list(long.columns) == agg.LONG_COLUMNS
    assert len(long) == 2 * 2 * 3  # variants x seeds x (acc, F1, score)
    assert set(long["metric"]) == {"acc", "F1", "score"}
    row = long[(long["variant"] == "raft") & (long["seed"] == 2022) & (long["metric"] == "F1")].iloc[0]
    m = json.loads((tmp_path / row["source_file"]).read_text())
    assert row["value"] == pytest.approx(m["test"]["test"]["f1"], rel=1e-6)
    assert row["source_file"] == "results/glue/mrpc/raft/n100/seed2022/metrics.json"


def test_row_order_and_byte_stability(tmp_path):
    results = tmp_path / "results"
    for n in ("full", 1000, 100, 300):
        for task in ("rte", "cola"):
            for seed in (5309, 49):
                for v in ("raft", "bert"):
                    write_run(results, "glue", task, v, n, seed, glue_test_metrics(task, 0.123456789))
    agg.aggregate(results)
    first = {name: (results / "tables" / name).read_bytes() for name in TABLES}
    agg.aggregate(results)
    assert first == {name: (results / "tables" / name).read_bytes() for name in TABLES}
    s = _read(results / "tables/glue_summary.csv")
    assert list(dict.fromkeys(s["task"])) == ["cola", "rte", "average"]
    assert list(dict.fromkeys(s[s["task"] == "cola"]["n"])) == ["100", "300", "1000", "full"]
    long = _read(results / "tables/glue.csv")
    first_rows = long.head(4)
    assert list(first_rows["variant"]) == ["bert", "bert", "raft", "raft"]
    assert list(first_rows["seed"]) == [49, 5309, 49, 5309]
    assert b",0.123457," in first["glue.csv"]  # FLOAT_FORMAT %.6g


def test_partial_data_and_notes_propagate(tmp_path):
    results = tmp_path / "results"
    for seed in SEEDS[:3]:
        for v in ("bert", "raft"):
            write_run(results, "glue", "qqp", v, "full", seed, glue_test_metrics("qqp", 0.8),
                      partial=True, train_source="local-subset", test_source="held-out",
                      notes=["QQP train pool subsampled", "official test replaced by held-out part"])
            write_run(results, "glue", "sst2", v, "full", seed, glue_test_metrics("sst2", 0.9))
    agg.aggregate(results)
    s = _read(results / "tables/glue_summary.csv")
    qqp = s[s["task"] == "qqp"].iloc[0]
    assert s["partial_data"].dtype == bool and qqp["partial_data"]
    assert qqp["train_source"] == "local-subset" and qqp["test_source"] == "held-out"
    assert qqp["data_notes"] == "QQP train pool subsampled | official test replaced by held-out part"
    sst2 = s[s["task"] == "sst2"].iloc[0]
    assert not sst2["partial_data"] and pd.isna(sst2["data_notes"])
    avg = s[s["task"] == "average"].iloc[0]
    assert avg["partial_data"] and avg["train_source"] == "local;local-subset"
    long = (results / "tables/glue.csv").read_text()
    assert ",true,local-subset,held-out," in long and ",false,local,local," in long


def test_incomplete_seeds_left_out_of_average(tmp_path):
    results = tmp_path / "results"
    for seed in (1, 2, 3):
        for v in ("bert", "raft"):
            write_run(results, "glue", "cola", v, 100, seed, glue_test_metrics("cola", 0.5))
            if seed != 3:
                write_run(results, "glue", "rte", v, 100, seed, glue_test_metrics("rte", 0.6))
    s = agg.summary_table(agg.long_table(agg.load_runs(results, "glue")))
    avg = s[s["task"] == "average"].iloc[0]
    assert avg["n_paired"] == 2 and avg["bert_n_seeds"] == 2
    assert "seeds without every task left out: 3" in avg["data_notes"]


def test_unpaired_seeds_and_single_variant(tmp_path):
    results = tmp_path / "results"
    for seed in (1, 2, 3):
        write_run(results, "glue", "rte", "bert", 100, seed, glue_test_metrics("rte", 0.5))
    for seed in (2, 3, 4):
        write_run(results, "glue", "rte", "raft", 100, seed, glue_test_metrics("rte", 0.6))
    write_run(results, "glue", "cola", "bert", 300, 1, glue_test_metrics("cola", 0.5))
    s = agg.summary_table(agg.long_table(agg.load_runs(results, "glue")))
    rte = s[(s["task"] == "rte") & (s["metric"] == "acc")].iloc[0]
    assert (rte["bert_n_seeds"], rte["raft_n_seeds"], rte["n_paired"]) == (3, 3, 2)
    assert rte["delta"] == pytest.approx(0.1)
    cola = s[(s["task"] == "cola") & (s["metric"] == "MCC")].iloc[0]
    assert cola["verdict"] == "only one variant" and cola["raft_mode"] == ""


def test_efficient_and_squad_pair_across_modes(tmp_path):
    results = make_results(tmp_path / "results", tasks=("cola", "mrpc"), ns=(100,), pretrain=False)
    agg.aggregate(results)
    eff = _read(results / "tables/glue_efficient_summary.csv")
    assert set(zip(eff["bert_mode"], eff["raft_mode"])) == {("bias_head", "raf_head")}
    assert set(eff["bert_trainable_parameters"]) == {1666}
    assert set(eff["raft_trainable_parameters"]) == {1679}
    assert "average" in set(eff["task"])
    sq = _read(results / "tables/squad_summary.csv")
    assert list(sq["metric"]) == ["EM", "F1", "score"]
    assert set(zip(sq["bert_mode"], sq["raft_mode"])) == {("full", "frozen_rafs")}
    np.testing.assert_allclose(sq["delta"], 1.0, rtol=1e-6)  # synthetic RAFT = BERT + 1 point
    assert set(sq["verdict"]) == {"RAFT better"}
    long = _read(results / "tables/glue_efficient.csv")
    assert set(long["mode"]) == {"bias_head", "raf_head"}


def test_pretrain_tables(tmp_path):
    results = tmp_path / "results"
    write_pretrain(results, "bert", perplexity=12.5)
    write_pretrain(results, "raft", perplexity=11.0, layers=2)
    agg.aggregate(results)
    pre = _read(results / "tables/pretrain.csv")
    assert list(pre["variant"]) == ["bert", "raft"]
    assert list(pre["perplexity"]) == [12.5, 11.0]
    assert list(pre["source_file"]) == ["results/pretrain/bert/metrics.json", "results/pretrain/raft/metrics.json"]
    log = agg.load_pretrain_log(results)
    assert list(log.columns) == ["variant", "step", "tokens", "loss", "lr", "val_loss", "val_perplexity"]
    assert log["val_perplexity"].notna().sum() == 4  # every 5th of 10 rows, two variants
    snaps = agg.load_rational_snapshots(results, "raft")
    assert [s["step"] for s in snaps] == [0, 33, 67, 100]
    final = agg.pretrained_rationals(results, "raft")
    assert final == snaps[-1]["rationals"] and set(final) == {"layer.0", "layer.1", "pooler"}
    assert agg.pretrained_rationals(results, "bert") == {}


def test_pretrained_rationals_prefers_metrics_json(tmp_path):
    results = tmp_path / "results"
    write_pretrain(results, "raft", perplexity=11.0, layers=2)
    path = results / "pretrain/raft/metrics.json"
    m = json.loads(path.read_text())
    m["rationals"] = rafs(1)
    path.write_text(json.dumps(m))
    assert agg.pretrained_rationals(results, "raft") == rafs(1)


def test_layout_fallbacks_and_bad_files(tmp_path):
    results = tmp_path / "results"
    p = write_run(results, "glue", "rte", "raft", "full", 7, glue_test_metrics("rte", 0.6))
    m = json.loads(p.read_text())
    for k in ("task", "variant", "n", "seed"):
        del m[k]
    p.write_text(json.dumps(m))
    runs = agg.load_runs(results, "glue")
    assert len(runs) == 1
    r = runs.iloc[0]
    assert (r["task"], r["variant"], r["n"], r["seed"]) == ("rte", "raft", "full", 7)
    bad = results / "glue/rte/bert/nfull/seed7/metrics.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{ not json")
    with pytest.raises(agg.ResultFileError, match="seed7/metrics.json"):  # never skipped silently
        agg.load_runs(results, "glue")


def test_pretrain_init(tmp_path):
    from raft.rational import init_coefficients

    results = tmp_path / "results"
    assert agg.pretrain_init(results)[0] == "gelu init (rational)"  # nothing there: the default
    write_pretrain(results, "raft", perplexity=11.0, layers=2)  # rational.init = "gelu"
    label, coeffs = agg.pretrain_init(results)
    num, den = init_coefficients("gelu", (5, 4))
    assert label == "gelu init (rational)" and coeffs == {"numerator": num, "denominator": den}
    path = results / "pretrain/raft/metrics.json"
    m = json.loads(path.read_text())
    m["rational"] = {"init": "no-such-init"}
    path.write_text(json.dumps(m))
    label, coeffs = agg.pretrain_init(results)  # falls back to the step-0 snapshot
    assert label == "initialisation (step 0)"
    assert coeffs == agg.load_rational_snapshots(results)[0]["rationals"]["layer.0"]


# ------------------------------------------------------------------ constant predictions
def _constant_tree(root, *, flag=True, n=100):
    """RTE: every run constant; CoLA: RAFT seed 2 constant; MRPC: old files (no field);
    STS-B: a regression (flag null). ``flag=False``: the same values, written as old files."""
    for seed in (1, 2, 3):
        for v in ("bert", "raft"):
            c = (lambda x: x) if flag else (lambda x: None)
            write_run(root, "glue", "rte", v, n, seed, glue_test_metrics("rte", 0.527), constant=c(True))
            write_run(root, "glue", "cola", v, n, seed, glue_test_metrics("cola", 0.1 + 0.01 * seed),
                      constant=c(v == "raft" and seed == 2))
            write_run(root, "glue", "mrpc", v, n, seed, glue_test_metrics("mrpc", 0.6 + 0.01 * seed))
            write_run(root, "glue", "stsb", v, n, seed, glue_test_metrics("stsb", 0.3 + 0.02 * seed),
                      constant=c(False))
    return root


def test_constant_predictions_columns_and_counts(tmp_path):
    results = _constant_tree(tmp_path / "results")
    runs = agg.load_runs(results, "glue")
    flags = {(t, v, s): c for t, v, s, c in zip(runs["task"], runs["variant"], runs["seed"],
                                                 runs["constant_predictions"])}
    assert flags[("rte", "bert", 1)] is True and flags[("cola", "raft", 2)] is True
    assert flags[("cola", "raft", 1)] is False
    assert flags[("mrpc", "bert", 1)] is None and flags[("stsb", "bert", 1)] is None
    agg.aggregate(results)
    long = _read(results / "tables/glue.csv")
    assert list(long.columns) == agg.LONG_COLUMNS + agg.LONG_OPTIONAL_COLUMNS
    assert "distinct_predictions" not in set(long["metric"])  # a count, not a metric
    assert len(long) == 2 * 3 * (2 + 2 + 3 + 3)  # variants x seeds x (rte, cola, mrpc, stsb metrics)
    text = (results / "tables/glue.csv").read_text()
    assert ",results/glue/rte/bert/n100/seed1/metrics.json,true\n" in text
    assert ",results/glue/cola/bert/n100/seed1/metrics.json,false\n" in text
    assert ",results/glue/mrpc/bert/n100/seed1/metrics.json,\n" in text  # not recorded: empty
    s = _read(results / "tables/glue_summary.csv")
    assert list(s.columns) == agg.SUMMARY_COLUMNS + agg.SUMMARY_OPTIONAL_COLUMNS
    counts = {(t, m): (b, r) for t, m, b, r in zip(s["task"], s["metric"], s["bert_constant_runs"],
                                                    s["raft_constant_runs"])}
    assert counts[("rte", "acc")] == counts[("rte", "score")] == (3, 3)
    assert counts[("cola", "MCC")] == (0, 1)
    assert all(pd.isna(x) for x in counts[("mrpc", "acc")] + counts[("stsb", "Pearson")])
    assert counts[("average", "score")] == (3, 4)  # the constant task runs the average rests on
    assert ",3,3\n" in (results / "tables/glue_summary.csv").read_text()  # integers, not 3.0


def test_old_inputs_give_byte_identical_tables(tmp_path):
    """Files without the field give exactly the tables of before (no optional column); the
    same runs with the field differ only by the appended columns."""
    old = _constant_tree(tmp_path / "old" / "results", flag=False)
    new = _constant_tree(tmp_path / "new" / "results", flag=True)
    agg.aggregate(old)
    agg.aggregate(new)
    assert (old / "tables/glue.csv").read_text().split("\n", 1)[0].split(",") == agg.LONG_COLUMNS
    assert (old / "tables/glue_summary.csv").read_text().split("\n", 1)[0].split(",") == agg.SUMMARY_COLUMNS
    for name, drop in (("glue.csv", agg.LONG_OPTIONAL_COLUMNS), ("glue_summary.csv", agg.SUMMARY_OPTIONAL_COLUMNS)):
        table = pd.read_csv(new / "tables" / name, dtype=str, keep_default_na=False)
        stripped = tmp_path / f"stripped_{name}"
        table.drop(columns=drop).to_csv(stripped, index=False, lineterminator="\n")
        assert stripped.read_bytes() == (old / "tables" / name).read_bytes(), name
    # the summary's bytes for old inputs, pinned (header and the RTE accuracy row)
    text = (old / "tables/glue_summary.csv").read_text()
    assert text.startswith(",".join(agg.SUMMARY_COLUMNS) + "\n")
    assert ("rte,test,acc,100,full,full,0.527,0,3,0.527,0,3,3,0,0,0,1,1,no detectable difference,"
            "1000,1000,false,local,local,\n") in text


def test_constant_flag_derived_from_distinct_predictions(tmp_path):
    results = tmp_path / "results"
    p = write_run(results, "glue", "mnli", "bert", 100, 1, glue_test_metrics("mnli", 0.4))
    m = json.loads(p.read_text())
    m["distinct_predictions"] = {"matched": 3, "mismatched": 1}  # counts, no flag
    p.write_text(json.dumps(m))
    runs = agg.load_runs(results, "glue")
    assert runs["constant_predictions"].tolist() == [True]
    test = glue_test_metrics("mnli", 0.4)
    assert agg.constant_flag({"constant_predictions": False, "distinct_predictions": {"matched": 1}},
                             test) is False  # the recorded flag wins
    assert agg.constant_flag({}, test) is None
    # a count among a test set's entries (not where the adapter writes it) is read, never a metric
    test["matched"]["distinct_predictions"] = 1
    assert agg.constant_flag({}, test) is True
    runs.at[0, "test"] = test
    assert "distinct_predictions" not in set(agg.long_table(runs)["metric"])


# ------------------------------------------------------------------ zero-shot transfer
def test_zeroshot_tables_have_their_header_when_there_are_no_runs(tmp_path):
    agg.aggregate(tmp_path / "results")
    assert (tmp_path / "results/tables/zeroshot.csv").read_text() == ",".join(
        agg.LONG_COLUMNS + agg.ZEROSHOT_COLUMNS) + "\n"
    assert (tmp_path / "results/tables/zeroshot_summary.csv").read_text() == ",".join(
        agg.SUMMARY_COLUMNS + agg.ZEROSHOT_COLUMNS) + "\n"


def test_zeroshot_known_answer(tmp_path):
    results = zeroshot_tree(tmp_path / "results")
    written = agg.aggregate(results)
    assert {"zeroshot", "zeroshot_summary"} <= set(written)
    long = _read(results / "tables/zeroshot.csv")
    assert list(long.columns) == agg.LONG_COLUMNS + agg.ZEROSHOT_COLUMNS + agg.LONG_OPTIONAL_COLUMNS
    assert len(long) == 6 * 2 * (2 + 3 * 3)  # seeds x variants x (SNLI acc, score + 3 TriviaQA sets x EM, F1, score)
    tqa = long[(long["task"] == "triviaqa") & (long["variant"] == "raft") & (long["seed"] == 49)]
    assert list(tqa["eval_set"].unique()) == ["triviaqa", "all_pairs", "has_ans"]  # TriviaQA's own first
    em = tqa[tqa["metric"] == "EM"]
    em = dict(zip(em["eval_set"], em["value"]))
    assert em == {"triviaqa": 44.0, "all_pairs": 34.0, "has_ans": 49.0}  # seed 49 = i 5, RAFT EM - 1
    row = tqa.iloc[0]
    assert row["mode"] == "frozen_rafs" and row["source_task"] == "squad"
    assert row["substitute"] and row["source_file"] == "results/zeroshot/triviaqa/raft/seed49/metrics.json"
    assert not long[long["task"] == "snli"]["substitute"].any()
    s = _read(results / "tables/zeroshot_summary.csv")
    assert list(s.columns) == agg.SUMMARY_COLUMNS + agg.ZEROSHOT_COLUMNS + agg.SUMMARY_OPTIONAL_COLUMNS
    assert list(zip(s["task"], s["eval_set"], s["metric"])) == [("snli", "test", "acc"), ("snli", "test", "score")] + [
        ("triviaqa", e, m) for e in ("triviaqa", "all_pairs", "has_ans") for m in ("EM", "F1", "score")]
    means = {(e, m): (b, r) for e, m, b, r in zip(s["eval_set"], s["metric"], s["bert_mean"], s["raft_mean"])}
    assert means["all_pairs", "F1"][0] == pytest.approx(38.5) and means["has_ans", "EM"][0] == pytest.approx(47.5)
    assert set(s["n"]) == {"full"} and set(s["n_paired"]) == {6}
    acc = s.iloc[0]
    base = [0.6 + 0.01 * i for i in range(6)]
    assert acc["bert_mean"] == pytest.approx(np.mean(base)) and acc["bert_std"] == pytest.approx(np.std(base, ddof=1))
    assert acc["delta"] == pytest.approx(0.02) and acc["verdict"] == "RAFT better"
    assert (acc["source_task"], acc["substitute"], acc["partial_data"], acc["train_source"]) == (
        "mnli", False, True, "local-subset")
    assert (acc["bert_constant_runs"], acc["raft_constant_runs"]) == (0, 0)
    em, f1 = s.iloc[2], s.iloc[3]
    assert em["delta"] == pytest.approx(-1.0) and em["verdict"] == "BERT better"
    assert (em["bert_mode"], em["raft_mode"], em["source_task"], em["substitute"]) == ("full", "frozen_rafs", "squad", True)
    assert f1["delta"] == pytest.approx(np.mean([0.5, -0.4, 0.3, -0.6, 0.2, -0.1]), abs=1e-6)  # %.6g
    assert f1["verdict"] == "no detectable difference" and f1["ci_low"] < 0 < f1["ci_high"]
    assert pd.isna(em["bert_constant_runs"])  # TriviaQA runs record no constant predictions


def test_zeroshot_display_marks_the_substitute(tmp_path):
    from raft.analysis import findings, plots, report

    results = zeroshot_tree(tmp_path / "results")
    runs, long, summary = report.load_zeroshot(results)
    table, foot = report.format_zeroshot_table(summary)
    assert list(table["task"]) == ["SNLI†", "TriviaQA¶", "TriviaQA¶", "TriviaQA all pairs (SQuAD EM/F1)¶",
                                   "TriviaQA all pairs (SQuAD EM/F1)¶", "TriviaQA HasAns (SQuAD EM/F1)¶",
                                   "TriviaQA HasAns (SQuAD EM/F1)¶"]
    assert list(table["fine-tuned on"]) == ["MNLI"] + ["SQuAD v1.1"] * 6 and set(table["N"]) == {"full"}
    assert list(table["metric"]) == ["acc"] + ["EM", "F1"] * 3
    assert "TriviaQA's own EM/F1" in foot[0] and 'gold "" where the context holds no alias' in foot[0]
    assert table.iloc[0]["RAFT"].startswith("64.50 ± 1.87")  # accuracy x 100, like GLUE
    assert table.iloc[1]["BERT (FAFT)"].startswith("42.50 ± 1.87")  # percent, like SQuAD
    assert any(f.startswith("¶ scored on the Hub's TriviaQA rc.web dev set") for f in foot)
    text = findings.zeroshot_findings(summary)
    assert "**SNLI†** (models fine-tuned on MNLI, N = full)" in text and "TriviaQA¶ was scored" in text
    assert "**TriviaQA¶** (models fine-tuned on SQuAD v1.1, N = full, TriviaQA's own EM/F1)" in text
    assert "BERT better" in text
    assert "all pairs" not in text and "EM: RAFT 41.50 vs BERT 42.50" in text  # the headline: TriviaQA's own
    scoring = findings.triviaqa_scoring_findings(summary, runs)
    assert scoring.startswith("**Which TriviaQA score the paper likely shows.** N = full, mean over seeds, BERT / "
                              "RAFT: F1 TriviaQA's own 52.50 / 52.48, all pairs 38.50 / 38.48, HasAns 62.50 / 62.48; "
                              "EM TriviaQA's own 42.50 / 41.50, all pairs 32.50 / 31.50, HasAns 47.50 / 46.50.")
    assert "300 of the 1,000 question–document pairs (30.0 %) hold no answer alias" in scoring
    assert "`pred_f1` / `pred_em` (run_squad.py:1079)" in scoring
    assert ("likely holds the all-pairs score: here (BERT F1, N = full) 24.00 points below HasAns and 14.00 points "
            "below TriviaQA's own score") in scoring
    fig = plots.zeroshot_plot(long)
    titles = [ax.get_title() for ax in fig.axes]
    assert titles[0].startswith("SNLI accuracy") and "¶ substitute" in titles[1] and "¶" not in titles[0]
    empty = agg.study_tables(tmp_path / "none", "zeroshot")[2]
    assert report.format_zeroshot_table(empty)[0].empty and plots.zeroshot_plot(agg.study_tables(
        tmp_path / "none", "zeroshot")[1]) is None
    assert findings.zeroshot_findings(empty).startswith("**Findings.** No zero-shot results")
    assert findings.triviaqa_scoring_findings(empty, agg.study_tables(tmp_path / "none", "zeroshot")[0]) == ""


def test_zeroshot_window_other_than_the_fine_tuning_runs_is_marked(tmp_path):
    """RAFT's TriviaQA records scored at 384 after fine-tuning at 128 (config/paper_authors.yaml):
    the column (all runs of a row from their source's window, else false), ∥ and a caveat."""
    from raft.analysis import findings, report

    results = zeroshot_tree(tmp_path / "results", substitute=False)
    _, long, summary = report.load_zeroshot(results)
    assert summary["window_from_source"].all() and not report.window_differs(summary)  # absent in the record = true
    assert "∥" not in "".join(report.format_zeroshot_table(summary)[0]["task"]) + findings.zeroshot_findings(summary)
    for path in sorted((results / "zeroshot/triviaqa/raft").glob("seed*/metrics.json")):
        m = json.loads(path.read_text())
        m.update(window_from_source=False, data_notes=["scored with 384-token windows; fine-tuned with 128"])
        path.write_text(json.dumps(m))
    _, long, summary = report.load_zeroshot(results)
    tqa = summary["task"] == "triviaqa"
    assert not summary[tqa]["window_from_source"].any() and summary[~tqa]["window_from_source"].all()
    assert not long[(long["task"] == "triviaqa") & (long["variant"] == "raft")]["window_from_source"].any()
    table, foot = report.format_zeroshot_table(summary)
    assert list(table["task"])[:2] == ["SNLI†", "TriviaQA∥"]
    assert any(f.startswith("∥ scored with other windows than the model was fine-tuned with") for f in foot)
    text = findings.zeroshot_findings(summary)
    assert "**TriviaQA∥** (models fine-tuned on SQuAD v1.1" in text
    assert "TriviaQA∥: some models were scored with other windows than they were fine-tuned with" in text


def test_zeroshot_triviaqa_record_before_the_three_scores_is_read_as_hasans(tmp_path):
    """A TriviaQA record holding only ``test`` (its SQuAD EM/F1 of the pairs with an alias) is
    never taken for TriviaQA's own score."""
    from raft.analysis import findings, plots

    for variant in ("bert", "raft"):
        write_zeroshot(tmp_path / "results", "triviaqa", variant, 1, {"test": {"exact_match": 50.0, "f1": 60.0,
                                                                              "score": 60.0}})
    runs, long, summary = agg.study_tables(tmp_path / "results", "zeroshot")
    assert set(long["eval_set"]) == {"has_ans"} and set(summary["eval_set"]) == {"has_ans"}
    assert "rerun `raft zeroshot --target triviaqa`" in findings.triviaqa_scoring_findings(summary, runs)
    assert "TriviaQA" not in findings.zeroshot_findings(summary).split("**Caveats**")[0].split("CI.", 1)[1]
    assert plots.zeroshot_plot(long) is None  # no headline score to draw


# ------------------------------------------------------------------ the study's records only
def test_tables_read_the_study_records_only_and_count_the_others(tmp_path, capsys):
    """Given the study's records, the tables hold exactly those; every other record under the
    results folder is counted in one line; the notebooks' readers see the same records."""
    results = _known_tree(tmp_path / "results", [0.01] * 5, tasks=("cola", "rte"))
    write_pretrain(results, "bert", perplexity=9.0)
    write_pretrain(results, "raft", perplexity=8.0)
    keep = {"pretrain": ["pretrain/raft/metrics.json"],
            "glue": [f"glue/rte/raft/n100/seed{s}/metrics.json" for s in SEEDS[:2]]}
    written = agg.aggregate(results, records=keep)
    err = capsys.readouterr().err
    assert "19 records of other configs ignored (pretrain: 1, glue: 18); the tables hold the 3 records" in err
    long = _read(written["glue"])
    assert set(long["task"]) == {"rte"} and set(long["variant"]) == {"raft"} and set(long["seed"]) == set(SEEDS[:2])
    assert list(_read(written["pretrain"])["variant"]) == ["raft"]
    manifest = json.loads(written["manifest"].read_text())
    assert manifest["records"]["glue"] == keep["glue"] and manifest["ignored"]["glue"] == 18
    runs = agg.load_runs(results, "glue")  # a notebook's reader: the manifest's records
    assert sorted(runs["seed"]) == sorted(SEEDS[:2])
    assert list(agg.load_pretrain(results)["variant"]) == ["raft"]


def test_study_config_gives_the_layouts_records(tmp_path, capsys):
    """`raft aggregate --study-config` lists the records of a config (`raft.layout.study_records`)."""
    results = _known_tree(tmp_path / "results", [0.01] * 5, tasks=("cola", "rte"))
    from test_workflow import REPO, merged_config

    from raft.config import validate

    config = merged_config()
    config["glue"] = {"tasks": ["rte"], "low_data": {"sizes": [100], "seeds": SEEDS[:3]}}
    config["squad"] = {}
    validate(config, REPO / "workflow/schemas/config.schema.yaml")
    spec = json.dumps({"config": config, "zeroshot": []})
    assert cli.main(["aggregate", "--results", str(results), "--study-config", spec]) == 0
    summary = _read(results / "tables/glue_summary.csv")
    assert set(summary["task"]) == {"rte"} and set(summary["bert_n_seeds"]) == {3}
    assert "14 records of other configs ignored (glue: 14)" in capsys.readouterr().err


def test_a_cell_of_mixed_settings_fails_naming_the_key(tmp_path, capsys):
    results = _known_tree(tmp_path / "results", [0.01] * 5, tasks=("rte",))
    write_run(results, "glue", "rte", "raft", 100, SEEDS[0], glue_test_metrics("rte", 0.5),
              hyperparameters={"lr": 1e-3, "total_steps": 99})
    assert cli.main(["aggregate", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert "glue table cell task=rte / variant=raft / mode=full / n=100 mixes runs made with different settings (lr)" in err
    assert f"0.001 in results/glue/rte/raft/n100/seed{SEEDS[0]}/metrics.json" in err
    assert f"5e-05 in results/glue/rte/raft/n100/seed{SEEDS[1]}/metrics.json" in err
    assert not (results / "tables").exists()  # nothing half-written


def test_settings_that_differ_between_cells_are_columns(tmp_path):
    """Per-run step counts may differ within a cell; a setting that differs between cells is
    shown in the long table (``settings``) and per arm in the summary."""
    results = tmp_path / "results"
    for i, seed in enumerate(SEEDS[:3]):
        write_run(results, "glue", "rte", "bert", 100, seed, glue_test_metrics("rte", 0.5),
                  hyperparameters={"total_steps": 10 + i})
        write_run(results, "glue", "rte", "raft", 100, seed, glue_test_metrics("rte", 0.6),
                  hyperparameters={"rational_lr": 1e-3, "total_steps": 10 + i})
    written = agg.aggregate(results)
    long = _read(written["glue"])
    assert set(long.loc[long["variant"] == "raft", "settings"]) == {"rational_lr=0.001"}
    assert set(long.loc[long["variant"] == "bert", "settings"].fillna("")) == {""}
    summary = _read(written["glue_summary"])
    assert list(summary.columns[-2:]) == agg.SUMMARY_SETTINGS_COLUMNS
    assert set(summary["raft_settings"]) == {"rational_lr=0.001"}


def test_the_notebook_table_shows_the_settings_that_differ(tmp_path):
    from raft.analysis import report

    results = tmp_path / "results"
    for seed in SEEDS[:2]:
        for task, rlr in (("rte", 1e-3), ("mrpc", 5e-4)):
            write_run(results, "glue", task, "bert", 100, seed, glue_test_metrics(task, 0.5))
            write_run(results, "glue", task, "raft", 100, seed, glue_test_metrics(task, 0.6),
                      hyperparameters={"rational_lr": rlr})
    summary = _read(agg.aggregate(results)["glue_summary"])
    table, _ = report.format_table(summary, "100", "glue")
    shown = dict(zip(table["task"], table["settings (BERT / RAFT)"]))
    assert shown["RTE"] == "– / rational_lr=0.001" and shown["MRPC"] == "– / rational_lr=0.0005"


def test_a_full_disk_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    import errno
    from pathlib import Path

    from raft.train import runtime

    results = _known_tree(tmp_path / "results", [0.01] * 5, tasks=("rte",))
    real = Path.write_text

    def full(self, text, *a, **k):
        if self.name == "glue_summary.csv.tmp":
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(self, text, *a, **k)

    monkeypatch.setattr(Path, "write_text", full)
    monkeypatch.setattr(runtime, "free_space", lambda folder: 3 * 1024**2)
    assert cli.main(["aggregate", "--results", str(results)]) == 2
    err = capsys.readouterr().err
    assert f"raft aggregate: error: no space left on device writing {results / 'tables/glue_summary.csv'}" in err
    assert "(3.0 MiB free on " in err
    assert not list((results / "tables").glob("*.tmp"))


# ------------------------------------------------------------------ searches
def _search_tree(root):
    """RTE at N = 100, 3 seeds. bert: one plain run per seed. raft: two candidates of its rational
    lr (raft.layout.SEARCH_PATHS), 0.001 best on dev but worse on test, 0.005 the reverse."""
    from raft import layout

    for seed in SEEDS[:3]:
        write_run(root, "glue", "rte", "bert", 100, seed, glue_test_metrics("rte", 0.5))
        for rlr, dev, test in ((1e-3, 0.7, 0.55), (5e-3, 0.6, 0.65)):
            path = write_run(root, "glue", "rte", "raft", 100, seed, glue_test_metrics("rte", test),
                             hyperparameters={"rational_lr": rlr})
            m = json.loads(path.read_text())
            m["best_dev_score"] = dev
            target = root.parent / layout.run_path("glue", "rte", "raft", 100, seed, {"rational_lr": rlr})
            target.parent.mkdir(parents=True)
            target.write_text(json.dumps(m))
            path.unlink()
    return root


def test_a_search_keeps_the_dev_best_candidate_not_the_test_best(tmp_path):
    written = agg.aggregate(_search_tree(tmp_path / "results"))
    long = _read(written["glue"])
    raft = long[(long["variant"] == "raft") & (long["metric"] == "acc")]
    assert len(raft) == 3 and set(raft["value"]) == {0.55}  # the dev-best candidate's test scores
    assert set(raft["settings"]) == {"rational_lr=0.001"}
    summary = _read(written["glue_summary"])
    row = summary[(summary["task"] == "rte") & (summary["metric"] == "acc")].iloc[0]
    assert row["raft_mean"] == pytest.approx(0.55) and row["raft_n_seeds"] == 3 and row["raft_settings"] == "rational_lr=0.001"
    sel = _read(written["glue_selection"])
    assert list(sel.columns) == agg.SELECTION_COLUMNS
    assert list(sel["candidate"]) == ["rational_lr=0.001", "rational_lr=0.005"]
    assert list(sel["chosen"]) == [True, False] and list(sel["n_seeds"]) == [3, 3]
    assert sel["dev_mean"].tolist() == pytest.approx([0.7, 0.6])
    assert _read(written["squad_selection"]).empty


def test_the_notebook_shows_every_candidates_dev_score(tmp_path):
    from raft.analysis import report

    results = _search_tree(tmp_path / "results")
    shown = report.selection_display(results, "glue")
    assert shown.to_dict("records") == [{
        "task": "RTE", "N": "100", "variant": "RAFT", "chosen (by dev)": "rational_lr=0.001",
        "rational_lr=0.001": "70.00 ± 0.00 (3) *", "rational_lr=0.005": "60.00 ± 0.00 (3)"}]
    runs, _, summary = report.load_study(results, "glue")  # the notebook's tables: the chosen runs
    assert len(runs[runs["variant"] == "raft"]) == 3
    assert report.selection_display(_known_tree(tmp_path / "plain", [0.01] * 5), "glue").empty
