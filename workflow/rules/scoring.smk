scattergather:
    score=config["scoring"]["chunks"],


rule score_chunk:
    input:
        # the texts alone: marker settings change no score
        prompts="results/prompts/texts.parquet",
        model=get_model_input(),
    output:
        scores="results/scoring/chunks/{scatteritem}.parquet",
        stats="results/scoring/chunks/{scatteritem}.json",
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
        code=code_of("score_chunk"),
        model=config["model"],
        scoring=scoring_spec(),
    script:
        "../scripts/score_chunk.py"


rule gather_scores:
    input:
        chunks=gather.score("results/scoring/chunks/{scatteritem}.parquet"),
        prompts="results/prompts/texts.parquet",
    output:
        scores="results/scoring/scores.parquet",
    log:
        "logs/gather_scores.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("gather_scores"),
    script:
        "../scripts/gather_scores.py"
