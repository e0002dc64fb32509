"""Crystal metrics: real structures valid; overlapping atoms and unbalanceable compositions invalid."""

from __future__ import annotations

import numpy as np
import pytest

from sciformer.metrics import crystals as C

NACL = {"atomic_numbers": [11, 17], "frac_coords": [[0, 0, 0], [0.5, 0.5, 0.5]], "cell": np.eye(3) * 3.99}


def test_structural_validity_and_controls():
    assert C.structural_validity(NACL)
    overlap = {**NACL, "frac_coords": [[0, 0, 0], [0.05, 0, 0]]}
    assert not C.structural_validity(overlap)
    # an atom too close to its own periodic image (tiny cell)
    assert not C.structural_validity({"atomic_numbers": [6], "frac_coords": [[0, 0, 0]], "cell": np.eye(3) * 0.4})
    assert not C.structural_validity({**NACL, "cell": np.diag([3.99, 3.99, 1e-4])})


@pytest.mark.parametrize("formula,ok", [([11, 17], True), ([12, 8], True), ([56, 22, 8, 8, 8], True),
                                        ([6] * 8, True), ([26, 28, 29], True),  # element, alloy
                                        ([11, 9, 9], False), ([19, 19, 19, 9], False), ([11, 11, 8, 8, 8], False)])
def test_compositional_validity(formula, ok):
    assert C.compositional_validity(formula) is ok


def test_common_states_stricter():
    assert C.compositional_validity([29, 48, 7, 7, 7], "all")  # CuCdN3 from Perov-5
    assert not C.compositional_validity([29, 48, 7, 7, 7], "common")


def test_validity_of_cif_text_and_real_rows(shared_data):
    import pandas as pd

    for name in ("perov_5", "carbon_24"):
        df = pd.read_csv(shared_data / "molecules" / name / "val.csv").head(30)
        v = C.validity(df["cif"].tolist())
        assert np.mean(v) >= 0.95, name


def test_matching_is_invariant_and_discriminating():
    from sciformer.metrics.crystals import match

    rot = np.array([[0, -1, 0], [1, 0, 0], [0, 0, 1.0]])
    moved = {**NACL, "frac_coords": (np.array(NACL["frac_coords"]) + 0.3) % 1, "cell": NACL["cell"] @ rot.T}
    scaled = {**NACL, "cell": NACL["cell"] * 1.05}
    assert match(NACL, moved) and match(NACL, scaled)
    rocksalt = {"atomic_numbers": [11] * 4 + [17] * 4, "cell": np.eye(3) * 5.64,
                "frac_coords": [[0, 0, 0], [0, .5, .5], [.5, 0, .5], [.5, .5, 0], [.5, .5, .5], [.5, 0, 0], [0, .5, 0], [0, 0, .5]]}
    assert not match(NACL, rocksalt)  # CsCl-type vs rock salt: same formula, other structure
    r = C.evaluate([NACL, moved, rocksalt, {**NACL, "frac_coords": [[0, 0, 0], [0.01, 0, 0]]}], reference=[rocksalt])
    assert r["valid"] == 0.75 and r["unique"] == pytest.approx(2 / 3) and r["novel"] == pytest.approx(1 / 3)
