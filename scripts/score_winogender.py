from selfcorrect.pipeline import score_winogender
from selfcorrect.smk import start

start(snakemake)
score_winogender(list(snakemake.input.generations), snakemake.input.examples, snakemake.params.study,
                 snakemake.output.per_item, snakemake.output.occupations, snakemake.output.rho)
