# Figures 1-8 of ../shared/STUDY.md and the tables behind them, each declared for `snakemake --report`.

FIGURES = list(range(1, 9))


def winogender_rho():
    return {"rho": score_table("winogender", "rho")} if "winogender" in TASKS else {}


def generation_metas():
    return [
        f"results/generations/{m}/{b}/{c}.meta.json"
        for m in MODELS for b in TASKS for c in conditions_for(b)
    ]


rule tables:
    input:
        unpack(lambda wc: winogender_rho()),
        cells=score_table("bbq", "cells"),
        differences=score_table("bbq", "differences"),
        metas=generation_metas(),
    output:
        models_csv=report("report/tables/models.csv", caption="../report/models.rst", category="Tables"),
        models_tex="report/tables/models.tex",
        results_csv=report("report/tables/results.csv", caption="../report/results.rst", category="Tables"),
        results_tex="report/tables/results.tex",
        differences_csv=report("report/tables/differences.csv", caption="../report/differences.rst", category="Tables"),
        differences_tex="report/tables/differences.tex",
    params:
        models=config["models"],
        backend=config["generation"]["backend"],
    log:
        "logs/report/tables.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        **CPU_JOB,
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/tables.py"


rule figure:
    input:
        unpack(lambda wc: winogender_rho()),
        cells=score_table("bbq", "cells"),
        per_item=score_table("bbq", "outcomes"),
        differences=score_table("bbq", "differences"),
        models="report/tables/models.csv",
    output:
        pdf="report/figures/figure{n}.pdf",
        png=report("report/figures/figure{n}.png", caption="../report/figure.rst", category="Figures"),
    params:
        seed=config["seed"],
    wildcard_constraints:
        n="[1-8]",
    log:
        "logs/report/figure{n}.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        **CPU_JOB,
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure.py"
