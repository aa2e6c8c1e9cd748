"""The study a workflow config describes: its runs, the settings of each run, and the
pre-flight check of every job.

The workflow (workflow/rules/common.smk) asks this module which fine-tuning runs exist and
which settings each `raft` command gets -- the config keys are the commands' flags -- and,
before any job is scheduled, calls `preflight`, which applies the commands' own rules
(`raft.checks`, and N against each task's train pool) to every job and names the config key
of the first setting that breaks one.

A fine-tuning setting is looked up in layers, the first that sets it wins: for the
parameter-efficient study ``glue.efficient.full_data`` (its N = full runs) and ``glue.efficient``,
then ``<section>.low_data`` or ``<section>.full_data``, then the section (``glue`` / ``squad``),
then the top level (``precision``). A value may be a number or a mapping keyed by task or by
variant, with an optional ``default``: ``rational_lr: {default: 1.0e-3, sst2: 5.0e-3}``,
``max_seq_length: {bert: 384, raft: 128}``. `setting` is the one place that resolves them.

A searchable setting (`SEARCHABLE`: ``lr``, ``rational_lr``) whose value is a list is a search:
every (task, N, seed) runs once per value (`search_grid`: one candidate per combination), each
under its own record (`raft.layout.SEARCH_PATHS`), and the analysis keeps, per (task, variant,
N), the candidate with the best mean *dev* score over the seeds (`raft.analysis.aggregate`).
``rational_lr`` is searched only where RAFs train (not for bert, nor with frozen RAFs): there the
list's first value is passed, as it changes nothing.
"""

from __future__ import annotations

import dataclasses
import itertools
import shlex

from raft import checks, settings

VARIANTS = ("bert", "raft")
STUDIES = ("glue", "glue_efficient", "squad")
EFFICIENT_MODE = {"raft": "raf_head", "bert": "bias_head"}  # matched trainable-parameter budgets
# keys of a fine-tuning section that shape the grid rather than set a flag
STRUCTURE = ("tasks", "mode", "low_data", "full_data", "efficient")
RUNTIME = ("precision",)  # top-level keys a section may override
RUN_SETTINGS = {"glue": settings.Finetune, "squad": settings.SquadFinetune}  # a run's flags
SEARCHABLE = ("lr", "rational_lr")  # settings a list turns into a search (schema: *search_number)


class ConfigError(ValueError):
    """A config value that a command would reject; the message names the key (and the job)."""


def section_of(study: str) -> str:
    return "squad" if study == "squad" else "glue"


# ------------------------------------------------------------------------------ runs
def _efficient_seeds(config: dict, n) -> list[int]:
    """Seeds of the parameter-efficient runs of size N: ``glue.efficient.full_data.seeds`` for
    N = full when set, else ``glue.efficient.seeds``."""
    eff = config["glue"]["efficient"]
    full = eff.get("full_data", {}).get("seeds")
    return list(full if n == "full" and full is not None else eff["seeds"])


def runs(config: dict, study: str) -> list[tuple[str, str, int | str, int]]:
    """(task, variant, N, seed) of every run of a study; N is an int or "full"."""
    variants = config["variants"]
    if study == "glue_efficient":
        eff = config["glue"]["efficient"]
        return [(t, v, n, s) for t in eff["tasks"] for v in variants for n in eff["sizes"]
                for s in _efficient_seeds(config, n)]
    section = config[study]
    grid = [(n, s) for n in section["low_data"]["sizes"] for s in section["low_data"]["seeds"]]
    grid += [("full", s) for s in section["full_data"]["seeds"]]
    tasks = section["tasks"] if study == "glue" else ["squad"]
    return [(t, v, n, s) for t in tasks for v in variants for n, s in grid]


def seeds(config: dict, study: str) -> tuple[list[int], list[int]]:
    """(low-data seeds, full-data seeds) of a study (every low-data N has the same seeds); the
    parameter-efficient study's full-data runs are those of "full" in ``glue.efficient.sizes``."""
    if study == "glue_efficient":
        sizes = config["glue"]["efficient"]["sizes"]
        low = _efficient_seeds(config, 1) if any(n != "full" for n in sizes) else []
        return low, _efficient_seeds(config, "full") if "full" in sizes else []
    section = config[study]
    return list(section["low_data"]["seeds"]), list(section["full_data"]["seeds"])


def tasks_of(config: dict, study: str) -> list[str]:
    """The tasks a study fine-tunes on (SQuAD: ``["squad"]``)."""
    if study == "glue_efficient":
        return list(config["glue"]["efficient"]["tasks"])
    return list(config["glue"]["tasks"]) if study == "glue" else ["squad"]


# zero-shot target -> (study, task) whose full-data fine-tuned models it scores
ZEROSHOT_SOURCES = {"snli": ("glue", "mnli"), "triviaqa": ("squad", "squad")}


def zeroshot_targets(config: dict) -> list[str]:
    """The zero-shot targets the config switches on (``zeroshot: {snli: true, ...}``)."""
    return [t for t in ZEROSHOT_SOURCES if config.get("zeroshot", {}).get(t)]


def zeroshot_runs(config: dict, targets=None) -> list[tuple[str, str, int]]:
    """(target, variant, seed) of every zero-shot evaluation: each full-data seed of the source."""
    out = []
    for target in zeroshot_targets(config) if targets is None else targets:
        study, _ = ZEROSHOT_SOURCES[target]
        out += [(target, v, s) for v in config["variants"] for s in config[study]["full_data"]["seeds"]]
    return out


def keeps_model(config: dict, study: str, task: str) -> bool:
    """True when the full-data runs of (study, task) keep their weights (a zero-shot source)."""
    return (study, task) in (ZEROSHOT_SOURCES[t] for t in zeroshot_targets(config))


def zeroshot_available(config: dict, data_dir, reachable=None) -> tuple[list[str], list[str]]:
    """(targets switched on whose data is here, a line per target left out). Here: a complete
    local copy, else the Hub when it answers (``reachable``: `raft.data.sources.hub_reachable`).
    A line names the target's missing files and the expected layout."""
    from raft.data import snli, triviaqa
    from raft.data.sources import hub_reachable

    readers, found, left_out = {"snli": snli, "triviaqa": triviaqa}, [], []
    for target in zeroshot_targets(config):
        reader = readers[target]
        missing, hub = reader.missing_files(data_dir), reader.uses_hub(data_dir)
        if not missing or (hub and (reachable or hub_reachable)()):
            found.append(target)
            continue
        why = "no local copy, and the Hugging Face Hub does not answer" if hub else "the local copy is incomplete"
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        left_out.append(f"zero-shot {target} (zeroshot.{target}: true) is left out ({why}): missing "
                        f"{', '.join(missing[:3])}{more}; expected {reader.LAYOUT}")
    return found, left_out


def finetune_families(config: dict) -> list[dict]:
    """The workflow's fine-tuning rules, each a dict: ``name``, ``study``, ``n`` (the N wildcard's
    pattern), ``seeds`` (the seeds each job runs, all in one process; absent: one job per seed),
    ``tasks`` (the tasks it serves; absent: all) and ``keep`` (it keeps the fine-tuned weights).
    Low-data runs are batched per (task, variant, N); full-data runs are long, one job each, and
    those of a zero-shot source task get a rule of their own that keeps the weights."""
    families = []
    for name in STUDIES:
        low, full = seeds(config, name)
        if low:
            families.append(dict(name=f"finetune_{name}", study=name, n=r"[1-9][0-9]*", seeds=low))
        if not full:
            continue
        tasks = tasks_of(config, name)
        kept = [t for t in tasks if keeps_model(config, name, t)]
        if len(kept) < len(tasks):
            families.append(dict(name=f"finetune_{name}_full", study=name, n="full",
                                 tasks=[t for t in tasks if t not in kept]))
        if kept:
            families.append(dict(name=f"finetune_{name}_full_kept", study=name, n="full", tasks=kept, keep=True))
    # a family whose runs search a setting gets a twin writing one record per candidate
    # (raft.layout.SEARCH_PATHS; its `search` wildcard is the candidate's `search_label`)
    searched = {(name, n == "full") for name in STUDIES for t, v, n, _ in runs(config, name)
                if search_grid(config, name, t, v, n) != [{}]}
    return families + [dict(f, name=f"{f['name']}_search", search=True) for f in families
                       if (f["study"], f["n"] == "full") in searched and not f.get("keep")]


def check_search(config: dict) -> None:
    """A search needs runs to select from and cannot feed a zero-shot evaluation (which scores
    one model per seed): refused naming the key."""
    for name in STUDIES:
        for task, variant, n, _ in runs(config, name):
            found = _searched(config, name, task, variant, n)
            if n == "full" and found and keeps_model(config, name, task):
                _, key = setting(config, name, next(iter(found)), task=task, variant=variant, n=n)
                raise ConfigError(f"invalid configuration value at '{key}': a search over the full-data runs of "
                                  f"{task} is not supported while zero-shot evaluation uses them (zeroshot)")


def zeroshot_window(config: dict, variant: str) -> dict[str, tuple[object, str]]:
    """{setting: (value, config key)} of ``zeroshot.triviaqa_window`` for one variant: the
    TriviaQA windows set apart from the fine-tuning run's (``{}`` when null: the run's own). A
    value is one number or per variant (``{bert: 384, raft: 384}``, or with a ``default``)."""
    window = config.get("zeroshot", {}).get("triviaqa_window") or {}
    return {name: pick(value, f"zeroshot.triviaqa_window.{name}", variant) for name, value in window.items()}


def zeroshot_args(config: dict, target: str, variant: str) -> str:
    """Flags of `raft zeroshot` beyond the fine-tuning record: for TriviaQA with
    ``zeroshot.triviaqa_window`` set, its window and ``--override-window``; else none."""
    window = values(zeroshot_window(config, variant)) if target == "triviaqa" else {}
    return cli_args({**window, "override_window": True}) if window else ""


def check_zeroshot_window(config: dict) -> None:
    """TriviaQA's window (``zeroshot.triviaqa_window`` over the full-data SQuAD run's) fits the
    model's positions and leaves room after the question (after the fine-tuning checks: a fault
    of the fine-tuning window is named as the fine-tuning job's)."""
    for variant in config["variants"] if "triviaqa" in zeroshot_targets(config) else []:
        s = {**finetune_settings(config, "squad", "squad", variant, "full"), **zeroshot_window(config, variant)}
        job, v = f"job: zeroshot triviaqa {variant}", values(s)
        positions = config["model"]["max_position_embeddings"] or config["corpus"]["seq_len"]
        _apply(checks.check_max_seq_length, s, job, v["max_seq_length"], positions)
        _apply(checks.check_squad_window, s, job, v["max_seq_length"], v["doc_stride"], v["max_query_length"])


def check_zeroshot(config: dict) -> None:
    """A switched-on target needs full-data runs of its source task."""
    for target in zeroshot_targets(config):
        study, task = ZEROSHOT_SOURCES[target]
        if study == "glue" and task not in config["glue"]["tasks"]:
            raise ConfigError(f"invalid configuration value at 'zeroshot.{target}': true, but {task} is not in "
                              f"glue.tasks (its full-data {task} models are what it scores)")
        if not config[study]["full_data"]["seeds"]:
            raise ConfigError(f"invalid configuration value at 'zeroshot.{target}': true, but "
                              f"{study}.full_data.seeds is empty (it scores the full-data {task} models)")


def mode(config: dict, study: str, variant: str) -> str:
    """The run's --mode: 'frozen_rafs' means 'full' for bert (it has no RAFs to freeze)."""
    if study == "glue_efficient":
        return EFFICIENT_MODE[variant]
    value = config[study]["mode"]
    return "full" if value == "frozen_rafs" and variant == "bert" else value


# ------------------------------------------------------------------------------ settings
def _layers(config: dict, study: str, n) -> list[tuple[str, dict]]:
    name = section_of(study)
    section = config[name]
    kind = "full_data" if n == "full" else "low_data"
    layers = [(f"{name}.{kind}", section[kind]), (name, section), ("", {k: config[k] for k in RUNTIME})]
    if study == "glue_efficient":
        eff = section["efficient"]
        first = [("glue.efficient.full_data", eff.get("full_data", {}))] if n == "full" else []
        layers = first + [("glue.efficient", eff)] + layers
    return layers


def setting(config: dict, study: str, key: str, *, task: str, variant: str, n) -> tuple[object, str]:
    """(value, config key) of one fine-tuning setting of a run; (None, key) when unset."""
    for where, layer in _layers(config, study, n):
        value = layer.get(key)
        if value is None:
            continue
        return pick(value, f"{where}.{key}" if where else key, variant, task)
    return None, f"{section_of(study)}.{key}"


def pick(value, path: str, variant: str, task: str | None = None) -> tuple[object, str]:
    """(value, config key) of a setting for one run: a mapping gives its entry for the variant,
    else the task, else ``default``; any other value is itself."""
    if not isinstance(value, dict):
        return value, path
    name = variant if variant in value else task if task in value else "default"
    if name not in value:
        what = f"{variant} / {task}" if task else variant
        raise ConfigError(f"invalid configuration value at '{path}': {value} has no value for {what} and no 'default'")
    return value[name], f"{path}.{name}"


def finetune_settings(config: dict, study: str, task: str, variant: str, n,
                      candidate: dict | None = None) -> dict[str, tuple[object, str]]:
    """{flag: (value, config key)} of a `raft finetune-glue` / `finetune-squad` run; a searched
    setting takes its value from ``candidate`` (one of `search_grid`), else its list's first."""
    cls = RUN_SETTINGS[section_of(study)]
    out = {}
    for f in dataclasses.fields(cls):
        value, key = setting(config, study, f.name, task=task, variant=variant, n=n)
        if isinstance(value, list):
            value = (candidate or {}).get(f.name, value[0])
        out[f.name] = (f.default, key) if value is None else (value, key)
    return out


def _searched(config: dict, study: str, task: str, variant: str, n) -> dict[str, list]:
    """{setting: values} of the searches of one (task, variant, N) (see the module docstring)."""
    found = {}
    for key in SEARCHABLE:
        value, _ = setting(config, study, key, task=task, variant=variant, n=n)
        if isinstance(value, list):
            found[key] = list(value)
    if not _has_rafs(config, variant) or mode(config, study, variant) == "frozen_rafs":
        found.pop("rational_lr", None)
    return found


def search_grid(config: dict, study: str, task: str, variant: str, n) -> list[dict]:
    """The candidates of a (task, variant, N): ``[{setting: value}]``, one per combination of
    the searched settings' values; ``[{}]`` (one plain run) when nothing is searched."""
    found = _searched(config, study, task, variant, n)
    return [dict(zip(found, combo)) for combo in itertools.product(*found.values())] or [{}]


def search_label(candidate: dict) -> str:
    """A candidate as a path segment and wildcard: ``rational_lr=0.001`` (``,`` between settings);
    values as Python writes floats, so `parse_search_label` gives them back exactly."""
    return ",".join(f"{k}={float(v)!r}" for k, v in candidate.items())


def parse_search_label(label: str) -> dict:
    """`search_label` backwards: ``"rational_lr=0.001"`` -> ``{"rational_lr": 0.001}``."""
    out = {}
    for part in label.split(","):
        key, _, value = part.partition("=")
        if key not in SEARCHABLE:
            raise ValueError(f"{label!r}: {key!r} is not a searchable setting ({', '.join(SEARCHABLE)})")
        out[key] = float(value)
    return out


def pretrain_settings(config: dict, variant: str) -> dict[str, tuple[object, str]]:
    """{flag: (value, config key)} of `raft pretrain` for one variant.

    The fields of `raft.settings` Model, Rational (flags rational_*; raft only: the RAF
    options mean nothing for bert, and keeping them out keeps its rerun triggers apart) and
    Pretrain, valued from their config sections.
    """
    out = {"variant": (variant, "variants")}
    classes = [settings.Model, settings.Rational, settings.Pretrain]
    for cls in classes if variant == "raft" else [c for c in classes if c is not settings.Rational]:
        section = config[cls.SECTION]
        for f in dataclasses.fields(cls):
            out[cls.PREFIX + f.name] = (section.get(f.name, f.default), f"{cls.SECTION}.{f.name}")
    out.update({k: (config[k], k) for k in RUNTIME})
    return out


def corpus_settings(config: dict) -> dict[str, tuple[object, str]]:
    """{flag: (value, config key)} of `raft prepare-corpus` (the fields of `settings.Corpus`)."""
    return {f.name: (config["corpus"].get(f.name, f.default), f"corpus.{f.name}")
            for f in dataclasses.fields(settings.Corpus)}


def checkpoint_key(config: dict, variant: str, data_dir: str | None) -> str:
    """Digest of what a pretraining checkpoint depends on (the fields marked ``identity``):
    a changed config starts a fresh checkpoint folder, an unchanged one resumes."""
    import hashlib
    import json

    classes = [settings.Model, settings.Corpus, settings.Pretrain]
    classes += [settings.Rational] if variant == "raft" else []
    ident = {cls.SECTION: settings.identity(cls(**config[cls.SECTION])) for cls in classes}
    ident.update(variant=variant, data_dir=data_dir)
    return hashlib.sha1(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:12]


def cli_args(options: dict) -> str:
    """{'max_steps': 10, 'lr': 1e-4, 'x': None, 'compile': True} -> "--max-steps 10 --lr 0.0001 --compile".

    None is left off (the commands' default for it is None), and so is a boolean at its default:
    False, or True for the settings that default to True (`settings.true_by_default`: false is
    written ``--no-x``)."""
    parts, true_by_default = [], settings.true_by_default()
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool) and key in true_by_default:
            if not value:
                parts.append(f"--no-{key.replace('_', '-')}")
            continue
        if value is None or value is False:
            continue
        parts.append(flag if value is True else f"{flag} {shlex.quote(str(value))}")
    return " ".join(parts)


def values(settings: dict[str, tuple[object, str]]) -> dict[str, object]:
    return {k: v for k, (v, _) in settings.items()}


# ------------------------------------------------------------------------------ pre-flight
def _apply(rule, settings: dict, job: str, *args) -> None:
    """Run a `raft.checks` rule; re-raise its error naming the config key and the job."""
    try:
        rule(*args)
    except checks.SettingError as exc:
        _, path = settings.get(exc.key, (None, exc.key))
        raise ConfigError(f"invalid configuration value at '{path}': {exc.value} {exc.why} ({job})") from None


def _device(config: dict, rule: str) -> str:
    return "cuda" if config["resources"][rule]["gpu"] > 0 else "cpu"


def _has_rafs(config: dict, variant: str) -> bool:
    layers, pooler = checks.parse_layer_spec(config["rational"]["layers"], config["model"]["num_layers"])
    return variant == "raft" and bool(layers or pooler)


def check_pretraining(config: dict) -> None:
    for variant in config["variants"]:
        s, job = pretrain_settings(config, variant), f"job: pretrain {variant}"
        m, p = config["model"], config["pretrain"]
        _apply(checks.check_model, s, job, m["hidden_size"], m["num_heads"])
        if variant == "raft":
            _apply(checks.check_rational, s, job, s["rational_layers"][0], s["rational_init"][0], m["num_layers"])
        _apply(checks.check_positions, s, job, m["max_position_embeddings"], config["corpus"]["seq_len"])
        world = max(1, config["resources"]["pretrain"]["gpu"])
        _apply(checks.check_batch, s, job, p["batch_size"], p["per_device_batch_size"], world)
        _apply(checks.check_precision, s, job, config["precision"], _device(config, "pretrain"))


def check_finetuning(config: dict, study: str, pool_size) -> None:
    """Every run of a study against the commands' rules; ``pool_size(task)`` -> train pool size."""
    positions = config["model"]["max_position_embeddings"] or config["corpus"]["seq_len"]
    rule = "finetune_squad" if study == "squad" else "finetune_glue"
    seen = set()
    for task, variant, n, _seed in runs(config, study):
        if (task, variant, n) in seen:
            continue
        seen.add((task, variant, n))
        s = finetune_settings(config, study, task, variant, n)
        s["mode"] = (mode(config, study, variant), "glue.efficient" if study == "glue_efficient" else f"{study}.mode")
        s["n"] = (n, "glue.efficient.sizes" if study == "glue_efficient" else f"{section_of(study)}.low_data.sizes")
        job, v = f"job: {study} {task} {variant} n={n}", values(s)
        _apply(checks.check_mode, s, job, v["mode"], _has_rafs(config, variant))
        _apply(checks.check_max_seq_length, s, job, v["max_seq_length"], positions)
        if study == "squad":
            _apply(checks.check_squad_window, s, job, v["max_seq_length"], v["doc_stride"], v["max_query_length"])
        _apply(checks.check_precision, s, job, v["precision"], _device(config, rule))
        if n != "full":
            _apply(checks.check_n, s, job, n, pool_size(task), task)


def _cuda_here() -> bool | None:
    """Whether torch sees a CUDA GPU on this machine (None: torch cannot be imported here)."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda.is_available()


def resource_warnings(config: dict, cuda_here=None) -> list[str]:
    """What the config's resources ask for but this machine would do otherwise, a line each
    (`raft.config.load` prints them once, before any job); ``cuda_here()``: `_cuda_here` (torch
    is imported only when a line may be due).

    ``resources.pretrain.gpu`` > 1 without a CUDA GPU: the workflow starts pretraining under
    ``torchrun --nproc_per_node <granted gpu>`` (common.smk ``pretrain_launcher``), and each of
    those processes then runs on the CPU (gloo DDP, the job's threads split among them); the default
    profile caps the gpu resource at 1, and then it is plain ``raft pretrain``, one CPU process. The
    pre-flight checks the batch for ``gpu`` processes either way. A cluster profile sends jobs to GPU
    nodes, where none of this applies: the line says "on this machine"."""
    gpu = config["resources"]["pretrain"]["gpu"]
    if gpu <= 1 or (cuda_here or _cuda_here)() is not False:
        return []
    return [f"resources.pretrain.gpu: {gpu} but no CUDA GPU here: pretraining jobs that run on this machine "
            f"(not on a cluster's GPU nodes) train on the CPU, as one process under the default profile's "
            f"gpu=1 cap, else under torchrun as one CPU process (gloo) per gpu that --resources grants, up to "
            f"{gpu}; resources.pretrain.gpu: 0 runs one CPU process with all the job's threads"]


def preflight(config: dict, data_dir: str | None) -> None:
    """Check every job of the DAG before anything runs; raises `ConfigError` naming the key."""
    from raft.data import glue, squad

    sizes: dict[str, int] = {}

    def pool_size(task: str) -> int:
        if task not in sizes:
            found = squad.split_sizes(data_dir) if task == "squad" else glue.split_sizes(task, data_dir)
            sizes[task] = found["pool"]
        return sizes[task]

    check_pretraining(config)
    check_zeroshot(config)
    check_search(config)
    for study in STUDIES:
        check_finetuning(config, study, pool_size)
    check_zeroshot_window(config)
