from selfcorrect.pipeline import prepare_bbq
from selfcorrect.smk import start

start(snakemake)
prepare_bbq(list(snakemake.input), snakemake.output[0])
