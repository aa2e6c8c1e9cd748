# Result files -> tidy tables -> executed, normalised notebooks -> HTML.


rule aggregate:
    """This config's result files (and no others) -> tidy tables (results/tables/*.csv) and the
    list of the records they hold (results/tables/records.json, read by the notebooks)."""
    input:
        pretrain_targets(),
        glue_targets(),
        efficient_targets(),
        squad_targets(),
        zeroshot_targets(),
    output:
        **{
            table: report(
                f"results/tables/{table}.csv",
                caption="../report/tables.rst",
                category="Tables",
                labels={"table": table},
            )
            for table in TABLES
        },
        manifest=f"results/tables/{layout.MANIFEST}",
    log:
        "results/logs/aggregate.log",
    conda:
        "../../envs/raft.yaml"
    threads: res("aggregate", "threads")
    resources:
        gpu=0,
        mem_mb=res("aggregate", "mem_mb"),
        runtime=runtime("aggregate"),
    params:
        # results/tables/x.csv -> results
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output[0])),
        outdir=lambda wildcards, output: os.path.dirname(output[0]),
        study=aggregate_study(),
    shell:
        "raft aggregate --results {params.results} --output {params.outdir} "
        "--study-config {params.study:q} > {log} 2>&1"


rule run_notebook:
    """Execute one notebook template with papermill and make the result byte-stable."""
    input:
        unpack(notebook_inputs),
    output:
        notebook="results/notebooks/{name}.ipynb",
        figures=report(
            directory("results/figures/{name}"),
            patterns=["{figure}.png"],
            caption="../report/figure.rst",
            category="Figures",
            subcategory="{name}",
            labels={"notebook": "{name}", "figure": "{figure}"},
        ),
    log:
        "results/logs/notebooks/{name}.log",
    benchmark:
        "results/benchmarks/notebooks/{name}.tsv"
    conda:
        "../../envs/raft.yaml"
    threads: res("notebook", "threads")
    resources:
        gpu=0,
        mem_mb=res("notebook", "mem_mb"),
        runtime=runtime("notebook"),
    params:
        # results/notebooks/{name}.ipynb -> results; results/figures/{name} -> results/figures
        # (each notebook writes its figures to <figures_dir>/<name>/)
        results=lambda wildcards, output: os.path.dirname(os.path.dirname(output.notebook)),
        figures_root=lambda wildcards, output: os.path.dirname(output.figures),
    shell:
        "mkdir -p {output.figures} && "
        "papermill {input.template} {output.notebook} -k python3 --log-output "
        "-p results_dir {params.results} -p figures_dir {params.figures_root} > {log} 2>&1 && "
        "raft normalize-notebook {output.notebook} >> {log} 2>&1"


rule render_notebook:
    """Render an executed notebook to HTML."""
    input:
        "results/notebooks/{name}.ipynb",
    output:
        report(
            "results/notebooks/{name}.html",
            caption="../report/notebook.rst",
            category="Notebooks",
            labels={"notebook": "{name}"},
        ),
    log:
        "results/logs/notebooks/{name}.html.log",
    conda:
        "../../envs/raft.yaml"
    threads: 1
    resources:
        gpu=0,
        mem_mb=res("notebook", "mem_mb"),
        runtime=runtime("notebook"),
    params:
        outdir=lambda wildcards, output: os.path.dirname(output[0]),
    shell:
        "jupyter nbconvert --to html {input} --output-dir {params.outdir} > {log} 2>&1"
