# Each benchmark's score tables (its task's `score`): BBQ accuracy and the official bias score per cell with
# bootstrap CIs, and condition differences; Winogender P(pronoun) per occupation and rho.


def generations(benchmark):
    return expand(
        "results/generations/{model}/{benchmark}/{group}.parquet",
        model=MODELS, benchmark=benchmark, group=condition_groups(benchmark),
    )


def score_resources(task):
    """Memory and time of one benchmark's score job, from the size of the run. Scoring reads one model at a time;
    benchmarks/scoring.py measured 122 s and 2.3 GB peak for one model's paper grid of BBQ (1.75M generation rows,
    2 cores): about 1.3 kB per row, 1.5x that reserved, and 5 min per 1.75M rows and model allowed."""
    rows = task.sample_size(config, SOURCES) * len(conditions_for(task.name)) * config["rounds"]
    return {"mem_mb": 1000 + int(rows * 0.002), "runtime": 10 + int(5 * len(MODELS) * rows / 1.75e6)}


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
            # Table 3's pairs are read from the registry: editing a `contrast:` rescores
            contrasts=REGISTRY.contrasts(conditions_for(_benchmark)),
            bootstrap=config["bootstrap"],
            seed=config["seed"],
        log:
            f"logs/score/{_benchmark}.log",
        benchmark:
            f"benchmarks/runs/score_{_benchmark}/{_benchmark}.tsv"
        conda:
            "../envs/analysis.yaml"
        resources:
            **CPU_JOB,
            **score_resources(_task),
        script:
            "../scripts/score.py"
