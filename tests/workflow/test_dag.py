"""Dry runs: the DAG of the demo and of the presets, without running any job."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import REPO, snakemake


def planned_rules(stdout: str) -> set[str]:
    rules = set()
    for line in stdout.splitlines():
        line = line.strip()
        for prefix in ("rule ", "localrule "):
            if line.startswith(prefix) and line.endswith(":"):
                rules.add(line[len(prefix) : -1])
    return rules


def test_demo_dag_has_every_stage(workdir: Path):
    proc = snakemake("-n", workdir=workdir)
    rules = planned_rules(proc.stdout)
    assert {"make_demo_corpus", "extract_prompts", "plot_prompt_frequency", "all"} <= rules


def fake_weights(root: Path, layout: dict[str, str]) -> Path:
    """Empty weight files in the layout the config-time model check reads (the check looks at
    names, never at contents; a dry run loads nothing)."""
    for relative, stem in layout.items():
        folder = root / relative
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{stem}.safetensors").write_bytes(b"")
    return root


def test_real_preset_dag_skips_the_demo(workdir: Path, tmp_path: Path):
    reports = tmp_path / "reports.csv"
    reports.write_text("uid,impression\n1,No acute disease.\n")
    pipeline = fake_weights(
        tmp_path / "pipeline",
        {
            "unet": "diffusion_pytorch_model",
            "vae": "diffusion_pytorch_model",
            "text_encoder": "model",
        },
    )
    (pipeline / "model_index.json").write_text("{}")
    overlay = tmp_path / "real.yaml"
    overlay.write_text(
        (REPO / "config/iu_xray_csv.yaml")
        .read_text()
        .replace("/data/iu-xray/indiana_reports.csv", str(reports))
        .replace("/data/weights/my-cxr-pipeline", str(pipeline))
    )
    proc = snakemake("-n", "--until", "extract_prompts", workdir=workdir, overlays=(overlay,))
    rules = planned_rules(proc.stdout)
    assert "extract_prompts" in rules
    assert "make_demo_corpus" not in rules


def test_radedit_preset_dag_has_every_audit_stage_and_no_demo_rule(workdir: Path, tmp_path: Path):
    reports = tmp_path / "mimic-cxr-reports.zip"
    reports.write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # an empty zip
    split = tmp_path / "split.csv"
    split.write_text("dicom_id,study_id,subject_id,split\nx,50000001,10000001,train\n")
    unet, vae = {"unet": "diffusion_pytorch_model"}, {"": "diffusion_pytorch_model"}
    text = {"": "model"}
    overlay = tmp_path / "radedit.yaml"
    overlay.write_text(
        (REPO / "config/radedit_mimic.yaml")
        .read_text()
        .replace("/data/mimic-cxr/mimic-cxr-reports.zip", str(reports))
        .replace("/data/mimic-cxr/mimic-cxr-2.0.0-split.csv", str(split))
        .replace("/data/weights/radedit", str(fake_weights(tmp_path / "radedit", unet)))
        .replace("/data/weights/sdxl-vae", str(fake_weights(tmp_path / "vae", vae)))
        .replace("/data/weights/biovil-t", str(fake_weights(tmp_path / "biovil", text)))
    )
    rules = planned_rules(snakemake("-n", workdir=workdir, overlays=(overlay,)).stdout)
    audit = {
        "extract_prompts",
        "score_chunk",
        "threshold_scores",
        "attribute_tokens",
        "generate_mitigations",
        "evaluate_mitigations",
        "make_share_bundle",
    }
    assert audit <= rules, sorted(audit - rules)
    demo_only = {
        "make_demo_corpus",
        "train_demo_model",
        "check_demo_memorization",
        "verify_planted_keys",
        "plot_attribution_methods",
        "evaluate_detection",
        "compare_detectors",
        "embed_training_images",  # no training images configured: copy detection skipped
    }
    assert not demo_only & rules, sorted(demo_only & rules)
