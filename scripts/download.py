from selfcorrect.pipeline import fetch
from selfcorrect.smk import start

start(snakemake)
fetch(snakemake.wildcards.benchmark, snakemake.wildcards.path, snakemake.output[0], snakemake.params.mirror)
