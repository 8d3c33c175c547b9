# Each benchmark's pinned files normalised into one typed table (its task's `load`).


def source_files(wildcards):
    task = TASKS[wildcards.benchmark]
    return [f"resources/data/{wildcards.benchmark}/{p}" for p in task.source_files(config, SOURCES)]


rule prepare:
    input:
        source_files,
    output:
        "results/data/{benchmark}.parquet",
    log:
        "logs/prepare/{benchmark}.log",
    benchmark:
        "benchmarks/runs/prepare/{benchmark}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        **CPU_JOB,
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/prepare.py"


rule prepare_model:
    output:
        directory("resources/models/{model}"),
    params:
        model=lambda wc: config["models"][wc.model],
    log:
        "logs/models/{model}.log",
    benchmark:
        "benchmarks/runs/prepare_model/{model}.tsv"
    conda:
        "../envs/generate.yaml"
    resources:
        **CPU_JOB,
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/prepare_model.py"
