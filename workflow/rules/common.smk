# The checked config, helpers and target lists shared by all rule files.

from pathlib import Path

from snakemake.exceptions import WorkflowError

from raft import study
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
    study="glue|glue_efficient",
    seed=r"[0-9]+",
    name=r"[a-z_]+",


# ------------------------------------------------------------------------------------------
# helpers
# ------------------------------------------------------------------------------------------


def data_dir_arg():
    return cli_args({"data_dir": DATA_DIR})


def res(rule_name, key):
    """A job-size setting of one rule from config['resources']."""
    return config["resources"][rule_name][key]


def runtime(rule_name):
    """Runtime in minutes growing with the attempt (a retry after a timeout gets more time)."""
    base = res(rule_name, "runtime")
    return lambda wildcards, attempt: base * attempt


# ------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------


def pretrain_targets():
    return expand("results/pretrain/{variant}/metrics.json", variant=VARIANTS)


def finetune_targets(name):
    """metrics.json of every run of a study (glue, glue_efficient, squad)."""
    if name == "squad":
        path = "results/squad/{variant}/n{n}/seed{seed}/metrics.json"
    else:
        path = "results/%s/{task}/{variant}/n{n}/seed{seed}/metrics.json" % name
    return [
        path.format(task=t, variant=v, n=n, seed=s) for t, v, n, s in study.runs(config, name)
    ]


def glue_targets():
    return finetune_targets("glue")


def efficient_targets():
    return finetune_targets("glue_efficient")


def squad_targets():
    return finetune_targets("squad")


TABLES = [
    "pretrain",
    "glue",
    "glue_summary",
    "squad",
    "squad_summary",
    "glue_efficient",
    "glue_efficient_summary",
]


def table_targets():
    return expand("results/tables/{table}.csv", table=TABLES)


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
    return [n for n in wanted if (NOTEBOOK_DIR / f"{n}.ipynb").is_file()]


def notebook_targets():
    return expand(
        "results/notebooks/{name}.{ext}", name=notebook_names(), ext=["ipynb", "html"]
    )


def all_targets():
    return (
        pretrain_targets()
        + glue_targets()
        + efficient_targets()
        + squad_targets()
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
PRETRAINED_METRICS = "results/pretrain/{variant}/metrics.json"


def finetune_args(wildcards):
    """The flags of one fine-tuning run, from its config layers (raft/study.py)."""
    name = getattr(wildcards, "study", "squad")
    task = getattr(wildcards, "task", "squad")
    n = "full" if wildcards.n == "full" else int(wildcards.n)
    settings = study.finetune_settings(config, name, task, wildcards.variant, n)
    return cli_args(study.values(settings))


def notebook_inputs(wildcards):
    """A notebook reads the result files directly; the tables stand for all of them."""
    inputs = {
        "template": str(NOTEBOOK_DIR / f"{wildcards.name}.ipynb"),
        "tables": table_targets(),
        "pretrain": pretrain_targets(),
    }
    if wildcards.name in ("pretraining", "shapes"):
        inputs["rationals"] = expand(
            "results/pretrain/{variant}/rationals.jsonl", variant=VARIANTS
        )
    return inputs
