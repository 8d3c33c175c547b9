from selfcorrect.pipeline import prepare_winogender
from selfcorrect.smk import start

start(snakemake)
prepare_winogender(snakemake.input.sentences, snakemake.input.stats, snakemake.output[0])
