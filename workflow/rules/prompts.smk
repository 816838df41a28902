# Two rules, so that scoring re-runs only when prompt texts can change: extract_prompts reads
# the reports (its params hold every setting that changes a text), count_markers adds the
# marker flags and the summary (markers and top_n change no text, and no score).
rule extract_prompts:
    input:
        reports=get_reports_input(),
        metadata=get_metadata_input(),
    output:
        texts="results/prompts/texts.parquet",
        report_map="results/prompts/report_map.parquet",
        reading="results/prompts/reading.json",
    log:
        "logs/extract_prompts.log",
    benchmark:
        "benchmarks/extract_prompts.tsv"
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("extract_prompts"),
        reports={
            k: v for k, v in config["reports"].items() if k not in ("markers", "top_n")
        },
        # snakemake sees a report folder's own mtime only, not a report edited deep inside
        fingerprint=get_reports_fingerprint,
    script:
        "../scripts/extract_prompts.py"


rule count_markers:
    input:
        texts="results/prompts/texts.parquet",
        reading="results/prompts/reading.json",
    output:
        prompts="results/prompts/prompts.parquet",
        summary=report(
            "results/prompts/summary.json",
            caption="../report/prompt_summary.rst",
            category="1. Prompts",
        ),
    log:
        "logs/count_markers.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("count_markers"),
        markers=config["reports"]["markers"],
        top_n=config["reports"]["top_n"],
    script:
        "../scripts/count_markers.py"


rule plot_prompt_frequency:
    input:
        prompts="results/prompts/prompts.parquet",
        summary="results/prompts/summary.json",
    output:
        png=report(
            "results/prompts/prompt_frequency.png",
            caption="../report/prompt_frequency.rst",
            category="1. Prompts",
        ),
        pdf="results/prompts/prompt_frequency.pdf",
    log:
        "logs/plot_prompt_frequency.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_prompt_frequency"),
    script:
        "../scripts/plot_prompt_frequency.py"
