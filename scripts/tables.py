from selfcorrect.pipeline import make_tables
from selfcorrect.smk import start

start(snakemake)
make_tables(snakemake.params.study, snakemake.input.cells, snakemake.input.get("rho"), list(snakemake.input.metas),
            {k: snakemake.output[k] for k in ("models_csv", "models_tex", "results_csv", "results_tex")})
