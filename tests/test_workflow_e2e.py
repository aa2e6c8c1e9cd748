"""End to end: the smoke configuration (config/smoke.yaml) on the local data copy, run once
per session in a temporary working directory; the tests below check what it produced."""

from __future__ import annotations

import csv
import json
import math
import time
from pathlib import Path

import pytest

from test_workflow import CONFIG, expected_outputs, merged_config, output_of, run_snakemake

pytestmark = pytest.mark.slow

SMOKE = CONFIG / "smoke.yaml"


def smoke_args(data_dir) -> list[str]:
    return ["--configfile", str(SMOKE), "--config", f"data_dir={data_dir}"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory, data_dir):
    """Run the smoke workflow once (local execution, 2 cores); return (workdir, seconds)."""
    workdir = tmp_path_factory.mktemp("smoke")
    t0 = time.perf_counter()
    proc = run_snakemake("--cores", "2", *smoke_args(data_dir), workdir=workdir, timeout=1200)
    elapsed = time.perf_counter() - t0
    (workdir / "snakemake.out").write_text(output_of(proc))
    if proc.returncode != 0:
        logs = "\n".join(
            f"=== {p.relative_to(workdir)}\n{p.read_text()[-3000:]}"
            for p in sorted((workdir / "results/logs").rglob("*.log"))
        ) if (workdir / "results/logs").is_dir() else ""
        pytest.fail(f"smoke workflow failed after {elapsed:.0f} s\n{output_of(proc)[-6000:]}\n{logs[-12000:]}")
    print(f"\nsmoke workflow: {elapsed:.0f} s wall")
    return workdir, elapsed


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def check_results(workdir: Path) -> None:
    """Every expected file exists and holds values in range (shared with the SLURM test)."""
    cfg = merged_config(SMOKE)
    missing = [p for p in expected_outputs(cfg) if not (workdir / p).exists()]
    assert not missing, f"missing outputs: {missing}"

    # pretraining: finite perplexity > 1, the contract's fields
    for variant in cfg["variants"]:
        m = read_json(workdir / f"results/pretrain/{variant}/metrics.json")
        assert m["variant"] == variant
        assert math.isfinite(m["perplexity"]) and m["perplexity"] > 1
        assert math.isfinite(m["eval_loss"]) and m["eval_loss"] > 0
        assert m["steps"] == cfg["pretrain"]["max_steps"]
        assert (workdir / f"results/pretrain/{variant}/model/config.json").is_file()
        with open(workdir / f"results/pretrain/{variant}/log.csv") as f:
            rows = list(csv.DictReader(f))
        assert rows and {"step", "loss", "val_loss"} <= set(rows[0])
        lines = (workdir / f"results/pretrain/{variant}/rationals.jsonl").read_text().splitlines()
        if variant == "raft":
            assert lines and "rationals" in json.loads(lines[-1])

    # GLUE: accuracy / F1 in [0, 1], correlations in [-1, 1]
    for path in sorted((workdir / "results/glue").rglob("metrics.json")):
        m = read_json(path)
        task, variant, n, seed = path.parts[-5:-1]
        assert m["task"] == task and m["variant"] == variant
        assert str(m["n"]) == n[1:] and str(m["seed"]) == seed[4:]
        for eval_set, metrics in m["test"].items():
            for name, value in metrics.items():
                assert math.isfinite(value), (path, eval_set, name)
                if name in ("accuracy", "f1"):
                    assert 0.0 <= value <= 1.0, (path, name, value)
                else:
                    assert -1.0 <= value <= 1.0, (path, name, value)
    for path in sorted((workdir / "results/glue_efficient").rglob("metrics.json")):
        m = read_json(path)
        assert m["mode"] == {"raft": "raf_head", "bert": "bias_head"}[m["variant"]]
        assert 0 < m["trainable_parameters"]

    # SQuAD: EM / F1 in percent
    for path in sorted((workdir / "results/squad").rglob("metrics.json")):
        m = read_json(path)
        for metrics in m["test"].values():
            for name in ("exact_match", "f1"):
                assert 0.0 <= metrics[name] <= 100.0, (path, name)
        assert m["mode"] == {"raft": "frozen_rafs", "bert": "full"}[m["variant"]]

    # tables: headers, and rows for what ran
    for name in ("pretrain", "glue", "glue_summary", "squad", "squad_summary"):
        with open(workdir / f"results/tables/{name}.csv") as f:
            rows = list(csv.DictReader(f))
        assert rows, f"{name}.csv is empty"
    with open(workdir / "results/tables/glue.csv") as f:
        tasks = {r["task"] for r in csv.DictReader(f)}
    assert set(cfg["glue"]["tasks"]) <= tasks

    # notebooks: executed, rendered with tables, figures saved
    for nb in sorted((workdir / "results/notebooks").glob("*.ipynb")):
        html = nb.with_suffix(".html").read_text()
        assert "<table" in html, f"{nb.name}: no table in the HTML"
        assert "Traceback" not in html or "Error" not in html.split("Traceback")[1][:200], nb.name
        figures = list((workdir / "results/figures" / nb.stem).glob("*.png"))
        assert figures, f"no figures for {nb.stem}"

    # logs and benchmarks of the heavy steps
    assert list((workdir / "results/benchmarks/glue").rglob("*.tsv"))
    for log in (workdir / "results/logs").rglob("*.log"):
        assert "\r" not in log.read_text(errors="replace"), f"progress bar in {log}"


def test_smoke_outputs(smoke_run):
    workdir, elapsed = smoke_run
    check_results(workdir)


def test_smoke_wall_time(smoke_run):
    """The smoke study is meant to fit in 5 minutes on 2 cores (a loaded machine gets slack)."""
    _, elapsed = smoke_run
    assert elapsed < 600, f"smoke workflow took {elapsed:.0f} s"


def test_second_run_has_nothing_to_do(smoke_run, data_dir):
    workdir, _ = smoke_run
    proc = run_snakemake("-n", *smoke_args(data_dir), workdir=workdir, timeout=300)
    assert proc.returncode == 0, output_of(proc)
    assert "Nothing to be done" in proc.stdout + proc.stderr, output_of(proc)


def test_report(smoke_run, data_dir):
    workdir, _ = smoke_run
    report = workdir / "report.html"
    proc = run_snakemake("--report", report, *smoke_args(data_dir), workdir=workdir, timeout=300)
    assert proc.returncode == 0, output_of(proc)
    text = report.read_text(errors="replace")
    assert report.stat().st_size > 10_000
    for item in ("glue_summary.csv", "pretraining.html", "stats.json", "curves.png"):
        assert item in text, item


def test_checkpoints_outside_outputs(smoke_run):
    """Pretraining checkpoints survive in results/checkpoints, outside the rule's outputs."""
    workdir, _ = smoke_run
    for variant in ("bert", "raft"):
        ckpt = workdir / "results/checkpoints/pretrain" / variant
        assert ckpt.is_dir() and any(ckpt.iterdir()), ckpt


def test_preactivation_histograms_recorded_and_drawn(smoke_run):
    """`raft pretrain` records the FFN pre-activation histograms of both variants; the shapes
    notebook reads them from the result files and shows their figure and table."""
    workdir, _ = smoke_run
    for variant in ("bert", "raft"):
        m = read_json(workdir / f"results/pretrain/{variant}/metrics.json")
        rec = read_json(workdir / f"results/pretrain/{variant}/preactivations.json")
        tokens = m["data"]["validation_sequences"] * m["data"]["seq_len"]  # corpus sequences: no padding
        assert rec["variant"] == variant and rec["split"] == "validation" and rec["sequences"] == m["data"]["validation_sequences"]
        assert list(rec["layers"]) == [f"layer.{i}" for i in range(m["model"]["num_layers"])]
        for layer in rec["layers"].values():
            assert layer["tokens"] == tokens and layer["count"] == tokens * m["model"]["intermediate_size"]
            assert sum(layer["counts"]) + layer["underflow"] + layer["overflow"] == layer["count"]
            assert layer["activation"] == ("Rational" if variant == "raft" else "GELUActivation")
    html = (workdir / "results/notebooks/shapes.html").read_text()
    assert (workdir / "results/figures/shapes/inputs.png").is_file()
    assert "Where the RAFs act (written automatically from the result files)" in html
    assert "99 % of RAFT inputs (validation, after pretraining)</th>" in html
    assert "99 % of BERT (GELU) inputs</th>" in html and "<td>layer 1</td>" in html


@pytest.fixture
def smoke_copy(smoke_run, tmp_path):
    """A copy of the finished smoke study (results and Snakemake's records) to change."""
    import shutil

    workdir = tmp_path / "study"
    shutil.copytree(smoke_run[0], workdir, symlinks=True)
    return workdir


def test_forcerun_recomputes_every_run(smoke_copy, data_dir):
    """`--forcerun` of a fine-tuning rule after a successful run trains every run again: no
    per-run copy is left behind to restore (asserted from the job's log)."""
    target = "results/glue/rte/raft/n16/seed2022/metrics.json"
    assert not list((smoke_copy / "results/checkpoints/finetune").glob("*.json"))
    before = read_json(smoke_copy / target)
    proc = run_snakemake(target, "--cores", "2", "--forcerun", "finetune_glue", *smoke_args(data_dir),
                         workdir=smoke_copy, timeout=600)
    assert proc.returncode == 0, output_of(proc)
    log = (smoke_copy / "results/logs/glue/rte/raft/n16.log").read_text()
    assert "rte: 2 of 2 runs to do" in log and "done before" not in log
    after = read_json(smoke_copy / target)
    assert after["request_sha1"] == before["request_sha1"] and after["test"] == before["test"]
    assert after["wall_time_s"] != before["wall_time_s"]  # trained again, same numbers


def test_tables_hold_only_this_configs_runs(smoke_copy, data_dir):
    """After a full run, an overlay with another lr and one seed: the tables and the notebook
    hold exactly the new config's runs; the others are counted as ignored in the log."""
    overlay = smoke_copy / "overlay.yaml"
    overlay.write_text("glue:\n  lr: 1.0e-3\n  low_data: {sizes: [16], seeds: [2022]}\n")
    proc = run_snakemake("results/tables/glue_summary.csv", "results/notebooks/glue.html", "--cores", "2",
                         "--configfile", SMOKE, overlay, "--config", f"data_dir={data_dir}",
                         workdir=smoke_copy, timeout=900)
    assert proc.returncode == 0, output_of(proc)
    tables = smoke_copy / "results/tables"
    with open(tables / "glue.csv") as f:
        rows = list(csv.DictReader(f))
    assert {r["seed"] for r in rows} == {"2022"} and {r["task"] for r in rows} == {"rte", "stsb"}
    with open(tables / "glue_summary.csv") as f:
        summary = list(csv.DictReader(f))
    assert {(r["bert_n_seeds"], r["raft_n_seeds"]) for r in summary} == {("1", "1")}
    manifest = read_json(tables / "records.json")
    assert sorted(manifest["records"]["glue"]) == sorted(
        f"glue/{t}/{v}/n16/seed2022/metrics.json" for t in ("rte", "stsb") for v in ("bert", "raft"))
    assert manifest["ignored"]["glue"] == 4  # seed 202206 of both tasks and variants, lr 3e-4
    log = (smoke_copy / "results/logs/aggregate.log").read_text()
    assert "4 records of other configs ignored (glue: 4)" in log
    assert read_json(smoke_copy / "results/glue/rte/raft/n16/seed2022/metrics.json")["hyperparameters"]["lr"] == 1e-3
    html = (smoke_copy / "results/notebooks/glue.html").read_text()
    assert "1/1/1" in html and "2/2/2" not in html  # seeds (BERT/RAFT/paired) of every row


def job_counts(proc) -> dict[str, int]:
    """Snakemake's "Job stats" table: rule -> jobs run."""
    import re

    text = proc.stdout + proc.stderr
    block = text.split("Job stats:", 1)[1].split("\n\n", 1)[0] if "Job stats:" in text else ""
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", block, re.M) if m[1] != "total"}


def test_a_search_runs_every_candidate_and_a_new_one_alone(smoke_copy, data_dir):
    """RAFT's rational lr searched over two values: each candidate's records exist and the
    selection table lists both; bert (no RAF) is not run again; a rerun has nothing to do; a
    third value runs only its own job."""
    targets = ["results/tables/glue_selection.csv", "results/notebooks/glue.html"]

    def run(values, *extra):
        overlay = smoke_copy / "search.yaml"
        overlay.write_text(f"glue:\n  tasks: [rte]\n  rational_lr: {values}\n  efficient: {{rational_lr: 1.0e-3}}\n")
        return run_snakemake(*targets, "--cores", "2", *extra, "--configfile", SMOKE, overlay, "--config",
                             f"data_dir={data_dir}", workdir=smoke_copy, timeout=900)

    proc = run("[1.0e-3, 5.0e-3]")
    assert proc.returncode == 0, output_of(proc)
    assert job_counts(proc).get("finetune_glue_search") == 2 and "finetune_glue" not in job_counts(proc)  # a job
    # per candidate; bert's runs (the list's first value: no RAF to train) are not run again
    for value in ("0.001", "0.005"):
        for seed in (2022, 202206):
            record = read_json(smoke_copy / f"results/glue/rte/raft/n16/rational_lr={value}/seed{seed}/metrics.json")
            assert record["hyperparameters"]["rational_lr"] == float(value)
    with open(smoke_copy / "results/tables/glue_selection.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["candidate"], r["n_seeds"]) for r in rows] == [("rational_lr=0.001", "2"), ("rational_lr=0.005", "2")]
    assert sum(r["chosen"] == "true" for r in rows) == 1
    assert "rational_lr=0.005" in (smoke_copy / "results/notebooks/glue.html").read_text()
    again = run("[1.0e-3, 5.0e-3]", "-n")
    assert again.returncode == 0 and "Nothing to be done" in again.stdout + again.stderr, output_of(again)
    kept = (smoke_copy / "results/glue/rte/raft/n16/rational_lr=0.005/seed2022/metrics.json").read_text()
    third = run("[1.0e-3, 5.0e-3, 2.0e-3]")
    assert third.returncode == 0, output_of(third)
    assert job_counts(third).get("finetune_glue_search") == 1
    assert (smoke_copy / "results/logs/glue/rte/raft/n16/rational_lr=0.002.log").is_file()
    assert (smoke_copy / "results/glue/rte/raft/n16/rational_lr=0.005/seed2022/metrics.json").read_text() == kept
