"""Every YAML under configs/ parses against the CLI, and every full-run config is *instantiated* (task, data
module and trainer built by the real LightningCLI on tiny stores): a typo in a shipped config, an option its
model does not have or a wrong class argument fails here."""

import dataclasses
import importlib
import json
from pathlib import Path

import numpy as np
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


# ---- instantiation -------------------------------------------------------------------------------------------
# Each store a config names is replaced by a tiny store of the same kind, chosen by the file name's prefix (the
# list keeps its length, so a mixture stays a mixture). A config naming a store of a new kind fails until a tiny
# stand-in is added here.
STORE_KINDS = {"ns_": "field2d", "tgv3d": "field3d", "qm9": "molecules", "perov_5": "perov", "carbon_24": "carbon"}
STORE_KEYS = ("stores", "train", "test")  # data init_args holding store lists
SERIES_ROWS = 2400  # train split (70 %) holds lookback 96 + the largest horizon 720


def _atoms(n, seed, crystal, props):
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        if crystal == "perov":  # cubic ABO3
            a = 3.9 + 0.1 * rng.random()
            frac = np.array([[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]])
            z, cell = [38, 22, 8, 8, 8], np.eye(3) * a
        elif crystal == "carbon":
            a = 3.57 + 0.05 * rng.random()
            frac = np.array([[0, 0, 0], [0.25, 0.25, 0.25], [0.5, 0.5, 0], [0.75, 0.75, 0.25]])
            z, cell = [6, 6, 6, 6], np.eye(3) * a
        else:  # a small organic molecule, QM9's elements
            z = [6, 8, 7, 1, 1, 1]
            pos = np.array([[0, 0, 0], [1.2, 0, 0], [-0.7, 1.2, 0], [-0.6, -0.9, 0], [-0.3, 2.0, 0.4], [2.0, 0.4, 0]])
            out.append({"atomic_numbers": np.array(z), "positions": pos + 0.05 * rng.normal(size=pos.shape),
                        "properties": {p: float(rng.normal()) for p in props}})
            continue
        out.append({"atomic_numbers": np.array(z), "positions": frac @ cell, "cell": cell, "pbc": np.ones(3, bool),
                    "properties": {p: float(rng.normal()) for p in props}})
    return out


def _fit_and_save(task, dm, path):
    import lightning as L

    L.seed_everything(0)
    trainer = L.Trainer(max_steps=1, limit_val_batches=0, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(task, datamodule=dm)
    trainer.save_checkpoint(path)
    return str(path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """Tiny stand-ins for every store kind the configs name, and the checkpoints some configs start from."""
    import pandas as pd
    from heat import heat_store

    from sciformer.data.atoms import AtomsDataModule, write_store
    from sciformer.data.series_module import SeriesDataModule
    from sciformer.tasks.forecast import ForecastTask
    from sciformer.tasks.generative import AutoencoderTask

    tmp = tmp_path_factory.mktemp("tiny")
    stores = {"field2d": str(heat_store(tmp / "heat.zarr", ["u", "v"], n=8, seed=0))}
    assert main(["data", "build", "tgv-3d", "--out", str(tmp / "tgv.zarr"), "--trajectories", "4", "--resolution", "8",
                 "--seed", "0", "--option", "t_end=0.2", "--option", "snapshots=3", "--option", "workers=1"]) == 0
    stores["field3d"] = str(tmp / "tgv.zarr")

    h = np.arange(SERIES_ROWS)
    rng = np.random.default_rng(0)
    df = pd.DataFrame({"date": pd.date_range("2020-01-01", periods=SERIES_ROWS, freq="h"),
                       "a": np.sin(2 * np.pi * h / 24) + 0.1 * rng.normal(size=SERIES_ROWS),
                       "b": np.cos(2 * np.pi * h / 168) + 0.1 * rng.normal(size=SERIES_ROWS),
                       "OT": 5 + rng.normal(size=SERIES_ROWS)})
    df.to_csv(tmp / "series.csv", index=False)
    assert main(["data", "convert", str(tmp / "series.csv"), str(tmp / "series.zarr"), "--from", "csv"]) == 0
    stores["series"] = str(tmp / "series.zarr")

    # every property a molecule config serves, in the store kind that has it offline
    for kind, domain, props in (("molecules", "molecule", ["mmff94_energy"]), ("perov", "crystal", ["heat_ref", "dir_gap"]),
                                ("carbon", "crystal", ["energy_per_atom"])):
        stores[kind] = str(write_store(tmp / f"{kind}.zarr", _atoms(12, len(stores), kind, props), domain=domain,
                                       source="test", report={"written": 12}, units={p: "eV" for p in props}))

    dm = AtomsDataModule(train=[stores["molecules"], stores["perov"]], properties=["heat_ref", "dir_gap"], batch_size=8)
    ae = _fit_and_save(AutoencoderTask(model="adit-vae-tiny", data_spec=dm.spec), dm, tmp / "ae.ckpt")
    dm = SeriesDataModule([stores["series"]], lookback=96, horizon=96, batch_size=16)
    series = _fit_and_save(ForecastTask(model="itransformer-tiny", data_spec=dm.spec), dm, tmp / "series.ckpt")
    # checkpoint arguments of the task classes, by task class name
    ckpts = {"AutoencoderTask": {"init_from": ae}, "LatentFlowTask": {"autoencoder": ae},
             "ForecastTask": {"pretrained": series}}
    return {"stores": stores, "ckpts": ckpts}


def _store_for(path: str, data_class: str, stores: dict) -> str:
    if data_class.endswith("SeriesDataModule"):
        return stores["series"]
    kind = next((k for prefix, k in STORE_KINDS.items() if Path(path).name.startswith(prefix)), None)
    assert kind is not None, f"no tiny stand-in for store {path}; add its prefix to STORE_KINDS"
    return stores[kind]


def _class(class_path: str):
    module, _, name = class_path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _same(a, b) -> bool:
    norm = lambda x: list(x) if isinstance(x, (list, tuple)) else x  # noqa: E731
    return norm(a) == norm(b)


RUN_FIELDS = ("max_epochs", "max_steps", "precision", "gradient_clip_val", "log_every_n_steps",
              "check_val_every_n_epoch", "limit_val_batches")


@pytest.mark.parametrize("path", FULL_RUNS, ids=map(_id, FULL_RUNS))
def test_full_run_config_instantiates(path, tiny, tmp_path, monkeypatch):
    """`sciformer fit -c CONFIG` up to (not including) `trainer.fit`: the real CLI builds the config's task with its
    own model options, its data module on tiny stores and its trainer; then each is checked against the YAML."""
    from sciformer import models
    from sciformer.lightning_cli import SciformerCLI

    class BuildOnly(SciformerCLI):
        def _run_subcommand(self, subcommand):  # everything `fit` builds, without fitting
            pass

    monkeypatch.chdir(tmp_path)  # the configs' run directories and loggers are relative
    monkeypatch.setattr("sys.argv", ["sciformer"])  # the CLI reads only `args`, not pytest's command line
    cfg = yaml.safe_load(path.read_text())
    mcfg, dcfg, tcfg = cfg["model"], cfg["data"], cfg["trainer"]
    margs, dargs = mcfg.get("init_args") or {}, dcfg.get("init_args") or {}
    task_name = mcfg["class_path"].rpartition(".")[2]
    args = ["fit", "-c", str(path)]
    stores = {}
    for key in STORE_KEYS:
        if dargs.get(key):
            paths = [dargs[key]] if isinstance(dargs[key], str) else dargs[key]
            stores[key] = [_store_for(p, dcfg["class_path"], tiny["stores"]) for p in paths]
            args.append(f"--data.init_args.{key}={json.dumps(stores[key])}")
    ckpts = {k: v for k, v in tiny["ckpts"].get(task_name, {}).items() if margs.get(k)}  # only those it sets
    args += [f"--model.init_args.{k}={v}" for k, v in ckpts.items()]

    cli = BuildOnly(args=args)
    task, dm, trainer = cli.model, cli.datamodule, cli.trainer

    # the task: the config's class and arguments, its data spec linked from the data module
    assert type(task) is _class(mcfg["class_path"])
    for k, v in margs.items():
        assert _same(task.hparams[k], ckpts.get(k, v)), (k, task.hparams[k], v)
    assert task.hparams.data_spec == dm.spec
    # the network: the registered size with the config's model_options (and what the data sizes)
    if margs.get("model"):
        name = margs["model"]
        assert isinstance(task.model, models.model_class(name))
        expected = models.config(name, **{**task.model_overrides(), **(margs.get("model_options") or {})})
        assert dataclasses.asdict(task.model.config) == dataclasses.asdict(expected)
    else:  # the architecture of the checkpoint it starts from
        from sciformer import checkpoints

        assert type(task.model).__name__ == checkpoints.read(ckpts["pretrained"]).model_class

    # the data module: the config's class and arguments, on the tiny stores
    assert type(dm) is _class(dcfg["class_path"])
    for k, v in dargs.items():
        got = dm.hparams[k] if k in dm.hparams else getattr(dm, {"train": "train_paths", "test": "test_paths"}.get(k, k))
        assert _same(got, stores.get(k, v)), (k, got, v)

    # the trainer: the config's run settings, logger and callbacks
    for k in RUN_FIELDS:
        if k in tcfg:
            assert _same(getattr(trainer, k), tcfg[k]), (k, getattr(trainer, k), tcfg[k])
    assert Path(trainer.default_root_dir).resolve() == (tmp_path / tcfg.get("default_root_dir", "runs")).resolve()
    if "logger" in tcfg:
        assert type(trainer.logger) is _class(tcfg["logger"]["class_path"])
        save_dir = (tcfg["logger"].get("init_args") or {}).get("save_dir")
        if save_dir:
            assert Path(trainer.logger.save_dir).resolve() == (tmp_path / save_dir).resolve()
    for cb in tcfg.get("callbacks", []):
        cls = _class(cb["class_path"])
        found = [c for c in trainer.callbacks if type(c) is cls]
        assert found, f"callback {cb['class_path']} missing"
        for k, v in (cb.get("init_args") or {}).items():
            if k == "dirpath":
                assert any(Path(c.dirpath).resolve() == (tmp_path / v).resolve() for c in found), (k, v)
            elif hasattr(found[0], k):
                assert any(_same(getattr(c, k), v) for c in found), (cb["class_path"], k, v)
    if "max_time" in tcfg:
        from lightning.pytorch.callbacks import Timer

        assert any(isinstance(c, Timer) for c in trainer.callbacks)
    assert cli.config["fit"]["seed_everything"] == cfg.get("seed_everything", 0)
