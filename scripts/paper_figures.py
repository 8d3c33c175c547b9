from selfcorrect.pipeline import paper_figures
from selfcorrect.smk import start

start(snakemake)
paper_figures(snakemake.params.study, snakemake.output[0], list(snakemake.input.figures),
        {"Table 1: models": snakemake.input.models, "Table 2: every reported number with n and 95% CI": snakemake.input.results,
         "Table 3: condition differences (A - B) with paired-bootstrap 95% CI": snakemake.input.differences,
         "Table 4: parse statuses of generate-mode answers, dropped answers": snakemake.input.parse_status,
         "Table 5: position bias: answer letters, same letter in both polarities": snakemake.input.position_bias},
        list(snakemake.input.metas), list(snakemake.input.data))
