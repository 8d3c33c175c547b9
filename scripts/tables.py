from selfcorrect.pipeline import make_tables
from selfcorrect.smk import start

start(snakemake)
make_tables(snakemake.params.study, snakemake.input.cells, snakemake.input.get("rho"), snakemake.input.differences,
            list(snakemake.input.metas), dict(zip(snakemake.output.keys(), snakemake.output)))
