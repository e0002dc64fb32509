"""Every YAML under configs/ parses against the CLI: a typo in a shipped config fails here."""

from pathlib import Path

import pytest
import yaml

from sciformer.cli import main

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").rglob("*.yaml"))
FRAGMENT_DIRS = ("model", "data", "trainer")
FULL_RUNS = [c for c in CONFIGS if c.parent.name not in FRAGMENT_DIRS]
FRAGMENTS = [c for c in CONFIGS if c.parent.name in FRAGMENT_DIRS]


def _id(path: Path) -> str:
    return f"{path.parent.name}/{path.name}"


@pytest.mark.parametrize("path", FULL_RUNS, ids=map(_id, FULL_RUNS))
def test_full_run_config_parses(path, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "-c", str(path), "--print_config"]) == 0, capsys.readouterr().err[-2000:]
    printed = yaml.safe_load(capsys.readouterr().out)
    assert printed["model"]["class_path"].startswith("sciformer.")


@pytest.mark.parametrize("path", FRAGMENTS, ids=map(_id, FRAGMENTS))
def test_fragment_parses_as_part_of_a_run(path, tmp_path, monkeypatch, capsys):
    """A fragment (configs/model|data|trainer/x.yaml) is valid for its key of a run config."""
    monkeypatch.chdir(tmp_path)
    key = path.parent.name
    base = next(c for c in FULL_RUNS if c.name == "scot_tiny_cpu.yaml")  # fragments are for operator runs
    assert main(["fit", "-c", str(base), f"--{key}", str(path), "--print_config"]) == 0, capsys.readouterr().err
    printed = yaml.safe_load(capsys.readouterr().out)
    fragment = yaml.safe_load(path.read_text())
    section = printed[key]["init_args"] if "class_path" in fragment else printed[key]
    for k, v in (fragment.get("init_args") or fragment).items():  # the fragment's values won
        assert section[k] == v, (k, section[k], v)
