# Each hub model's files, downloaded once into the shared HF cache (config `hf_cache`) and recorded with the commit
# they are at; every generation job of the model loads that snapshot offline (HF_HUB_OFFLINE=1) and keys its
# shards on that commit. With HF_HUB_OFFLINE=1 in snakemake's environment the rule only checks the cache.

# compute nodes may have no network (and the generation jobs of a model must not each pull up to 138 GB): it runs where snakemake runs
localrules:
    weights,


def weights_record(model):
    return f"resources/weights/{model}.json"


rule weights:
    output:
        weights_record("{model}"),
    params:
        # only what the files depend on: a model's memory or GPUs changing must not refetch (and so rerun) anything
        model=lambda wc: {k: config["models"][wc.model].get(k) for k in ("path", "revision", "trust_remote_code")},
    wildcard_constraints:
        model=alternatives(HUB_MODELS) if HUB_MODELS else "(?!)",
    log:
        "logs/weights/{model}.log",
    conda:
        "../envs/data.yaml"
    resources:
        **CPU_JOB,
        mem_mb=2000,
        runtime=24 * 60,
    script:
        "../scripts/weights.py"
