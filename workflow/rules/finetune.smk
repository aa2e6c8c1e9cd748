# Fine-tuning: one job per (study, task, variant, N, seed) on GLUE (study glue or
# glue_efficient), per (variant, N, seed) on SQuAD.
# N is an integer (low-data: N training + N dev examples drawn with the seed) or "full".

rule finetune_glue:
    """Fine-tune one pretrained variant on one GLUE task with N examples and one seed; the
    study is glue (config glue) or glue_efficient (glue.efficient: RAF coefficients + head
    for raft, a matched bias subset + head for bert)."""
    input:
        model=PRETRAINED,
        metrics=PRETRAINED_METRICS,
    output:
        "results/{study}/{task}/{variant}/n{n}/seed{seed}/metrics.json",
    params:
        mode=lambda wildcards: study.mode(config, wildcards.study, wildcards.variant),
        data_dir=data_dir_arg(),
        args=finetune_args,
    log:
        "results/logs/{study}/{task}/{variant}/n{n}/seed{seed}.log",
    benchmark:
        "results/benchmarks/{study}/{task}/{variant}/n{n}/seed{seed}.tsv"
    threads: res("finetune_glue", "threads")
    resources:
        gpu=res("finetune_glue", "gpu"),
        cpus_per_gpu=res("finetune_glue", "cpus_per_gpu"),
        mem_mb=res("finetune_glue", "mem_mb"),
        runtime=runtime("finetune_glue"),
    conda:
        "../../envs/raft.yaml"
    shell:
        "OMP_NUM_THREADS={threads} "
        "raft finetune-glue --pretrained {input.model} --task {wildcards.task} "
        "--n {wildcards.n} --seed {wildcards.seed} --mode {params.mode} --output {output} "
        "{params.data_dir} {params.args} --num-threads {threads} "
        "> {log} 2>&1"


rule finetune_squad:
    """Fine-tune one pretrained variant on SQuAD v1.1 with N examples (or full) and one seed."""
    input:
        model=PRETRAINED,
        metrics=PRETRAINED_METRICS,
    output:
        "results/squad/{variant}/n{n}/seed{seed}/metrics.json",
    params:
        mode=lambda wildcards: study.mode(config, "squad", wildcards.variant),
        data_dir=data_dir_arg(),
        args=finetune_args,
    log:
        "results/logs/squad/{variant}/n{n}/seed{seed}.log",
    benchmark:
        "results/benchmarks/squad/{variant}/n{n}/seed{seed}.tsv"
    threads: res("finetune_squad", "threads")
    resources:
        gpu=res("finetune_squad", "gpu"),
        cpus_per_gpu=res("finetune_squad", "cpus_per_gpu"),
        mem_mb=res("finetune_squad", "mem_mb"),
        runtime=runtime("finetune_squad"),
    conda:
        "../../envs/raft.yaml"
    shell:
        "OMP_NUM_THREADS={threads} "
        "raft finetune-squad --pretrained {input.model} --n {wildcards.n} "
        "--seed {wildcards.seed} --mode {params.mode} --output {output} "
        "{params.data_dir} {params.args} --num-threads {threads} "
        "> {log} 2>&1"
