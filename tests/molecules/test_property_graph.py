"""Graph transformer: E(3)/permutation invariance, periodic-image invariance; PropertyTask learns a toy target."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch_geometric.data import Batch

from sciformer import models
from sciformer.data.atoms import to_pyg
from sciformer.tasks.generative import random_rotations


def _crystal(pos, cell):
    return {"atomic_numbers": np.array([11, 17, 8]), "positions": np.asarray(pos), "cell": np.asarray(cell),
            "pbc": np.ones(3, bool), "properties": {"gap": 1.0}}


def _molecule(pos):
    return {"atomic_numbers": np.array([6, 8, 1, 1, 7]), "positions": np.asarray(pos), "cell": np.zeros((3, 3)),
            "pbc": np.zeros(3, bool), "properties": {"gap": 2.0}}


@pytest.mark.parametrize("name", ["graph-gps-tiny", "graph-gine"])
def test_invariances(name):
    torch.manual_seed(0)
    model = models.get(name, num_targets=1).eval()
    rng = np.random.default_rng(0)
    cell = np.array([[4.0, 0.2, 0], [0.3, 4.2, 0], [0.1, 0.2, 3.9]])
    cpos = rng.random((3, 3)) @ cell
    mpos = rng.normal(size=(5, 3)) * 1.2

    def predict(c_pos, c_cell, m_pos, perm=None):
        m = _molecule(m_pos)
        if perm is not None:
            m = {**m, "atomic_numbers": m["atomic_numbers"][perm], "positions": m["positions"][perm]}
        return model(Batch.from_data_list([to_pyg(_crystal(c_pos, c_cell), 0), to_pyg(m, 1)]))

    ref = predict(cpos, cell, mpos)
    R = random_rotations(1, generator=torch.Generator().manual_seed(3))[0].double().numpy()
    with torch.no_grad():
        assert torch.allclose(ref, predict(cpos @ R.T, cell @ R.T, mpos @ R.T + 5.0), atol=1e-4)  # rotation + translation
        assert torch.allclose(ref, predict(cpos + cell[0] - cell[2], cell, mpos, perm=[4, 2, 0, 3, 1]), atol=1e-4)
        moved = predict(cpos, cell, mpos + np.eye(5, 3) * 0.4)
    assert not torch.allclose(ref[1], moved[1], atol=1e-4)  # it does see the geometry


def test_property_task_learns_and_reports_baseline():
    torch.manual_seed(0)
    from sciformer.tasks.property import PropertyTask

    rng = np.random.default_rng(0)
    data = []
    for _k in range(32):
        d = 0.9 + 0.6 * rng.random()  # target: the C–O distance
        pos = np.array([[0, 0, 0], [d, 0, 0], [-0.6, 0.9, 0], [-0.6, -0.9, 0], [2.4, 0.3, 0.1]])
        s = {**_molecule(pos), "properties": {"gap": d}}
        data.append(to_pyg(s, 1, ["gap"], mean=[1.2], std=[0.17]))
    batch = Batch.from_data_list(data)
    spec = {"properties": ["gap"], "property_mean": [1.2], "property_std": [0.17]}
    task = PropertyTask(model="graph-gps-tiny", data_spec=spec, lr=3e-3)
    logged = {}
    task.log = lambda name, value, **k: logged.__setitem__(name, float(value))
    opt = torch.optim.Adam(task.parameters(), lr=3e-3)
    for _ in range(80):
        loss = task.step(batch, "train")
        opt.zero_grad()
        loss.backward()
        opt.step()
    task.eval()
    task.step(batch, "val")
    assert logged["val/mae_gap"] < 0.5 * logged["val/baseline_mae_gap"]
