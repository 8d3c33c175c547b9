from selfcorrect.pipeline import score
from selfcorrect.smk import start

start(snakemake)
score(snakemake.params.benchmark, list(snakemake.input.generations), snakemake.input.samples,
      snakemake.params.bootstrap, snakemake.params.seed, dict(snakemake.output.items()))
