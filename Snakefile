# RAFT: Transformers with Learnable Activation Functions (Fang et al. 2023), reproduced.
#
#   corpus -> tokenizer -> pretrain {bert, raft} -> fine-tune per (variant, task, N, seed)
#   on GLUE and SQuAD -> tables -> rendered notebooks
#
# Quick study (2-core CPU, ~20 min):   snakemake
# Smoke test (~5 min):                 snakemake --configfile config/smoke.yaml
# Paper scale on SLURM:                snakemake --configfile config/paper.yaml \
#                                          --workflow-profile profiles/slurm
# Report:                              snakemake --report results/report.html
#
# Every rule is a thin call of one `raft <command>` (see raft/cli.py); the result-file
# contracts are in docs/architecture.md. Configuration keys and defaults:
# workflow/schemas/config.schema.yaml.

from snakemake.utils import min_version

min_version("9.0")


# The quick study; relative to the Snakefile so that --directory elsewhere keeps it.
# Overlays: --configfile config/smoke.yaml (or paper.yaml, or your own file).
configfile: f"{workflow.basedir}/config/config.yaml"


# Validate (and fill defaults) before any job is scheduled; stops with a message that
# names the offending key.
include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/zeroshot.smk"
include: "workflow/rules/report.smk"


report: "workflow/report/workflow.rst"


# Progress bars off (one clean log line per interval instead), unbuffered Python output.
shell.prefix(
    "set -euo pipefail; "
    "export TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1 "
    "HF_DATASETS_DISABLE_PROGRESS_BARS=1 TOKENIZERS_PARALLELISM=false "
    "PYTHONUNBUFFERED=1; "
)


rule all:
    default_target: True
    input:
        all_targets(),
