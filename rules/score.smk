# Each benchmark's score tables (its task's `score`): BBQ accuracy and the official bias score per cell with
# bootstrap CIs, and condition differences; Winogender P(pronoun) per occupation and rho.


def generations(benchmark):
    return expand(
        "results/generations/{model}/{benchmark}/{condition}.parquet",
        model=MODELS, benchmark=benchmark, condition=conditions_for(benchmark),
    )


# one rule per benchmark of the run: its outputs are the tables its task declares
for _benchmark, _task in TASKS.items():

    rule:
        name:
            f"score_{_benchmark}"
        input:
            generations=generations(_benchmark),
            samples=f"results/samples/{_benchmark}.parquet",
        output:
            **{t: score_table(_benchmark, t) for t in _task.score_tables},
        params:
            benchmark=_benchmark,
            bootstrap=config["bootstrap"],
            seed=config["seed"],
        log:
            f"logs/score/{_benchmark}.log",
        conda:
            "../envs/analysis.yaml"
        resources:
            mem_mb=4000,
            runtime=30,
        script:
            "../scripts/score.py"
