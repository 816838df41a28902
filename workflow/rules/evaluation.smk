rule evaluate_detection:
    input:
        scores="results/scoring/scores.parquet",
        truth="results/demo/corpus/truth.parquet",
    output:
        metrics=report(
            "results/evaluation/detection.json",
            caption="../report/detection.rst",
            category="4. Detection vs ground truth",
        ),
        per_step="results/evaluation/per_step_auc.parquet",
    log:
        "logs/evaluate_detection.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("evaluate_detection"),
        top_k=config["evaluation"]["top_k"],
    script:
        "../scripts/evaluate_detection.py"


rule plot_per_step_auc:
    input:
        per_step="results/evaluation/per_step_auc.parquet",
    output:
        png=report(
            "results/evaluation/per_step_auc.png",
            caption="../report/per_step_auc.rst",
            category="4. Detection vs ground truth",
        ),
        pdf="results/evaluation/per_step_auc.pdf",
    log:
        "logs/plot_per_step_auc.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_per_step_auc"),
    script:
        "../scripts/plot_per_step_auc.py"


rule compare_detectors:
    input:
        scores="results/scoring/scores.parquet",
        truth="results/demo/corpus/truth.parquet",
        stats=gather.score("results/scoring/chunks/{scatteritem}.json"),
    output:
        summary=report(
            "results/evaluation/detectors.json",
            caption="../report/detectors.rst",
            category="4. Detection vs ground truth",
        ),
        table="results/evaluation/detectors.parquet",
        roc="results/evaluation/detector_roc.parquet",
    log:
        "logs/compare_detectors.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("compare_detectors"),
        primary=config["scoring"]["primary"],
        threshold=config["threshold"],
        top_k=config["evaluation"]["top_k"],
        bootstrap=config["evaluation"]["bootstrap"],
    script:
        "../scripts/compare_detectors.py"


rule plot_detectors:
    input:
        table="results/evaluation/detectors.parquet",
        roc="results/evaluation/detector_roc.parquet",
    output:
        png=report(
            "results/evaluation/detectors.png",
            caption="../report/detectors_figure.rst",
            category="4. Detection vs ground truth",
        ),
        pdf="results/evaluation/detectors.pdf",
    log:
        "logs/plot_detectors.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_detectors"),
    script:
        "../scripts/plot_detectors.py"
