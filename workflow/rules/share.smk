rule make_share_bundle:
    input:
        unpack(get_share_inputs),
    output:
        readme=report(
            "results/share/README.md",
            caption="../report/share.rst",
            category="7. Shareable bundle",
        ),
        memorized="results/share/memorized_prompts.parquet",
        summary="results/share/summary.json",
        word_types="results/share/word_types.parquet",
    log:
        "logs/make_share_bundle.log",
    conda:
        "../../envs/core.yaml"
    params:
        share=config["share"],
        code=code_of("make_share_bundle"),
    script:
        "../scripts/make_share_bundle.py"
