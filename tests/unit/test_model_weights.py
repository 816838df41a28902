"""Where model parts come from (memaudit.model.weights): local folders, the Hugging Face cache,
downloads only with model.allow_download, and the config-time check of model paths."""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import huggingface_hub.constants
import pytest
import torch
import yaml

from memaudit.model import weights
from memaudit.model.loading import ModelLoadError, load_model
from memaudit.model.weights import check_model_config
from tests.conftest import QUICK, REPO, snakemake
from tests.tiny_components import (
    make_tiny_demo_model_dir,
    make_tiny_diffusers_dir,
    make_tiny_radedit_dirs,
    tiny_latent_unet,
    tiny_vae,
)


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dict[str, list]:
    """HF_HUB_OFFLINE unset, an empty Hugging Face cache, and every way out watched.

    ``downloads`` records calls of the one downloader (which fails the call); ``connections``
    records socket connections (refused), so a network attempt by any library is seen too.
    """
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    seen: dict[str, list] = {"downloads": [], "connections": []}

    def refuse_download(ref, subfolder, part, where):
        seen["downloads"].append(ref)
        raise AssertionError(f"a download of {ref!r} was attempted")

    def refuse_connect(self, address, *args, **kwargs):
        seen["connections"].append(address)
        raise OSError("the test refuses network connections")

    monkeypatch.setattr(weights, "_download", refuse_download)
    monkeypatch.setattr(socket.socket, "connect", refuse_connect)
    return seen


def cached_repo(repo: str, fill: Callable[[Path], object]) -> Path:
    """Put a repository into the (monkeypatched) Hugging Face cache as a download would: a
    ``refs/main`` commit and a snapshot folder that ``fill`` writes."""
    storage = Path(huggingface_hub.constants.HF_HUB_CACHE) / f"models--{repo.replace('/', '--')}"
    commit = hashlib.sha1(repo.encode()).hexdigest()
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)
    snapshot = storage / "snapshots" / commit
    snapshot.mkdir(parents=True)
    fill(snapshot)
    return snapshot


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_missing_hub_id_is_never_downloaded(
    online: dict[str, list], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A missing local path that reads as a hub id (weights/sdxl-vae) is looked up in the cache
    only: a miss is an error with the command to run, and nothing leaves the machine."""
    cfg = make_tiny_radedit_dirs(tmp_path / "parts")
    monkeypatch.chdir(tmp_path)
    cfg["vae"] = "weights/sdxl-vae"
    with pytest.raises(ModelLoadError) as err:
        load_model(cfg, device="cpu")
    message = str(err.value)
    assert "VAE 'weights/sdxl-vae'" in message and "model.vae" in message
    assert "hf download weights/sdxl-vae --revision main" in message
    assert "model.allow_download" in message and "HF_HUB_OFFLINE is not set" in message
    problems = check_model_config(cfg)
    assert len(problems) == 1 and problems[0].startswith("config: key 'model.vae': ")
    assert online == {"downloads": [], "connections": []}


def test_hub_ids_in_the_cache_load_without_network(online: dict[str, list], tmp_path: Path):
    cfg = make_tiny_radedit_dirs(tmp_path / "parts")
    cached_repo(
        "tiny/radedit",
        lambda s: tiny_latent_unet().save_pretrained(s / "unet", safe_serialization=True),
    )
    cached_repo("tiny/sdxl-vae", lambda s: tiny_vae().save_pretrained(s, safe_serialization=True))
    cfg.update(unet="tiny/radedit", vae="tiny/sdxl-vae")
    assert check_model_config(cfg) == []
    model = load_model(cfg, device="cpu")
    assert _same_weights(model.vae, tiny_vae()) and _same_weights(model.unet, tiny_latent_unet())
    assert online == {"downloads": [], "connections": []}


def test_allow_download_is_the_only_way_to_download(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf-cache"))
    fetched = tmp_path / "fetched-vae"
    tiny_vae().save_pretrained(fetched)
    calls = []

    def fake_download(ref, subfolder, part, where):
        calls.append((ref, subfolder))
        return fetched

    monkeypatch.setattr(weights, "_download", fake_download)
    cfg = {**make_tiny_radedit_dirs(tmp_path / "parts"), "vae": "someone/vae"}
    with pytest.raises(ModelLoadError, match="allow_download"):
        load_model(cfg, device="cpu")
    assert calls == []
    cfg["allow_download"] = True
    assert check_model_config(cfg) == []  # not cached yet: the job will download it
    assert _same_weights(load_model(cfg, device="cpu").vae, tiny_vae())
    assert calls == [("someone/vae", "")]
    # HF_HUB_OFFLINE wins over allow_download
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE is set"):
        load_model(cfg, device="cpu")
    assert calls == [("someone/vae", "")]


def test_config_check_names_missing_and_pickle_only_parts(tmp_path: Path) -> None:
    cfg = make_tiny_radedit_dirs(tmp_path / "parts")
    assert check_model_config(cfg) == []
    cfg["unet"] = str(tmp_path / "nowhere")
    encoder = Path(cfg["text_encoder"]) / "model.safetensors"
    encoder.rename(encoder.with_name("pytorch_model.bin"))
    problems = check_model_config(cfg)
    assert [p.split(":")[1].strip() for p in problems] == [
        "key 'model.unet'",
        "key 'model.text_encoder'",
        # the tokenizer lives beside the text encoder: its folder is fine
    ]
    assert "does not exist" in problems[0] and str(tmp_path / "nowhere") in problems[0]
    assert "pytorch_model.bin" in problems[1] and "only safetensors" in problems[1]


def test_config_check_of_folder_kinds(tmp_path: Path) -> None:
    demo = make_tiny_demo_model_dir(tmp_path / "demo")
    assert check_model_config({"kind": "demo", "path": str(demo)}) == []
    # the folder the workflow trains is not checked before it exists
    produced = {"kind": "demo", "path": "results/model/demo"}
    assert check_model_config(produced, produced=["results/model/demo"]) == []
    (demo / "unet" / "diffusion_pytorch_model.safetensors").unlink()
    (problem,) = check_model_config({"kind": "demo", "path": str(demo)})
    assert problem.startswith("config: key 'model.path': no unet weights in")
    pipeline = make_tiny_diffusers_dir(tmp_path / "sd")
    assert check_model_config({"kind": "diffusers", "path": str(pipeline)}) == []
    (pipeline / "model_index.json").unlink()
    (problem,) = check_model_config({"kind": "diffusers", "path": str(pipeline)})
    assert "model_index.json" in problem and "'model.path'" in problem


def test_weights_module_imports_no_model_stack() -> None:
    """The config check runs in the Snakemake process: it must not pull in torch & co."""
    code = (
        "import sys; import memaudit.model.weights; "
        "print([m for m in ('torch', 'diffusers', 'transformers', 'huggingface_hub') "
        "if m in sys.modules])"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "[]"


def test_workflow_refuses_a_missing_model_path_before_any_job(tmp_path: Path) -> None:
    cfg = make_tiny_radedit_dirs(tmp_path / "parts")
    cfg["unet"] = str(tmp_path / "nowhere")
    overlay = tmp_path / "radedit.yaml"
    overlay.write_text(yaml.safe_dump({"model": cfg}))
    run = tmp_path / "run"
    run.mkdir()
    proc = snakemake("-n", workdir=run, overlays=(QUICK, overlay), check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "config: key 'model.unet': the unet folder" in output and "does not exist" in output
    assert "Traceback" not in output and "Job stats" not in output
    assert not (run / "results").exists()
