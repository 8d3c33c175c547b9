from selfcorrect.data import load_sources
from selfcorrect.pipeline import prepare
from selfcorrect.smk import start

start(snakemake)
# every file is checked against its pinned sha256 again here: one edited after its download stops the run
prepare(snakemake.wildcards.benchmark, list(snakemake.input), snakemake.output[0], pinned=load_sources())
