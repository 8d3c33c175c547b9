# Reproduces "Smaller Large Language Models Can Do Moral Self-Correction" (Liu et al., 2024).
# DAG: download → prepare (per benchmark) → sample (per benchmark) → generate (model × benchmark × group of conditions)
# → score (per benchmark) → tables, figures → report/paper_figures.pdf.  See docs/ARCHITECTURE.md.

from snakemake.utils import min_version

min_version("9.0")


# A --configfile (e.g. config/paper.yaml) replaces config.yaml rather than merging into it, so that a
# preset's `models:` are exactly the models it runs.
if not workflow.overwrite_configfiles:

    configfile: "config.yaml"


include: "rules/common.smk"
include: "rules/download.smk"
include: "rules/prepare.smk"
include: "rules/sample.smk"
include: "rules/weights.smk"
include: "rules/generate.smk"
include: "rules/score.smk"
include: "rules/figures.smk"
include: "rules/report.smk"


rule all:
    input:
        "report/paper_figures.pdf",
    default_target: True
