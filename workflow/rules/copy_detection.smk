rule embed_training_images:
    input:
        unpack(get_training_image_inputs),
    output:
        embeddings="results/copy_detection/train_embeddings.npy",
        index="results/copy_detection/train_images.parquet",
        heldout="results/copy_detection/heldout_neighbours.parquet",
        reference="results/copy_detection/reference.json",
    log:
        "logs/embed_training_images.log",
    benchmark:
        "benchmarks/embed_training_images.tsv"
    conda:
        "../../envs/torch.yaml"
    threads: 2
    resources:
        gpu=int(config["copy_detection"]["embedding"] != "pixels"),
    params:
        code=code_of("embed_training_images"),
        copy_detection=copy_embedding_spec(),
    script:
        "../scripts/embed_training_images.py"
