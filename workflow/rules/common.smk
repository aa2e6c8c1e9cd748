# Configuration checks, helpers and target lists shared by all rule files.

import os
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

from raft import study
from raft.data.glue import TASK_INFO

# ------------------------------------------------------------------------------------------
# validation (before any job): JSON schema with defaults, then checks a schema cannot express
# ------------------------------------------------------------------------------------------


def _key_path(path):
    """['glue', 'low_data', 'sizes', 0] -> 'glue.low_data.sizes[0]'."""
    parts = []
    for part in path:
        if isinstance(part, int):
            parts.append(f"[{part}]")
        else:
            parts.append(f".{part}" if parts else str(part))
    return "".join(parts) or "<top level>"


def _validate_config(cfg):
    """JSON-schema validation with defaults; a failure names the key and the problem."""
    import jsonschema

    try:
        validate(cfg, "../schemas/config.schema.yaml", set_default=True)
    except WorkflowError as err:
        cause = err.__context__
        if not isinstance(cause, jsonschema.ValidationError):
            raise
        # oneOf / anyOf: report the deepest (most specific) sub-error
        best = max(cause.context, key=lambda e: len(e.absolute_path)) if cause.context else cause
        where = _key_path(list(best.absolute_path) or list(cause.absolute_path))
        hint = ""
        if isinstance(best.instance, str):
            try:
                float(best.instance)
                hint = (
                    " (YAML reads numbers like 1e-3 as text: write 1.0e-3, or use a "
                    "--configfile instead of --config for numbers and lists)"
                )
            except ValueError:
                pass
        raise WorkflowError(
            f"invalid configuration value at '{where}': {best.message}{hint}. "
            "Keys, types and defaults: workflow/schemas/config.schema.yaml"
        ) from None
    _check_whole_numbers(cfg)


def _check_whole_numbers(cfg):
    """JSON Schema counts 1.0 as an integer; the commands do not: reject it, naming the key."""
    import jsonschema
    import yaml

    schema = yaml.safe_load(Path(workflow.basedir, "workflow/schemas/config.schema.yaml").read_text())
    strict = jsonschema.Draft202012Validator.TYPE_CHECKER.redefine(
        "integer", lambda _, x: isinstance(x, int) and not isinstance(x, bool)
    )
    validator = jsonschema.validators.extend(
        jsonschema.Draft202012Validator, type_checker=strict
    )(schema)
    for err in validator.iter_errors(cfg):
        if isinstance(err.instance, float) and err.instance.is_integer():
            raise WorkflowError(
                f"invalid configuration value at '{_key_path(list(err.absolute_path))}': "
                f"{err.instance} is not a whole number; write {int(err.instance)}"
            )


def _resolve_data_dir(cfg):
    """config data_dir, else $RAFT_DATA_DIR, else None (Hub). A given folder must exist."""
    value, origin = cfg.get("data_dir"), "data_dir"
    if not value:
        value, origin = os.environ.get("RAFT_DATA_DIR", ""), "data_dir (from $RAFT_DATA_DIR)"
    if not value:
        return None
    path = Path(os.path.expanduser(str(value)))
    if not path.is_dir():
        raise WorkflowError(
            f"invalid configuration value at '{origin}': local data folder {str(path)!r} does "
            "not exist. Point data_dir (or $RAFT_DATA_DIR) at a folder with glue/, squad/, "
            "corpus/, vocab/ subfolders, or set data_dir: null and unset RAFT_DATA_DIR to "
            "use the Hugging Face Hub."
        )
    return str(path.resolve())


def _check_config(cfg):
    efficient = cfg["glue"]["efficient"]
    for key in ("tasks", "sizes", "seeds"):
        others = [k for k in ("tasks", "sizes", "seeds") if k != key]
        if efficient[key] and not all(efficient[k] for k in others):
            raise WorkflowError(
                f"invalid configuration value at 'glue.efficient': '{key}' is set but "
                f"{' / '.join(others)} are empty; give all three or none"
            )
    low = cfg["squad"]["low_data"]
    if bool(low["sizes"]) != bool(low["seeds"]):
        raise WorkflowError(
            "invalid configuration value at 'squad.low_data': give both sizes and seeds, or neither"
        )
    low = cfg["glue"]["low_data"]
    if bool(low["sizes"]) != bool(low["seeds"]):
        raise WorkflowError(
            "invalid configuration value at 'glue.low_data': give both sizes and seeds, or neither"
        )
    corpus = cfg["corpus"]
    if corpus["vocab_file"] and corpus["vocab_size"]:
        raise WorkflowError(
            "invalid configuration value at 'corpus.vocab_file': give vocab_file or vocab_size, not both"
        )
    if corpus["vocab_file"] and not Path(corpus["vocab_file"]).is_file():
        raise WorkflowError(
            f"invalid configuration value at 'corpus.vocab_file': {corpus['vocab_file']!r} is not a file"
        )
    if corpus["path"] and corpus["source"] != "hub" and not Path(corpus["path"]).exists():
        raise WorkflowError(
            f"invalid configuration value at 'corpus.path': {corpus['path']!r} does not exist"
        )
    for name in cfg["notebooks"] or []:
        if not (NOTEBOOK_DIR / f"{name}.ipynb").is_file():
            raise WorkflowError(
                f"invalid configuration value at 'notebooks': no template notebooks/{name}.ipynb"
            )


def _preflight(cfg):
    """Every job against the rules its `raft` command applies (raft/study.py), before any job."""
    from raft.study import ConfigError, preflight

    try:
        preflight(cfg, DATA_DIR)
    except ConfigError as err:
        raise WorkflowError(str(err)) from None


NOTEBOOK_DIR = Path(workflow.basedir) / "notebooks"

_validate_config(config)
DATA_DIR = _resolve_data_dir(config)
_check_config(config)
_preflight(config)

VARIANTS = list(config["variants"])
GLUE_TASKS = list(TASK_INFO)


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


def cli_args(options):
    """{'max_steps': 10, 'lr': 1e-4, 'x': None} -> "--max-steps 10 --lr 0.0001" (None dropped)."""
    parts = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            parts.append(flag)
        else:
            parts.append(f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


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
