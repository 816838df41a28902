scattergather:
    attribute=config["attribution"]["chunks"],


rule select_attribution_prompts:
    input:
        memorized="results/threshold/memorized_prompts.parquet",
        ranked="results/threshold/ranked_prompts.parquet",
        truth=get_demo_truth(),
    output:
        prompts="results/attribution/selected_prompts.parquet",
        counts="results/attribution/selection.json",
    log:
        "logs/select_attribution_prompts.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("select_attribution_prompts"),
        include_planted=config["attribution"]["include_planted"],
    script:
        "../scripts/select_attribution_prompts.py"


rule attribute_tokens:
    input:
        prompts="results/attribution/selected_prompts.parquet",
        model=get_model_input(),
    output:
        tokens="results/attribution/chunks/{scatteritem}.tokens.parquet",
        words="results/attribution/chunks/{scatteritem}.words.parquet",
        occlusion="results/attribution/chunks/{scatteritem}.occlusion.parquet",
        prompts="results/attribution/chunks/{scatteritem}.prompts.parquet",
        stats="results/attribution/chunks/{scatteritem}.json",
    log:
        "logs/attribute_tokens/{scatteritem}.log",
    benchmark:
        "benchmarks/attribute_tokens/{scatteritem}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        code=code_of("attribute_tokens"),
        model=config["model"],
        scoring=attribution_scoring(),
        attribution=attribution_gpu_spec(),
        markers=config["reports"]["markers"],
    script:
        "../scripts/attribute_tokens.py"


rule gather_attribution:
    input:
        tokens=gather.attribute(
            "results/attribution/chunks/{scatteritem}.tokens.parquet"
        ),
        words=gather.attribute("results/attribution/chunks/{scatteritem}.words.parquet"),
        occlusion=gather.attribute(
            "results/attribution/chunks/{scatteritem}.occlusion.parquet"
        ),
        prompts=gather.attribute(
            "results/attribution/chunks/{scatteritem}.prompts.parquet"
        ),
        selected="results/attribution/selected_prompts.parquet",
    output:
        tokens="results/attribution/tokens.parquet",
        words=report(
            "results/attribution/words.parquet",
            caption="../report/attribution_words.rst",
            category="5. Token attribution",
        ),
        occlusion="results/attribution/occlusion.parquet",
        prompts="results/attribution/prompts.parquet",
    log:
        "logs/gather_attribution.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("gather_attribution"),
        word_score=config["attribution"]["word_score"],
    script:
        "../scripts/gather_attribution.py"


rule summarize_attribution:
    input:
        words="results/attribution/words.parquet",
        occlusion="results/attribution/occlusion.parquet",
        prompts="results/attribution/prompts.parquet",
        selection="results/attribution/selection.json",
        stats=gather.attribute("results/attribution/chunks/{scatteritem}.json"),
    output:
        word_types=report(
            "results/attribution/word_types.parquet",
            caption="../report/attribution_word_types_table.rst",
            category="5. Token attribution",
        ),
        summary=report(
            "results/attribution/summary.json",
            caption="../report/attribution_summary.rst",
            category="5. Token attribution",
        ),
    log:
        "logs/summarize_attribution.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("summarize_attribution"),
        attribution=config["attribution"],
    script:
        "../scripts/summarize_attribution.py"


rule plot_token_attribution:
    input:
        words="results/attribution/words.parquet",
        prompts="results/attribution/prompts.parquet",
    output:
        png=report(
            "results/figures/fig3_token_attribution.png",
            caption="../report/fig3_token_attribution.rst",
            category="5. Token attribution",
        ),
        pdf="results/figures/fig3_token_attribution.pdf",
    log:
        "logs/plot_token_attribution.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_token_attribution"),
        n_prompts=config["figures"]["attribution_prompts"],
        top_n=config["figures"]["attribution_top_n"],
    script:
        "../scripts/plot_token_attribution.py"


rule plot_word_types:
    input:
        word_types="results/attribution/word_types.parquet",
    output:
        png=report(
            "results/figures/attribution_word_types.png",
            caption="../report/attribution_word_types.rst",
            category="5. Token attribution",
        ),
        pdf="results/figures/attribution_word_types.pdf",
    log:
        "logs/plot_word_types.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_word_types"),
        n_types=config["figures"]["attribution_word_types"],
    script:
        "../scripts/plot_word_types.py"
