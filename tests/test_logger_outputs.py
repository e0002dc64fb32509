"""Plots and tables of `sciformer rollout` and `sciformer finetune` reach TensorBoard (read back with TensorBoard's
own event reader) and wandb (offline), not only the files."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from heat import heat_store

from sciformer import cli, loggers, models


def events(directory: Path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    (f,) = directory.glob("events.out.tfevents.*")
    acc = EventAccumulator(str(f), size_guidance={"images": 0, "tensors": 0, "scalars": 0})
    acc.Reload()
    return acc


def text_of(acc, tag: str) -> str:
    """A text summary (TensorBoard's text plugin stores ``tag`` as ``tag/text_summary``)."""
    assert f"{tag}/text_summary" in acc.Tags()["tensors"]
    return acc.Tensors(f"{tag}/text_summary")[0].tensor_proto.string_val[0].decode()


def png_size(path: Path) -> tuple[int, int]:
    import matplotlib.image as mpimg

    h, w = mpimg.imread(str(path)).shape[:2]
    return w, h


def test_rollout_plots_and_metrics_reach_tensorboard(tmp_path, capsys):
    from sciformer.data.fields import FieldDataModule

    store = heat_store(tmp_path / "d.zarr", ["u", "v"], n=4, seed=0)
    spec = FieldDataModule(stores=[str(store)], splits=(0.5, 0.0, 0.5)).spec
    model = models.get("factformer-2d-tiny", in_channels=2, out_channels=2, dim=16, depth=1, heads=2, dim_head=8)
    exported = models.save(model, tmp_path / "e", extra={"data_spec": spec})
    out = tmp_path / "ro" / "rollout.zarr"
    argv = ["rollout", "--ckpt", str(exported), "--data", str(store), "--splits", "[0.5,0.0,0.5]", "--steps", "3",
            "--logger", "tensorboard", "--out", str(out)]
    assert cli.main(argv) == 0, capsys.readouterr().err
    acc = events(tmp_path / "ro" / "tensorboard")
    tags = acc.Tags()
    for name in ("error_growth", "snapshots", "spectra"):
        assert f"rollout/{name}" in tags["images"]
        (img,) = acc.Images(f"rollout/{name}")
        assert (img.width, img.height) == png_size(tmp_path / "ro" / f"{name}.png")
    summary = json.loads((tmp_path / "ro" / "summary.json").read_text())
    table = text_of(acc, "rollout/metrics")
    last = summary["per_step"]["vrmse"]["u"][-1]
    assert f"| vrmse | u | {summary['per_step']['vrmse']['u'][0]:.6g} | {last:.6g} |" in table
    scalars = [e.value for e in acc.Scalars("rollout/vrmse_mean")]
    np.testing.assert_allclose(scalars, summary["per_step"]["vrmse"]["mean"], rtol=1e-6)


def test_finetune_plots_and_tables_reach_tensorboard(tmp_path):
    from sciformer.finetune import SweepConfig, fields
    from sciformer.finetune.report import log_outputs, summarise, write_report

    cfg = SweepConfig(samples=[4, 16], baselines=["scratch"], seeds=[0], epochs=1, batch_size=4)
    rng = np.random.default_rng(0)
    cells = {f"n={n}/{m}/seed=0": {fields.KIND.metric: float(rng.uniform(0.1, 1))}
             for n in cfg.samples for m in ("finetuned", "scratch")}
    summary = summarise(cells, cfg, fields.KIND)
    write_report(tmp_path, summary, cfg, {"data": "wave.zarr", "ckpt": "pre.ckpt"}, fields.KIND)
    log = loggers.open_logger("tensorboard", tmp_path, "ft")
    sent = log_outputs(log, tmp_path, summary, cfg)
    log.close()
    acc = events(tmp_path / "tensorboard")
    assert acc.Tags()["images"] == ["finetune/error_vs_samples"] and "finetune/error_vs_samples" in sent
    (img,) = acc.Images("finetune/error_vs_samples")
    assert (img.width, img.height) == png_size(tmp_path / "error_vs_samples.png")
    metric = fields.KIND.metric
    table = text_of(acc, f"finetune/{metric}")
    for n in cfg.samples:
        tuned, scratch = summary["table"]["finetuned"][n]["mean"], summary["table"]["scratch"][n]["mean"]
        assert f"| {n} | {tuned:.6g} | 0 | {scratch:.6g} | 0 | {scratch / tuned:.6g} |" in table


@pytest.mark.slow  # wandb starts its service process: ~10 s
def test_wandb_offline_gets_images_and_tables(tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(tmp_path / "p.png")
    plt.close(fig)
    log = loggers.open_logger("wandb", tmp_path, "test")
    log.image("rollout/error_growth", tmp_path / "p.png")
    log.table("rollout/metrics", ["metric", "value"], [["vrmse", 0.25]])
    log.close()
    (run,) = (tmp_path / "wandb").glob("offline-run-*")
    media = run / "files" / "media"
    (image,) = (media / "images" / "rollout").glob("error_growth_*.png")
    assert png_size(image) == png_size(tmp_path / "p.png")
    (table,) = (media / "table" / "rollout").glob("metrics_*.table.json")
    got = json.loads(table.read_text())
    assert got["columns"] == ["metric", "value"] and got["data"] == [["vrmse", 0.25]]


def test_an_unknown_logger_is_refused_before_work(tmp_path, capsys):
    assert cli.main(["rollout", "--ckpt", str(tmp_path / "x"), "--data", str(tmp_path / "d"), "--logger", "mlflow",
                     "--out", str(tmp_path / "r.zarr")]) == 1
    assert "--logger 'mlflow': use one of none, tensorboard, wandb" in capsys.readouterr().err


def test_a_runs_lightning_tensorboard_logger_is_reused(tmp_path):
    import matplotlib
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(2, 1))
    ax.plot([0, 1])
    fig.savefig(tmp_path / "p.png")
    plt.close(fig)
    tb = TensorBoardLogger(tmp_path / "runs", name="fit", version=0)
    log = loggers.from_lightning(tb)
    log.image("finetune/error_vs_samples", tmp_path / "p.png")
    log.table("finetune/table", ["samples", "mean"], [[8, 0.5]])
    log.close()
    tb.finalize("success")
    acc = events(Path(tb.log_dir))
    assert acc.Tags()["images"] == ["finetune/error_vs_samples"]
    assert "| 8 | 0.5 |" in text_of(acc, "finetune/table")
    assert loggers.from_lightning(CSVLogger(tmp_path)) is None
