"""finetune/run_suite.py: one table over tasks, numbers taken from each task's sweep."""

import importlib.util
import json

from conftest import ROOT

from sciformer.data import commands


def _load_script():
    spec = importlib.util.spec_from_file_location("run_suite", ROOT / "finetune" / "run_suite.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_suite_table_collects_every_task(tmp_path, pretrained_ckpt, monkeypatch):
    monkeypatch.setitem(commands.BUILDERS, "heat-down", "heat:build_heat_downstream")
    monkeypatch.setitem(commands.BUILDERS, "heat-same", "heat:build_heat")
    suite = tmp_path / "suite.yaml"
    suite.write_text("budget: {samples: [4], seeds: [0], epochs: 1, batch_size: 8, baselines: [scratch]}\n"
                     "resolution: 16\n"
                     "tasks:\n  - {name: heat-down, trajectories: 12, kind: new variable}\n"
                     "  - {name: heat-same, trajectories: 12, kind: same variables}\n")
    _load_script().main(["--ckpt", str(pretrained_ckpt), "--suite", str(suite), "--out", str(tmp_path / "out"),
                         "--data-dir", str(tmp_path / "data"), "--time-stride", "1"])
    table = (tmp_path / "out" / "suite_results.md").read_text()
    res = json.loads((tmp_path / "out" / "suite_results.json").read_text())["results"]
    for name in ("heat-down", "heat-same"):
        s = res[name]["summary"]
        ft = s["table"]["finetuned"]["4"]["mean"]
        assert f"| {name} |" in table and f"{ft:.2f} ± 0.00" in table
        assert s["gains"]["scratch"]["AG"]["4"] == s["table"]["scratch"]["4"]["mean"] / ft
