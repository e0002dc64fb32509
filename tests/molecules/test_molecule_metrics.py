"""Molecule metrics: real RDKit-embedded molecules are valid; jittered or element-swapped ones are not."""

from __future__ import annotations

import numpy as np
import pytest

from sciformer.metrics import molecules as M

SMILES = ["CCO", "c1ccccc1", "CC(=O)N", "O=C=O", "C#N", "OC1CC1", "CC(C)(C)C#C", "c1cc[nH]c1", "FC(F)F", "NCC(=O)O"]


def embed(smiles: str, seed: int = 0):
    from rdkit import Chem
    from rdkit.Chem import AllChem

    m = Chem.AddHs(Chem.MolFromSmiles(smiles))
    assert AllChem.EmbedMolecule(m, randomSeed=seed) == 0
    AllChem.MMFFOptimizeMolecule(m)
    return (np.array([a.GetAtomicNum() for a in m.GetAtoms()]), m.GetConformer().GetPositions(),
            Chem.GetFormalCharge(m))


@pytest.fixture(scope="module")
def real():
    return [embed(s, k) for k, s in enumerate(SMILES)]


def test_real_molecules_are_valid_and_stable(real):
    z, pos, q = zip(*real)
    assert all(M.validity(list(z), list(pos), list(q)))
    r = M.evaluate(list(z), list(pos), list(q), reference_smiles=SMILES)
    assert r["valid"] == 1.0 and r["atom_stable"] == 1.0 and r["mol_stable"] == 1.0
    assert r["unique"] == 1.0 and r["novel"] == 0.0  # every molecule is in the reference


def test_charged_molecule_needs_its_charge():
    z, pos, q = embed("C[NH3+]")
    assert q == 1 and M.validity([z], [pos], [1]) == [True]
    assert M.validity([z], [pos], [0]) == [False]  # an odd electron count cannot be perceived as neutral


@pytest.mark.parametrize("sigma", [0.5])
def test_negative_control_jitter(real, sigma):
    rng = np.random.default_rng(0)
    z, pos, q = zip(*real)
    jittered = [p + rng.normal(0, sigma, p.shape) for p in pos]
    assert sum(M.validity(list(z), jittered, list(q))) <= 2


def test_negative_control_swapped_elements(real):
    """Each heavy atom in turn gets an element of another valence (C↔O, N→F, F→C): never valid."""
    other = {6: 8, 7: 9, 8: 6, 9: 6}
    swapped, pos, q = [], [], []
    for z, p, c in real:
        for i in np.where(z > 1)[0]:
            z2 = z.copy()
            z2[i] = other[int(z[i])]
            swapped.append(z2), pos.append(p), q.append(c)
    assert len(swapped) > 30 and sum(M.validity(swapped, pos, q)) == 0


def test_fragments_unique_and_novel():
    z1, p1, _ = embed("CCO")
    z2, p2, _ = embed("O")
    z = np.concatenate([z1, z2])
    pos = np.concatenate([p1, p2 + 20.0])  # two molecules far apart
    assert M.validity([z], [pos]) == [False]
    assert M.validity([z], [pos], largest_fragment=True) == [True]
    r = M.evaluate([z1, z1, z2, np.array([6])], [p1, p1 + 1.0, p2, np.zeros((1, 3))], reference_smiles=["CCO"])
    assert r["valid"] == 0.75 and r["unique"] == pytest.approx(2 / 3) and r["novel"] == pytest.approx(1 / 3)


def test_garbage_never_raises():
    assert M.validity([np.array([]), np.array([6, 6]), np.array([200])],
                      [np.zeros((0, 3)), np.array([[0, 0, 0], [np.nan, 0, 0]]), np.zeros((1, 3))]) == [False] * 3


def test_torchmetrics_wrapper(real):
    z, pos, q = zip(*real)
    m = M.MoleculeValidity()
    m.update(list(z)[:5], list(pos)[:5], list(q)[:5])
    m.update([np.array([6, 6])], [np.zeros((2, 3))])
    assert float(m.compute()) == pytest.approx(5 / 6)


def test_real_3d_sets_from_wheels():
    """Real 3D molecules that ship with RDKit: validity with our checks ≈ 100 % (ADiT's PDB route: 38/47 on cdk2)."""
    import os

    from rdkit import Chem, RDConfig

    path = os.path.join(RDConfig.RDContribDir, "Fastcluster", "testdata", "cdk2.sdf")
    if not os.path.exists(path):
        pytest.skip("RDKit contrib cdk2.sdf not installed")
    mols = [m for m in Chem.SDMolSupplier(path, removeHs=False) if m is not None]
    mols = [Chem.AddHs(m, addCoords=True) for m in mols]
    z = [np.array([a.GetAtomicNum() for a in m.GetAtoms()]) for m in mols]
    pos = [m.GetConformer().GetPositions() for m in mols]
    q = [Chem.GetFormalCharge(m) for m in mols]
    assert np.mean(M.validity(z, pos, q)) >= 0.95
