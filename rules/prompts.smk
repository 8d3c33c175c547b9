# The sampled examples of each benchmark with their round-1 conversation under each condition.


rule build_prompts:
    input:
        table="results/data/{benchmark}.parquet",
        registry=REGISTRY.path,
    output:
        "results/prompts/{benchmark}/{condition}.parquet",
    params:
        study=study_params(),
    log:
        "logs/prompts/{benchmark}/{condition}.log",
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=2000,
        runtime=10,
    script:
        "../scripts/build_prompts.py"
