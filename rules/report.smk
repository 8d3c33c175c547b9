# Methods page, figures 1-9 and tables 1-5 in one PDF.


def data_files():
    return [f"resources/data/{b}/{p}" for b, task in TASKS.items() for p in task.source_files(config, SOURCES)]


rule paper_figures:
    input:
        figures=expand("report/figures/figure{n}.pdf", n=FIGURES),
        models="report/tables/models.csv",
        results="report/tables/results.csv",
        differences="report/tables/differences.csv",
        parse_status="report/tables/parse_status.csv",
        position_bias="report/tables/position_bias.csv",
        metas=generation_metas(),
        data=data_files(),
    output:
        "report/paper_figures.pdf",
    params:
        study=config,
    log:
        "logs/report/paper_figures.log",
    benchmark:
        "benchmarks/runs/paper_figures/paper_figures.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        **CPU_JOB,
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/paper_figures.py"
