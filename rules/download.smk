# Pinned benchmark files, sha256-checked; --config data_mirror=DIR copies them from a local mirror.


def source_paths(benchmark):
    return list(SOURCES[benchmark]["files"])


rule download:
    output:
        "resources/data/{benchmark}/{path}",
    log:
        "logs/download/{benchmark}/{path}.log",
    wildcard_constraints:
        path=alternatives(source_paths("bbq") + source_paths("winogender")),
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=512,
        runtime=30,
    script:
        "../scripts/download.py"


rule prepare_bbq:
    input:
        expand("resources/data/bbq/data/{category}.jsonl", category=config["categories"]),
    output:
        "results/data/bbq.parquet",
    log:
        "logs/prepare/bbq.log",
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=4000,
        runtime=30,
    script:
        "../scripts/prepare_bbq.py"


rule prepare_winogender:
    input:
        sentences="resources/data/winogender/data/all_sentences.tsv",
        stats="resources/data/winogender/data/occupations-stats.tsv",
        templates="resources/data/winogender/data/templates.tsv",
    output:
        "results/data/winogender.parquet",
    log:
        "logs/prepare/winogender.log",
    conda:
        "../envs/data.yaml"
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/prepare_winogender.py"
