# The first screen of `snakemake --report`: the audit's answer (summary.md, included by the
# caption), so a reader sees what was found before browsing the stages' figures.
report: "../report/audit_summary.rst"


rule summarize_audit:
    input:
        prompts="results/prompts/summary.json",
        prompt_table="results/prompts/prompts.parquet",
        threshold="results/threshold/threshold.json",
        attribution="results/attribution/summary.json",
        mitigation="results/mitigation/summary.json",
        detection=get_demo_detection(),
        detectors=get_detector_comparison(),
        copy_detection=get_copy_validity(),
        synthetic=get_synthetic_summary(),
    output:
        json="results/report/summary.json",
        # the answer in a few lines: what `make demo` prints last
        brief="results/report/brief.md",
        md=report(
            "results/report/summary.md",
            caption="../report/audit_summary.rst",
            category="0. Summary",
        ),
    log:
        "logs/summarize_audit.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("summarize_audit"),
        min_word_prompts=config["share"]["min_word_prompts"],
    script:
        "../scripts/summarize_audit.py"
