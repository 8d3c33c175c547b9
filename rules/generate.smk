# One job per (model, benchmark, condition): all rounds, both answer modes, resumable shards.


rule prepare_model:
    output:
        directory("resources/models/{model}"),
    params:
        model=lambda wc: config["models"][wc.model],
    log:
        "logs/models/{model}.log",
    conda:
        "../envs/generate.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/prepare_model.py"


def local_model(wildcards):
    """GGUF models are converted once by prepare_model; hub models load from the hub cache."""
    if config["models"][wildcards.model].get("gguf_file"):
        return {"model": f"resources/models/{wildcards.model}"}
    return {}


def generation_env():
    """vLLM runs in an environment of its own: it pins its own torch build."""
    backend = config.get("generation", {}).get("backend", "transformers")
    return "../envs/vllm.yaml" if backend == "vllm" else "../envs/generate.yaml"


rule generate:
    input:
        unpack(local_model),
        prompts="results/prompts/{benchmark}/{condition}.parquet",
    output:
        table="results/generations/{model}/{benchmark}/{condition}.parquet",
        meta="results/generations/{model}/{benchmark}/{condition}.meta.json",
    params:
        model=lambda wc: config["models"][wc.model],
        study=study_params(),
        shard_dir=lambda wc: f"results/shards/{wc.model}/{wc.benchmark}/{wc.condition}",
    log:
        "logs/generate/{model}/{benchmark}/{condition}.log",
    benchmark:
        "benchmarks/runs/generate/{model}/{benchmark}/{condition}.tsv"
    threads: 2
    conda:
        generation_env()
    resources:
        **model_resources(config),
    script:
        "../scripts/generate.py"
