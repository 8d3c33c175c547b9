from selfcorrect.pipeline import download
from selfcorrect.smk import start

start(snakemake)
# the mirror is read from config, not params: where a checksum-verified file came from does not change it
download(snakemake.wildcards.benchmark, snakemake.wildcards.path, snakemake.output[0], snakemake.config.get("data_mirror"))
