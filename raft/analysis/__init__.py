"""Analysis layer: result files -> tables, statistics, RAF shapes, notebook helpers.

Modules (import what you need; nothing heavy is imported here):

- ``aggregate``: read results/**/metrics.json (+ pretraining log.csv, rationals.jsonl), tidy
  tables and summaries; ``raft aggregate`` writes results/tables/*.csv.
- ``stats``: paired-by-seed Δ, bootstrap CIs, paired t / Wilcoxon tests, verdicts.
- ``shapes``: RAF curves (via ``raft.rational.rational_numpy``), distances, closest
  standard activation.
- ``reference_rafs``: the published RAFT checkpoint's RAF coefficients (Fang et al. 2023).
- ``report`` / ``findings`` / ``plots``: formatted tables, auto-written findings and figures
  for the notebooks in notebooks/.
- ``notebook``: ``raft normalize-notebook`` (byte-stable executed notebooks and HTML).
"""
