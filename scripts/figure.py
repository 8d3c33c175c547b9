from selfcorrect.pipeline import figure
from selfcorrect.smk import start

start(snakemake)
figure(int(snakemake.wildcards.n), snakemake.input.cells, snakemake.input.per_item, snakemake.input.get("rho"),
       snakemake.input.models, snakemake.params.seed, snakemake.output.pdf, snakemake.output.png,
       differences=snakemake.input.differences)
