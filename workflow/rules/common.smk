# The checked config, helpers and target lists shared by all rule files.

import json
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

from raft import layout, study
from raft.config import load as load_config
from raft.study import ConfigError, cli_args
from raft.data.tasks import GLUE_TASKS

NOTEBOOK_DIR = Path(workflow.basedir) / "notebooks"
SCHEMA = Path(workflow.basedir) / "workflow" / "schemas" / "config.schema.yaml"

# Before any job: the schema (defaults filled in), keys that go together, the data folder,
# and every job against the rules of its `raft` command; a failure names the key.
try:
    DATA_DIR = load_config(config, SCHEMA, NOTEBOOK_DIR)
except ConfigError as err:
    raise WorkflowError(str(err)) from None

VARIANTS = list(config["variants"])


wildcard_constraints:
    variant="|".join(VARIANTS),
    task="|".join(GLUE_TASKS),
    n=r"[1-9][0-9]*|full",
    seed=r"[0-9]+",
    name=r"[a-z_]+",
    search=r"[a-z_]+=[^/,]+(,[a-z_]+=[^/,]+)*",


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def data_dir_arg():
    return cli_args({"data_dir": DATA_DIR})


def res(rule_name, key):
    """A job-size setting of one rule from config['resources']."""
    return config["resources"][rule_name][key]


def runtime(rule_name, runs=1):
    """Runtime in minutes (per run) growing with the attempt (a retry after a timeout gets more time)."""
    base = res(rule_name, "runtime") * runs
    return lambda wildcards, attempt: base * attempt


# ------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------


def pretrain_targets():
    return RECORDS["pretrain"]


RUN_PATHS, MODEL_PATHS = layout.RUN_PATHS, layout.MODEL_PATHS


def finetune_targets(name):
    """metrics.json of every run of a study (glue, glue_efficient, squad)."""
    return RECORDS[name]


def glue_targets():
    return finetune_targets("glue")


def efficient_targets():
    return finetune_targets("glue_efficient")


def squad_targets():
    return finetune_targets("squad")


# zero-shot targets whose data is here; each one left out gets a line naming what is missing
ZEROSHOT, _left_out = study.zeroshot_available(config, DATA_DIR)
for _line in _left_out:
    print(_line, file=sys.stderr)

# every record of this config's study (raft/layout.py): the rules' targets and, through
# aggregate_study(), the only records the tables and notebooks read
RECORDS = layout.study_records(config, ZEROSHOT)


def zeroshot_targets():
    return RECORDS["zeroshot"]


def aggregate_study():
    """What `raft aggregate --study-config` needs to list the same records (JSON)."""
    return json.dumps({"config": config, "zeroshot": ZEROSHOT}, separators=(",", ":"))


def zeroshot_inputs(wildcards):
    """The full-data fine-tuning run a zero-shot evaluation scores: its weights and record."""
    name, task = study.ZEROSHOT_SOURCES[wildcards.target]
    section = study.section_of(name)
    run = dict(task=task, variant=wildcards.variant, n="full", seed=wildcards.seed)
    return {
        "model": MODEL_PATHS[section].format(**run),
        "metrics": RUN_PATHS[name].format(**run),
    }


TABLES = layout.TABLES


def table_targets():
    """The tables and the list of the records they hold."""
    return expand("results/tables/{table}.csv", table=TABLES) + [
        f"results/tables/{layout.MANIFEST}"
    ]


def notebook_names():
    """Notebooks to render: config['notebooks'], else every template with data here."""
    if config["notebooks"] is not None:
        return list(config["notebooks"])
    wanted = ["pretraining"]
    if glue_targets():
        wanted.append("glue")
    if squad_targets():
        wanted.append("squad")
    if "raft" in VARIANTS:
        wanted.append("shapes")
    if efficient_targets():
        wanted.append("param_efficient")
    if zeroshot_targets():
        wanted.append("zeroshot")
    return [n for n in wanted if (NOTEBOOK_DIR / f"{n}.ipynb").is_file()]


def notebook_targets():
    return expand("results/notebooks/{name}.{ext}", name=notebook_names(), ext=["ipynb", "html"])


def all_targets():
    return (
        pretrain_targets()
        + glue_targets()
        + efficient_targets()
        + squad_targets()
        + zeroshot_targets()
        + table_targets()
        + notebook_targets()
    )


# ------------------------------------------------------------------------------------------
# command-line arguments of the rules (config -> flags of the `raft` sub-commands)
# ------------------------------------------------------------------------------------------


def corpus_args():
    return cli_args({**study.values(study.corpus_settings(config)), "data_dir": DATA_DIR})


def pretrain_args(wildcards):
    return cli_args(study.values(study.pretrain_settings(config, wildcards.variant)))


def pretrain_checkpoint_dir(wildcards):
    """Checkpoints outside the rule's outputs, keyed by the settings they depend on."""
    key = study.checkpoint_key(config, wildcards.variant, DATA_DIR)
    return f"results/checkpoints/pretrain/{wildcards.variant}/{key}"


def pretrain_launcher(wildcards, resources):
    """`raft` on one device; torchrun with one process per GPU when the job has several."""
    if resources.gpu > 1:
        return f"torchrun --standalone --nproc_per_node {resources.gpu} -m raft.cli"
    return "raft"


def omp_threads(wildcards, threads, resources):
    """CPU threads per process (torchrun starts one process per GPU)."""
    return max(1, threads // max(1, resources.gpu))


PRETRAINED = "results/pretrain/{variant}/model"
PRETRAINED_METRICS = layout.PRETRAIN


# Fine-tuning jobs: low-data runs are batched, one job per (study, task, variant, N) running
# every seed in one process (imports, weights, data and tokenized test sets paid once); a
# full-data run is one job per seed (long: they run in parallel). Records are also kept in
# RUNS_DIR, so a failed batch (whose outputs Snakemake deletes) reruns only what is missing.
TOKEN_CACHE = "results/cache/tokenized"
RUNS_DIR = "results/checkpoints/finetune"


def fill(path, wildcards):
    """``path`` with the job's wildcards filled in (a batch's {seed} stays)."""
    for key, value in wildcards.items():
        path = path.replace("{%s}" % key, str(value))
    return path


def run_path(family):
    """The record path pattern of a family's runs (a search's candidates: one folder more)."""
    paths = layout.SEARCH_PATHS if family.get("search") else RUN_PATHS
    return paths[family["study"]]


def finetune_params(family):
    """The params of one fine-tuning rule: command, task flag, seeds, output pattern, flags."""
    name, seeds = family["study"], family.get("seeds")
    section = study.section_of(name)
    model = MODEL_PATHS.get(section) if family.get("keep") else None

    def args(wildcards):
        task = getattr(wildcards, "task", "squad")
        n = "full" if wildcards.n == "full" else int(wildcards.n)
        candidate = study.parse_search_label(wildcards.search) if family.get("search") else None
        settings = study.finetune_settings(config, name, task, wildcards.variant, n, candidate)
        return cli_args(study.values(settings))

    return {
        "command": "finetune-glue" if section == "glue" else "finetune-squad",
        "task": lambda w: f"--task {w.task}" if section == "glue" else "",
        "seeds": lambda w: " ".join(map(str, seeds)) if seeds else w.seed,
        "output": lambda w: fill(run_path(family), w),
        "save_model": lambda w: f"--save-model {fill(model, w)}" if model else "",
        "mode": lambda w: study.mode(config, name, w.variant),
        "data_dir": data_dir_arg(),
        "args": args,
    }


def finetune_outputs(family):
    """The metrics.json files of one job (and the kept weights' folder)."""
    path, seeds = run_path(family), family.get("seeds")
    outputs = [path.replace("{seed}", str(s)) for s in seeds] if seeds else [path]
    if family.get("keep"):
        outputs.append(directory(MODEL_PATHS[study.section_of(family["study"])]))
    return outputs


def finetune_log(family, kind="logs", ext="log"):
    """results/<kind>/<run path up to N>.<ext> for a batch, ... /seed{seed}.<ext> for one run."""
    stem = run_path(family).replace("results", f"results/{kind}", 1).rsplit("/", 1)[0]
    if family.get("seeds"):
        stem = stem.rsplit("/", 1)[0]
    return f"{stem}.{ext}"


def task_constraint(family):
    """The task wildcard's pattern of a rule (GLUE rules that serve some tasks only)."""
    return "|".join(family.get("tasks") or GLUE_TASKS)


def notebook_inputs(wildcards):
    """A notebook reads the result files directly; the tables stand for all of them."""
    inputs = {
        "template": str(NOTEBOOK_DIR / f"{wildcards.name}.ipynb"),
        "tables": table_targets(),
        "pretrain": pretrain_targets(),
    }
    if wildcards.name in ("pretraining", "shapes"):
        inputs["rationals"] = expand("results/pretrain/{variant}/rationals.jsonl", variant=VARIANTS)
    if wildcards.name == "shapes":
        inputs["preactivations"] = expand(
            "results/pretrain/{variant}/preactivations.json", variant=VARIANTS
        )
    return inputs
