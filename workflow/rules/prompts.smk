rule extract_prompts:
    input:
        reports=get_reports_input(),
        metadata=get_metadata_input(),
    output:
        prompts="results/prompts/prompts.parquet",
        report_map="results/prompts/report_map.parquet",
        summary=report(
            "results/prompts/summary.json",
            caption="../report/prompt_summary.rst",
            category="1. Prompts",
        ),
    log:
        "logs/extract_prompts.log",
    benchmark:
        "benchmarks/extract_prompts.tsv"
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("extract_prompts"),
        reports=config["reports"],
    script:
        "../scripts/extract_prompts.py"


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
