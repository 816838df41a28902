rule train_demo_model:
    input:
        prompts="results/prompts/prompts.parquet",
        report_map="results/prompts/report_map.parquet",
        studies="results/demo/corpus/studies.parquet",
        images="results/demo/corpus/images.npy",
        truth="results/demo/corpus/truth.parquet",
        corpus="results/demo/corpus/corpus.json",
        code=[module_file("training"), module_file("models")],
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
        train=config["train"],
    script:
        "../scripts/train_demo_model.py"
