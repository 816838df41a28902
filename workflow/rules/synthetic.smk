# The synthetic set: n_images prompts drawn by report frequency, one image each (GPU, in
# chunks), each judged by copy detection; how much of the set is copies.
scattergather:
    synthesize=config["synthetic"]["chunks"],


localrules:
    gather_synthetic_set,
    plot_synthetic_copies,


rule generate_synthetic_set:
    input:
        # the texts with their report counts: markers change no image
        prompts="results/prompts/texts.parquet",
        model=get_model_input(),
    output:
        images="results/synthetic/chunks/{scatteritem}.npz",
        index="results/synthetic/chunks/{scatteritem}.parquet",
        stats="results/synthetic/chunks/{scatteritem}.json",
    log:
        "logs/generate_synthetic_set/{scatteritem}.log",
    benchmark:
        "benchmarks/generate_synthetic_set/{scatteritem}.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=1,
    params:
        code=code_of("generate_synthetic_set"),
        model=config["model"],
        synthetic=synthetic_generation_spec(),
    script:
        "../scripts/generate_synthetic_set.py"


rule gather_synthetic_set:
    input:
        index=gather.synthesize("results/synthetic/chunks/{scatteritem}.parquet"),
        images=gather.synthesize("results/synthetic/chunks/{scatteritem}.npz"),
        stats=gather.synthesize("results/synthetic/chunks/{scatteritem}.json"),
        truth=get_demo_truth(),
    output:
        images="results/synthetic/images.npz",
        index="results/synthetic/images.parquet",
        stats="results/synthetic/generation_stats.json",
    log:
        "logs/gather_synthetic_set.log",
    benchmark:
        "benchmarks/gather_synthetic_set.tsv"
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("gather_synthetic_set"),
        n_images=config["synthetic"]["n_images"],
    script:
        "../scripts/gather_synthetic_set.py"


rule detect_synthetic_copies:
    input:
        unpack(get_copy_reference),
        images="results/synthetic/images.npz",
        index="results/synthetic/images.parquet",
        stats="results/synthetic/generation_stats.json",
        truth=get_demo_truth(),
    output:
        copies="results/synthetic/copies.parquet",
        summary="results/synthetic/summary.json",
    log:
        "logs/detect_synthetic_copies.log",
    benchmark:
        "benchmarks/detect_synthetic_copies.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=int(config["copy_detection"]["embedding"] != "pixels"),
    params:
        code=code_of("detect_synthetic_copies"),
        bootstrap=config["synthetic"]["bootstrap"],
        seed=config["synthetic"]["seed"],
        percentile=config["copy_detection"]["percentile"],
        threshold=config["copy_detection"]["threshold"],
        batch_size=config["copy_detection"]["batch_size"],
        block=config["copy_detection"]["search_block"],
    script:
        "../scripts/detect_synthetic_copies.py"


rule plot_synthetic_copies:
    input:
        unpack(get_training_pixels),
        copies="results/synthetic/copies.parquet",
        summary="results/synthetic/summary.json",
        images="results/synthetic/images.npz",
        index="results/synthetic/images.parquet",
    output:
        png="results/figures/synthetic_copies.png",
        pdf="results/figures/synthetic_copies.pdf",
    log:
        "logs/plot_synthetic_copies.log",
    benchmark:
        "benchmarks/plot_synthetic_copies.tsv"
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("plot_synthetic_copies"),
        n_shown=config["figures"]["synthetic_copies"],
    script:
        "../scripts/plot_synthetic_copies.py"
