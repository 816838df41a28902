rule train_demo_model:
    input:
        # the texts alone: marker settings change no caption, so no retraining
        prompts="results/prompts/texts.parquet",
        report_map="results/prompts/report_map.parquet",
        studies="results/demo/corpus/studies.parquet",
        images="results/demo/corpus/images.npy",
        corpus="results/demo/corpus/corpus.json",
    output:
        # weights, model card and the loss per step (losses.tsv, drawn by plot_training_curve)
        model=directory("results/model/demo"),
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


rule plot_training_curve:
    input:
        model="results/model/demo",
    output:
        png=report(
            "results/model/training_curve.png",
            caption="../report/training_curve.rst",
            category="2. Demo model",
        ),
    log:
        "logs/plot_training_curve.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_training_curve"),
    script:
        "../scripts/plot_training_curve.py"


rule check_demo_memorization:
    input:
        model="results/model/demo",
        prompts="results/prompts/texts.parquet",
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
        # the generations (uint8 [prompts, seeds, H, W]) and one index row per prompt, for
        # plot_demo_generations
        generations="results/model/generations.npz",
        index="results/model/generations.parquet",
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


rule plot_demo_generations:
    input:
        generations="results/model/generations.npz",
        index="results/model/generations.parquet",
    output:
        png=report(
            "results/model/generations.png",
            caption="../report/generations.rst",
            category="2. Demo model",
        ),
    log:
        "logs/plot_demo_generations.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_demo_generations"),
    script:
        "../scripts/plot_demo_generations.py"
