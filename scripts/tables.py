from selfcorrect.pipeline import tables
from selfcorrect.smk import start

start(snakemake)
tables(snakemake.params.models, snakemake.params.backend, snakemake.input.cells, snakemake.input.get("rho"),
       snakemake.input.differences, snakemake.input.outcomes, list(snakemake.input.metas), dict(snakemake.output.items()))
