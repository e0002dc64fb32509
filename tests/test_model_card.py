"""The model card of an export: Hub front matter that parses, and every number equal to the one the run recorded."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from sciformer import cli, model_card
from sciformer.data.store import write_store


def flow_store(path: Path, n: int = 6) -> Path:
    """Decaying Fourier modes (the periodic heat equation) with units, as a store."""
    rng = np.random.default_rng(0)
    x, t = np.linspace(0, 1, 16, endpoint=False), np.linspace(0, 1, 5)
    X, Y = np.meshgrid(x, x, indexing="ij")
    data = {v: sum(rng.normal(size=(n, 1, 1, 1)) * np.exp(-0.8 * (k * k + m * m) * t)[None, :, None, None]
                   * np.sin(2 * np.pi * (k * X + m * Y))[None, None] for k, m in [(1, 0), (0, 1), (1, 1)])
            for v in ("u", "p")}
    meta = {"u": {"role": "state", "units": "m/s"}, "p": {"role": "state", "units": "Pa"}}
    return write_store(path, data, meta, t, {"x": x, "y": x},
                       {"pde": "heat", "boundary_conditions": {"x": "periodic", "y": "periodic"}})


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A real `sciformer fit` run (CSV logger, config.yaml, checkpoint), as small as it goes."""
    tmp = tmp_path_factory.mktemp("run")
    store = flow_store(tmp / "flow.zarr")
    cfg = tmp / "fit.yaml"
    cfg.write_text(f"""seed_everything: 0
trainer:
  max_epochs: 2
  limit_train_batches: 2
  limit_val_batches: 1
  accelerator: cpu
  log_every_n_steps: 1
  enable_progress_bar: false
  enable_model_summary: false
  default_root_dir: {tmp}/runs
  logger:
    class_path: lightning.pytorch.loggers.CSVLogger
    init_args: {{save_dir: {tmp}/runs}}
model:
  class_path: sciformer.tasks.operator.OperatorTask
  init_args:
    model: factformer-2d-tiny
    model_options: {{dim: 16, depth: 1, heads: 2, dim_head: 8}}
    lr: 3.0e-3
data:
  class_path: sciformer.data.fields.FieldDataModule
  init_args:
    stores: [{store}]
    batch_size: 8
""")
    assert cli.main(["fit", "-c", str(cfg)]) == 0
    (ckpt,) = (tmp / "runs" / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")
    return ckpt


def front_matter(text: str) -> dict:
    assert text.startswith("---\n")
    head, _, _ = text[4:].partition("\n---\n")
    return yaml.safe_load(head)


def last_logged(metrics_csv: Path) -> dict[str, float]:
    out = {}
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            out.update({k: float(v) for k, v in row.items() if k not in ("epoch", "step") and v})
    return out


def test_card_of_a_training_run(run, tmp_path, capsys):
    out = tmp_path / "export"
    assert cli.main(["export", str(run), str(out)]) == 0, capsys.readouterr().err
    text = (out / "README.md").read_text()
    meta = front_matter(text)
    assert meta["library_name"] == "sciformer" and meta["license"] == "apache-2.0"
    assert {"sciformer", "factformer", "operator", "heat"} <= set(meta["tags"])
    # the model-index holds the model's last logged metrics (not the persistence baseline's), as recorded
    recorded = last_logged(run.parent.parent / "metrics.csv")
    (entry,) = meta["model-index"]
    got = {m["type"]: m["value"] for r in entry["results"] for m in r["metrics"]}
    assert got == {k: v for k, v in recorded.items() if "persistence" not in k}
    assert {"train/loss", "val/loss", "val/median_rel_l1"} <= set(got)
    assert f"made by `sciformer fit -c {run.parent.parent / 'config.yaml'}`" in text
    # huggingface_hub reads the same front matter back
    from huggingface_hub import ModelCard

    assert ModelCard(text).data.library_name == "sciformer"
    # variables: units read from the store, normalisation statistics equal to the exported data spec's
    spec = json.loads((out / "config.json").read_text())["data_spec"]
    for var, units in (("u", "m/s"), ("p", "Pa")):
        st = spec["stats"][var]
        assert f"| {var} | state | {units} | yes | yes | {st['mean']:.6g} | {st['std']:.6g} |" in text
    for section in ("## Training data", "## Metrics", "## Intended use and limits", "## Citation"):
        assert section in text
    assert "data card: not recorded" in text  # the store names no builder with a card
    assert "lr: `0.003`" in text


def test_card_of_an_export_says_what_is_not_recorded(tmp_path):
    from sciformer import models

    exported = models.save(models.get("itransformer-tiny"), tmp_path / "bare")
    text, record = model_card.build(exported)
    assert record.metrics == [] and "model-index" not in front_matter(text)
    assert front_matter(text)["pipeline_tag"] == "time-series-forecasting"
    assert "Training metrics: not recorded" in text and "Training data: not recorded." in text
    assert "Variables: not recorded." in text


def test_card_carries_a_finetune_sweep(tmp_path, capsys):
    """A results.json in the format the sweep writes (its own summarise), and the card's numbers equal to it."""
    from sciformer import models
    from sciformer.finetune import SweepConfig, fields
    from sciformer.finetune.report import summarise

    cfg = SweepConfig(samples=[4, 16], baselines=["scratch"], seeds=[0, 1], epochs=3)
    rng = np.random.default_rng(1)
    cells = {f"n={n}/{m}/seed={s}": {fields.KIND.metric: float(rng.uniform(0.05, 0.5))}
             for n in cfg.samples for m in ("finetuned", "scratch") for s in cfg.seeds}
    summary = json.loads(json.dumps(summarise(cells, cfg, fields.KIND)))  # as read back from the file
    res = {"kind": "fields", "metric": fields.KIND.metric, "unit": fields.KIND.unit, "ckpt": "pre.ckpt",
           "data": "data/wave.zarr", "config": {"samples": [4, 16], "baselines": ["scratch"], "seeds": [0, 1],
                                                "epochs": 3, "mode": "full"}, "cells": cells, "summary": summary}
    (tmp_path / "ft").mkdir()
    (tmp_path / "ft" / "results.json").write_text(json.dumps(res))
    exported = models.save(models.get("factformer-2d-tiny", in_channels=2, out_channels=2), tmp_path / "e")
    out = tmp_path / "card"
    assert cli.main(["export", str(exported), str(out), "--results", str(tmp_path / "ft" / "results.json")]) == 0
    text = (out / "README.md").read_text()
    (entry,) = front_matter(text)["model-index"]
    got = {m["type"]: m["value"] for r in entry["results"] for m in r["metrics"]}
    metric = fields.KIND.metric
    want = {f"{metric} (finetuned, n={n})": summary["table"]["finetuned"][str(n)]["mean"] for n in cfg.samples}
    assert got == want  # the scratch baseline's numbers are in the body, not under this model's name
    for n in cfg.samples:
        v = summary["table"]["scratch"][str(n)]
        assert f"| {n} | scratch | {v['mean']:.6g} | {v['std']:.2g} | 2 |" in text
    ag = summary["gains"]["scratch"]["AG"]
    assert f"n=16: {ag['16']:.3g}" in text
    assert "sciformer finetune --ckpt pre.ckpt --data data/wave.zarr --samples 4,16 --baseline scratch --seeds 0,1 " \
           "--epochs 3 --mode full" in text
    assert all(math.isfinite(v) for v in got.values())


def test_a_bad_results_file_is_one_clear_error(tmp_path, capsys):
    from sciformer import models

    exported = models.save(models.get("itransformer-tiny"), tmp_path / "e")
    (tmp_path / "x.json").write_text("{}")
    assert cli.main(["export", str(exported), str(tmp_path / "out"), "--results", str(tmp_path / "x.json")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "neither a `sciformer finetune` results.json" in err
    assert not (tmp_path / "out").exists()


def test_the_data_card_is_found_by_the_builder_name():
    assert model_card.data_card({"attrs": {"generator": {"name": "wave-gauss"}}}) == "datasets/wave-2d/README.md"
    assert model_card.data_card({"attrs": {"generator": {"name": "ns-sines"}}}) == "datasets/ns-2d/README.md"
    assert model_card.data_card({"attrs": {}}) is None
