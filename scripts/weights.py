from selfcorrect.pipeline import weights
from selfcorrect.smk import start

start(snakemake)
# the cache is read from config, not params: where the files are kept does not change them
weights(snakemake.wildcards.model, snakemake.params.model, snakemake.config["hf_cache"], snakemake.output[0])
