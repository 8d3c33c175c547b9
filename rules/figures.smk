# Figures 1-9 of the report and the tables behind them, each declared for `snakemake --report`.
# Which conditions a figure shows is the registry's (config/conditions.yaml: family, level, contrast, cot), and
# each figure's caption is plotting.caption: report/figure.rst only prints it.

from selfcorrect import plotting

FIGURES = sorted(plotting.FIGURES)


def winogender_rho():
    return {"rho": score_table("winogender", "rho")} if "winogender" in TASKS else {}


def generation_metas():
    return [
        f"results/generations/{m}/{b}/{g}.meta.json"
        for m in MODELS for b in TASKS for g in condition_groups(b)
    ]


def figure_layout():
    """The run's conditions by family, its contrasts and its CoT conditions (a change redraws the figures)."""
    names = config["conditions"]
    return {"families": REGISTRY.families(names), "contrasts": REGISTRY.contrasts(names),
            "cot": REGISTRY.cot_conditions(names)}


rule tables:
    input:
        unpack(lambda wc: winogender_rho()),
        cells=score_table("bbq", "cells"),
        differences=score_table("bbq", "differences"),
        outcomes=score_table("bbq", "outcomes"),
        metas=generation_metas(),
    output:
        models_csv=report("report/tables/models.csv", caption="../report/models.rst", category="Tables"),
        models_tex="report/tables/models.tex",
        results_csv=report("report/tables/results.csv", caption="../report/results.rst", category="Tables"),
        results_tex="report/tables/results.tex",
        differences_csv=report("report/tables/differences.csv", caption="../report/differences.rst", category="Tables"),
        differences_tex="report/tables/differences.tex",
        parse_status_csv=report("report/tables/parse_status.csv", caption="../report/parse_status.rst", category="Tables"),
        parse_status_tex="report/tables/parse_status.tex",
        position_bias_csv=report("report/tables/position_bias.csv", caption="../report/position_bias.rst", category="Tables"),
        position_bias_tex="report/tables/position_bias.tex",
    params:
        models=config["models"],
        backend=config["generation"]["backend"],
    log:
        "logs/report/tables.log",
    benchmark:
        "benchmarks/runs/tables/tables.tsv"
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
        outcomes=score_table("bbq", "outcomes"),
        differences=score_table("bbq", "differences"),
        models="report/tables/models.csv",
    output:
        pdf="report/figures/figure{n}.pdf",
        png=report("report/figures/figure{n}.png", caption="../report/figure.rst", category="Figures"),
    params:
        seed=config["seed"],
        layout=figure_layout(),
        # read by report/figure.rst when `snakemake --report` renders the caption
        caption=lambda wc: plotting.caption(int(wc.n)),
    wildcard_constraints:
        n="|".join(map(str, FIGURES)),
    log:
        "logs/report/figure{n}.log",
    benchmark:
        "benchmarks/runs/figure/figure{n}.tsv"
    conda:
        "../envs/analysis.yaml"
    resources:
        **CPU_JOB,
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/figure.py"
