rule threshold_scores:
    input:
        scores="results/scoring/scores.parquet",
        prompts="results/prompts/prompts.parquet",
    output:
        ranked="results/threshold/ranked_prompts.parquet",
        memorized=report(
            "results/threshold/memorized_prompts.parquet",
            caption="../report/memorized_prompts.rst",
            category="3. Scores and threshold",
        ),
        stats=report(
            "results/threshold/threshold.json",
            caption="../report/threshold.rst",
            category="3. Scores and threshold",
        ),
    log:
        "logs/threshold_scores.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("threshold_scores"),
        threshold=config["threshold"],
        primary=config["scoring"]["primary"],
    script:
        "../scripts/threshold_scores.py"


rule plot_score_distribution:
    input:
        ranked="results/threshold/ranked_prompts.parquet",
        stats="results/threshold/threshold.json",
    output:
        png=report(
            "results/figures/fig2_score_distribution.png",
            caption="../report/fig2_score_distribution.rst",
            category="3. Scores and threshold",
        ),
        pdf="results/figures/fig2_score_distribution.pdf",
    log:
        "logs/plot_score_distribution.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_score_distribution"),
        log_scores=config["figures"]["log_scores"],
    script:
        "../scripts/plot_score_distribution.py"
