from selfcorrect.pipeline import weights
from selfcorrect.smk import start

start(snakemake)
weights(snakemake.wildcards.model, snakemake.params.model, snakemake.params.cache, snakemake.output[0])
