rule train_demo_model:
    input:
        prompts="results/prompts/prompts.parquet",
        report_map="results/prompts/report_map.parquet",
        studies="results/demo/corpus/studies.parquet",
        images="results/demo/corpus/images.npy",
        truth="results/demo/corpus/truth.parquet",
        corpus="results/demo/corpus/corpus.json",
    output:
        model=directory("results/model/demo"),
        curve=report(
            "results/model/training_curve.png",
            caption="../report/training_curve.rst",
            category="2. Demo model",
        ),
        grid=report(
            "results/model/generations.png",
            caption="../report/generations.rst",
            category="2. Demo model",
        ),
    log:
        "logs/train_demo_model.log",
    benchmark:
        "benchmarks/train_demo_model.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        code=code_of("train_demo_model"),
        train=config["train"],
    script:
        "../scripts/train_demo_model.py"


rule check_demo_memorization:
    input:
        model="results/model/demo",
        prompts="results/prompts/prompts.parquet",
        report_map="results/prompts/report_map.parquet",
        studies="results/demo/corpus/studies.parquet",
        images="results/demo/corpus/images.npy",
        truth="results/demo/corpus/truth.parquet",
    output:
        summary=report(
            "results/model/memorization_check.json",
            caption="../report/memorization_check.rst",
            category="2. Demo model",
        ),
        table="results/model/memorization_check.parquet",
    log:
        "logs/check_demo_memorization.log",
    benchmark:
        "benchmarks/check_demo_memorization.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        steps=config["scoring"]["steps"],
        guidance=config["scoring"]["guidance"],
        code=code_of("check_demo_memorization"),
    script:
        "../scripts/check_demo_memorization.py"
