rule train_copy_detector:
    input:
        unpack(get_training_image_inputs),
    output:
        weights=DETECTOR_WEIGHTS,
        card="results/copy_detection/detector/model_card.json",
    log:
        "logs/train_copy_detector.log",
    benchmark:
        "benchmarks/train_copy_detector.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        code=code_of("train_copy_detector"),
        copy_detection=copy_embedding_spec("learned"),
    script:
        "../scripts/train_copy_detector.py"


rule embed_training_images:
    input:
        unpack(get_embedding_inputs),
    output:
        embeddings="results/copy_detection/{embedding}/train_embeddings.npy",
        index="results/copy_detection/{embedding}/train_images.parquet",
        heldout="results/copy_detection/{embedding}/heldout_neighbours.parquet",
        reference="results/copy_detection/{embedding}/reference.json",
    log:
        "logs/embed_training_images/{embedding}.log",
    benchmark:
        "benchmarks/embed_training_images/{embedding}.tsv"
    wildcard_constraints:
        embedding="learned|pixels|torchvision|timm",
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=lambda wildcards: int(wildcards.embedding != "pixels"),
    params:
        code=code_of("embed_training_images"),
        copy_detection=lambda wildcards: copy_embedding_spec(wildcards.embedding),
        fixed_threshold=config["copy_detection"]["threshold"] is not None,
    script:
        "../scripts/embed_training_images.py"


rule generate_copy_controls:
    input:
        ranked="results/threshold/ranked_prompts.parquet",
        truth=get_demo_truth(),
        model=get_model_input(),
    output:
        images="results/copy_detection/controls/images.npz",
        prompts="results/copy_detection/controls/prompts.parquet",
        stats="results/copy_detection/controls/stats.json",
    log:
        "logs/generate_copy_controls.log",
    benchmark:
        "benchmarks/generate_copy_controls.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        code=code_of("generate_copy_controls"),
        model=config["model"],
        controls=copy_controls_spec(),
    script:
        "../scripts/generate_copy_controls.py"


rule evaluate_copy_detection:
    input:
        unpack(get_all_copy_references),
        unpack(get_validity_synthetic),
        unpack(get_copy_controls),
        generations="results/mitigation/generations.parquet",
        images=gather.mitigate("results/mitigation/chunks/{scatteritem}.npz"),
        truth=get_demo_truth(),
    output:
        generations="results/copy_detection/validity.parquet",
        summary=report(
            "results/copy_detection/summary.json",
            caption="../report/copy_detection_summary.rst",
            category="7. Copy detection",
        ),
    log:
        "logs/evaluate_copy_detection.log",
    benchmark:
        "benchmarks/evaluate_copy_detection.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=int(any(kind != "pixels" for kind in copy_embeddings())),
    params:
        code=code_of("evaluate_copy_detection"),
        embeddings=copy_embeddings(),
        percentile=config["copy_detection"]["percentile"],
        threshold=config["copy_detection"]["threshold"],
        bootstrap=config["mitigation"]["bootstrap"],
        block=config["copy_detection"]["search_block"],
    script:
        "../scripts/evaluate_copy_detection.py"


rule plot_copy_detection:
    input:
        generations="results/copy_detection/validity.parquet",
        summary="results/copy_detection/summary.json",
    output:
        png=report(
            "results/figures/copy_detection_roc.png",
            caption="../report/copy_detection_roc.rst",
            category="7. Copy detection",
        ),
        pdf="results/figures/copy_detection_roc.pdf",
    log:
        "logs/plot_copy_detection.log",
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_copy_detection"),
    script:
        "../scripts/plot_copy_detection.py"
