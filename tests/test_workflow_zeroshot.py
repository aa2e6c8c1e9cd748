"""Zero-shot transfer through the workflow: the smoke shape with full-data MNLI and SQuAD runs
that keep their weights, scored on SNLI / TriviaQA fixtures in the official formats (written by
tests/test_data_zeroshot.py) laid next to the local data copy; and the build-time message when
a target's data is missing."""

from __future__ import annotations

import csv

import pytest

from test_data_zeroshot import write_snli_jsonl, write_triviaqa
from test_workflow import CONFIG, output_of, run_snakemake

OVERLAY = """
glue:
  tasks: [mnli]
  low_data: {sizes: [], seeds: []}
  full_data: {seeds: [2022]}
  efficient: {tasks: [], sizes: [], seeds: []}
  epochs: 1
squad:
  low_data: {sizes: [], seeds: []}
  full_data: {seeds: [2022]}
  epochs: 1
zeroshot: {snli: true, triviaqa: true}
notebooks: [zeroshot]
"""


def data_root(tmp_path, data_dir, *, snli=True, triviaqa=True):
    """The local data copy (linked) plus the zero-shot fixtures."""
    root = tmp_path / "data"
    root.mkdir()
    for name in ("glue", "squad", "corpus", "vocab"):
        (root / name).symlink_to(data_dir / name)
    if snli:
        write_snli_jsonl(root / "snli" / "snli_1.0_test.jsonl")
    if triviaqa:
        write_triviaqa(root)
    return root


def args(tmp_path, root):
    overlay = tmp_path / "zeroshot.yaml"
    overlay.write_text(OVERLAY + f"data_dir: {root}\n")
    return ["--configfile", str(CONFIG / "smoke.yaml"), str(overlay)]


def test_missing_target_data_is_named_when_the_dag_is_built(tmp_path, data_dir):
    root = data_root(tmp_path, data_dir, snli=False)
    proc = run_snakemake("-n", *args(tmp_path, root), workdir=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, output_of(proc)
    err = output_of(proc)
    assert "zero-shot snli (zeroshot.snli: true) is left out" in err
    assert f"{root}/snli/snli_1.0_test.jsonl" in err and "official SNLI 1.0 release" in err
    assert "results/zeroshot/triviaqa/raft/seed2022/metrics.json" in proc.stdout  # the rest runs
    assert "results/zeroshot/snli/" not in proc.stdout


@pytest.mark.slow
def test_zeroshot_table_end_to_end(tmp_path, data_dir):
    root = data_root(tmp_path, data_dir)
    proc = run_snakemake("--cores", "2", *args(tmp_path, root), workdir=tmp_path, timeout=1800)
    assert proc.returncode == 0, output_of(proc)[-6000:]
    for section in ("glue/mnli", "squad"):
        for variant in ("bert", "raft"):
            assert (tmp_path / f"results/models/{section}/{variant}/nfull/seed2022/config.json").is_file()
    with open(tmp_path / "results/tables/zeroshot.csv") as f:
        rows = list(csv.DictReader(f))
    assert {(r["task"], r["variant"]) for r in rows} >= {(t, v) for t in ("snli", "triviaqa") for v in ("bert", "raft")}
    assert {r["eval_set"] for r in rows if r["task"] == "triviaqa"} == {"triviaqa", "all_pairs", "has_ans"}
    for variant in ("bert", "raft"):  # written next to each TriviaQA record (not a declared output)
        assert (tmp_path / f"results/zeroshot/triviaqa/{variant}/seed2022/predictions.json").is_file()
    assert (tmp_path / "results/tables/zeroshot_summary.csv").stat().st_size > 0
    assert (tmp_path / "results/notebooks/zeroshot.html").is_file()
