# Corpus -> cleaned, split, tokenized, packed sequences (+ the tokenizer every model uses).


rule prepare_corpus:
    """Clean, split, tokenize and pack the pretraining corpus (Wikipedia by default)."""
    output:
        train=directory("results/corpus/train"),
        validation=directory("results/corpus/validation"),
        tokenizer=directory("results/corpus/tokenizer"),
        stats=report(
            "results/corpus/stats.json",
            caption="../report/corpus.rst",
            category="Pretraining",
            labels={"file": "corpus statistics"},
        ),
    log:
        "results/logs/prepare_corpus.log",
    benchmark:
        "results/benchmarks/prepare_corpus.tsv"
    conda:
        "../../envs/raft.yaml"
    threads: res("prepare_corpus", "threads")
    resources:
        gpu=0,
        mem_mb=res("prepare_corpus", "mem_mb"),
        runtime=runtime("prepare_corpus"),
    params:
        args=corpus_args(),
        outdir=lambda wildcards, output: os.path.dirname(output.stats),
    shell:
        "OMP_NUM_THREADS={threads} "
        "raft prepare-corpus --output {params.outdir} {params.args} --num-proc {threads} "
        "> {log} 2>&1"
