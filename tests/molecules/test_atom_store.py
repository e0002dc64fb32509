"""Atom store: ragged round trip, builders/converters with bad input, periodic neighbour lists, PyG views."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sciformer.data import atoms as A


def _systems():
    rng = np.random.default_rng(0)
    out = []
    for n in (1, 3, 7):
        out.append({"atomic_numbers": rng.integers(1, 10, n), "positions": rng.normal(size=(n, 3)) * 3,
                    "smiles": "C" * n, "charge": n % 2, "properties": {"e": float(n)}})
    out.append({"atomic_numbers": np.array([6, 6]), "positions": np.array([[0, 0, 0], [0.9, 0.9, 0.9]]),
                "cell": np.eye(3) * 3.6, "pbc": np.array([True] * 3), "properties": {}})
    return out


def test_ragged_round_trip(tmp_path):
    systems = _systems()
    A.write_store(tmp_path / "s.zarr", systems, domain="molecule", source="test", report={"written": 4},
                  units={"e": "eV"})
    s = A.AtomStore(tmp_path / "s.zarr")
    assert len(s) == 4 and s.offsets.tolist() == [0, 1, 4, 11, 13]
    assert s.property_units() == {"e": "eV"}
    for lazy in (True, False):
        if not lazy:
            s.load()
        for i, ref in enumerate(systems):
            got = s[i]
            np.testing.assert_array_equal(got["atomic_numbers"], ref["atomic_numbers"])
            np.testing.assert_allclose(got["positions"], ref["positions"], rtol=1e-6, atol=1e-6)
            assert got["smiles"] == ref.get("smiles", "")
        assert np.isnan(s[3]["properties"]["e"]) and s[2]["properties"]["e"] == 7.0
        assert s[3]["pbc"].all() and np.allclose(s[3]["cell"], np.eye(3) * 3.6)
    with pytest.raises(IndexError):
        s[4]


def test_qm9_etkdg_builder_counts_bad_input_and_resumes(tmp_path):
    src = tmp_path / "smiles.csv"
    src.write_text('smiles\nCCO\n""\nnot_a_smiles\nC[Si](C)C\nc1ccccc1O\n[NH3+]CC(=O)[O-]\n')
    out = tmp_path / "q.zarr"
    A.build_qm9_etkdg(out, seed=3, src=str(src), workers=1, chunk=3)
    s = A.AtomStore(out).load()
    report = s.attrs["report"]
    assert report["requested"] == 6 and report["written"] == 3
    assert report["skip_reasons"] == {"empty SMILES (0 atoms)": 1, "unparseable SMILES": 1, "unsupported element": 1}
    assert s.attrs["source"].endswith("not DFT geometries)")
    from rdkit import Chem

    assert s.all_smiles() == [Chem.CanonSmiles(x) for x in ("CCO", "c1ccccc1O", "[NH3+]CC(=O)[O-]")]
    assert s[2]["charge"] == 0 and np.isfinite(s[0]["properties"]["mmff94_energy"])
    # deterministic and resumable: a rerun reuses the finished chunks and gives identical coordinates
    parts = sorted((tmp_path / "q.zarr.parts").glob("0*.json"))
    stamp = [p.stat().st_mtime_ns for p in parts]
    A.build_qm9_etkdg(out, seed=3, src=str(src), workers=1, chunk=3)
    assert [p.stat().st_mtime_ns for p in parts] == stamp
    np.testing.assert_array_equal(A.AtomStore(out)[1]["positions"], s[1]["positions"])
    with pytest.raises(A.DataError):  # other options must not mix with the cached chunks
        A.build_qm9_etkdg(out, seed=4, src=str(src), workers=1, chunk=3)


def test_sdf_and_xyz_converters(tmp_path):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    w = Chem.SDWriter(str(tmp_path / "m.sdf"))
    for k, smi in enumerate(["CCO", "c1ccncc1"]):
        m = Chem.AddHs(Chem.MolFromSmiles(smi))
        AllChem.EmbedMolecule(m, randomSeed=k)
        m.SetProp("_Name", smi)
        m.SetDoubleProp("logS", -1.5 * k)
        w.write(m)
    flat = Chem.AddHs(Chem.MolFromSmiles("C"))
    AllChem.Compute2DCoords(flat)
    w.write(flat)
    w.close()
    A.convert_sdf(tmp_path / "m.sdf", tmp_path / "m.zarr")
    s = A.AtomStore(tmp_path / "m.zarr")
    assert len(s) == 2 and s.attrs["report"]["skip_reasons"] == {"2D coordinates": 1}
    assert s[1]["properties"]["logS"] == pytest.approx(-1.5) and s[0]["atomic_numbers"].tolist().count(1) == 6

    xyz = "3\nwater\nO 0 0 0\nH 0.96 0 0\nH -0.24 0.93 0\n2\nclash\nC 0 0 0\nC 0.1 0 0\n1\nbad\nXx 0 0 0\n"
    (tmp_path / "m.xyz").write_text(xyz)
    A.convert_xyz(tmp_path / "m.xyz", tmp_path / "x.zarr", charge=0)
    x = A.AtomStore(tmp_path / "x.zarr")
    assert len(x) == 1 and x[0]["atomic_numbers"].tolist() == [8, 1, 1]
    assert x.attrs["report"]["skip_reasons"] == {"overlapping atoms": 1, "unknown element or bad coordinates": 1}


CIF = """data_NaCl
_cell_length_a 5.64
_cell_length_b 5.64
_cell_length_c 5.64
_cell_angle_alpha 90
_cell_angle_beta 90
_cell_angle_gamma 90
_symmetry_space_group_name_H-M 'P 1'
loop_
 _atom_site_type_symbol
 _atom_site_label
 _atom_site_fract_x
 _atom_site_fract_y
 _atom_site_fract_z
 _atom_site_occupancy
  Na Na0 0 0 0 {occ}
  Cl Cl1 {x} {y} {y} 1
"""


def test_cif_csv_converter_skips_bad_structures(tmp_path):
    import pandas as pd

    rows = [CIF.format(occ=1, x=0.5, y=0.5), CIF.format(occ=0.5, x=0.5, y=0.5), CIF.format(occ=1, x=0.01, y=0.0), "not a cif"]
    pd.DataFrame({"material_id": list("abcd"), "cif": rows, "band_gap": [5.0, 1.0, 2.0, 3.0]}).to_csv(tmp_path / "c.csv")
    A.convert_cif_csv(tmp_path / "c.csv", tmp_path / "c.zarr")
    s = A.AtomStore(tmp_path / "c.zarr")
    assert len(s) == 1 and s.domain == "crystal" and s.property_units() == {"band_gap": "eV"}
    assert s.attrs["report"]["skip_reasons"] == {"partial occupancy": 1, "overlapping atoms": 1, "unparseable CIF": 1}
    assert sorted(s[0]["atomic_numbers"].tolist()) == [11, 17] and abs(np.linalg.det(s[0]["cell"])) == pytest.approx(5.64**3, rel=1e-4)


def test_real_perov5_rows(shared_data, tmp_path):
    import pandas as pd

    df = pd.read_csv(shared_data / "molecules" / "perov_5" / "val.csv").head(20)
    df.to_csv(tmp_path / "p.csv", index=False)
    A.convert_cif_csv(tmp_path / "p.csv", tmp_path / "p.zarr")
    s = A.AtomStore(tmp_path / "p.zarr")
    assert len(s) == 20 and set(s.property_names) == {"dir_gap", "heat_all", "heat_ref", "ind_gap"}
    assert s.attrs["report"]["skipped"] == 0


@pytest.mark.parametrize("cell,cutoff", [(np.diag([2.0, 3.0, 4.0]), 4.5),
                                         (np.array([[2.5, 0, 0], [1.2, 2.2, 0], [0.4, 0.7, 2.1]]), 3.7)])
def test_periodic_neighbour_list_matches_ase(cell, cutoff):
    from ase import Atoms
    from ase.neighborlist import neighbor_list as ase_nl

    rng = np.random.default_rng(1)
    frac = rng.random((5, 3))
    atoms = Atoms(numbers=[6] * 5, scaled_positions=frac, cell=cell, pbc=True)
    i, j, S = ase_nl("ijS", atoms, cutoff)
    ref = sorted(zip(i.tolist(), j.tolist(), map(tuple, S.tolist())))
    pos = torch.tensor(atoms.positions)
    edge, shift, dist = A.neighbor_list(pos, cutoff, cell=torch.tensor(cell)[None], pbc=torch.ones(1, 3, dtype=torch.bool))
    S_ours = np.rint(np.linalg.solve(cell.T, shift.numpy().T).T).astype(int)
    ours = sorted(zip(edge[1].tolist(), edge[0].tolist(), map(tuple, S_ours.tolist())))
    assert ours == ref and len(ref) > 20  # self-images included, self-pair excluded
    assert (dist < cutoff).all()


def test_molecular_neighbour_list_by_system():
    pos = torch.tensor([[0.0, 0, 0], [1.0, 0, 0], [0.0, 0, 0.5], [5.0, 0, 0]])
    batch = torch.tensor([0, 0, 1, 1])
    edge, _, dist = A.neighbor_list(pos, 1.5, batch)
    assert sorted(map(tuple, edge.t().tolist())) == [(0, 1), (1, 0)]  # atoms 0 and 2 are close but in other systems
    assert torch.allclose(dist, torch.ones(2))


def test_cell_parameters_round_trip_and_pyg_view():
    rng = torch.Generator().manual_seed(0)
    lengths = 2 + 3 * torch.rand(10, 3, generator=rng, dtype=torch.float64)
    angles = torch.deg2rad(70 + 40 * torch.rand(10, 3, generator=rng, dtype=torch.float64))
    l2, a2 = A.cell_to_params(A.params_to_cell(lengths, angles))
    assert torch.allclose(l2, lengths) and torch.allclose(a2, angles)
    sys_ = {"atomic_numbers": np.array([11, 17]), "positions": np.array([[0, 0, 0], [2.82, 2.82, 2.82]]),
            "cell": np.eye(3) * 5.64, "pbc": np.ones(3, bool), "properties": {"gap": 5.0}}
    d = A.to_pyg(sys_, 0, ["gap", "missing"], mean=[4.0, 0.0], std=[2.0, 1.0])
    assert torch.allclose(d.frac_coords[1], torch.tensor([0.5, 0.5, 0.5])) and d.y.tolist() == [[0.5, 0.0]]
    assert d.y_mask.tolist() == [[True, False]] and torch.allclose(d.angles, torch.full((1, 3), torch.pi / 2))
