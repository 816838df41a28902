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


def _rule_envs_and_scripts() -> list[tuple[str, str, str]]:
    """(rule, env file, script file) of every rule with a script."""
    found = []
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        for block in re.split(r"(?m)^(?=(?:rule|checkpoint) \w+:)", smk.read_text()):
            name = re.match(r"(?:rule|checkpoint) (\w+):", block)
            env = re.search(r'conda:\n\s+"\.\./\.\./(envs/\w+\.yaml)"', block)
            script = re.search(r'script:\n\s+"\.\./(scripts/\w+\.py)"', block)
            if name and env and script:
                found.append((name.group(1), env.group(1), f"workflow/{script.group(1)}"))
    return found


def test_every_rule_script_imports_with_only_its_envs_packages():
    """A rule in envs/core.yaml must not import the model stack (diffusers, transformers, ...):
    run each script's memaudit imports in a Python where the packages of requirements.txt that
    its env lacks cannot be imported. One Python per env (the blocked set is the env's), each
    rule's imports tried in turn, so that a failure names its rule."""
    import json
    import subprocess
    import sys

    import_names = {
        "scikit-learn": "sklearn",
        "pyyaml": "yaml",
        "pillow": "PIL",
        "huggingface-hub": "huggingface_hub",
    }
    all_pins = set(pip_pins())
    by_env: dict[str, list[tuple[str, list[str]]]] = {}
    for rule, env_file, script in _rule_envs_and_scripts():
        imports = re.findall(r"^from (memaudit[\w.]*) import", (REPO / script).read_text(), re.M)
        assert imports, f"rule {rule}: {script} imports nothing from memaudit"
        by_env.setdefault(env_file, []).append((rule, imports))
    checked = 0
    for env_file, rules in sorted(by_env.items()):
        spec = yaml.safe_load((REPO / env_file).read_text())
        pip = next(d["pip"] for d in spec["dependencies"] if isinstance(d, dict))
        present = {line.split("==")[0].lower() for line in pip}
        blocked = sorted(
            import_names.get(name, name.replace("-", "_"))
            for name in all_pins - present
            if name not in {"snakemake", "snakemake-executor-plugin-slurm", "pytest"}
        )
        code = (
            "import importlib, json, sys, traceback\n"
            f"for name in {blocked!r}:\n"
            "    sys.modules[name] = None\n"
            f"sys.path.insert(0, {str(REPO)!r})\n"
            "failed = {}\n"
            f"for rule, modules in {rules!r}:\n"
            "    for module in modules:\n"
            "        try:\n"
            "            importlib.import_module(module)\n"
            "        except Exception:\n"
            "            failed[rule] = traceback.format_exc()[-800:]\n"
            "print(json.dumps(failed))\n"
        )
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
        assert proc.returncode == 0, f"{env_file}: {proc.stderr[-800:]}"
        failed = json.loads(proc.stdout.strip().splitlines()[-1])
        assert not failed, "\n".join(f"rule {r} ({env_file}): {e}" for r, e in failed.items())
        checked += len(rules)
    assert checked >= 20
