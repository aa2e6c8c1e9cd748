"""config/paper.yaml at its real grid shape: the command lines its rules build (dry runs), its
pre-flight check, and -- slow -- the whole DAG run end to end with config/paper_rehearsal.yaml,
which shrinks only the model, steps, epochs, seeds, corpus and test sets."""

from __future__ import annotations

import itertools
import json
import re
import time

import pandas as pd
import pytest

from test_workflow import CONFIG, dry_run, expected_outputs, merged_config, output_of, run_snakemake

PAPER = CONFIG / "paper.yaml"
REHEARSAL = CONFIG / "paper_rehearsal.yaml"
AUTHORS = CONFIG / "paper_authors.yaml"
TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"]


def commands(text: str, command: str) -> list[str]:
    """The shell commands of a `raft <command>`; a batched fine-tuning job (``--seed A B C`` and
    an ``--output`` pattern with ``{seed}``) counts as one line per run, as if run alone."""
    lines = [ln.strip() for ln in text.splitlines() if f"raft {command} " in ln or f"raft.cli {command} " in ln]
    runs = []
    for line in lines:
        m = re.search(r"--seed ((?:\d+ ?)+)", line)
        if m is None or "{seed}" not in line:
            runs.append(line)
            continue
        for seed in m[1].split():
            runs.append(line.replace(m[0], f"--seed {seed} ").replace("{seed}", seed))
    return runs


def the(lines: list[str], *words: str) -> str:
    found = [ln for ln in lines if all(re.search(rf"{re.escape(w)}(\s|$)", ln) for w in words)]
    assert len(found) == 1, (words, len(found))
    return found[0]


@pytest.fixture(scope="module")
def paper_dry_run(tmp_path_factory):
    proc = dry_run(tmp_path_factory.mktemp("paper"), "--configfile", PAPER)
    assert proc.returncode == 0, output_of(proc)
    return proc.stdout


def test_paper_command_lines_glue(paper_dry_run):
    glue = commands(paper_dry_run, "finetune-glue")
    # bert 3 N x 10 seeds, raft 3 N x 10 seeds x 3 RAF lrs searched, 6 full-data seeds each; efficient
    assert len(glue) == 8 * (3 * 10 + 6) + 8 * (3 * 10 * 3 + 6) + 8 * 2 * (10 + 6)
    tasks, candidates = ("cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"), ("0.0005", "0.001", "0.005")
    for task, lr in itertools.product(tasks, candidates):
        line = the(glue, f"--task {task}", "--n 300", "--seed 53",
                   f"results/glue/{task}/raft/n300/rational_lr={lr}/seed53/metrics.json")
        assert f"--rational-lr {lr} " in line
        for flag in ("--epochs 20", "--patience 10", "--lr 5e-05", "--weight-decay 0.1", "--batch-size 32",
                     "--max-seq-length 128", "--adam-eps 1e-06", "--precision fp32", "--mode full"):
            assert flag in line, (flag, line)
    full = the(glue, "--task mnli", "--n full", "--seed 49", "results/glue/mnli/bert/nfull/seed49/metrics.json")
    assert "--epochs 10 --patience 10" in full
    full = the(glue, "--task qnli", "--n full", "--seed 49", "results/glue/qnli/raft/nfull/seed49/metrics.json")
    assert "--rational-lr 0.0001 " in full
    bert = the(glue, "--task rte", "--seed 622", "results/glue_efficient/rte/bert/n100/seed622/metrics.json")
    raft = the(glue, "--task rte", "--seed 622", "results/glue_efficient/rte/raft/n100/seed622/metrics.json")
    assert "--mode bias_head" in bert and "--lr 0.01 " in bert and "--epochs 30 --patience 20" in bert
    assert "--mode raf_head" in raft and "--lr 0.005 --rational-lr 0.001 " in raft
    bert, raft = (the(glue, f"--task {t}", "--n full", "--seed 2259",
                      f"results/glue_efficient/{t}/{v}/nfull/seed2259/metrics.json")
                  for t, v in (("qqp", "bert"), ("mnli", "raft")))
    assert "--mode bias_head" in bert and "--lr 0.005 " in bert and "--epochs 6 --patience 10" in bert
    assert "--mode raf_head" in raft and "--lr 0.01 --rational-lr 0.0005 " in raft
    assert not any("results/glue_efficient/" in ln and "--n full" in ln and "--seed 1046" in ln for ln in glue)
    assert not any("--task wnli" in ln for ln in glue)


def test_paper_command_lines_squad_and_pretrain(paper_dry_run):
    squad = commands(paper_dry_run, "finetune-squad")
    assert len(squad) == 2 * (3 * 10 + 6)
    for line in squad:
        for flag in ("--max-seq-length 384", "--doc-stride 128", "--max-query-length 64", "--adam-eps 1e-08",
                     "--precision fp32", "--lr 0.0001"):
            assert flag in line, (flag, line)
    assert {re.search(r"--seed (\d+)", ln)[1] for ln in squad if "--n full" in ln} == {
        "2022", "2259", "5309", "202206", "20220602", "49"}
    assert "--mode frozen_rafs" in the(squad, "--n 1000", "--seed 320", "results/squad/raft/n1000/seed320/metrics.json")
    for n, flags in (("100", "--epochs 20 --patience 20"), ("full", "--epochs 10 --patience 10")):  # no early stop
        assert flags in the(squad, f"--n {n}", "--seed 49", f"results/squad/bert/n{n}/seed49/metrics.json")
    raft = the(commands(paper_dry_run, "pretrain"), "--variant raft")
    for flag in ("--max-position-embeddings 512", "--rational-init gelu_paper", "--batch-size 4096",
                 "--per-device-batch-size 128", "--max-steps 23000", "--precision auto", "--output-bias zero"):
        assert flag in raft, flag


def test_authors_overlay_reaches_the_commands(tmp_path, data_dir):
    """config/paper_authors.yaml validates on top of paper.yaml; its model options and fp16 reach
    both pretraining commands, its SQuAD windows and cased text every SQuAD run, its TriviaQA
    window (384 for both models) every TriviaQA zero-shot run (with the zero-shot fixtures laid
    next to the local data copy, so that both targets are scheduled)."""
    from test_workflow_zeroshot import data_root

    local = tmp_path / "local.yaml"
    local.write_text(f"data_dir: {data_root(tmp_path, data_dir)}\n")
    proc = dry_run(tmp_path, "--configfile", PAPER, AUTHORS, local, env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode == 0, output_of(proc)
    zeroshot = commands(proc.stdout, "zeroshot")
    for variant in ("bert", "raft"):
        line = the(zeroshot, "--target triviaqa", f"results/zeroshot/triviaqa/{variant}/seed49/metrics.json")
        assert "--max-seq-length 384 --doc-stride 240 --override-window " in line, line
        assert "--override-window" not in the(zeroshot, "--target snli",
                                               f"results/zeroshot/snli/{variant}/seed49/metrics.json")
    for variant in ("bert", "raft"):
        line = the(commands(proc.stdout, "pretrain"), f"--variant {variant}")
        for flag in ("--deepnorm", "--no-embedding-layernorm", "--weight-init authors", "--precision fp16",
                     "--max-steps 23000"):
            assert flag in line, (flag, line)
    squad = commands(proc.stdout, "finetune-squad")
    assert all("--no-lowercase" in line and "--precision fp32" in line for line in squad)
    bert_full = the(squad, "--seed 49", "results/squad/bert/nfull/seed49/metrics.json")
    raft_full = the(squad, "--seed 49", "results/squad/raft/nfull/seed49/metrics.json")
    low = the(squad, "--seed 49", "results/squad/bert/n100/seed49/metrics.json")
    for line, window, stride in ((bert_full, 384, 240), (raft_full, 128, 0), (low, 128, 0)):
        assert f"--max-seq-length {window} " in line and f"--doc-stride {stride} " in line, line
    assert not any("lowercase" in line or "embedding-layernorm" in line or "deepnorm" in line
                   for line in commands(proc.stdout, "finetune-glue"))


DAG_ERRORS = {
    # overlay on paper.yaml: (the message's start, the job it names)
    "window_vs_positions": ("model:\n  max_position_embeddings: 128\n",
                            "'squad.max_seq_length': 384 exceeds the pretrained model's 128", "(job: squad squad "),
    "stride_vs_window": ("squad:\n  full_data:\n    doc_stride: {bert: 128, raft: 400}\n",
                         "'squad.full_data.doc_stride.raft': 400 must be smaller than the context part",
                         "(job: squad squad raft n=full)"),
    "zeroshot_window_vs_positions": ("zeroshot:\n  triviaqa_window: {max_seq_length: 1024, doc_stride: 128}\n",
                                     ("'zeroshot.triviaqa_window.max_seq_length': 1024 exceeds the pretrained "
                                      "model's 512 position embeddings"), "(job: zeroshot triviaqa bert)"),
    "n_vs_pool": ("glue:\n  tasks: [rte, wnli]\nzeroshot:\n  snli: false\n",
                  "'glue.low_data.sizes': 1000 is larger than the wnli train pool (476 examples)",
                  "(job: glue wnli bert n=1000)"),
}


@pytest.mark.parametrize("name", sorted(DAG_ERRORS))
def test_paper_constraint_rejected_when_the_dag_is_built(tmp_path, name):
    """A setting a job would reject stops `snakemake -n` naming the key and the job."""
    text, message, job = DAG_ERRORS[name]
    overlay = tmp_path / "overlay.yaml"
    overlay.write_text(text)
    proc = dry_run(tmp_path, "--configfile", PAPER, overlay)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert f"invalid configuration value at {message}" in err, output_of(proc)
    assert job in err
    assert "rule prepare_corpus" not in err  # nothing was scheduled


# ------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory, data_dir):
    workdir = tmp_path_factory.mktemp("paper_rehearsal")
    t0 = time.perf_counter()
    proc = run_snakemake("--cores", "2", "--configfile", PAPER, REHEARSAL, "--config", f"data_dir={data_dir}",
                         workdir=workdir, timeout=2400)
    elapsed = time.perf_counter() - t0
    if proc.returncode != 0:
        logs = "\n".join(f"=== {p.relative_to(workdir)}\n{p.read_text()[-2000:]}"
                         for p in sorted((workdir / "results/logs").rglob("*.log"))[-6:])
        pytest.fail(f"paper rehearsal failed after {elapsed:.0f} s\n{output_of(proc)[-5000:]}\n{logs}")
    print(f"\npaper rehearsal (the paper's grid, tiny model): {elapsed:.0f} s wall")
    return workdir


@pytest.mark.slow
def test_paper_grid_runs_end_to_end(rehearsal):
    cfg = merged_config(PAPER, REHEARSAL)
    missing = [p for p in expected_outputs(cfg) if not (rehearsal / p).exists()]
    assert not missing, missing
    summary = pd.read_csv(rehearsal / "results/tables/glue_summary.csv", dtype={"n": str})
    assert {(t, n) for t, n in zip(summary.task, summary.n)} >= {(t, n) for t in TASKS
                                                                 for n in ("100", "300", "1000", "full")}
    squad = pd.read_csv(rehearsal / "results/tables/squad_summary.csv", dtype={"n": str})
    assert set(squad.n) == {"100", "300", "1000", "full"}
    assert set(pd.read_csv(rehearsal / "results/tables/glue_efficient_summary.csv").task) >= set(TASKS)
    # RAFT's low-data RAF lr searched: 3 candidates per task and N, one chosen by dev
    selection = pd.read_csv(rehearsal / "results/tables/glue_selection.csv", dtype={"n": str})
    assert len(selection) == len(TASKS) * 3 * 3 and set(selection.variant) == {"raft"}
    assert (selection.groupby(["task", "n"])["chosen"].sum() == 1).all()


@pytest.mark.slow
def test_paper_grid_records_what_it_used(rehearsal):
    res = rehearsal / "results"
    for task, dev_part in (("rte", 623), ("mrpc", 917)):
        m = json.loads((res / f"glue/{task}/raft/n1000/rational_lr=0.001/seed2022/metrics.json").read_text())
        assert m["sizes"]["train"] == 1000 and m["sizes"]["dev"] == dev_part and m["dev_sampling"] == "whole"
        assert any("whole dev part" in note for note in m["data_notes"])
    m = json.loads((res / "glue/cola/raft/n1000/rational_lr=0.001/seed2022/metrics.json").read_text())
    assert m["sizes"]["dev"] == 1000 and m["dev_sampling"] == "sampled"
    for n in ("100", "full"):
        m = json.loads((res / f"squad/bert/n{n}/seed2022/metrics.json").read_text())
        hp = m["hyperparameters"]
        assert (hp["max_seq_length"], hp["doc_stride"], hp["adam_eps"], hp["precision"]) == (384, 128, 1e-8, "fp32")
    pre = json.loads((res / "pretrain/raft/metrics.json").read_text())
    assert pre["model"]["max_position_embeddings"] == 512 and pre["rational"]["init"] == "gelu_paper"
    assert pre["hyperparameters"]["batch_size"] == 4096 and pre["hyperparameters"]["gradient_accumulation_steps"] == 32
    html = (res / "notebooks/squad.html").read_text()
    assert "positions 128..383 were never trained" in html
