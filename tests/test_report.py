"""report: markdown tables (exact text) and PNG plots (written atomically, sized by their grid, NaN-safe)."""

from __future__ import annotations

import numpy as np
import pytest
from matplotlib.image import imread

from sciformer.report import markdown_table, plot_error_growth, plot_snapshots, plot_spectra


def test_markdown_table_exact():
    rows = [{"model": "scot-t", "vrmse": 0.123456, "steps": 10, "note": "a|b"},
            {"model": "persistence", "vrmse": float("nan"), "steps": 10}]
    assert markdown_table(rows) == (
        "| model | vrmse | steps | note |\n"
        "|---|---|---|---|\n"
        "| scot-t | 0.1235 | 10 | a\\|b |\n"
        "| persistence | — | 10 | — |"
    )
    assert markdown_table(rows, ["steps", "model"], floatfmt=".2f").splitlines()[2] == "| 10 | scot-t |"


def _png(path):
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return imread(path)


def test_error_growth_plot(tmp_path):
    steps = 12
    per_step = {"vrmse": {"u": np.linspace(0.01, 1, steps), "v": np.full(steps, np.nan)},
                "correlation": {"u": np.linspace(1, 0.5, steps), "v": np.linspace(1, 0.7, steps)}}
    p = plot_error_growth(per_step, tmp_path / "g.png", thresholds={"correlation": 0.8}, truth_steps=10)
    img = _png(p)
    one = _png(plot_error_growth({"vrmse": per_step["vrmse"]}, tmp_path / "g1.png"))
    assert img.shape[1] > 1.8 * one.shape[1]  # one panel per metric
    assert not list(tmp_path.glob(".*tmp"))  # no temporary left behind
    with pytest.raises(ValueError):
        plot_error_growth({}, tmp_path / "none.png")


def test_snapshot_grid_2d_1d_3d_and_missing_truth(tmp_path):
    rng = np.random.default_rng(0)
    pred = {"u": rng.random((3, 16, 8)), "p": rng.random((3, 16, 8))}
    truth = {"u": rng.random((3, 16, 8)), "p": rng.random((3, 16, 8))}
    truth["p"][2] = np.nan  # no ground truth at the last shown step
    img = _png(plot_snapshots(truth, pred, [1, 5, 10], tmp_path / "s.png"))
    small = _png(plot_snapshots({"u": truth["u"][:1]}, {"u": pred["u"][:1]}, [1], tmp_path / "s1.png"))
    assert img.shape[0] > 1.8 * small.shape[0] and img.shape[1] > 2.5 * small.shape[1]  # rows: 3 per variable
    _png(plot_snapshots({"u": rng.random((2, 32))}, {"u": rng.random((2, 32))}, [1, 2], tmp_path / "line.png"))
    _png(plot_snapshots({"u": rng.random((1, 8, 8, 8))}, {"u": rng.random((1, 8, 8, 8))}, [4], tmp_path / "3d.png"))


def test_spectra_plot(tmp_path):
    k = np.arange(9)
    spectra = {"u": {1: (k, 1.0 / (1 + k) ** 2, 1.1 / (1 + k) ** 2), 20: (k, np.zeros(9), np.full(9, np.nan))},
               "v": {1: (k, 1.0 / (1 + k) ** 3, 0.9 / (1 + k) ** 3)}}
    _png(plot_spectra(spectra, tmp_path / "e.png"))
