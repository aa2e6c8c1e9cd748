# Zero-shot transfer: a full-data fine-tuned model scored on another data set without
# further training (MNLI -> SNLI, SQuAD -> TriviaQA), one job per (target, variant, seed).
# A TriviaQA job also writes predictions.json next to metrics.json (not declared: the rule
# serves SNLI too, which writes none).


rule zeroshot:
    """Score one kept full-data model (MNLI for snli, SQuAD for triviaqa) on its target."""
    input:
        unpack(zeroshot_inputs),
    output:
        "results/zeroshot/{target}/{variant}/seed{seed}/metrics.json",
    log:
        "results/logs/zeroshot/{target}/{variant}/seed{seed}.log",
    benchmark:
        "results/benchmarks/zeroshot/{target}/{variant}/seed{seed}.tsv"
    wildcard_constraints:
        target="snli|triviaqa",
    conda:
        "../../envs/raft.yaml"
    threads: res("zeroshot", "threads")
    resources:
        gpu=res("zeroshot", "gpu"),
        cpus_per_gpu=res("zeroshot", "cpus_per_gpu"),
        mem_mb=res("zeroshot", "mem_mb"),
        runtime=runtime("zeroshot"),
    params:
        data_dir=data_dir_arg(),
        # zeroshot.triviaqa_window: the window flags and --override-window (else nothing)
        window=lambda w: study.zeroshot_args(config, w.target, w.variant),
    shell:
        "OMP_NUM_THREADS={threads} "
        "raft zeroshot --model {input.model} --target {wildcards.target} "
        "--source-metrics {input.metrics} --output {output} {params.data_dir} "
        "{params.window} --num-threads {threads} > {log} 2>&1"
