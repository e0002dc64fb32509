"""`sciformer finetune` as the README spells it: list flags in both spellings, refusals before training, and the
README's command on a converted Poseidon checkpoint against scratch and FNO."""

from __future__ import annotations

import json
import re
import shlex

import pytest
from conftest import ROOT
from heat import heat_store
from poseidon_upstream import write_upstream

from sciformer import cli, finetune
from sciformer.models.poseidon_convert import convert


def _readme_finetune_words() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    found = re.search(r"`(sciformer finetune --ckpt \S+ --data \S+[^`]*--baseline scratch --baseline fno)`", readme)
    assert found, "README lost its fine-tuning command"
    return shlex.split(found.group(1))[1:]


@pytest.fixture
def captured(monkeypatch, tmp_path):
    """Parse the command but record the sweep's config instead of training."""
    got = []

    def fake_sweep(ckpt, data, cfg, out):
        got.append(cfg)
        (out / "report.md").write_text("report")

    monkeypatch.setattr(finetune, "sweep", fake_sweep)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "runs" / "finetune").mkdir(parents=True)
    return got


@pytest.mark.parametrize("spelling", [
    ["--baseline", "scratch", "--baseline", "fno"],
    ["--baseline", "scratch,fno"],
    ["--baseline=scratch", "--baseline=fno"],
    ["--baseline", "[scratch,fno]"],
])
def test_list_flags_take_every_spelling(captured, spelling):
    rc = cli.main(["finetune", "--ckpt", "c", "--data", "d", *spelling, "--samples", "8", "--samples", "32,128",
                   "--seeds", "0,1,2"])
    assert rc == 0
    (cfg,) = captured
    assert cfg.baselines == ["scratch", "fno"] and cfg.samples == [8, 32, 128] and cfg.seeds == [0, 1, 2]


@pytest.mark.parametrize("args, message", [
    (["--baseline", "scratch,unet"], "unknown baseline(s) ['unet'] for a fields store"),
    (["--baseline", "persistence"], "unknown baseline(s) ['persistence'] for a fields store"),
    (["--mode", "frozen"], "fine-tuning mode 'frozen'"),
    (["--samples", "0"], "positive counts"),
    (["--epochs", "0"], "--epochs must be ≥ 1"),
])
def test_bad_baseline_or_mode_is_refused_before_training(tmp_path, capsys, args, message):
    store = heat_store(tmp_path / "d.zarr", ["u", "v"], n=4, seed=0)
    rc = cli.main(["finetune", "--ckpt", str(tmp_path / "no.ckpt"), "--data", str(store), *args,
                   "--out", str(tmp_path / "ft")])
    assert rc == 1 and not (tmp_path / "ft").exists()
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_readme_command_on_a_converted_poseidon_checkpoint(tmp_path):
    """Poseidon's own protocol (pretrained vs scratch) and the FNO baseline, from a converted upstream checkpoint
    whose size is not a registered one; the command's words are the README's, with tiny overrides added."""
    pytest.importorskip("neuralop")
    up = dict(num_channels=4, num_out_channels=4, image_size=16, patch_size=2, embed_dim=12, depths=[1, 1],
              num_heads=[3, 3], skip_connections=[1, 0], window_size=4, use_conditioning=True)
    write_upstream(tmp_path / "Poseidon-tiny", up)
    exported = convert(tmp_path / "Poseidon-tiny", tmp_path / "poseidon")
    store = heat_store(tmp_path / "wave.zarr", ["u", "v"], n=40, seed=3)
    words = _readme_finetune_words()
    words[words.index("--ckpt") + 1] = str(exported)
    words[words.index("--data") + 1] = str(store)
    out = tmp_path / "ft"
    rc = cli.main([*words, "--epochs", "1", "--batch_size", "32", "--time_stride", "4", "--fno_model", "fno-2d-tiny",
                   "--out", str(out)])
    assert rc == 0
    res = json.loads((out / "results.json").read_text())
    assert res["config"]["baselines"] == ["scratch", "fno"]
    assert set(res["cells"]) == {f"n={n}/{k}/seed=0" for n in (8, 32) for k in ("finetuned", "scratch", "fno")}
    assert set(res["skipped"]) == {f"n=128/{k}/seed=0" for k in ("finetuned", "scratch", "fno")}  # 32 train trajectories
    assert res["variables"]["inputs_reused"] == ["u", "v"]
    assert set(res["summary"]["gains"]) == {"scratch", "fno"}
    # the scratch cell is the converted architecture, freshly initialised
    import torch

    scratch = torch.load(out / "cells" / "n=8" / "scratch" / "seed=0" / "model.ckpt", weights_only=True)
    assert scratch["sciformer_model"]["class"] == "ScOT" and scratch["sciformer_model"]["config"]["embed_dim"] == 12


@pytest.mark.parametrize("mode,precision", [("lora", "32-true"), ("frozen-latent", "32-true"), ("lora", "bf16-master")])
def test_finetuned_cells_roll_out_and_export(tmp_path, pretrained_ckpt, mode, precision):
    """A LoRA or frozen-latent fine-tune from `sciformer finetune` goes on through `sciformer rollout` and
    `sciformer export` (LoRA merged on reading) like any other checkpoint; with bf16 parameters and fp32 master
    weights the cell's checkpoint is float32, its frozen base the pretrained weights bit for bit."""
    import torch

    from sciformer import models

    store = heat_store(tmp_path / "down.zarr", ["u", "w"], n=10, seed=4)
    out = tmp_path / "ft"
    assert cli.main(["finetune", "--ckpt", str(pretrained_ckpt), "--data", str(store), "--samples", "2",
                     "--mode", mode, "--epochs", "1", "--batch_size", "8", "--time_stride", "2",
                     "--precision", precision, "--out", str(out)]) == 0
    cell = out / "cells" / "n=2" / "finetuned" / "seed=0" / "model.ckpt"
    saved = torch.load(cell, weights_only=True)
    lora = saved["sciformer_model"]["lora"]
    assert (lora is not None) == (mode == "lora")
    assert {v.dtype for v in saved["state_dict"].values() if v.is_floating_point()} == {torch.float32}
    if mode == "lora":
        base = torch.load(pretrained_ckpt, weights_only=True)["state_dict"]
        frozen = [k for k in saved["state_dict"] if ".base." in k and "blocks" in k]
        assert frozen and all(torch.equal(saved["state_dict"][k], base[k.replace(".base.", ".")]) for k in frozen)
    assert cli.main(["rollout", "--ckpt", str(cell), "--data", str(store), "--steps", "2",
                     "--out", str(tmp_path / "ro" / "rollout.zarr")]) == 0
    summary = json.loads((tmp_path / "ro" / "summary.json").read_text())
    assert summary["variables"] == ["u", "w"]
    assert cli.main(["export", str(cell), str(tmp_path / "export")]) == 0
    exported = models.load(tmp_path / "export")
    x, t = torch.randn(1, 2, 16, 16), torch.tensor([0.5])
    with torch.no_grad():
        torch.testing.assert_close(exported(x, t), models.load(cell)(x, t))


def test_a_second_sweep_on_the_same_out_is_refused(tmp_path, pretrained_ckpt, capsys):
    import subprocess
    import sys

    store = heat_store(tmp_path / "d.zarr", ["u", "v"], n=6, seed=0)
    out = tmp_path / "ft"
    out.mkdir()
    holder = subprocess.Popen([sys.executable, "-c", (
        "import sys, time; from pathlib import Path; from sciformer.io import exclusive_lock\n"
        f"with exclusive_lock(Path({str(out)!r})):\n    print('held', flush=True); time.sleep(60)")],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        rc = cli.main(["finetune", "--ckpt", str(pretrained_ckpt), "--data", str(store), "--samples", "2",
                       "--out", str(out)])
        err = capsys.readouterr().err
        assert rc == 1 and str(holder.pid) in err and "Traceback" not in err
        assert not (out / "results.json").exists()
    finally:
        holder.kill()
        holder.wait()


def test_a_damaged_results_file_is_one_clear_error(tmp_path, pretrained_ckpt, capsys):
    store = heat_store(tmp_path / "d.zarr", ["u", "v"], n=6, seed=0)
    out = tmp_path / "ft"
    out.mkdir()
    (out / "results.json").write_text('{"cells": {"n=2/fine')
    rc = cli.main(["finetune", "--ckpt", str(pretrained_ckpt), "--data", str(store), "--samples", "2",
                   "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 1 and "results.json: not a readable sweep record" in err and "Traceback" not in err
    assert (out / "results.json").read_text() == '{"cells": {"n=2/fine'  # left as it was
