# Configuration checks, helpers and target lists shared by all rule files.

import os
import shlex
from pathlib import Path

from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

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
    squad = cfg["squad"]
    context = squad["max_seq_length"] - squad["max_query_length"] - 3
    if squad["doc_stride"] >= context:
        raise WorkflowError(
            f"invalid configuration value at 'squad.doc_stride': {squad['doc_stride']} must be "
            f"smaller than the context part of a window, max_seq_length - max_query_length - 3 "
            f"= {context}"
        )
    model = cfg["model"]
    if model["hidden_size"] % model["num_heads"]:
        raise WorkflowError(
            "invalid configuration value at 'model.num_heads': hidden_size "
            f"{model['hidden_size']} is not a multiple of num_heads {model['num_heads']}"
        )


NOTEBOOK_DIR = Path(workflow.basedir) / "notebooks"

_validate_config(config)
DATA_DIR = _resolve_data_dir(config)
_check_config(config)

VARIANTS = list(config["variants"])
GLUE = config["glue"]
SQUAD = config["squad"]
EFFICIENT = GLUE["efficient"]
GLUE_TASKS = ["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"]
# parameter-efficient mode per variant (matched trainable-parameter budgets)
EFFICIENT_MODE = {"raft": "raf_head", "bert": "bias_head"}


wildcard_constraints:
    variant="|".join(VARIANTS),
    task="|".join(GLUE_TASKS),
    n=r"[1-9][0-9]*|full",
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


def per_task(value, task):
    """A per-task setting: a number, or {default: x, <task>: y}."""
    if isinstance(value, dict):
        return value.get(task, value["default"])
    return value


def run_setting(section, n, key):
    """epochs / patience of a run: the low_data / full_data override, else the section's."""
    sub = section["full_data"] if n == "full" else section["low_data"]
    value = sub.get(key)
    return section[key] if value is None else value


# ------------------------------------------------------------------------------------------
# targets
# ------------------------------------------------------------------------------------------


def _settings(section):
    """[(N, seed), ...] of a study section: low-data sizes x seeds, then full data x seeds."""
    runs = [(n, s) for n in section["low_data"]["sizes"] for s in section["low_data"]["seeds"]]
    runs += [("full", s) for s in section["full_data"]["seeds"]]
    return runs


def pretrain_targets():
    return expand("results/pretrain/{variant}/metrics.json", variant=VARIANTS)


def glue_targets():
    return [
        f"results/glue/{task}/{variant}/n{n}/seed{seed}/metrics.json"
        for task in GLUE["tasks"]
        for variant in VARIANTS
        for n, seed in _settings(GLUE)
    ]


def efficient_targets():
    return [
        f"results/glue_efficient/{task}/{variant}/n{n}/seed{seed}/metrics.json"
        for task in EFFICIENT["tasks"]
        for variant in VARIANTS
        for n in EFFICIENT["sizes"]
        for seed in EFFICIENT["seeds"]
    ]


def squad_targets():
    return [
        f"results/squad/{variant}/n{n}/seed{seed}/metrics.json"
        for variant in VARIANTS
        for n, seed in _settings(SQUAD)
    ]


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
    c = config["corpus"]
    if c["vocab_size"]:
        vocab = {"vocab_size": c["vocab_size"]}
    else:
        # null: the command finds <data_dir>/vocab/bert-base-uncased-vocab.txt, else the Hub's
        vocab = {"vocab_file": c["vocab_file"]}
    hub = c["source"] == "hub"
    return cli_args(
        {
            "source": c["source"],
            "path": c["path"],
            "text_unit": c["text_unit"] if c["source"] == "text" else None,
            "data_dir": DATA_DIR,
            "hub_dataset": c["hub_dataset"] if hub else None,
            "hub_config": c["hub_config"] if hub else None,
            **vocab,
            "seq_len": c["seq_len"],
            "validation_fraction": c["validation_fraction"],
            "max_documents": c["max_documents"],
            "seed": c["seed"],
        }
    )


def pretrain_args(wildcards):
    m, r, p = config["model"], config["rational"], config["pretrain"]
    raft = wildcards.variant == "raft"
    return cli_args(
        {
            "variant": wildcards.variant,
            "num_layers": m["num_layers"],
            "hidden_size": m["hidden_size"],
            "num_heads": m["num_heads"],
            "intermediate_size": m["intermediate_size"],
            "max_position_embeddings": m["max_position_embeddings"],
            "dropout": m["dropout"],
            # RAF options only mean something for raft; keep bert's params (and so its
            # rerun triggers) independent of them
            "rational_layers": r["layers"] if raft else None,
            "rational_init": r["init"] if raft else None,
            "rational_lr": r["lr"] if raft else None,
            "rational_weight_decay": r["weight_decay"] if raft else None,
            "rational_schedule": r["schedule"] if raft else None,
            "max_steps": p["max_steps"],
            "batch_size": p["batch_size"],
            "per_device_batch_size": p["per_device_batch_size"],
            "lr": p["lr"],
            "warmup_ratio": p["warmup_ratio"],
            "weight_decay": p["weight_decay"],
            "adam_beta1": p["adam_beta1"],
            "adam_beta2": p["adam_beta2"],
            "adam_eps": p["adam_eps"],
            "max_grad_norm": p["max_grad_norm"],
            "mlm_probability": p["mlm_probability"],
            "save_steps": p["save_steps"],
            "eval_steps": p["eval_steps"],
            "logging_steps": p["logging_steps"],
            "snapshot_steps": p["snapshot_steps"],
            "keep_checkpoints": p["keep_checkpoints"],
            "max_eval_sequences": p["max_eval_sequences"],
            "seed": p["seed"],
            "precision": config["precision"],
        }
    )


# settings a pretraining checkpoint depends on (`raft pretrain` refuses to resume from a
# checkpoint written with other ones): the checkpoint folder is keyed by their digest, so
# a changed config starts afresh and an interrupted run with the same config resumes
_CHECKPOINT_FREE = {
    "save_steps",
    "eval_steps",
    "logging_steps",
    "snapshot_steps",
    "keep_checkpoints",
    "max_eval_sequences",
    "per_device_batch_size",
}


def pretrain_checkpoint_dir(wildcards):
    import hashlib
    import json

    settings = {
        "variant": wildcards.variant,
        "model": config["model"],
        "rational": config["rational"] if wildcards.variant == "raft" else None,
        "pretrain": {k: v for k, v in config["pretrain"].items() if k not in _CHECKPOINT_FREE},
        "corpus": config["corpus"],
        "data_dir": DATA_DIR,
    }
    digest = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    return f"results/checkpoints/pretrain/{wildcards.variant}/{digest}"


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


def mode_of(section):
    """The run's --mode: 'frozen_rafs' means 'full' for bert (it has no RAFs to freeze)."""

    def mode(wildcards):
        if section["mode"] == "frozen_rafs" and wildcards.variant == "bert":
            return "full"
        return section["mode"]

    return mode


def glue_args(wildcards):
    n, task = wildcards.n, wildcards.task
    return cli_args(
        {
            "epochs": run_setting(GLUE, n, "epochs"),
            "patience": run_setting(GLUE, n, "patience"),
            "lr": GLUE["lr"],
            "rational_lr": per_task(GLUE["rational_lr"], task),
            "weight_decay": GLUE["weight_decay"],
            "batch_size": GLUE["batch_size"],
            "eval_batch_size": GLUE["eval_batch_size"],
            "max_seq_length": GLUE["max_seq_length"],
            "max_test_examples": GLUE["max_test_examples"],
            "precision": config["precision"],
        }
    )


def glue_efficient_args(wildcards):
    task = wildcards.task
    return cli_args(
        {
            "epochs": EFFICIENT.get("epochs") or run_setting(GLUE, wildcards.n, "epochs"),
            "patience": EFFICIENT.get("patience") or run_setting(GLUE, wildcards.n, "patience"),
            "lr": EFFICIENT.get("lr") or GLUE["lr"],
            "rational_lr": per_task(EFFICIENT.get("rational_lr") or GLUE["rational_lr"], task),
            "weight_decay": GLUE["weight_decay"],
            "batch_size": GLUE["batch_size"],
            "eval_batch_size": GLUE["eval_batch_size"],
            "max_seq_length": GLUE["max_seq_length"],
            "max_test_examples": GLUE["max_test_examples"],
            "precision": config["precision"],
        }
    )


def squad_args(wildcards):
    n = wildcards.n
    return cli_args(
        {
            "epochs": run_setting(SQUAD, n, "epochs"),
            "patience": run_setting(SQUAD, n, "patience"),
            "lr": SQUAD["lr"],
            "rational_lr": SQUAD["rational_lr"],
            "batch_size": SQUAD["batch_size"],
            "eval_batch_size": SQUAD["eval_batch_size"],
            "max_seq_length": SQUAD["max_seq_length"],
            "doc_stride": SQUAD["doc_stride"],
            "max_query_length": SQUAD["max_query_length"],
            "max_test_examples": SQUAD["max_test_examples"],
            "precision": config["precision"],
        }
    )


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
