"""End to end through the `sciformer` command: build/convert atom stores, fit the ADiT autoencoder and the
latent flow model jointly on molecules and crystals, sample molecules (XYZ/SDF) and crystals (CIF)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from sciformer.cli import main


def _config(tmp: Path, name: str, task: str, init: str, stores: str) -> Path:
    cfg = tmp / f"{name}.yaml"
    cfg.write_text(f"""
seed_everything: 0
trainer:
  max_steps: 3
  limit_val_batches: 1
  val_check_interval: 3
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {tmp}/{name}
  logger: {{class_path: lightning.pytorch.loggers.CSVLogger, init_args: {{save_dir: {tmp}/{name}}}}}
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{save_last: true, dirpath: {tmp}/{name}/ckpt}}
model:
  class_path: {task}
  init_args: {init}
data:
  class_path: sciformer.data.atoms.AtomsDataModule
  init_args: {{train: {stores}, properties: [dir_gap], batch_size: 8}}
""")
    return cfg


def test_build_fit_sample(tmp_path, shared_data, capsys):
    smiles = tmp_path / "s.csv"
    smiles.write_text("smiles\nCCO\nCC(=O)O\nc1ccccc1\nCCN\nC#N\nOCC=O\n\"\"\nbad(\nC1CC1\nCOC\n")
    assert main(["data", "build", "qm9-etkdg", "--out", str(tmp_path / "m.zarr"), "--option", f"src={smiles}",
                 "--option", "workers=1"]) == 0
    df = pd.read_csv(shared_data / "molecules" / "perov_5" / "val.csv").head(16)
    df.to_csv(tmp_path / "p.csv", index=False)
    assert main(["data", "convert", str(tmp_path / "p.csv"), str(tmp_path / "p.zarr"), "--from", "cif-csv"]) == 0
    assert main(["data", "info", str(tmp_path / "m.zarr")]) == 0
    out = capsys.readouterr().out
    assert "8 systems" in out and '"unparseable SMILES": 1' in out and '"empty SMILES (0 atoms)": 1' in out

    stores = f"[{tmp_path}/m.zarr, {tmp_path}/p.zarr]"
    ae = _config(tmp_path, "ae", "sciformer.tasks.generative.AutoencoderTask", "{model: adit-vae-tiny}", stores)
    assert main(["fit", "-c", str(ae)]) == 0
    ldm = _config(tmp_path, "ldm", "sciformer.tasks.generative.LatentFlowTask",
                  f"{{model: adit-dit-tiny, autoencoder: {tmp_path}/ae/ckpt/last.ckpt, condition_on_properties: true}}", stores)
    assert main(["fit", "-c", str(ldm)]) == 0
    ckpt = tmp_path / "ldm" / "ckpt" / "last.ckpt"
    assert main(["sample", "--ckpt", str(ckpt), "--n", "6", "--kind", "molecule", "--steps", "4",
                 "--out", str(tmp_path / "mol")]) == 0
    xyz = (tmp_path / "mol" / "molecules.xyz").read_text().splitlines()
    assert xyz[1] == "sample 0" and int(xyz[0]) >= 3
    metrics = json.loads((tmp_path / "mol" / "metrics.json").read_text())
    assert metrics["n"] == 6 and 0 <= metrics["valid"] <= 1
    assert main(["sample", "--ckpt", str(ckpt), "--n", "4", "--kind", "crystal", "--steps", "4",
                 "--condition", "{dir_gap: 1.0}", "--out", str(tmp_path / "cry")]) == 0
    cif = (tmp_path / "cry" / "crystals.cif").read_text()
    assert cif.count("data_") == 4 and "_cell_length_a" in cif
    # a model trained with property labels refuses unknown ones; a missing checkpoint is one clear error
    assert main(["sample", "--ckpt", str(ckpt), "--n", "2", "--kind", "crystal", "--condition", "{band: 1.0}",
                 "--out", str(tmp_path / "x")]) == 1
    assert main(["sample", "--n", "2"]) == 1
    assert "--ckpt is required" in capsys.readouterr().err
