"""The result layout: where the workflow writes each record (docs/architecture.md, "Result files").

One owner for the paths that the rules (workflow/rules/common.smk) write and the analysis
(`raft.analysis.aggregate`) reads. Paths are relative to the workflow's working directory and
start with ``results/``. `study_records` lists every record a config's study produces -- the
rules' targets and the aggregate step's manifest are both this list, so tables hold exactly the
config's runs, never the leftovers of an earlier config.
"""

from __future__ import annotations

from raft import study

RESULTS = "results"
PRETRAIN = "results/pretrain/{variant}/metrics.json"
RUN_PATHS = {  # one fine-tuning run's record, by study
    "glue": "results/glue/{task}/{variant}/n{n}/seed{seed}/metrics.json",
    "glue_efficient": "results/glue_efficient/{task}/{variant}/n{n}/seed{seed}/metrics.json",
    "squad": "results/squad/{variant}/n{n}/seed{seed}/metrics.json",
}
# a candidate of a search (raft.study.search_grid): one more folder, the candidate's search_label
SEARCH_PATHS = {name: path.replace("/seed{seed}/", "/{search}/seed{seed}/") for name, path in RUN_PATHS.items()}
ZEROSHOT = "results/zeroshot/{target}/{variant}/seed{seed}/metrics.json"
MODEL_PATHS = {  # fine-tuned weights kept for zero-shot evaluation (full-data sources only)
    "glue": "results/models/glue/{task}/{variant}/n{n}/seed{seed}",
    "squad": "results/models/squad/{variant}/n{n}/seed{seed}",
}
# the tables `raft aggregate` writes (results/tables/<name>.csv), and next to them the list of
# the records they hold (the notebooks read the same records)
TABLE_STUDIES = ("glue", "squad", "glue_efficient", "zeroshot")
SEARCH_STUDIES = ("glue", "squad", "glue_efficient")  # their settings may be searched: a selection table
TABLES = ["pretrain", *(t for name in TABLE_STUDIES for t in (name, f"{name}_summary")),
          *(f"{name}_selection" for name in SEARCH_STUDIES)]
MANIFEST = "records.json"


def study_records(config: dict, zeroshot_targets) -> dict[str, list[str]]:
    """Every record of the config's study: ``{"pretrain" | "glue" | "glue_efficient" | "squad" |
    "zeroshot": [path, ...]}``; ``zeroshot_targets``: the targets whose data is here
    (`raft.study.zeroshot_available`)."""
    records = {"pretrain": [PRETRAIN.format(variant=v) for v in config["variants"]]}
    for name in RUN_PATHS:
        records[name] = [run_path(name, t, v, n, s, candidate) for t, v, n, s in study.runs(config, name)
                         for candidate in study.search_grid(config, name, t, v, n)]
    records["zeroshot"] = [ZEROSHOT.format(target=t, variant=v, seed=s)
                           for t, v, s in study.zeroshot_runs(config, zeroshot_targets)]
    return records


def run_path(name: str, task: str, variant: str, n, seed: int, candidate: dict | None = None) -> str:
    """The record of one run of study ``name`` (a search's candidate: `SEARCH_PATHS`)."""
    if candidate:
        return SEARCH_PATHS[name].format(task=task, variant=variant, n=n, seed=seed,
                                         search=study.search_label(candidate))
    return RUN_PATHS[name].format(task=task, variant=variant, n=n, seed=seed)
