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


# The counterfactual check of the demo's planted keys: each key's prompt re-scored with the key
# deleted (scoring settings) and generated with and without it. Demo model runs only: the rule
# is reached through get_key_check() (common.smk, below), which is empty otherwise.


rule verify_planted_keys:
    input:
        model=get_model_input(),
        truth="results/demo/corpus/truth.parquet",
        scores="results/scoring/scores.parquet",
        prompts="results/prompts/texts.parquet",
        report_map="results/prompts/report_map.parquet",
        studies="results/demo/corpus/studies.parquet",
        images="results/demo/corpus/images.npy",
    output:
        table="results/attribution/keys.parquet",
        summary="results/attribution/keys.json",
    log:
        "logs/verify_planted_keys.log",
    benchmark:
        "benchmarks/verify_planted_keys.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        code=code_of("verify_planted_keys"),
        model=config["model"],
        scoring=wen_scoring_spec(),
        key_check=config["key_check"],
    script:
        "../scripts/verify_planted_keys.py"


rule attribute_tokens:
    input:
        prompts="results/attribution/selected_prompts.parquet",
        model=get_model_input(),
    output:
        tokens="results/attribution/chunks/{scatteritem}.tokens.parquet",
        words="results/attribution/chunks/{scatteritem}.words.parquet",
        occlusion="results/attribution/chunks/{scatteritem}.occlusion.parquet",
        prompts="results/attribution/chunks/{scatteritem}.prompts.parquet",
        methods="results/attribution/chunks/{scatteritem}.methods.parquet",
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
        methods=gather.attribute(
            "results/attribution/chunks/{scatteritem}.methods.parquet"
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
        methods="results/attribution/methods.parquet",
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
        methods="results/attribution/methods.parquet",
        selection="results/attribution/selection.json",
        stats=gather.attribute("results/attribution/chunks/{scatteritem}.json"),
        key_check=get_key_check(),
        truth=get_demo_truth(),
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
        comparison=report(
            "results/attribution/method_comparison.parquet",
            caption="../report/attribution_methods.rst",
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
        methods="results/attribution/methods.parquet",
        prompts="results/attribution/prompts.parquet",
        summary="results/attribution/summary.json",
        key_check=get_key_check(),
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
        top_n=config["figures"]["attribution_top_n"],
    script:
        "../scripts/plot_token_attribution.py"


rule plot_attribution_methods:
    input:
        comparison="results/attribution/method_comparison.parquet",
    output:
        png=report(
            "results/figures/attribution_methods.png",
            caption="../report/attribution_methods_figure.rst",
            category="5. Token attribution",
        ),
        pdf="results/figures/attribution_methods.pdf",
    log:
        "logs/plot_attribution_methods.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_attribution_methods"),
    script:
        "../scripts/plot_attribution_methods.py"


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
