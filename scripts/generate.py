from selfcorrect.pipeline import generate
from selfcorrect.smk import start

start(snakemake)
generate(
    snakemake.wildcards.model, snakemake.params.model, snakemake.wildcards.benchmark, snakemake.params.conditions,
    snakemake.input.samples, snakemake.params.study, snakemake.output.table, snakemake.output.meta,
    snakemake.params.shard_dir, local_model_dir=snakemake.input.get("model") or None, threads=snakemake.threads,
    weights_record=snakemake.input.get("weights") or None,
    # read here, not a param: how a job uses its threads changes nothing it writes, so it is no rerun trigger
    processes=snakemake.config["cluster"]["generate_processes"],
)
