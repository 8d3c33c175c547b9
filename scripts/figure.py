from selfcorrect.pipeline import figure
from selfcorrect.smk import start

start(snakemake)
figure(int(snakemake.wildcards.n), snakemake.input.cells, snakemake.input.outcomes, snakemake.input.get("rho"),
       snakemake.input.models, snakemake.input.differences, snakemake.params.seed, snakemake.output.pdf,
       snakemake.output.png, layout=snakemake.params.layout)
