from selfcorrect.pipeline import prepare
from selfcorrect.smk import start

start(snakemake)
prepare(snakemake.wildcards.benchmark, list(snakemake.input), snakemake.output[0])
