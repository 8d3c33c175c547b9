# The study's seeded sample of each benchmark: read by every generation job and by the benchmark's score step.


rule sample:
    input:
        "results/data/{benchmark}.parquet",
    output:
        "results/samples/{benchmark}.parquet",
    params:
        sampling=lambda wc: TASKS[wc.benchmark].sample_params(config),
    log:
        "logs/sample/{benchmark}.log",
    benchmark:
        "benchmarks/runs/sample/{benchmark}.tsv"
    conda:
        "../envs/data.yaml"
    resources:
        **CPU_JOB,
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/sample.py"
