# memaudit: audit a chest X-ray text-to-image diffusion model for training-data memorization.
# Stages (one workflow/rules/<stage>.smk each; docs/architecture.md draws the DAG):
# corpus (demo) -> prompts -> model (demo) -> scoring -> threshold -> evaluation (demo)
# -> attribution, copy_detection (detector, references) -> mitigation, synthetic
# -> copy_detection (validity) -> share, report.
from snakemake.utils import min_version

min_version("9.0")


configfile: "config.yaml"


include: "workflow/rules/common.smk"
include: "workflow/rules/corpus.smk"
include: "workflow/rules/prompts.smk"
include: "workflow/rules/model.smk"
include: "workflow/rules/scoring.smk"
include: "workflow/rules/threshold.smk"
include: "workflow/rules/evaluation.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/mitigation.smk"
include: "workflow/rules/synthetic.smk"
include: "workflow/rules/copy_detection.smk"
include: "workflow/rules/share.smk"
include: "workflow/rules/report.smk"


localrules:
    all,
    count_markers,
    plot_prompt_frequency,
    plot_training_curve,
    plot_demo_generations,
    gather_scores,
    threshold_scores,
    plot_score_distribution,
    evaluate_detection,
    plot_per_step_auc,
    compare_detectors,
    plot_detectors,
    select_attribution_prompts,
    gather_attribution,
    summarize_attribution,
    plot_token_attribution,
    plot_attribution_methods,
    plot_word_types,
    select_mitigation_prompts,
    gather_mitigations,
    plot_mitigation_grid,
    plot_mitigation_diversity,
    plot_copy_detection,
    gather_synthetic_set,
    plot_synthetic_copies,
    make_share_bundle,
    summarize_audit,


rule all:
    default_target: True
    input:
        get_final_outputs(),
