# One job per (model, benchmark, group of conditions): the conditions that answer directly in one job, those that
# reason first in another (`generation.group_conditions`; false: one job per condition). All rounds, both answer
# modes, resumable shards; the job's table holds every condition of its group.

# the config keys a generation job's rows depend on (a change to any other key, e.g. a figure's, reruns nothing here)
GENERATION_KEYS = ("rounds", "answer_modes", "generation", "seed")
# keys of a model's entry that only tell the scheduler what to grant: changing them reruns no generation
SCHEDULING_KEYS = ("mem_mb", "runtime_min", "gpu_constraint", "gpu_model")


def model_files(wildcards):
    """GGUF models are converted once by prepare_model; hub models load the snapshot their weights rule recorded."""
    if config["models"][wildcards.model].get("gguf_file"):
        return {"model": f"resources/models/{wildcards.model}"}
    if wildcards.model in HUB_MODELS:
        return {"weights": weights_record(wildcards.model)}
    return {}


def generation_env(wildcards):
    """vLLM runs in an environment of its own: it pins its own torch build. The model's `backend:` decides."""
    backend = model_backend(config["models"][wildcards.model], config["generation"])
    return "../envs/vllm.yaml" if backend == "vllm" else "../envs/generate.yaml"


rule generate:
    input:
        unpack(model_files),
        samples="results/samples/{benchmark}.parquet",
    output:
        table="results/generations/{model}/{benchmark}/{group}.parquet",
        meta="results/generations/{model}/{benchmark}/{group}.meta.json",
    params:
        conditions=lambda wc: condition_groups(wc.benchmark)[wc.group],
        model=lambda wc: {k: v for k, v in config["models"][wc.model].items() if k not in SCHEDULING_KEYS},
        study={k: config[k] for k in GENERATION_KEYS},
        # the hash of the texts this job sends: editing a condition's wording reruns only the job that runs it
        prompt_texts=lambda wc: REGISTRY.group_texts_hash(condition_groups(wc.benchmark)[wc.group], wc.benchmark),
        shard_dir=lambda wc: f"results/shards/{wc.model}/{wc.benchmark}/{wc.group}",
    log:
        "logs/generate/{model}/{benchmark}/{group}.log",
    benchmark:
        "benchmarks/runs/generate/{model}/{benchmark}/{group}.tsv"
    threads: config["cluster"]["generate_cpus"]
    conda:
        generation_env
    resources:
        **model_resources(config),
    script:
        "../scripts/generate.py"
