# The audit secret that keys every id of the bundle. `update` keeps an existing secret when the
# rule re-runs (--forceall, a changed script): ids stay stable for as long as the file is kept.
rule make_share_secret:
    output:
        key=update("results/share_secret/audit.key"),
    log:
        "logs/make_share_secret.log",
    localrule: True
    conda:
        "../../envs/core.yaml"
    params:
        code=code_of("make_share_secret"),
    script:
        "../scripts/make_share_secret.py"


rule make_share_bundle:
    input:
        unpack(get_share_inputs),
        secret=get_share_secret(),
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
