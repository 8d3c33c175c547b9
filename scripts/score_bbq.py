from selfcorrect.pipeline import score_bbq
from selfcorrect.smk import start

start(snakemake)
score_bbq(list(snakemake.input.generations), snakemake.input.examples, snakemake.params.study,
          snakemake.output.per_item, snakemake.output.cells, snakemake.output.differences)
