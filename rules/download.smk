# Pinned benchmark files, sha256-checked; --config data_mirror=DIR copies them from a local mirror.

# downloads need the network, which compute nodes may lack: they run where snakemake runs
localrules:
    download,


rule download:
    output:
        "resources/data/{benchmark}/{path}",
    log:
        "logs/download/{benchmark}/{path}.log",
    wildcard_constraints:
        path=alternatives(sorted({p for b in TASKS for p in SOURCES[b]["files"]})),
    conda:
        "../envs/data.yaml"
    resources:
        **CPU_JOB,
        mem_mb=512,
        runtime=30,
    script:
        "../scripts/download.py"
