from selfcorrect.pipeline import build_prompts
from selfcorrect.smk import start

start(snakemake)
build_prompts(snakemake.wildcards.benchmark, snakemake.wildcards.condition, snakemake.input.table,
              snakemake.params.study, snakemake.output[0])
