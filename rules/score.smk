# BBQ accuracy and the official bias score per cell; Winogender P(pronoun) per occupation and rho.


def generations(benchmark):
    return expand(
        "results/generations/{model}/{benchmark}/{condition}.parquet",
        model=MODELS, benchmark=benchmark, condition=conditions_for(benchmark),
    )


rule score_bbq:
    input:
        generations=generations("bbq"),
        examples="results/prompts/bbq/{}.parquet".format(conditions_for("bbq")[0]),
    output:
        per_item="results/scores/bbq_items.parquet",
        cells="results/scores/bbq_cells.parquet",
        differences="results/scores/bbq_differences.parquet",
    params:
        study=study_params() | {"bootstrap": config.get("bootstrap", {})},
    log:
        "logs/score/bbq.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/score_bbq.py"


rule score_winogender:
    input:
        generations=generations("winogender"),
        examples="results/prompts/winogender/{}.parquet".format(conditions_for("winogender")[0]),
    output:
        per_item="results/scores/winogender_items.parquet",
        occupations="results/scores/winogender_occupations.parquet",
        rho="results/scores/winogender_rho.parquet",
    params:
        study=study_params() | {"bootstrap": config.get("bootstrap", {})},
    log:
        "logs/score/winogender.log",
    conda:
        "../envs/analysis.yaml"
    resources:
        mem_mb=2000,
        runtime=30,
    script:
        "../scripts/score_winogender.py"
