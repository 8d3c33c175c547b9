from selfcorrect.pipeline import prepare_model
from selfcorrect.smk import start

start(snakemake)
prepare_model(snakemake.wildcards.model, snakemake.params.model, snakemake.output[0])
