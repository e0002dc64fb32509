"""The recipe options through the `sciformer` command, as a user runs them: `fit` with every option on, then
`rollout` and `export` of the delta checkpoint read it back as a model that returns states."""

from __future__ import annotations

import json

import torch
import yaml

from sciformer import checkpoints
from sciformer.cli import main
from sciformer.data.fields import FieldDataModule
from tests.helpers.heat import heat_store
from tests.tasks.test_recipe_task import SCOT


def test_fit_rollout_export_with_every_recipe_option(tmp_path):
    a = heat_store(tmp_path / "a.zarr", ["u", "v"], n=4, seed=0)
    b = heat_store(tmp_path / "b.zarr", ["u", "v"], n=10, seed=1, nu=0.05)
    data = {"stores": [str(a), str(b)], "batch_size": 4, "normalization": "rms", "balance": True}
    cfg = {
        "seed_everything": 0,
        "trainer": {"max_steps": 3, "accelerator": "cpu", "logger": False, "enable_progress_bar": False,
                    "default_root_dir": str(tmp_path / "run"), "limit_val_batches": 1,
                    "callbacks": [{"class_path": "lightning.pytorch.callbacks.ModelCheckpoint",
                                   "init_args": {"dirpath": str(tmp_path / "ck"), "save_last": True}}]},
        "model": {"class_path": "sciformer.tasks.operator.OperatorTask",
                  "init_args": {"model": "scot-tiny", "model_options": SCOT, "target": "delta", "patch_jitter": 2,
                                "input_noise": 0.01, "pushforward": 2}},
        "data": {"class_path": "sciformer.data.fields.FieldDataModule", "init_args": data},
    }
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["fit", "-c", str(tmp_path / "cfg.yaml")]) == 0
    ckpt = tmp_path / "ck" / "last.ckpt"
    ck = checkpoints.read(ckpt)
    spec = FieldDataModule(stores=data["stores"], normalization="rms").spec
    assert ck.data_spec["target"] == "delta" and ck.data_spec["delta_scale"] == spec["delta_scale"]
    assert all(s["mean"] == 0.0 for s in ck.data_spec["stats"].values())  # rms: no centring
    model = ck.build()
    torch.testing.assert_close(model._delta_scale, torch.tensor([spec["delta_scale"][v] for v in ("u", "v")]))
    out = tmp_path / "roll" / "r.zarr"
    assert main(["rollout", "--ckpt", str(ckpt), "--data", str(b), "--split", "all", "--out", str(out)]) == 0
    summary = json.loads((out.parent / "summary.json").read_text())
    assert summary["steps"] == 4 and "valid_rollout_length" in summary
    assert main(["export", str(ckpt), str(tmp_path / "exp")]) == 0
    x, t = torch.randn(2, 2, 16, 16), torch.rand(2)
    with torch.no_grad():
        torch.testing.assert_close(checkpoints.read(tmp_path / "exp").build()(x, t), model(x, t))
