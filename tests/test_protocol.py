"""The paper's protocol: config/paper.yaml's job list against the authors' own values.

The authors' code is UKPLab/2022-RAFT at commit cffff41 (a fork of transformers 4.16 with SLURM
scripts); every row of the tables below names the file and line a value comes from
(``ft/`` = scripts/finetune/, ``pt/`` = scripts/pretrain/). The job list is built as
`snakemake -n` builds it, with the functions the rules call (workflow/rules/common.smk):
`raft.config.merge_files` + `load` (schema defaults, pre-flight), `raft.study.finetune_families`
/ `runs` / `finetune_settings` / `pretrain_settings` / `corpus_settings` / `mode`, and each job's
flags read back from the command line `raft.study.cli_args` writes. A value other than the
authors' fails, naming the job, the config key and the source, unless DEPARTURES records it as a
departure on purpose (README.md, "Where we differ from the authors' code").
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from pathlib import Path

import pytest

from raft import study
from raft.config import load, merge_files

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config"
PAPER = CONFIG / "paper.yaml"
SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
NOTEBOOKS = REPO / "notebooks"

NO_EARLY_STOP = "patience >= epochs"  # a row's value: early stopping off (raft/train/loop.py `fit`)
FINETUNE = ("glue", "glue_efficient", "squad")
GLUE = ("glue", "glue_efficient")


@dataclass(frozen=True)
class Row:
    """One setting the authors' code fixes, for the jobs the selectors pick."""

    flag: str                      # the setting (a `raft.settings` field; pretrain RAF flags rational_*)
    want: object                   # the authors' value (NO_EARLY_STOP: patience >= epochs)
    source: str                    # file:line at cffff41
    studies: tuple = FINETUNE      # "pretrain", "corpus", or fine-tuning studies
    variant: str | None = None     # None: both
    kind: str | None = None        # "low" | "full" | None: both
    tasks: tuple = ()              # (): every task


def _per_task(flag, values: dict, sources: dict, **where) -> list[Row]:
    return [Row(flag, v, sources[t], tasks=(t,), **where) for t, v in values.items()]


# ------------------------------------------------------------------------------ the authors' values
PRETRAIN = [
    Row("num_layers", 12, "configs/config_12_academic_postln.json:17", ("pretrain",)),
    Row("hidden_size", 768, "configs/config_12_academic_postln.json:10", ("pretrain",)),
    Row("num_heads", 12, "configs/config_12_academic_postln.json:16", ("pretrain",)),
    Row("intermediate_size", 3072, "configs/config_12_academic_postln.json:12", ("pretrain",)),
    Row("max_position_embeddings", 512, "configs/config_12_academic_postln.json:14", ("pretrain",)),
    Row("dropout", 0.1, "configs/config_12_academic_postln.json:5,9", ("pretrain",)),
    Row("max_steps", 23000, "pt/academicbert-rational.sh:45, pt/academicbert.sh:48", ("pretrain",)),
    Row("batch_size", 4096, "pt/academicbert-rational.sh:40-41 (256 x 4 accumulation) x 4 GPUs (:7, :31)",
        ("pretrain",)),
    Row("lr", 7e-4, "pt/academicbert-rational.sh:14, pt/academicbert.sh:15", ("pretrain",)),
    Row("warmup_ratio", 0.01, "pt/academicbert-rational.sh:48, pt/academicbert.sh:50", ("pretrain",)),
    Row("weight_decay", 0.01, "pt/academicbert-rational.sh:64, pt/academicbert.sh:67", ("pretrain",)),
    Row("adam_beta1", 0.9, "pt/academicbert-rational.sh:49, pt/academicbert.sh:51", ("pretrain",)),
    Row("adam_beta2", 0.98, "pt/academicbert-rational.sh:50, pt/academicbert.sh:52", ("pretrain",)),
    Row("adam_eps", 1e-8, "run_mlm.py:543-547 (eps=adam_epsilon), transformers_modified/training_args.py:474",
        ("pretrain",)),
    Row("max_grad_norm", 0, "pt/academicbert-rational.sh:71, pt/academicbert.sh:73", ("pretrain",)),
    Row("mlm_probability", 0.15, "args.py:186-187 (default), run_mlm.py:431", ("pretrain",)),
    Row("output_bias", "zero", "transformers_modified/modeling.py:729-751 (decoder bias=False; the zero bias "
        "is never added), imported by run_mlm.py:43", ("pretrain",)),
    Row("rational_layers", "all,pooler", "pt/academicbert-rational.sh:13 (0-11,pooler)", ("pretrain",), "raft"),
    Row("rational_degrees", "5,4", "transformers_modified/modeling.py:175 (rational_activations' default)",
        ("pretrain",), "raft"),
    Row("rational_lr", 5e-3, "pt/academicbert-rational.sh:15", ("pretrain",), "raft"),
    Row("rational_weight_decay", 0.1, "args.py:114-116 (default), run_mlm.py:515", ("pretrain",), "raft"),
    Row("rational_schedule", "constant", "pt/academicbert-rational.sh:46 (--curve constant: group 0 = the RAFs, "
        "run_mlm.py:507-515)", ("pretrain",), "raft"),
    Row("precision", "fp16", "pt/academicbert-rational.sh:66, pt/academicbert.sh:69", ("pretrain",)),
    Row("max_eval_sequences", 50000, "pt/academicbert-rational.sh:74, pt/academicbert.sh:74; the first ones: "
        "run_mlm.py:404-406", ("pretrain",)),
    Row("seq_len", 128, "pt/academicbert-rational.sh:57, pt/academicbert.sh:60", ("corpus",)),
    Row("validation_fraction", 0.01, "args.py:155-156 (validation_split_percentage 1), run_mlm.py:174", ("corpus",)),
    Row("hub_config", "20200501.en", "pt/academicbert-rational.sh:37, pt/academicbert.sh:40", ("corpus",)),
]

# the RAF lr per task: the runs ft/extract_embed_rational.sh analyses (ft/save_rational.sh disagrees on
# qnli, mnli, sst2, cola at N = 100; paper.yaml says which it follows)
LOW_RATIONAL_LR = {"qnli": 1e-3, "mrpc": 1e-3, "qqp": 5e-3, "mnli": 5e-3, "cola": 5e-3, "sst2": 1e-3,
                   "stsb": 5e-3}
LOW_RATIONAL_LR_SOURCE = {
    "qnli": "ft/extract_embed_rational.sh:39", "mrpc": "ft/extract_embed_rational.sh:48",
    "qqp": "ft/extract_embed_rational.sh:58", "mnli": "ft/extract_embed_rational.sh:67",
    "cola": "ft/extract_embed_rational.sh:85", "sst2": "ft/extract_embed_rational.sh:96",
    "stsb": "ft/save_rational.sh:22"}
FULL_RATIONAL_LR = {"qnli": 1e-4, "mrpc": 1e-4, "qqp": 5e-4, "mnli": 5e-4, "rte": 5e-4, "cola": 5e-4,
                    "sst2": 1e-3}
FULL_RATIONAL_LR_SOURCE = {
    "qnli": "ft/extract_embed_rational.sh:41", "mrpc": "ft/extract_embed_rational.sh:50",
    "qqp": "ft/extract_embed_rational.sh:60", "mnli": "ft/extract_embed_rational.sh:69",
    "rte": "ft/extract_embed_rational.sh:78", "cola": "ft/extract_embed_rational.sh:88",
    "sst2": "ft/extract_embed_rational.sh:98"}

GLUE_ROWS = [
    Row("batch_size", 32, "ft/save_rational.sh:58, ft/full-finetune/glue-raft-array.sh:63", GLUE),
    Row("max_seq_length", 128, "ft/save_rational.sh:57, ft/full-finetune/glue-raft-array.sh:62", GLUE),
    Row("weight_decay", 0.1, "ft/save_rational.sh:74, ft/full-finetune/glue-raft-array.sh:78", GLUE),
    Row("rational_weight_decay", 0.1, "run_glue.py:701 (the RAF group takes weight_decay)", GLUE),
    Row("warmup_ratio", 0.0, "ft/save_rational.sh:62, ft/full-finetune/glue-raft-array.sh:67", GLUE),
    Row("rational_schedule", "linear", "ft/save_rational.sh:60, ft/full-finetune/glue-raft-array.sh:65", GLUE),
    Row("max_grad_norm", 1.0, "transformers_modified/training_args.py:475 (default)", GLUE),
    Row("adam_eps", 1e-6, "run_glue.py:725 (AdamW without eps), transformers_modified/optimization.py:300", GLUE),
    Row("precision", "fp32", "no --fp16 in any fine-tuning script, e.g. ft/full-finetune/glue-raft-array.sh:54-87",
        GLUE),
    Row("mode", "full", "ft/full-finetune/glue-raft-array.sh:54-87 (no --frozen_rf)", ("glue",)),
    # full fine-tuning, low data (N = 100 / 300 / 1000)
    Row("lr", 5e-5, "ft/save_rational.sh:13, ft/glue-academicBERT-rational-lr.sh:13", ("glue",), kind="low"),
    Row("epochs", 20, "ft/save_rational.sh:66, ft/glue-academicBERT-rational-lr.sh:65", ("glue",), kind="low"),
    Row("patience", 10, "ft/save_rational.sh:79, ft/glue-academicBERT-rational-lr.sh:81", ("glue",), kind="low"),
    *_per_task("rational_lr", LOW_RATIONAL_LR, LOW_RATIONAL_LR_SOURCE, studies=("glue",), variant="raft",
               kind="low"),
    # full fine-tuning, full data
    Row("lr", 5e-5, "ft/full-finetune/glue-raft-array.sh:14, glue-vanilla-array.sh:14", ("glue",), kind="full"),
    Row("epochs", 10, "inferred: their analysed full-data runs were best at epoch 9 (SST-2 checkpoint-14211 = "
        "9 x 1,579 steps, ft/extract_embed_rational.sh:98, ft/extract_embed_origin.sh:99), so >= 9 ran; no "
        "full-data script fits (ft/glue-academicBERT-rational.sh:45: 3)", ("glue",), kind="full"),
    Row("patience", 10, "ft/full-finetune/glue-raft-array.sh:86, glue-vanilla-array.sh:82", ("glue",), kind="full"),
    *_per_task("rational_lr", FULL_RATIONAL_LR, FULL_RATIONAL_LR_SOURCE, studies=("glue",), variant="raft",
               kind="full"),
    # parameter-efficient: RAFT --ch_rf (RAFs + classifier, run_glue.py:678-686), BERT --sub_bias (117 bias
    # entries + classifier, run_glue.py:662-676)
    Row("mode", "raf_head", "ft/bitfit/glue-raft-lr-array.sh:87, glue-raft-array.sh:86 (--ch_rf)",
        ("glue_efficient",), "raft"),
    Row("mode", "bias_head", "ft/bitfit/glue-vanilla-lr-array.sh:100, glue-vanilla-array.sh:86 (--sub_bias)",
        ("glue_efficient",), "bert"),
    Row("epochs", 30, "ft/bitfit/glue-raft-lr-array.sh:71, glue-vanilla-lr-array.sh:82", ("glue_efficient",),
        kind="low"),
    Row("patience", 20, "ft/bitfit/glue-raft-lr-array.sh:86, glue-vanilla-lr-array.sh:97", ("glue_efficient",),
        kind="low"),
    Row("lr", 5e-3, "ft/bitfit/glue-raft-lr-array.sh:14", ("glue_efficient",), "raft", "low"),
    Row("rational_lr", 1e-3, "ft/bitfit/glue-raft-lr-array.sh:15", ("glue_efficient",), "raft", "low"),
    Row("lr", 1e-2, "ft/bitfit/glue-vanilla-lr-array.sh:14", ("glue_efficient",), "bert", "low"),
    Row("epochs", 6, "ft/bitfit/glue-raft-array.sh:71, glue-vanilla-array.sh:70", ("glue_efficient",),
        kind="full"),
    Row("patience", 10, "ft/bitfit/glue-raft-array.sh:85, glue-vanilla-array.sh:85", ("glue_efficient",),
        kind="full"),
    Row("lr", 1e-2, "ft/bitfit/glue-raft-array.sh:13", ("glue_efficient",), "raft", "full"),
    Row("rational_lr", 5e-4, "ft/bitfit/glue-raft-array.sh:14", ("glue_efficient",), "raft", "full"),
    Row("lr", 5e-3, "ft/bitfit/glue-vanilla-array.sh:14", ("glue_efficient",), "bert", "full"),
]

SQUAD_ROWS = [
    Row("lr", 1e-4, "ft/squad-rational-array.sh:15, ft/squad-original-array.sh:15", ("squad",)),
    Row("batch_size", 32, "ft/squad-rational-array.sh:64, ft/squad-original-array.sh:61", ("squad",)),
    Row("weight_decay", 0.1, "ft/squad-rational-array.sh:73, ft/squad-original-array.sh:69", ("squad",)),
    Row("adam_eps", 1e-8, "run_squad.py:741 (default), :145-148", ("squad",)),
    Row("max_grad_norm", 1.0, "run_squad.py:742 (default)", ("squad",)),
    Row("warmup_ratio", 0.0, "run_squad.py:857-858 (defaults 0)", ("squad",)),
    Row("max_query_length", 64, "run_squad.py:712-713 (default)", ("squad",)),
    Row("max_answer_length", 30, "run_squad.py:760-761 (default)", ("squad",)),
    Row("n_best", 20, "run_squad.py:754-755 (default)", ("squad",)),
    Row("max_seq_length", 128, "ft/squad-rational-array.sh:62, ft/squad-rational-lr-array.sh:80", ("squad",), "raft"),
    Row("max_seq_length", 128, "ft/squad-original-lr-array.sh:75", ("squad",), "bert", "low"),
    Row("max_seq_length", 384, "ft/squad-original-array.sh:59", ("squad",), "bert", "full"),
    Row("doc_stride", "128 as the step between window starts", "run_squad.py:706-707, :867; "
        "transformers_modified/data/processors/squad.py:169,221", ("squad",)),
    Row("precision", "fp32", "run_squad.py:822-826 (--fp16 off), never set in ft/squad-*.sh", ("squad",)),
    Row("mode", "frozen_rafs", "ft/squad-rational-array.sh:78 (--frozen_rf)", ("squad",), "raft"),
    Row("mode", "full", "ft/squad-original-array.sh:52-74", ("squad",), "bert"),
    Row("epochs", 20, "ft/squad-rational-lr-array.sh:87, ft/squad-original-lr-array.sh:81", ("squad",), kind="low"),
    Row("epochs", 10, "ft/squad-rational-array.sh:69, ft/squad-original-array.sh:65", ("squad",), kind="full"),
    Row("patience", NO_EARLY_STOP, "run_squad.py:227-233 (every epoch runs), :297-301 (best dev F1), "
        ":1063-1070 (restored)", ("squad",)),
]

ROWS = PRETRAIN + GLUE_ROWS + SQUAD_ROWS

# the run grid: (study, "low" | "full", what) -> the authors' value and its source
GRID = {
    ("glue", "low", "sizes"): ({100, 300, 1000}, "ft/save_rational.sh:16 (100), ft/squad-original-lr-array.sh:18 "
                                                  "(300), ft/glue-academicBERT-rational-lr.sh:16 (1000)"),
    ("glue", "low", "seeds"): ({2022, 202206, 20220602, 2259, 5309, 1046, 622, 320, 53, 49},
                               "ft/full-finetune/glue-raft-lr-array.sh:20-55"),
    ("glue", "full", "seeds"): ({2022, 202206, 20220602, 2259, 5309, 49}, "ft/full-finetune/glue-raft-array.sh:21-40"),
    ("glue_efficient", "low", "sizes"): ({100}, "ft/bitfit/glue-raft-lr-array.sh:17"),
    ("glue_efficient", "full", "seeds"): ({2022, 202206, 20220602, 2259, 5309, 49},
                                          "ft/bitfit/glue-raft-array.sh:20-39"),
    ("squad", "full", "seeds"): ({2022, 202206, 20220602, 2259, 5309, 49}, "ft/squad-rational-array.sh:21-39"),
}

# Where paper.yaml leaves the authors on purpose (README.md, "Where we differ from the authors' code"):
# (study, setting, variant, kind) -> (our value, why). A job passes a row with the authors' value or
# with this one, so changing either is a decision someone has to write down here and in the README.
DEPARTURES = {
    ("corpus", "hub_config", None, None): ("20231101.en", "the Hub's current English Wikipedia dump"),
    ("pretrain", "precision", None, None): ("auto", "bf16 on GPUs that have it (fp16 elsewhere)"),
    ("pretrain", "max_eval_sequences", None, None): (20000, "20,000 random validation sequences"),
    ("squad", "max_seq_length", "raft", None): (384, "one window for both variants"),
    ("squad", "max_seq_length", "bert", "low"): (384, "one window for both variants"),
    ("squad", "doc_stride", None, None): (128, "our stride is the overlap (Hugging Face run_qa)"),
}


# ------------------------------------------------------------------------------ the job list
@dataclass(frozen=True)
class Job:
    study: str          # pretrain, corpus, glue, glue_efficient, squad
    task: str | None
    variant: str | None
    n: int | str | None
    seeds: tuple
    flags: dict         # setting -> the value as its command line writes it (None: left off)
    keys: dict          # setting -> the config key it came from
    searched: dict = None  # setting -> the values a search runs (raft.study.search_grid); None: none

    @property
    def kind(self) -> str | None:
        return None if self.n is None else "full" if self.n == "full" else "low"

    def __str__(self) -> str:
        parts = [self.study, self.task, self.variant, None if self.n is None else f"n={self.n}"]
        return " ".join(str(p) for p in parts if p is not None)


def _read_back(settings: dict) -> dict:
    """{setting: value} read back from the command line `cli_args` writes (None: the flag is left off)."""
    words = shlex.split(study.cli_args(study.values(settings)))
    out = {name: None for name in settings}
    for i, word in enumerate(words):
        if word.startswith("--"):
            name = word[2:].replace("-", "_")
            nxt = words[i + 1] if i + 1 < len(words) else "--"
            out[name] = True if nxt.startswith("--") else nxt
    return out


def job_list(*overlays) -> list[Job]:
    """Every job of config/config.yaml + ``overlays`` (default: paper.yaml) as the workflow builds it."""
    cfg = merge_files([CONFIG / "config.yaml", *(overlays or [PAPER])])
    load(cfg, SCHEMA, NOTEBOOKS)  # what the Snakefile does first: schema defaults, structure, pre-flight
    corpus = study.corpus_settings(cfg)
    jobs = [Job("corpus", None, None, None, (), _read_back(corpus), {k: key for k, (_, key) in corpus.items()})]
    for variant in cfg["variants"]:
        s = study.pretrain_settings(cfg, variant)
        jobs.append(Job("pretrain", None, variant, None, (), _read_back(s), {k: key for k, (_, key) in s.items()}))
    for family in study.finetune_families(cfg):  # the rules of workflow/rules/finetune.smk
        name, full = family["study"], family["n"] == "full"
        seen = {}
        for task, variant, n, seed in study.runs(cfg, name):
            if (n == "full") != full or task not in (family.get("tasks") or [task]):
                continue
            seen.setdefault((task, variant, n), []).append(seed)
        for (task, variant, n), seeds in seen.items():
            s = study.finetune_settings(cfg, name, task, variant, n)
            flags = _read_back(s)
            flags["mode"] = study.mode(cfg, name, variant)
            keys = {k: key for k, (_, key) in s.items()} | {"mode": f"{study.section_of(name)}.mode"}
            grid = study.search_grid(cfg, name, task, variant, n)  # one job per candidate in the workflow
            searched = {k: sorted({c[k] for c in grid}) for k in grid[0]}
            jobs.append(Job(name, task, variant, n, tuple(seeds), flags, keys, searched))
    return jobs


def _same(got, want) -> bool:
    if got is None or want is None:
        return got is want
    if isinstance(want, (int, float)) and not isinstance(want, bool):
        try:
            return abs(float(got) - float(want)) <= 1e-12 * max(1.0, abs(float(want)))
        except ValueError:
            return False
    return str(got) == str(want)


def _picks(row: Row, job: Job) -> bool:
    return (job.study in row.studies and row.variant in (None, job.variant) and row.kind in (None, job.kind)
            and (not row.tasks or job.task in row.tasks))


def _departure(job: Job, flag: str):
    for (st, fl, variant, kind), value in DEPARTURES.items():
        if st == job.study and fl == flag and variant in (None, job.variant) and kind in (None, job.kind):
            return value
    return None


def protocol_violations(jobs: list[Job]) -> list[str]:
    """A line per (job, setting) that has neither the authors' value nor a departure in DEPARTURES,
    per row that no job checks, and per grid entry (sizes, seeds) that differs."""
    out = []
    for row in ROWS:
        picked = [j for j in jobs if _picks(row, j)]
        if not picked:
            out.append(f"{row.flag}: no job to check for {'/'.join(row.studies)} {row.variant or ''} "
                       f"{row.kind or ''} {'/'.join(row.tasks)} (authors {row.want}: {row.source})")
        for job in picked:
            got, key, dep = job.flags.get(row.flag), job.keys.get(row.flag, row.flag), _departure(job, row.flag)
            if dep is not None and _same(got, dep[0]):
                continue
            ours = f"; our recorded departure: {dep[0]}, {dep[1]}" if dep else ""
            if row.flag in (job.searched or {}):  # a search: the authors' value must be a candidate
                if not any(_same(v, row.want) for v in job.searched[row.flag]):
                    out.append(f"{job}: {key} searches {job.searched[row.flag]}, without the authors' "
                               f"{row.want} ({row.source})")
            elif row.want == NO_EARLY_STOP:
                if int(got) < int(job.flags["epochs"]):
                    out.append(f"{job}: {key} = {got} < epochs {job.flags['epochs']} "
                               f"(authors: no early stopping; {row.source})")
            elif not _same(got, row.want):
                out.append(f"{job}: {key} = {got}, authors {row.want} ({row.source}{ours})")
    for (name, kind, what), (want, source) in GRID.items():
        runs = [j for j in jobs if j.study == name and j.kind == kind]
        got = {j.n for j in runs} if what == "sizes" else {s for j in runs for s in j.seeds}
        if got != want:
            key = "glue.efficient" if name == "glue_efficient" else f"{name}.{kind}_data"
            out.append(f"{name} {kind}-data {what}: {key} gives {sorted(got, key=str)}, authors {sorted(want)} "
                       f"({source})")
    return out


# ------------------------------------------------------------------------------ tests
@pytest.fixture(scope="module")
def paper_jobs():
    return job_list(PAPER)


def test_paper_yaml_follows_the_authors(paper_jobs):
    """Every setting the authors' code fixes, in every job of the paper's DAG."""
    assert protocol_violations(paper_jobs) == []


def test_the_job_list_is_the_workflows(paper_jobs):
    """The job list covers every rule family and reads the flags the rules write."""
    kinds = {(j.study, j.kind) for j in paper_jobs}
    assert kinds >= {("pretrain", None), ("glue", "low"), ("glue", "full"), ("glue_efficient", "low"),
                     ("glue_efficient", "full"), ("squad", "low"), ("squad", "full")}
    raft_full = next(j for j in paper_jobs if (j.study, j.task, j.variant, j.n) == ("glue", "qnli", "raft", "full"))
    assert raft_full.flags["rational_lr"] == "0.0001" and raft_full.keys["rational_lr"] == \
        "glue.full_data.rational_lr.qnli"
    assert len([j for j in paper_jobs if j.study == "glue_efficient" and j.n == "full"]) == 8 * 2


# overlays on paper.yaml that break the protocol, each with a word its report must contain
BROKEN = {
    "output_bias": (None, "pretrain.output_bias = unigram, authors zero"),
    "full_data_rational_lr": ("glue:\n  full_data:\n    rational_lr: 1.0e-3\n",
                              "glue.full_data.rational_lr = 0.001, authors 0.0001"),
    "squad_early_stopping": ("squad:\n  full_data: {patience: 3}\n", "squad.full_data.patience = 3 < epochs 10"),
    "efficient_no_full": ("glue:\n  efficient: {sizes: [100]}\n", "glue_efficient full-data seeds"),
    "departure_changed": ("corpus:\n  hub_config: 20220301.en\n", "corpus.hub_config = 20220301.en, authors"),
}


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_the_check_fails_when_paper_yaml_leaves_the_authors(tmp_path, name):
    """The check can fail: paper.yaml without its output_bias line (the quick study's unigram comes
    through), and other single changes, are each reported with the key."""
    overlay, expected = BROKEN[name]
    if overlay is None:  # a copy of paper.yaml without the line
        lines = PAPER.read_text().splitlines(keepends=True)
        kept = [ln for ln in lines if not ln.lstrip().startswith("output_bias:")]
        assert len(kept) == len(lines) - 1
        files = [tmp_path / "paper.yaml"]
        files[0].write_text("".join(kept))
    else:
        (tmp_path / "overlay.yaml").write_text(overlay)
        files = [PAPER, tmp_path / "overlay.yaml"]
    report = protocol_violations(job_list(*files))
    assert any(expected in line for line in report), report
