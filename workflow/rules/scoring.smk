scattergather:
    score=config["scoring"]["chunks"],


rule score_chunk:
    input:
        prompts="results/prompts/prompts.parquet",
        model=get_model_input(),
        code=[module_file("scoring"), module_file("models")],
    output:
        scores="results/scores/chunks/{scatteritem}.parquet",
        stats="results/scores/chunks/{scatteritem}.json",
    log:
        "logs/score_chunk/{scatteritem}.log",
    benchmark:
        "benchmarks/score_chunk/{scatteritem}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        model=config["model"],
        scoring=scoring_spec(),
    script:
        "../scripts/score_chunk.py"


rule gather_scores:
    input:
        chunks=gather.score("results/scores/chunks/{scatteritem}.parquet"),
        prompts="results/prompts/prompts.parquet",
        code=module_file("scoring"),
    output:
        scores="results/scores/scores.parquet",
    log:
        "logs/gather_scores.log",
    conda:
        "../../envs/core.yaml"
    script:
        "../scripts/gather_scores.py"
