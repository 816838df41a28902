scattergather:
    mitigate=config["mitigation"]["chunks"],


rule select_mitigation_prompts:
    input:
        memorized="results/threshold/memorized_prompts.parquet",
        ranked="results/threshold/ranked_prompts.parquet",
        prompts="results/prompts/prompts.parquet",
        truth=get_demo_truth(),
    output:
        prompts="results/mitigation/prompts.parquet",
        vocabulary="results/mitigation/vocabulary.txt",
        summary="results/mitigation/selection.json",
    log:
        "logs/select_mitigation_prompts.log",
    conda:
        "../../envs/torch.yaml"
    params:
        code=code_of("select_mitigation_prompts"),
        selection=mitigation_selection_spec(),
        markers=config["reports"]["markers"],
    script:
        "../scripts/select_mitigation_prompts.py"


rule generate_mitigations:
    input:
        prompts="results/mitigation/prompts.parquet",
        vocabulary="results/mitigation/vocabulary.txt",
        model=get_model_input(),
    output:
        images="results/mitigation/chunks/{scatteritem}.npz",
        index="results/mitigation/chunks/{scatteritem}.parquet",
        stats="results/mitigation/chunks/{scatteritem}.json",
    log:
        "logs/generate_mitigations/{scatteritem}.log",
    benchmark:
        "benchmarks/generate_mitigations/{scatteritem}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        code=code_of("generate_mitigations"),
        model=config["model"],
        mitigation=mitigation_generation_spec(),
        scoring=wen_scoring_spec(),
        markers=config["reports"]["markers"],
    script:
        "../scripts/generate_mitigations.py"


rule gather_mitigations:
    input:
        index=gather.mitigate("results/mitigation/chunks/{scatteritem}.parquet"),
        images=gather.mitigate("results/mitigation/chunks/{scatteritem}.npz"),
        stats=gather.mitigate("results/mitigation/chunks/{scatteritem}.json"),
        prompts="results/mitigation/prompts.parquet",
    output:
        generations="results/mitigation/generations.parquet",
        stats="results/mitigation/generation_stats.json",
    log:
        "logs/gather_mitigations.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("gather_mitigations"),
    script:
        "../scripts/gather_mitigations.py"


rule evaluate_mitigations:
    input:
        unpack(get_copy_reference),
        generations="results/mitigation/generations.parquet",
        images=gather.mitigate("results/mitigation/chunks/{scatteritem}.npz"),
        prompts="results/mitigation/prompts.parquet",
        generation_stats="results/mitigation/generation_stats.json",
        threshold="results/threshold/threshold.json",
        truth=get_demo_truth(),
    output:
        evaluation="results/mitigation/evaluation.parquet",
        summary="results/mitigation/summary.parquet",
        summary_json=report(
            "results/mitigation/summary.json",
            caption="../report/mitigation_summary.rst",
            category="6. Mitigation",
        ),
    log:
        "logs/evaluate_mitigations.log",
    benchmark:
        "benchmarks/evaluate_mitigations.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=int(config["copy_detection"]["embedding"] != "pixels"),
    params:
        code=code_of("evaluate_mitigations"),
        strategies=config["mitigation"]["strategies"],
        bootstrap=config["mitigation"]["bootstrap"],
        seed=config["mitigation"]["seed"],
        percentile=config["copy_detection"]["percentile"],
        threshold=config["copy_detection"]["threshold"],
        block=config["copy_detection"]["search_block"],
    script:
        "../scripts/evaluate_mitigations.py"


rule plot_mitigation_grid:
    input:
        unpack(get_training_pixels),
        evaluation="results/mitigation/evaluation.parquet",
        summary_json="results/mitigation/summary.json",
        images=gather.mitigate("results/mitigation/chunks/{scatteritem}.npz"),
    output:
        png=report(
            "results/figures/fig4_mitigation_grid.png",
            caption="../report/fig4_mitigation_grid.rst",
            category="6. Mitigation",
        ),
        pdf="results/figures/fig4_mitigation_grid.pdf",
    log:
        "logs/plot_mitigation_grid.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_mitigation_grid"),
        strategies=config["mitigation"]["strategies"],
        n_prompts=config["figures"]["mitigation_prompts"],
        n_seeds=config["figures"]["mitigation_seeds"],
    script:
        "../scripts/plot_mitigation_grid.py"


rule plot_mitigation_diversity:
    input:
        evaluation="results/mitigation/evaluation.parquet",
        summary="results/mitigation/summary.parquet",
        summary_json="results/mitigation/summary.json",
    output:
        png=report(
            "results/figures/mitigation_diversity.png",
            caption="../report/mitigation_diversity.rst",
            category="6. Mitigation",
        ),
        pdf="results/figures/mitigation_diversity.pdf",
    log:
        "logs/plot_mitigation_diversity.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_mitigation_diversity"),
        strategies=config["mitigation"]["strategies"],
    script:
        "../scripts/plot_mitigation_diversity.py"
