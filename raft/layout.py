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
ZEROSHOT = "results/zeroshot/{target}/{variant}/seed{seed}/metrics.json"
MODEL_PATHS = {  # fine-tuned weights kept for zero-shot evaluation (full-data sources only)
    "glue": "results/models/glue/{task}/{variant}/n{n}/seed{seed}",
    "squad": "results/models/squad/{variant}/n{n}/seed{seed}",
}
# what the aggregate step read (written next to the tables; the notebooks read the same records)
MANIFEST = "records.json"


def study_records(config: dict, zeroshot_targets) -> dict[str, list[str]]:
    """Every record of the config's study: ``{"pretrain" | "glue" | "glue_efficient" | "squad" |
    "zeroshot": [path, ...]}``; ``zeroshot_targets``: the targets whose data is here
    (`raft.study.zeroshot_available`)."""
    records = {"pretrain": [PRETRAIN.format(variant=v) for v in config["variants"]]}
    for name, path in RUN_PATHS.items():
        records[name] = [path.format(task=t, variant=v, n=n, seed=s) for t, v, n, s in study.runs(config, name)]
    records["zeroshot"] = [ZEROSHOT.format(target=t, variant=v, seed=s)
                           for t, v, s in study.zeroshot_runs(config, zeroshot_targets)]
    return records
