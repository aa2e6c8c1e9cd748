# Fine-tuning (families: raft/study.py finetune_families): per study, low-data runs one job per
# (task, variant, N) running every seed in one process, and full-data runs one job per seed
# (those of a zero-shot source task keep their weights in results/models).
# N is an integer (low-data: N training + N dev examples drawn with the seed) or "full".
# glue_efficient: RAF coefficients + head for raft, a matched bias subset + head for bert.
# A SQuAD run also writes predictions.json next to its metrics.json (not declared: a run restored
# from its --runs-dir copy is not recomputed, and GLUE runs write none).

for family in study.finetune_families(config):
    section = study.section_of(family["study"])

    rule:
        name:
            family["name"]
        input:
            model=PRETRAINED,
            metrics=PRETRAINED_METRICS,
        output:
            finetune_outputs(family),
        log:
            finetune_log(family),
        benchmark:
            finetune_log(family, "benchmarks", "tsv")
        wildcard_constraints:
            n=family["n"],
            task=task_constraint(family),
        conda:
            "../../envs/raft.yaml"
        threads: res(f"finetune_{section}", "threads")
        resources:
            gpu=res(f"finetune_{section}", "gpu"),
            cpus_per_gpu=res(f"finetune_{section}", "cpus_per_gpu"),
            mem_mb=res(f"finetune_{section}", "mem_mb"),
            runtime=runtime(f"finetune_{section}", len(family.get("seeds") or [0])),
        params:
            **finetune_params(family),
            cache=TOKEN_CACHE,
            runs=RUNS_DIR,
        shell:
            "OMP_NUM_THREADS={threads} "
            "raft {params.command} --pretrained {input.model} {params.task} "
            "--n {wildcards.n} --seed {params.seeds} --mode {params.mode} "
            "--output {params.output} {params.save_model} --cache-dir {params.cache} "
            "--runs-dir {params.runs} {params.data_dir} {params.args} --num-threads {threads} "
            "> {log} 2>&1"
