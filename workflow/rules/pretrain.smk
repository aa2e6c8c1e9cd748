# Masked-LM pretraining of one variant (bert = GELU, raft = learnable rational activations).
#
# Checkpoints live in results/checkpoints/pretrain/{variant}/<settings digest>, OUTSIDE the
# rule's outputs: Snakemake deletes a failed job's outputs before a retry, the checkpoints
# must survive it. The digest covers the settings a checkpoint depends on, so changing
# them starts a fresh folder (delete results/checkpoints to reclaim the space).
# `raft pretrain` resumes from there automatically, and on SIGTERM (SLURM's time-limit
# warning, see profiles/slurm) it checkpoints and exits non-zero so that the retry resumes.


rule pretrain:
    """Pretrain one variant with masked-LM on the prepared corpus."""
    input:
        train=rules.prepare_corpus.output.train,
        validation=rules.prepare_corpus.output.validation,
        tokenizer=rules.prepare_corpus.output.tokenizer,
        stats=rules.prepare_corpus.output.stats,
    output:
        model=directory("results/pretrain/{variant}/model"),
        metrics=report(
            "results/pretrain/{variant}/metrics.json",
            caption="../report/pretrain.rst",
            category="Pretraining",
            subcategory="{variant}",
            labels={"variant": "{variant}", "file": "metrics.json"},
        ),
        log_csv=report(
            "results/pretrain/{variant}/log.csv",
            caption="../report/pretrain_log.rst",
            category="Pretraining",
            subcategory="{variant}",
            labels={"variant": "{variant}", "file": "log.csv"},
        ),
        rationals="results/pretrain/{variant}/rationals.jsonl",
        preactivations="results/pretrain/{variant}/preactivations.json",
    log:
        "results/logs/pretrain/{variant}.log",
    benchmark:
        "results/benchmarks/pretrain/{variant}.tsv"
    conda:
        "../../envs/raft.yaml"
    threads: res("pretrain", "threads")
    resources:
        gpu=res("pretrain", "gpu"),
        cpus_per_gpu=res("pretrain", "cpus_per_gpu"),
        mem_mb=res("pretrain", "mem_mb"),
        runtime=runtime("pretrain"),
    params:
        args=pretrain_args,
        corpus=lambda wildcards, input: os.path.dirname(input.stats),
        outdir=lambda wildcards, output: os.path.dirname(output.metrics),
        checkpoints=pretrain_checkpoint_dir,
        launcher=pretrain_launcher,
        omp=omp_threads,
    shell:
        "OMP_NUM_THREADS={params.omp} "
        "{params.launcher} pretrain --corpus {params.corpus} --output {params.outdir} "
        "--checkpoint-dir {params.checkpoints} {params.args} "
        "> {log} 2>&1"
