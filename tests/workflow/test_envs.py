"""Conda envs (which cannot be built here) pin exactly what the pip install pins."""

from __future__ import annotations

import re

import yaml

from tests.conftest import REPO


def pip_pins() -> dict[str, str]:
    pins = {}
    for line in (REPO / "requirements.txt").read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, version = line.split("==")
            pins[name.lower()] = version
    torch = re.search(r"^TORCH \?= torch==(\S+)", (REPO / "Makefile").read_text(), re.M)
    pins["torch"] = torch.group(1)
    return pins


def test_every_env_pin_matches_the_pip_pin():
    pins = pip_pins()
    envs = sorted((REPO / "envs").glob("*.yaml"))
    assert len(envs) >= 2
    for env in envs:
        spec = yaml.safe_load(env.read_text())
        assert "python=3.11" in spec["dependencies"], env.name
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        for line in pip:
            name, version = line.split("==")
            assert name.lower() in pins, f"{env.name}: {name} is not pinned in requirements.txt"
            assert pins[name.lower()] == version, f"{env.name}: {name}=={version} != pip pin"


def test_every_rule_uses_an_existing_env():
    for smk in (REPO / "workflow/rules").glob("*.smk"):
        text = smk.read_text()
        n_rules = len(re.findall(r"^(?:rule|checkpoint) \w+:", text, re.M))
        envs = re.findall(r'conda:\n\s+"\.\./\.\./(envs/\w+\.yaml)"', text)
        assert len(envs) == n_rules, f"{smk.name}: every rule needs a conda env"
        assert len(re.findall(r"^\s+log:", text, re.M)) == n_rules, f"{smk.name}: rule without log"
        for env in envs:
            assert (REPO / env).exists(), env
