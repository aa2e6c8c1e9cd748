"""Workflow tests without running any job: dry runs of every config, schema errors,
`snakemake --lint`, profiles. The helpers at the top (run snakemake as a subprocess, read
its job table, list the files a finished run must contain) are shared with
test_workflow_e2e.py and test_workflow_slurm.py."""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raft import study
from raft.config import validate

REPO = Path(__file__).resolve().parents[1]
SNAKEFILE = REPO / "Snakefile"
CONFIG = REPO / "config"


def snakemake_cmd() -> list[str]:
    exe = shutil.which("snakemake")
    return [exe] if exe else [sys.executable, "-m", "snakemake"]


def run_snakemake(
    *args: str | os.PathLike,
    workdir: str | os.PathLike | None = None,
    env: dict | None = None,
    timeout: float = 600,
) -> subprocess.CompletedProcess:
    """`snakemake --snakefile <repo>/Snakefile [--directory workdir] args...` from the repo root."""
    cmd = snakemake_cmd() + ["--snakefile", str(SNAKEFILE)]
    if workdir is not None:
        cmd += ["--directory", str(workdir)]
    cmd += [str(a) for a in args]
    full_env = dict(os.environ)
    full_env.pop("RAFT_DATA_DIR", None)  # tests say explicitly which data they use
    if env:
        full_env.update(env)
    return subprocess.run(
        cmd, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout
    )


def output_of(proc: subprocess.CompletedProcess) -> str:
    return f"--- stdout ---\n{proc.stdout}\n--- stderr ---\n{proc.stderr}"


def job_counts(text: str) -> dict[str, int]:
    """The 'Job stats' table of a (dry) run: {rule: count}."""
    counts: dict[str, int] = {}
    block = text.split("Job stats:", 1)
    if len(block) < 2:
        return counts
    for line in block[1].splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            counts[m.group(1)] = int(m.group(2))
    return counts


def merged_config(*files: str | os.PathLike) -> dict:
    """config/config.yaml with the overlays applied (lists replaced, dicts merged)."""

    def merge(base, new):
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(base.get(k), dict):
                merge(base[k], v)
            else:
                base[k] = v
        return base

    cfg = yaml.safe_load((CONFIG / "config.yaml").read_text())
    for f in files:
        merge(cfg, yaml.safe_load(Path(f).read_text()) or {})
    return cfg


def expected_outputs(cfg: dict) -> list[str]:
    """Every file / folder a finished run of this (merged) config must have produced."""
    cfg = copy.deepcopy(cfg)
    validate(cfg, REPO / "workflow" / "schemas" / "config.schema.yaml")  # the schema's defaults, as the Snakefile
    variants = cfg.get("variants", ["bert", "raft"])
    glue, squad = cfg["glue"], cfg.get("squad", {})
    out = ["results/corpus/stats.json", "results/corpus/train", "results/corpus/tokenizer",
           "results/logs/prepare_corpus.log", "results/benchmarks/prepare_corpus.tsv"]
    for v in variants:
        out += [f"results/pretrain/{v}/{f}" for f in ("model", "metrics.json", "log.csv", "rationals.jsonl",
                                                       "preactivations.json")]
        out += [f"results/logs/pretrain/{v}.log", f"results/benchmarks/pretrain/{v}.tsv"]

    def settings(section):
        low = section.get("low_data", {})
        runs = [(n, s) for n in low.get("sizes", []) for s in low.get("seeds", [])]
        return runs + [("full", s) for s in section.get("full_data", {}).get("seeds", [])]

    for task in glue["tasks"]:
        for v in variants:
            for n, s in settings(glue):  # a log per job: all seeds of a low-data N, one full-data seed
                for candidate in study.search_grid(cfg, "glue", task, v, n):  # a search: a folder per value
                    run = f"n{n}" + (f"/{study.search_label(candidate)}" if candidate else "")
                    log = f"results/logs/glue/{task}/{v}/{run}" + (f"/seed{s}.log" if n == "full" else ".log")
                    out += [f"results/glue/{task}/{v}/{run}/seed{s}/metrics.json", log]
    eff = glue.get("efficient", {})
    full_seeds = eff.get("full_data", {}).get("seeds")  # N = full: these seeds when set
    for task in eff.get("tasks", []):
        for v in variants:
            for n in eff.get("sizes", []):
                for s in full_seeds if n == "full" and full_seeds is not None else eff.get("seeds", []):
                    out.append(f"results/glue_efficient/{task}/{v}/n{n}/seed{s}/metrics.json")
    for v in variants:
        for n, s in settings(squad):
            out.append(f"results/squad/{v}/n{n}/seed{s}/metrics.json")
    out += [f"results/tables/{t}.csv" for t in
            ("pretrain", "glue", "glue_summary", "squad", "squad_summary", "glue_efficient",
             "glue_efficient_summary", "zeroshot", "zeroshot_summary")]
    notebooks = ["pretraining", "glue"]
    if settings(squad):
        notebooks.append("squad")
    if "raft" in variants:
        notebooks.append("shapes")
    if eff.get("tasks") and (REPO / "notebooks" / "param_efficient.ipynb").is_file():
        notebooks.append("param_efficient")
    for nb in notebooks:
        out += [f"results/notebooks/{nb}.ipynb", f"results/notebooks/{nb}.html",
                f"results/figures/{nb}"]
    return out


# ==========================================================================================
# dry runs
# ==========================================================================================


def dry_run(tmp_path, *args, env=None, timeout=300):
    return run_snakemake("-n", "-p", *args, workdir=tmp_path, env=env, timeout=timeout)


def test_dry_run_quick_default(tmp_path):
    """The default (quick) config: every rule, both variants, every task x N x 3 seeds."""
    proc = dry_run(tmp_path)
    assert proc.returncode == 0, output_of(proc)
    counts = job_counts(proc.stdout)
    cfg = merged_config()
    tasks, seeds = cfg["glue"]["tasks"], cfg["glue"]["low_data"]["seeds"]
    assert counts["prepare_corpus"] == 1
    assert counts["pretrain"] == 2
    eff = cfg["glue"]["efficient"]
    # low-data runs: one job per (task, variant, N) runs all seeds
    assert counts["finetune_glue_efficient"] == len(eff["tasks"]) * 2 * len(eff["sizes"])
    assert counts["finetune_glue"] == len(tasks) * 2 * len(cfg["glue"]["low_data"]["sizes"])
    assert len(seeds) > 1 and f"--seed {' '.join(map(str, seeds))} " in proc.stdout
    assert counts["aggregate"] == 1
    assert counts["run_notebook"] == counts["render_notebook"] >= 4
    assert "finetune_squad" in counts
    # the quick study runs on CPU: no torchrun, progress bars off, threads set
    assert "torchrun" not in proc.stdout
    assert "OMP_NUM_THREADS=" in proc.stdout


def test_dry_run_smoke_overlay(tmp_path):
    """smoke.yaml alone (merged onto the defaults) and spelled out give the same DAG."""
    alone = dry_run(tmp_path, "--configfile", CONFIG / "smoke.yaml")
    assert alone.returncode == 0, output_of(alone)
    spelled = dry_run(tmp_path, "--configfile", CONFIG / "config.yaml", CONFIG / "smoke.yaml")
    assert spelled.returncode == 0, output_of(spelled)
    assert job_counts(alone.stdout) == job_counts(spelled.stdout)
    cfg = merged_config(CONFIG / "smoke.yaml")
    counts = job_counts(alone.stdout)
    assert counts["finetune_glue_efficient"] == len(cfg["glue"]["efficient"]["tasks"]) * 2
    assert counts["finetune_glue"] == len(cfg["glue"]["tasks"]) * 2 * len(cfg["glue"]["low_data"]["sizes"])
    # the same DAG as the quick study: every rule is there
    quick = job_counts(dry_run(tmp_path).stdout)
    assert set(counts) == set(quick)
    assert sum(counts.values()) < 40


def test_dry_run_paper_is_fast_and_complete(tmp_path):
    """The paper's DAG (hundreds of jobs) builds in well under a minute."""
    import time

    t0 = time.perf_counter()
    proc = dry_run(tmp_path, "--configfile", CONFIG / "paper.yaml")
    elapsed = time.perf_counter() - t0
    assert proc.returncode == 0, output_of(proc)
    counts = job_counts(proc.stdout)
    # glue: 8 tasks x 2 variants x 3 sizes, each job 10 seeds, + a job per full-data seed (6),
    # MNLI's keeping its weights (zero-shot source); glue_efficient: 8 tasks x 2 variants x
    # N=100, 10 seeds each, + a job per full-data seed (6); squad: the same seeds, full-data
    # weights kept
    # RAFT's low-data RAF lr searched over 3 values: a job per candidate (finetune_glue_search)
    assert counts["finetune_glue"] == 8 * 3 and counts["finetune_glue_search"] == 8 * 3 * 3
    assert counts["finetune_glue_full"] == 7 * 2 * 6 and counts["finetune_glue_full_kept"] == 2 * 6
    assert counts["finetune_glue_efficient"] == 8 * 2
    assert counts["finetune_glue_efficient_full"] == 8 * 2 * 6
    assert counts["finetune_squad"] == 2 * 3 and counts["finetune_squad_full_kept"] == 2 * 6
    assert "finetune_squad_full" not in counts
    assert sum(counts.values()) > 150
    assert elapsed < 90, f"paper dry run took {elapsed:.0f} s"
    out = proc.stdout
    assert "results/glue/mnli/raft/nfull/seed49/metrics.json" in out
    assert "results/glue/wnli" not in out
    assert "--num-layers 12 --hidden-size 768" in out
    assert "--batch-size 4096" in out and "--max-steps 23000" in out
    assert "--rational-lr 0.005 --rational-weight-decay 0.1 --rational-schedule constant" in out
    # bert gets no RAF flags; frozen_rafs means full for bert on SQuAD
    bert_cmd = next(line for line in out.splitlines() if "pretrain --corpus" in line and "--variant bert" in line)
    assert "--rational" not in bert_cmd
    assert re.search(r"finetune-squad --pretrained results/pretrain/bert/model .* --mode full", out)
    assert re.search(r"finetune-squad --pretrained results/pretrain/raft/model .* --mode frozen_rafs", out)
    # checkpoints outside the rule's outputs
    assert "--checkpoint-dir results/checkpoints/pretrain/raft" in out


def test_dry_run_multi_gpu_uses_torchrun(tmp_path):
    """With GPUs available (--resources gpu=4), paper pretraining runs under torchrun."""
    proc = dry_run(tmp_path, "--configfile", CONFIG / "paper.yaml", "--resources", "gpu=4")
    assert proc.returncode == 0, output_of(proc)
    assert "torchrun --standalone --nproc_per_node 4 -m raft.cli pretrain" in proc.stdout
    # the default workflow profile caps GPUs at 1: plain `raft pretrain` on one device
    capped = dry_run(tmp_path, "--configfile", CONFIG / "paper.yaml")
    assert "torchrun" not in capped.stdout
    assert "raft pretrain --corpus" in capped.stdout


def test_data_dir_is_passed_to_every_data_step(tmp_path, data_dir):
    proc = dry_run(tmp_path, "--configfile", CONFIG / "smoke.yaml", "--config", f"data_dir={data_dir}")
    assert proc.returncode == 0, output_of(proc)
    resolved = str(Path(data_dir).resolve())
    for cmd in ("prepare-corpus", "finetune-glue", "finetune-squad"):
        lines = [ln for ln in proc.stdout.splitlines() if f"raft {cmd} " in ln]
        assert lines and all(f"--data-dir {resolved}" in ln for ln in lines), cmd


def test_data_dir_from_environment(tmp_path, data_dir):
    proc = dry_run(tmp_path, "--configfile", CONFIG / "smoke.yaml", env={"RAFT_DATA_DIR": str(data_dir)})
    assert proc.returncode == 0, output_of(proc)
    assert f"--data-dir {Path(data_dir).resolve()}" in proc.stdout


def test_no_data_dir_means_hub(tmp_path):
    proc = dry_run(tmp_path, "--configfile", CONFIG / "smoke.yaml")
    assert proc.returncode == 0, output_of(proc)
    assert "--data-dir" not in proc.stdout


# ==========================================================================================
# configuration errors stop the run before any job, naming the key
# ==========================================================================================

BAD_CONFIGS = {
    "unknown_task": ("glue:\n  tasks: [rte, foo]\n", "glue.tasks[1]"),
    "n_below_one": ("glue:\n  low_data:\n    sizes: [100, 0]\n", "glue.low_data.sizes[1]"),
    "wrong_type": ("pretrain:\n  max_steps: lots\n", "pretrain.max_steps"),
    "number_as_text": ("glue:\n  lr: 1e-4\n", "glue.lr"),
    "unknown_key": ("pretrain:\n  max_stepz: 10\n", "pretrain"),
    "unknown_variant": ("variants: [bert, gpt]\n", "variants[1]"),
    "squad_n_below_one": ("squad:\n  low_data:\n    sizes: [-5]\n    seeds: [1]\n", "squad.low_data.sizes[0]"),
    "bad_per_task_lr": ("glue:\n  rational_lr: {default: 1.0e-3, qqq: 1.0e-3}\n", "glue.rational_lr"),
    "bad_resources": ("resources:\n  pretrain: {gpu: -1}\n", "resources.pretrain.gpu"),
    "doc_stride_too_large": ("squad:\n  doc_stride: 200\n", "squad.doc_stride"),
    "float_seed": ("pretrain:\n  seed: 1.0\n", "pretrain.seed': 1.0 is not a whole number; write 1"),
    "float_size": ("glue:\n  low_data:\n    sizes: [16.0]\n", "glue.low_data.sizes[0]': 16.0 is not a whole"),
}


@pytest.mark.parametrize("name", sorted(BAD_CONFIGS))
def test_schema_errors_name_the_key(tmp_path, name):
    text, key = BAD_CONFIGS[name]
    overlay = tmp_path / "bad.yaml"
    overlay.write_text(text)
    proc = dry_run(tmp_path, "--configfile", overlay)
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert f"invalid configuration value at '{key}" in err, output_of(proc)
    assert "Job stats" not in err  # stopped before any job was scheduled


def test_missing_data_dir_folder(tmp_path):
    missing = tmp_path / "no-such-folder"
    proc = dry_run(tmp_path, "--config", f"data_dir={missing}")
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "invalid configuration value at 'data_dir'" in err and str(missing) in err, output_of(proc)


def test_missing_data_dir_from_environment(tmp_path):
    missing = tmp_path / "gone"
    proc = dry_run(tmp_path, env={"RAFT_DATA_DIR": str(missing)})
    assert proc.returncode != 0
    err = proc.stdout + proc.stderr
    assert "data_dir (from $RAFT_DATA_DIR)" in err and str(missing) in err, output_of(proc)


def test_schema_defaults_fill_a_minimal_config():
    """The schema alone (an empty config) gives the paper's protocol; every shipped config
    validates."""
    import copy

    from jsonschema import Draft202012Validator, validators

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())

    def set_defaults(validator, properties, instance, sch):
        for prop, sub in properties.items():
            if "default" in sub:
                instance.setdefault(prop, copy.deepcopy(sub["default"]))
        yield from Draft202012Validator.VALIDATORS["properties"](validator, properties, instance, sch)

    Validator = validators.extend(Draft202012Validator, {"properties": set_defaults})
    cfg: dict = {}
    Validator(schema).validate(cfg)
    assert cfg["variants"] == ["bert", "raft"]
    assert cfg["glue"]["tasks"] == ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte"]
    assert cfg["glue"]["low_data"]["seeds"][:3] == [2022, 202206, 20220602]
    assert cfg["pretrain"]["batch_size"] == 4096 and cfg["pretrain"]["lr"] == 7e-4
    assert cfg["rational"] == {"layers": "all,pooler", "init": "gelu", "degrees": "5,4", "lr": 5e-3,
                               "weight_decay": 0.1, "schedule": "constant"}
    assert cfg["resources"]["pretrain"]["threads"] >= 1
    # every shipped config validates
    for name in ("config.yaml", "smoke.yaml", "paper.yaml"):
        Validator(schema).validate(merged_config(*([CONFIG / name] if name != "config.yaml" else [])))
    for overlay in ("paper_rehearsal.yaml", "paper_authors.yaml"):
        Validator(schema).validate(merged_config(CONFIG / "paper.yaml", CONFIG / overlay))


# ==========================================================================================
# lint, profiles, files
# ==========================================================================================


def test_lint_is_clean():
    proc = run_snakemake("--lint", timeout=300)
    assert proc.returncode == 0, output_of(proc)


def test_workflow_profile_default():
    prof = yaml.safe_load((REPO / "profiles/default/config.yaml").read_text())
    assert prof["cores"] == "all"
    assert "gpu=1" in prof["resources"]


def test_slurm_profile(tmp_path):
    """The SLURM profile parses, names the plugin's options, and gives a retry a longer runtime."""
    prof = yaml.safe_load((REPO / "profiles/slurm/config.yaml").read_text())
    assert prof["executor"] == "slurm"
    assert prof["slurm-status-command"] == "squeue"
    assert prof["retries"] >= 1
    assert "slurm-array-jobs" not in prof
    assert "--signal=TERM@" in prof["set-resources"]["pretrain"]["slurm_extra"]
    for key in ("slurm_account", "slurm_partition"):
        assert key in prof["default-resources"]
    # every option name of the profile is one snakemake (with the plugin) accepts
    help_text = subprocess.run(snakemake_cmd() + ["--help"], capture_output=True, text=True).stdout
    for key in prof:
        assert f"--{key}" in help_text, key
    # a dry run through the profile builds the paper DAG with GPU resources per rule
    proc = run_snakemake("-n", "--workflow-profile", REPO / "profiles/slurm",
                         "--configfile", CONFIG / "paper.yaml", workdir=tmp_path, timeout=300)
    assert proc.returncode == 0, output_of(proc)
    assert re.search(r"rule pretrain:(.|\n)*?resources: .*gpu=4.*cpus_per_gpu=8", proc.stdout)
    assert re.search(r"rule finetune_glue:(.|\n)*?resources: .*gpu=1", proc.stdout)


def test_runtime_grows_with_attempt(tmp_path):
    """Rules get runtime = config runtime x attempt (a retried job asks for more time); a
    batched fine-tuning job gets the per-run runtime times its seeds."""
    text = (REPO / "workflow/rules/common.smk").read_text()
    assert "base * attempt" in text
    for rule_file in ("pretrain.smk", "finetune.smk"):
        assert "runtime=runtime(" in (REPO / "workflow/rules" / rule_file).read_text()
    overlay = tmp_path / "runtime.yaml"
    overlay.write_text("resources:\n  finetune_glue: {runtime: 7}\n")
    proc = dry_run(tmp_path, "--configfile", CONFIG / "config.yaml", overlay)
    assert proc.returncode == 0, output_of(proc)
    seeds = len(merged_config()["glue"]["low_data"]["seeds"])
    assert re.search(rf"rule finetune_glue:(.|\n)*?resources: .*runtime={7 * seeds}\b", proc.stdout)


def test_every_rule_has_log_conda_and_resources():
    for path in (REPO / "workflow/rules").glob("*.smk"):
        text = path.read_text()
        for block in re.split(r"\n *rule[ :]", text)[1:]:
            name = block.split(":", 1)[0]
            for directive in ("log:", "conda:", "resources:", "threads:", "shell:"):
                assert f"    {directive}" in block, f"rule {name} lacks {directive}"


def test_conda_env_file():
    env = yaml.safe_load((REPO / "envs/raft.yaml").read_text())
    deps = env["dependencies"]
    assert "python=3.11" in deps
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert any(p.startswith("torch") for p in pip)
    assert (REPO / "envs/raft.post-deploy.sh").is_file()


def test_checkpoint_folder_follows_the_settings(tmp_path):
    """Same settings -> same checkpoint folder (a retry resumes); settings a checkpoint
    depends on changed -> a fresh folder (no refused resume); logging intervals don't count."""

    def ckpt_dirs(text):
        overlay = tmp_path / "o.yaml"
        overlay.write_text(text)
        proc = dry_run(tmp_path, "--configfile", CONFIG / "smoke.yaml", overlay)
        assert proc.returncode == 0, output_of(proc)
        return re.findall(r"--checkpoint-dir (results/checkpoints/pretrain/\w+/\w+)", proc.stdout)

    base = ckpt_dirs("{}\n")
    assert len(base) == 2 and all(d.startswith("results/checkpoints/pretrain/") for d in base)
    assert ckpt_dirs("pretrain:\n  logging_steps: 7\n  save_steps: 3\n") == base
    longer = ckpt_dirs("pretrain:\n  max_steps: 21\n")
    assert set(longer).isdisjoint(base)
    raf = ckpt_dirs("rational:\n  lr: 1.0e-2\n")
    assert [d for d in raf if "/bert/" in d] == [d for d in base if "/bert/" in d]
    assert [d for d in raf if "/raft/" in d] != [d for d in base if "/raft/" in d]
