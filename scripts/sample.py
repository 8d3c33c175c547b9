from selfcorrect.pipeline import sample
from selfcorrect.smk import start

start(snakemake)
sample(snakemake.wildcards.benchmark, snakemake.input[0], snakemake.params.sampling, snakemake.output[0])
