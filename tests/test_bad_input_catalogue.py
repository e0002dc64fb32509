"""The bad-input catalogue (tests/README.md): every case runs the real `sciformer` command in a subprocess and
must exit non-zero with one message that names the offending file, flag or field, print no traceback, and
leave nothing behind at the output path."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

HELPERS = Path(__file__).parent / "helpers"

OPERATOR_CONFIG = """
seed_everything: 0
trainer:
  max_steps: 1
  accelerator: cpu
  limit_val_batches: 1
  enable_progress_bar: false
  enable_model_summary: false
  enable_checkpointing: false
  logger: false
  default_root_dir: {root}/runs
model:
  class_path: sciformer.tasks.operator.OperatorTask
  init_args:
    model: {model}
    model_options: {options}
    loss: {loss}
data:
  class_path: sciformer.data.fields.FieldDataModule
  init_args: {{stores: [{store}], batch_size: 8}}
"""
GOOD = {"model": "factformer-2d-tiny", "options": "{dim: 16, depth: 1, heads: 2, dim_head: 8}", "loss": "rel_l1"}

SERIES_CONFIG = """
seed_everything: 0
trainer: {{max_steps: 1, accelerator: cpu, logger: false, enable_checkpointing: false, enable_progress_bar: false,
          default_root_dir: {root}/runs}}
model:
  class_path: sciformer.tasks.forecast.ForecastTask
  init_args: {{model: itransformer-tiny}}
data:
  class_path: sciformer.data.series_module.SeriesDataModule
  init_args: {{stores: [{store}], lookback: {lookback}, horizon: 12, batch_size: 8}}
"""


@pytest.fixture(scope="module")
def fx(tmp_path_factory):
    """Every input of the catalogue, built once: good stores and checkpoints, and the broken files."""
    import lightning as L
    import torch
    from heat import heat_store

    from sciformer import models
    from sciformer.checkpoints import export_checkpoint
    from sciformer.data import atoms
    from sciformer.data.fields import FieldDataModule
    from sciformer.data.series import convert_csv
    from sciformer.tasks.operator import OperatorTask

    root = tmp_path_factory.mktemp("bad")
    f = {"root": root}
    f["heat"] = heat_store(root / "heat.zarr", ["u", "v"], n=6, seed=0)
    f["heat_uw"] = heat_store(root / "heat_uw.zarr", ["u", "w"], n=6, seed=1)
    # an operator checkpoint (Lightning) and its export
    dm = FieldDataModule(stores=[str(f["heat"])], batch_size=8)
    task = OperatorTask(model="factformer-2d-tiny", model_options={"dim": 16, "depth": 1, "heads": 2, "dim_head": 8},
                        data_spec=dm.spec)
    trainer = L.Trainer(max_steps=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0)
    trainer.fit(task, datamodule=dm)
    f["ckpt"] = root / "op.ckpt"
    trainer.save_checkpoint(f["ckpt"])
    f["export"] = export_checkpoint(f["ckpt"], root / "op_export")
    raw = f["ckpt"].read_bytes()
    (root / "truncated.ckpt").write_bytes(raw[: len(raw) // 2])
    (root / "junk.ckpt").write_bytes(np.random.default_rng(0).bytes(4096))
    f["plain_torch"] = root / "plain.pt"
    torch.save({"weights": torch.zeros(2)}, f["plain_torch"])
    bad_export = shutil.copytree(f["export"], root / "truncated_export")
    w = bad_export / "model.safetensors"
    w.write_bytes(w.read_bytes()[:100])
    f["series_export"] = models.save(models.get("itransformer-tiny"), root / "series_export")
    # a series store
    t = pd.date_range("2021-03-01", periods=400, freq="h")
    vals = np.random.default_rng(0).normal(size=(400, 3))
    pd.DataFrame(vals, columns=["a", "b", "OT"]).assign(date=t)[["date", "a", "b", "OT"]].to_csv(root / "s.csv", index=False)
    f["series"] = convert_csv(root / "s.csv", root / "series.zarr")
    # an atom store
    water = {"atomic_numbers": np.array([8, 1, 1]), "positions": np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]),
             "charge": 0, "smiles": "O"}
    f["atoms"] = atoms.write_store(root / "atoms.zarr", [water, water], domain="molecule", source="test",
                                   report={"requested": 2, "written": 2, "skipped": 0, "skip_reasons": {}})
    # broken stores
    (root / "notzarr").mkdir()
    (root / "notzarr" / "README").write_text("hello")
    corrupt = shutil.copytree(f["heat"], root / "corrupt.zarr")
    (corrupt / "zarr.json").write_text("{not json")
    nolayout = root / "nolayout.zarr"
    import zarr

    zarr.open_group(str(nolayout), mode="w", zarr_format=3).create_array("x", data=np.zeros(3))
    # broken source files
    (root / "blob.bin").write_bytes(np.random.default_rng(1).bytes(3000))
    (root / "empty.csv").write_text("")
    (root / "nan.csv").write_text("date,a\n2021-01-01 00:00,1\n2021-01-01 01:00,nan\n2021-01-01 02:00,3\n")
    (root / "inf.csv").write_text("date,a\n2021-01-01 00:00,1\n2021-01-01 01:00,inf\n2021-01-01 02:00,3\n")
    (root / "nodate.csv").write_text("a,b\nx,1\ny,2\n")
    (root / "unsorted.csv").write_text("date,a\n2021-01-01 02:00,1\n2021-01-01 01:00,2\n")
    (root / "unk.sdf").write_text("\n  RDKit          3D\n\n  1  0  0  0  0  0  0  0  0  0999 V2000\n"
                                  "    0.0000    0.0000    0.1000 Xx  0  0  0  0  0  0  0  0  0  0  0  0\nM  END\n$$$$\n")
    (root / "unk.xyz").write_text("2\nc\nH 0 0 0\nQq 0 0 1\n")
    (root / "h2.xyz").write_text("2\nc\nH 0 0 0\nH 0 0 0.74\n")
    (root / "truncated.xyz").write_text("5\nc\nH 0 0 0\nH 0 0 0.74\n")
    (root / "bad_cif.csv").write_text('material_id,cif\na,"data_x\n_cell_length_a garbage"\n')
    (root / "nocif.csv").write_text("material_id,structure\na,b\n")
    (root / "smiles_bad.csv").write_text('smiles\nbad(\n""\nC1CC\n')
    with h5py.File(root / "good.nc", "w") as h:
        h.create_dataset("velocity", data=np.zeros((2, 3, 2, 8, 8), np.float32))
    data = (root / "good.nc").read_bytes()
    (root / "truncated.nc").write_bytes(data[: len(data) // 3])
    with h5py.File(root / "rank.nc", "w") as h:
        h.create_dataset("velocity", data=np.zeros((2, 8), np.float32))
    with h5py.File(root / "well.hdf5", "w") as h:
        h.create_group("t0_fields")
    raw = (root / "well.hdf5").read_bytes()
    (root / "truncated_well.hdf5").write_bytes(raw[: len(raw) // 2])
    with h5py.File(root / "pdebench.hdf5", "w") as h:
        h.create_dataset("tensor", data=np.zeros((4, 8), np.float32))
    raw = (root / "pdebench.hdf5").read_bytes()
    (root / "truncated_pdebench.hdf5").write_bytes(raw[: len(raw) // 2])
    (root / "afile").write_text("a file, not a directory")

    def config(name, text):
        path = root / f"{name}.yaml"
        path.write_text(text)
        return path

    op = lambda **kw: OPERATOR_CONFIG.format(**{"root": root, "store": f["heat"], **GOOD, **kw})  # noqa: E731
    f["cfg"] = config("op", op())
    f["cfg_nostore"] = config("nostore", op(store=root / "missing.zarr"))
    f["cfg_model"] = config("model", op(model="factformer-2d-tinyy"))
    f["cfg_option"] = config("option", op(options="{dim: 16, depth: 1, heads: 2, dim_haed: 8}"))
    f["cfg_loss"] = config("loss", op(loss="rel-l1"))
    f["cfg_uw"] = config("uw", op(store=f["heat_uw"]))
    f["cfg_series_store"] = config("series_store", op(store=f["series"]))
    f["cfg_lookback"] = config("lookback", SERIES_CONFIG.format(root=root, store=f["series"], lookback=1000))
    return f


@dataclass
class Case:
    id: str
    argv: list[str]  # "{name}" is replaced by the fixture path of that name; "OUT" by the case's output path
    expect: list[str]  # substrings of the message ("{name}" as in argv)
    out: str | None = None  # the output path: must not exist afterwards
    skip: str | None = None
    env: dict = field(default_factory=dict)


CASES = [
    # ---- Lightning subcommands: a SciformerError wrapped by jsonargparse / Lightning, --ckpt_path ----
    Case("fit: store not converted yet", ["fit", "-c", "{cfg_nostore}"], ["missing.zarr", "no such store"]),
    Case("fit: unknown model name", ["fit", "-c", "{cfg_model}"], ["factformer-2d-tinyy"]),
    Case("fit: model_options typo", ["fit", "-c", "{cfg_option}"], ["dim_haed", "valid options"]),
    Case("fit: loss rel-l1", ["fit", "-c", "{cfg_loss}"], ["loss", "rel-l1", "rel_l1"]),
    Case("fit: --ckpt_path missing", ["fit", "-c", "{cfg}", "--ckpt_path", "{root}/nope.ckpt"], ["--ckpt_path", "nope.ckpt"]),
    Case("fit: --ckpt_path truncated", ["fit", "-c", "{cfg}", "--ckpt_path", "{root}/truncated.ckpt"],
         ["--ckpt_path", "truncated.ckpt", "corrupt"]),
    Case("fit: --ckpt_path on other variables", ["fit", "-c", "{cfg_uw}", "--ckpt_path", "{ckpt}"],
         ["['u', 'v']", "['u', 'w']", "sciformer finetune"]),
    Case("fit: series store in a field config", ["fit", "-c", "{cfg_series_store}"], ["series.zarr"]),
    Case("fit: lookback longer than the series", ["fit", "-c", "{cfg_lookback}"], ["series.zarr", "1000"]),
    # ---- rollout ----
    Case("rollout: --stride 0", ["rollout", "--ckpt", "{ckpt}", "--data", "{heat}", "--stride", "0", "--out", "OUT"],
         ["--stride"], out="ro/r.zarr"),
    Case("rollout: --batch_size 0", ["rollout", "--ckpt", "{ckpt}", "--data", "{heat}", "--batch_size", "0",
                                     "--out", "OUT"], ["--batch_size"], out="ro/r.zarr"),
    Case("rollout: --steps -1", ["rollout", "--ckpt", "{ckpt}", "--data", "{heat}", "--steps", "-1", "--out", "OUT"],
         ["--steps"], out="ro/r.zarr"),
    Case("rollout: unknown --mode", ["rollout", "--ckpt", "{ckpt}", "--data", "{heat}", "--mode", "jumpy",
                                     "--out", "OUT"], ["--mode", "jumpy"], out="ro/r.zarr"),
    Case("rollout: unknown --split", ["rollout", "--ckpt", "{ckpt}", "--data", "{heat}", "--split", "dev",
                                      "--out", "OUT"], ["--split", "dev"], out="ro/r.zarr"),
    Case("rollout: --device cuda without CUDA", ["rollout", "--ckpt", "{ckpt}", "--data", "{heat}", "--device", "cuda",
                                                 "--out", "OUT"], ["--device cuda"], out="ro/r.zarr",
         skip="cuda"),
    Case("rollout: store of other variables", ["rollout", "--ckpt", "{ckpt}", "--data", "{heat_uw}", "--out", "OUT"],
         ["sciformer finetune"], out="ro/r.zarr"),
    Case("rollout: series checkpoint on a field store", ["rollout", "--ckpt", "{series_export}", "--data", "{heat}",
                                                         "--out", "OUT"], ["series_export", "'operator'"], out="ro/r.zarr"),
    Case("rollout: atom store", ["rollout", "--ckpt", "{ckpt}", "--data", "{atoms}", "--out", "OUT"],
         ["atoms.zarr"], out="ro/r.zarr"),
    Case("rollout: truncated safetensors export", ["rollout", "--ckpt", "{root}/truncated_export", "--data", "{heat}",
                                                   "--out", "OUT"], ["model.safetensors"], out="ro/r.zarr"),
    # ---- sample / export / finetune ----
    Case("sample: junk checkpoint", ["sample", "--ckpt", "{root}/junk.ckpt", "--n", "2", "--out", "OUT"],
         ["junk.ckpt", "corrupt"], out="samples"),
    Case("sample: operator checkpoint", ["sample", "--ckpt", "{ckpt}", "--n", "2", "--out", "OUT"],
         ["op.ckpt", "'generative'"], out="samples"),
    Case("export: truncated checkpoint", ["export", "{root}/truncated.ckpt", "OUT"], ["truncated.ckpt"], out="exp"),
    Case("export: plain torch file", ["export", "{plain_torch}", "OUT"], ["plain.pt", "not a sciformer"], out="exp"),
    Case("finetune: --mode frozen", ["finetune", "--ckpt", "{ckpt}", "--data", "{heat}", "--mode", "frozen",
                                     "--out", "OUT"], ["frozen"], out="ft"),
    Case("finetune: series checkpoint", ["finetune", "--ckpt", "{series_export}", "--data", "{heat}", "--out", "OUT"],
         ["series_export"], out="ft"),
    Case("finetune: --samples 0", ["finetune", "--ckpt", "{ckpt}", "--data", "{heat}", "--samples", "0",
                                   "--out", "OUT"], ["samples"], out="ft"),
    # ---- data build ----
    Case("build: unknown option", ["data", "build", "allen-cahn", "--out", "OUT", "--option", "bogus=1"],
         ["bogus", "eps"], out="ac.zarr"),
    Case("build: unknown builder", ["data", "build", "allen-kahn", "--out", "OUT"], ["allen-kahn", "allen-cahn"],
         out="ac.zarr"),
    Case("build: zero trajectories", ["data", "build", "allen-cahn", "--out", "OUT", "--trajectories", "0"],
         ["trajectories"], out="ac.zarr"),
    Case("build: option without =", ["data", "build", "allen-cahn", "--out", "OUT", "--option", "eps"],
         ["--option", "eps"], out="ac.zarr"),
    Case("build: output under a file", ["data", "build", "allen-cahn", "--out", "{root}/afile/ac.zarr",
                                        "--trajectories", "1", "--resolution", "16"], ["afile"]),
    Case("build: read-only output directory", ["data", "build", "allen-cahn", "--out", "OUT", "--trajectories", "1",
                                               "--resolution", "16"], ["readonly"], out="readonly/ac.zarr",
         skip="root"),
    # ---- data convert: csv ----
    Case("csv: option typo tagret", ["data", "convert", "{root}/s.csv", "OUT", "--from", "csv", "--option", "tagret=OT"],
         ["tagret", "target"], out="c.zarr"),
    Case("csv: empty file", ["data", "convert", "{root}/empty.csv", "OUT", "--from", "csv"], ["empty.csv"], out="c.zarr"),
    Case("csv: NaN values", ["data", "convert", "{root}/nan.csv", "OUT", "--from", "csv"], ["nan.csv", "fill"],
         out="c.zarr"),
    Case("csv: Inf values", ["data", "convert", "{root}/inf.csv", "OUT", "--from", "csv"], ["inf.csv", "'a'", "inf"],
         out="c.zarr"),
    Case("csv: no date column", ["data", "convert", "{root}/nodate.csv", "OUT", "--from", "csv"], ["nodate.csv"],
         out="c.zarr"),
    Case("csv: timestamps out of order", ["data", "convert", "{root}/unsorted.csv", "OUT", "--from", "csv"],
         ["unsorted.csv", "row"], out="c.zarr"),
    Case("csv: binary file", ["data", "convert", "{root}/blob.bin", "OUT", "--from", "csv"], ["blob.bin"], out="c.zarr"),
    Case("csv: unknown target", ["data", "convert", "{root}/s.csv", "OUT", "--from", "csv", "--option", "target=XX"],
         ["XX"], out="c.zarr"),
    Case("convert: unknown format", ["data", "convert", "{root}/s.csv", "OUT", "--from", "xlsx"], ["xlsx", "csv"],
         out="c.zarr"),
    Case("convert: missing source", ["data", "convert", "{root}/nope.csv", "OUT", "--from", "csv"], ["nope.csv"],
         out="c.zarr"),
    # ---- data convert: molecules and crystals ----
    Case("xyz: binary file", ["data", "convert", "{root}/blob.bin", "OUT", "--from", "xyz"], ["blob.bin", "XYZ"],
         out="m.zarr"),
    Case("xyz: unknown element", ["data", "convert", "{root}/unk.xyz", "OUT", "--from", "xyz"], ["unk.xyz", "element"],
         out="m.zarr"),
    Case("xyz: truncated frame", ["data", "convert", "{root}/truncated.xyz", "OUT", "--from", "xyz"],
         ["truncated.xyz", "truncated"], out="m.zarr"),
    Case("xyz: unknown element in --option elements", ["data", "convert", "{root}/h2.xyz", "OUT", "--from", "xyz",
                                                       "--option", "elements=H,Qq"], ["elements", "Qq"], out="m.zarr"),
    Case("sdf: unknown element", ["data", "convert", "{root}/unk.sdf", "OUT", "--from", "sdf"], ["unk.sdf"],
         out="m.zarr"),
    Case("sdf: binary file", ["data", "convert", "{root}/blob.bin", "OUT", "--from", "sdf"], ["blob.bin"], out="m.zarr"),
    Case("cif-csv: bad CIF", ["data", "convert", "{root}/bad_cif.csv", "OUT", "--from", "cif-csv"],
         ["bad_cif.csv", "CIF"], out="x.zarr"),
    Case("cif-csv: no cif column", ["data", "convert", "{root}/nocif.csv", "OUT", "--from", "cif-csv"],
         ["nocif.csv", "'cif'"], out="x.zarr"),
    Case("cif-csv: binary file", ["data", "convert", "{root}/blob.bin", "OUT", "--from", "cif-csv"], ["blob.bin"],
         out="x.zarr"),
    Case("smiles: garbage and empty SMILES", ["data", "build", "qm9-etkdg", "--out", "OUT", "--option",
                                              "src={root}/smiles_bad.csv", "--option", "workers=1"],
         ["smiles_bad.csv"], out="q.zarr"),
    # ---- data convert: gridded fields ----
    Case("poseidon: unknown option", ["data", "convert", "{root}/good.nc", "OUT", "--from", "poseidon", "--option",
                                      "bogus=1"], ["bogus", "channels"], out="f.zarr"),
    Case("well: unknown option", ["data", "convert", "{root}/well.hdf5", "OUT", "--from", "well", "--option", "bogus=1"],
         ["bogus", "stats"], out="f.zarr"),
    Case("pdebench: unknown option", ["data", "convert", "{root}/pdebench.hdf5", "OUT", "--from", "pdebench",
                                      "--option", "bogus=1"], ["bogus", "channels"], out="f.zarr"),
    Case("poseidon: truncated NetCDF", ["data", "convert", "{root}/truncated.nc", "OUT", "--from", "poseidon"],
         ["truncated.nc"], out="f.zarr"),
    Case("poseidon: wrong rank", ["data", "convert", "{root}/rank.nc", "OUT", "--from", "poseidon"], ["rank.nc"],
         out="f.zarr"),
    Case("well: truncated HDF5", ["data", "convert", "{root}/truncated_well.hdf5", "OUT", "--from", "well"],
         ["truncated_well.hdf5"], out="f.zarr"),
    Case("well: no fields", ["data", "convert", "{root}/well.hdf5", "OUT", "--from", "well"], ["well.hdf5"],
         out="f.zarr"),
    Case("pdebench: truncated HDF5", ["data", "convert", "{root}/truncated_pdebench.hdf5", "OUT", "--from", "pdebench"],
         ["truncated_pdebench.hdf5"], out="f.zarr"),
    Case("pdebench: wrong rank", ["data", "convert", "{root}/pdebench.hdf5", "OUT", "--from", "pdebench"],
         ["pdebench.hdf5"], out="f.zarr"),
    # ---- data info: stores ----
    Case("info: not a zarr store", ["data", "info", "{root}/notzarr"], ["notzarr"]),
    Case("info: corrupt zarr.json", ["data", "info", "{root}/corrupt.zarr"], ["corrupt.zarr"]),
    Case("info: zarr without layout", ["data", "info", "{root}/nolayout.zarr"], ["nolayout.zarr", "layout"]),
    Case("info: a CSV instead of a store", ["data", "info", "{root}/s.csv"], ["s.csv"]),
]


def _fill(text: str, fx: dict, out: Path | None) -> str:
    if out is not None:
        text = text.replace("OUT", str(out))
    for k, v in fx.items():
        text = text.replace("{" + k + "}", str(v))
    return text


def _skip_reason(case: Case) -> str | None:
    import torch

    if case.skip == "cuda" and torch.cuda.is_available():
        return "this machine has CUDA"
    if case.skip == "root" and os.geteuid() == 0:
        return "root writes into read-only directories"
    return None


def _run(case: Case, fx: dict, tmp_path: Path):
    out = tmp_path / case.out if case.out else None
    if case.skip == "root":
        (tmp_path / "readonly").mkdir()
        (tmp_path / "readonly").chmod(0o555)
    argv = [_fill(a, fx, out) for a in case.argv]
    env = {**os.environ, "PYTHONPATH": str(HELPERS), "SCIFORMER_DEBUG": "", "PYTHONWARNINGS": "ignore",
           "OMP_NUM_THREADS": "1", **case.env}  # one thread: start-up and tiny models, not throughput
    r = subprocess.run([sys.executable, "-m", "sciformer.cli", *argv], cwd=tmp_path, env=env, capture_output=True,
                       text=True, timeout=300)
    return r, out


@pytest.fixture(scope="module")
def runs(fx, tmp_path_factory):
    """Every case's command, two at a time: the cases are independent and mostly Python start-up, so the
    catalogue takes about half the wall time of running them one by one."""
    from concurrent.futures import ThreadPoolExecutor

    todo = [c for c in CASES if _skip_reason(c) is None]
    dirs = [tmp_path_factory.mktemp("case") for _ in todo]
    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(zip((c.id for c in todo), pool.map(lambda c, d: _run(c, fx, d), todo, dirs)))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, fx, runs):
    reason = _skip_reason(case)
    if reason:
        pytest.skip(reason)
    r, out = runs[case.id]
    both = r.stdout + r.stderr
    assert r.returncode == 1, f"exit {r.returncode}:\n{both[-3000:]}"
    assert "Traceback" not in both, both[-3000:]
    errors = [line for line in r.stderr.splitlines() if ": error: " in line]
    assert len(errors) == 1, r.stderr[-3000:]
    for want in case.expect:
        assert _fill(want, fx, out) in errors[0], errors[0]
    if out is not None:
        assert not out.exists(), f"{out} was left behind"
        assert not [p.name for p in out.parent.glob(f"*{out.name}*")] if out.parent.exists() else True


def test_debug_shows_the_traceback(fx, tmp_path):
    env = {**os.environ, "SCIFORMER_DEBUG": "1"}
    r = subprocess.run([sys.executable, "-m", "sciformer.cli", "data", "convert", str(fx["root"] / "s.csv"),
                        str(tmp_path / "c.zarr"), "--from", "csv", "--option", "tagret=OT"], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "Traceback" in r.stderr and "sciformer data: error: --option tagret" in r.stderr


def test_usage_error_exits_2(tmp_path):
    r = subprocess.run([sys.executable, "-m", "sciformer.cli", "data", "convert", "x.csv"], capture_output=True,
                       text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and "Traceback" not in r.stderr and "--from" in r.stderr
