"""Atom stores: fine-tune a property model (GPS graph transformer, GIN) on a property over training-system
counts, with a new head where the property is new, against the checkpoint's fresh twin and the mean predictor;
scored by MAE and RMSE in the property's units."""

from __future__ import annotations

import math
from pathlib import Path

from sciformer import checkpoints
from sciformer.errors import SciformerError
from sciformer.finetune.config import SweepConfig, SweepKind
from sciformer.finetune.report import cell_key
from sciformer.finetune.training import train_and_test


def target_property(ck, data: Path, cfg: SweepConfig) -> str:
    """The one property a sweep fine-tunes on: ``--properties NAME``, else the one the checkpoint knows."""
    from sciformer.data.atoms import AtomStore

    have = list(AtomStore(data).property_names)
    wanted = cfg.properties or [p for p in ck.data_spec.get("properties") or [] if p in have]
    if len(wanted) != 1:
        raise SciformerError(f"{data}: choose one property to fine-tune on with --properties NAME (the store has "
                             f"{', '.join(have) or 'none'}; the checkpoint was trained on "
                             f"{', '.join(ck.data_spec.get('properties') or []) or 'none'})")
    if wanted[0] not in have:
        raise SciformerError(f"--properties {wanted[0]}: not a property of {data} (it has {', '.join(have) or 'none'})")
    return wanted[0]


def _mean_predictor(dm, loader, prop: str) -> dict[str, float]:
    """Predict the training mean: errors in the property's units over the test systems."""
    std = dm.spec["property_std"][0]
    abs_sum = sq_sum = count = 0.0
    for batch in loader:
        keep = batch.y_mask[:, 0].bool()
        err = batch.y[keep, 0].double() * std  # y is normalised by the training mean and std
        abs_sum += float(err.abs().sum())
        sq_sum += float((err ** 2).sum())
        count += int(keep.sum())
    if not count:
        raise SciformerError(f"no test system has a value of {prop!r}")
    return {"test/mae": abs_sum / count, "test/rmse": math.sqrt(sq_sum / count)}


def run_cell(ckpt: Path, data: Path, n: int, kind: str, seed: int, cfg: SweepConfig, workdir: Path) -> dict:
    """Train on the first ``n`` systems of the training split; test on ``--test_data`` (else the held-out part
    of ``data``)."""
    from sciformer.data.atoms import AtomsDataModule
    from sciformer.tasks.property import PropertyTask

    ck = checkpoints.read(ckpt, kind="property")
    prop = target_property(ck, data, cfg)
    dm = AtomsDataModule(train=[str(data)], test=[cfg.test_data] if cfg.test_data else None, properties=[prop],
                         batch_size=cfg.batch_size, num_workers=cfg.num_workers, seed=seed, train_systems=n)
    test_loader = None if cfg.test_data else dm.val_dataloader()
    if kind == "mean":
        return _mean_predictor(dm, test_loader or dm.test_dataloader(), prop)
    if kind == "finetuned":
        task = PropertyTask(model=ck.model_name, pretrained=str(ckpt), finetune_mode=cfg.mode, lr=cfg.lr,
                            data_spec=dm.spec)
    else:  # "scratch": the checkpoint's fresh twin
        name, arch = ck.twin()
        task = PropertyTask(model=name, model_options=arch, lr=cfg.scratch_lr, data_spec=dm.spec)
    m = train_and_test(task, dm, cfg, workdir / cell_key(n, kind, seed), test_loader)
    return {"test/mae": m[f"test/mae_{prop}"], "test/rmse": math.sqrt(m[f"test/mse_{prop}"])}


def variables(ck, data: Path, cfg: SweepConfig) -> dict[str, list[str]]:
    prop = target_property(ck, data, cfg)
    known = prop in (ck.data_spec.get("properties") or [])
    return {"properties_reused": [prop] if known else [], "properties_new": [] if known else [prop]}


KIND = SweepKind(
    layout="atoms", model_kind="property", unit="training systems", metric="test/mae",
    metric_text="MAE of the property in its units over the test systems",
    baselines=("scratch", "mean"), defaults={"baselines": ["scratch", "mean"], "lr": 3e-4, "scratch_lr": 1e-3,
                                             "batch_size": 64},
    run_cell=run_cell, variables=variables, tables=("test/rmse",),
    definitions={"rmse": "RMSE of the property in its units over the test systems."})
