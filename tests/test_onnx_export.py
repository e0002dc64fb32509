"""ONNX export (`sciformer.onnx_export`): onnxruntime equals PyTorch (≤ 1e-4 relative, float32) on batch sizes
and grids other than the traced ones, the metadata a torch-free runtime needs, refusals, and the torch-free
rollout example against the PyTorch rollout engine.

Exports take 20–360 s each on the loaded shared 2-core machine (torch.export plus the exporter's graph
translation, pure Python), so every test that exports is marked slow (one FNO export is shared by its parity
test and the example's); the default tests check the FNO decomposition, the refusals and the argument checks.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from sciformer.errors import ConfigError, ExportError  # noqa: E402
from sciformer.models import get, save  # noqa: E402
from sciformer.onnx_export import _RealSpectralConv, export_onnx, read_metadata  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
TOL = 1e-4


def _rel(got: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(got - ref).max() / np.abs(ref).max())


def _ort(path: Path, **feed: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = {i.name for i in sess.get_inputs()}
    return sess.run(None, {k: v for k, v in feed.items() if k in names})[0]


def _operator_parity(path: Path, model, shapes) -> list[float]:
    errors = []
    g = torch.Generator().manual_seed(1)
    for shape in shapes:
        x, t = torch.randn(*shape, generator=g), torch.rand(shape[0], generator=g)
        with torch.no_grad():
            ref = model(x, t).numpy()
        got = _ort(path, x=x.numpy(), t=t.numpy())
        assert got.shape == ref.shape
        errors.append(_rel(got, ref))
    assert max(errors) <= TOL, errors
    return errors


# ---- no export needed ------------------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(16, 18), (17, 19), (9, 11, 13)])
def test_real_spectral_conv_equals_neuraloperator(shape):
    """The real-arithmetic DFT replacement computes neuraloperator's SpectralConv (even and odd grids: upstream
    applies fftshift before its inverse, which moves the kept modes on odd axes; reproduced)."""
    from neuralop.layers.spectral_convolution import SpectralConv

    torch.manual_seed(0)
    modes = (6, 5, 4)[: len(shape)]
    conv = SpectralConv(3, 4, n_modes=modes).eval()
    real = _RealSpectralConv(conv)
    x = torch.randn(2, 3, *shape)
    with torch.no_grad():
        ref, got = conv(x), real(x)
    assert _rel(got.numpy(), ref.numpy()) < 1e-5


def test_opset_and_batch_are_checked(tmp_path):
    out = save(get("itransformer-tiny"), tmp_path / "it")
    with pytest.raises(ConfigError, match="opset ≥ 18"):
        export_onnx(out, opset=17)
    with pytest.raises(ConfigError, match="batch"):
        export_onnx(out, batch=1)


def _export_dir(path: Path, cls: str) -> Path:
    """An export directory of class ``cls`` (the refusal is decided by the class, before any weights load)."""
    import json

    from safetensors.torch import save_file

    from sciformer.models.export import FORMAT

    path.mkdir()
    (path / "config.json").write_text(json.dumps({"format": FORMAT, "class": cls, "config": {}}))
    save_file({"w": torch.zeros(1)}, path / "model.safetensors")
    return path


def test_refuses_generative_and_graph_models(tmp_path):
    out = _export_dir(tmp_path / "dit", "LatentDiT")
    with pytest.raises(ExportError, match=r"LatentDiT models cannot be exported to ONNX: .*sampler.*supports ScOT"):
        export_onnx(out)
    assert not (out / "model.onnx").exists()
    with pytest.raises(ExportError, match=r"GraphTransformer .* data-dependent number of edges \(aten.nonzero\)"):
        export_onnx(_export_dir(tmp_path / "gps", "GraphTransformer"))
    with pytest.raises(ExportError, match="AllAtomAutoencoder models cannot be exported"):
        export_onnx(_export_dir(tmp_path / "vae", "AllAtomAutoencoder"))


# ---- iTransformer --------------------------------------------------------------------------------------------
def test_itransformer_matches_pytorch_on_other_batches_and_variate_counts(tmp_path):
    model = get("itransformer-tiny").eval()
    spec = {"layout": "series", "variates": ["a", "b", "c"], "time_features": "h", "n_time_features": 4,
            "stats": {"a": {"mean": 1.0, "std": 2.0}, "b": {"mean": 0.0, "std": 0.5}, "c": {"mean": -3.0, "std": 1.0}}}
    out = save(model, tmp_path / "it", extra={"data_spec": spec})
    path = export_onnx(out)
    assert path == out / "model.onnx"
    g = torch.Generator().manual_seed(2)
    errors = []
    for b, n in [(1, 3), (5, 11)]:
        x, xm = torch.randn(b, 24, n, generator=g), torch.rand(b, 24, 4, generator=g) - 0.5
        with torch.no_grad():
            ref = model(x, xm).numpy()
        got = _ort(path, x=x.numpy(), x_mark=xm.numpy())
        assert got.shape == (b, 12, n)
        errors.append(_rel(got, ref))
    assert max(errors) <= TOL, errors
    meta = read_metadata(path)
    assert meta["inputs"] == {"x": ["batch", 24, "variates"], "x_mark": ["batch", 24, 4]}
    assert meta["normalization"]["variates"] == {"mean": [1.0, 0.0, -3.0], "std": [2.0, 0.5, 1.0]}
    assert meta["exporter"] == "dynamo" and meta["opset"] >= 18


# ---- FNO (and the torch-free rollout example) ---------------------------------------------------------------------
STATS = {"u": {"mean": 0.2, "std": 1.5}, "v": {"mean": -0.1, "std": 0.7}, "c": {"mean": 1.0, "std": 0.25}}
FIELD_SPEC = {"layout": "fields", "inputs": ["u", "v", "c"], "outputs": ["u", "v"], "in_channels": 3,
              "out_channels": 2, "stats": STATS, "spatial_shape": [16, 16], "steady": False,
              "roles": {"u": "state", "v": "state", "c": "coefficient"}}


@pytest.fixture(scope="module")
def fno_export(tmp_path_factory):
    model = get("fno-2d-tiny", in_channels=3, out_channels=2, modes=4, width=8, n_layers=1).eval()
    out = save(model, tmp_path_factory.mktemp("fno") / "export", extra={"data_spec": FIELD_SPEC})
    return export_onnx(out), model


def test_fno_matches_pytorch_on_two_grids_and_other_batches(fno_export):
    path, model = fno_export
    _operator_parity(path, model, [(1, 3, 16, 16), (4, 3, 16, 16), (3, 3, 24, 20), (1, 3, 17, 13)])
    meta = read_metadata(path)
    assert meta["dynamic_spatial"] and meta["inputs"]["x"] == ["batch", 3, "s0", "s1"]
    assert meta["variables"] == {"inputs": ["u", "v", "c"], "outputs": ["u", "v"]}
    assert meta["normalization"]["inputs"]["std"] == [1.5, 0.7, 0.25]


@pytest.fixture
def field_store(tmp_path):
    from sciformer.data.store import write_store

    rng = np.random.default_rng(0)
    x = np.linspace(0, 1, 16, endpoint=False)
    time = np.linspace(0.0, 2.0, 5)
    data = {"u": rng.normal(0.2, 1.5, (2, 5, 16, 16)), "v": rng.normal(-0.1, 0.7, (2, 5, 16, 16)),
            "c": rng.normal(1.0, 0.25, (2, 16, 16))}
    variables = {"u": {"role": "state"}, "v": {"role": "state"}, "c": {"role": "coefficient"}}
    return write_store(tmp_path / "s.zarr", data, variables, time, {"x": x, "y": x},
                       {"pde": "test", "boundary_conditions": {"x": "periodic", "y": "periodic"}}), data


def _torch_rollout(model, initial: np.ndarray, steps: int, dt: float) -> np.ndarray:
    """The product's PyTorch rollout loop (sciformer.rollout.engine.roll) on the same initial state."""
    from sciformer.rollout.engine import roll
    from sciformer.rollout.plan import Plan

    mean = np.array([STATS[v]["mean"] for v in "uvc"], np.float32)[:, None, None]
    std = np.array([STATS[v]["std"] for v in "uvc"], np.float32)[:, None, None]
    xn = torch.from_numpy((initial.astype(np.float32) - mean) / std)
    with torch.no_grad():
        res = roll(model, xn[None, None, :2], xn[None, 2:], Plan(steps=steps), [dt] * steps, [0, 1])
    return res.pred[0].numpy() * std[:2] + mean[:2]


def _run_example(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-X", "importtime", str(ROOT / "examples" / "onnx_rollout.py"), *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_example_rollout_without_torch_matches_the_pytorch_rollout(fno_export, field_store, tmp_path):
    path, model = fno_export
    store, data = field_store
    out = tmp_path / "pred.npy"
    proc = _run_example(str(path), str(store), "--trajectory", "1", "--start", "1", "--steps", "3",
                        "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "torch imported: False" in proc.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    assert "onnxruntime" in imported and "torch" not in imported
    pred = np.load(out)
    initial = np.stack([data["u"][1, 1], data["v"][1, 1], data["c"][1]])
    ref = _torch_rollout(model, initial, 3, dt=0.5 / 2.0)  # snapshots 0.5 apart, span 2
    assert pred.shape == ref.shape == (3, 2, 16, 16)
    assert _rel(pred, ref) <= TOL

    # the same from an .npy initial state with the lead time given (in process: the torch check is above)
    import runpy

    example = runpy.run_path(str(ROOT / "examples" / "onnx_rollout.py"))
    np.save(tmp_path / "init.npy", initial)
    assert example["main"]([str(path), str(tmp_path / "init.npy"), "--dt", "0.25", "--steps", "3", "--out",
                            str(tmp_path / "p2.npy")]) == 0
    np.testing.assert_allclose(np.load(tmp_path / "p2.npy"), pred, rtol=0, atol=1e-6)


# ---- slow: scOT and FactFormer -------------------------------------------------------------------------------
SCOT_TINY = dict(in_channels=2, out_channels=2, embed_dim=16, depths=(1, 1), num_heads=(2, 4), skip_blocks=(1, 0),
                 window_size=4, image_size=32)


@pytest.mark.slow
def test_scot_matches_pytorch_at_two_resolutions(tmp_path):
    """scOT's graph is fixed to one grid (its windows, shifts and masks are computed from the grid size): one
    export per resolution, each checked on batch sizes other than the traced one."""
    model = get("scot-tiny", **SCOT_TINY).eval()
    out = save(model, tmp_path / "scot")
    square = export_onnx(out)  # the nominal 32² grid
    _operator_parity(square, model, [(1, 2, 32, 32), (3, 2, 32, 32)])
    other = export_onnx(out, size=(24, 40), out=tmp_path / "scot_24x40.onnx")
    _operator_parity(other, model, [(1, 2, 24, 40), (5, 2, 24, 40)])
    meta = read_metadata(other)
    assert meta["inputs"]["x"] == ["batch", 2, 24, 40] and not meta["dynamic_spatial"]


def test_factformer_matches_pytorch_on_two_grids(tmp_path):
    model = get("factformer-2d-tiny", in_channels=2, out_channels=2, dim=16, depth=1, heads=2, dim_head=8).eval()
    out = save(model, tmp_path / "ff")
    path = export_onnx(out, size=(16, 16))
    _operator_parity(path, model, [(1, 2, 16, 16), (3, 2, 16, 16), (2, 2, 20, 12)])
    assert read_metadata(path)["dynamic_spatial"]
