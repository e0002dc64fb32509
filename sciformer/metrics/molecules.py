"""Molecule metrics from 3D coordinates: validity, uniqueness, novelty, atom and molecule stability.

Bonds are perceived with RDKit's ``rdDetermineBonds`` (connectivity from covalent radii, then bond orders
with the molecule's total charge), not through a PDB round trip (ADiT's route via OpenBabel rejects real
drug-like ligands). Definitions (DECISIONS.md):

- **valid**: bonds perceived, ``SanitizeMol`` succeeds, no atom has a radical electron (hydrogens are never
  implicit: every atom is in the coordinates), formal charges only in ``CHARGED_FORMS`` (N⁺, O⁻, S⁻, P⁺;
  a neutral assignment is tried first; a molecule declared charged may carry any charged form) and the
  molecule is one connected fragment;
- **valid (largest fragment)**: ADiT's variant, perception and sanitisation succeed, fragments allowed;
- **unique**: distinct canonical SMILES among valid molecules / number valid (largest-fragment SMILES);
- **novel**: unique SMILES not in the reference (training) set / number valid;
- **atom stable**: the atom's total valence is an allowed valence of its isoelectronic neutral element
  (RDKit's valence lists, e.g. N⁺ counts as C) and it carries no radical electron; atoms of molecules whose
  bonds cannot be perceived count as unstable; **molecule stable**: all its atoms stable.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torchmetrics import Metric

MAX_ATOMS = 200
# (element, formal charge) accepted in perceived molecules: ammonium/iminium/nitro N⁺, alkoxide/carboxylate O⁻,
# thiolate S⁻, phosphonium P⁺. Bond-order assignment with charged fragments can otherwise "balance" any wrong
# structure with carbanion/oxonium pairs ([C-]…[O+]), which would count nonsense as valid.
CHARGED_FORMS = {(7, 1), (8, -1), (16, -1), (15, 1)}  # larger "molecules" are refused rather than sent to the bond-order search


def _max_valence(z: int) -> int:
    from rdkit.Chem import GetPeriodicTable

    vals = [v for v in GetPeriodicTable().GetValenceList(int(z)) if v >= 0]
    return max(vals) if vals else 8


def perceive(atomic_numbers, positions, charge: int = 0):
    """RDKit molecule with bonds perceived from 3D and sanitised, or None. Never raises."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import rdDetermineBonds

    RDLogger.DisableLog("rdApp.*")
    z = np.asarray(atomic_numbers).astype(int).reshape(-1)
    pos = np.asarray(positions, dtype=np.float64).reshape(-1, 3)
    if len(z) == 0 or len(z) > MAX_ATOMS or len(z) != len(pos) or not np.isfinite(pos).all() or (z <= 0).any() or (z > 118).any():
        return None
    try:
        rw = Chem.RWMol()
        conf = Chem.Conformer(len(z))
        for i, (zi, p) in enumerate(zip(z, pos)):
            rw.AddAtom(Chem.Atom(int(zi)))
            conf.SetAtomPosition(i, p.tolist())
        for a in rw.GetAtoms():
            a.SetNoImplicit(True)  # all-atom coordinates: a missing hydrogen is missing, not implicit
        mol = rw.GetMol()
        mol.AddConformer(conf, assignId=True)
        rdDetermineBonds.DetermineConnectivity(mol)
        # a degree above the element's largest valence can never be sanitised: refuse before the bond-order search
        if any(a.GetDegree() > _max_valence(a.GetAtomicNum()) + 1 for a in mol.GetAtoms()):
            return None
    except Exception:
        return None
    # the extended-Hückel route only for declared charged molecules (where it rescues some); it is slow and noisy
    for mode in ("neutral", "charged", "hueckel") if charge else ("neutral", "charged"):
        try:
            m = Chem.Mol(mol)
            if mode == "hueckel":
                rdDetermineBonds.DetermineBonds(m, charge=int(charge), useHueckel=True)
            else:
                rdDetermineBonds.DetermineBondOrders(m, charge=int(charge), allowChargedFragments=mode == "charged")
            Chem.SanitizeMol(m)
        except Exception:
            continue
        for a in m.GetAtoms():
            a.SetNoImplicit(True)
        m.UpdatePropertyCache(strict=False)
        if any(a.GetNumRadicalElectrons() for a in m.GetAtoms()):
            continue  # open-shell: QM9-like sets are closed-shell
        if charge == 0 and any(a.GetFormalCharge() and (a.GetAtomicNum(), a.GetFormalCharge()) not in CHARGED_FORMS
                               for a in m.GetAtoms()):
            continue  # charge separation only in the forms real closed-shell molecules use
        return m
    return None


def _charges(n: int, charges) -> list[int]:
    if charges is None:
        return [0] * n
    return [int(c) for c in charges]


def validity(atomic_numbers: Sequence, positions: Sequence, charges: Sequence[int] | None = None,
             largest_fragment: bool = False) -> list[bool]:
    """One bool per molecule (lists of per-molecule arrays; ``charges`` = total formal charge per molecule)."""
    out = []
    for z, pos, q in zip(atomic_numbers, positions, _charges(len(atomic_numbers), charges)):
        mol = perceive(z, pos, q)
        if mol is None:
            out.append(False)
        else:
            from rdkit import Chem

            out.append(largest_fragment or len(Chem.GetMolFrags(mol)) == 1)
    return out


def smiles_of(mol, largest_fragment: bool = True) -> str:
    from rdkit import Chem

    m = Chem.Mol(mol)
    Chem.RemoveStereochemistry(m)
    m = Chem.RemoveHs(m, sanitize=False)
    if largest_fragment:
        frags = Chem.GetMolFrags(m, asMols=True, sanitizeFrags=False)
        m = max(frags, key=lambda f: f.GetNumAtoms())
    return Chem.MolToSmiles(m)


def canonical(smiles: str) -> str | None:
    """Canonical SMILES (heavy atoms, stereo removed: geometry-perceived molecules carry no assigned stereo)."""
    from rdkit import Chem

    m = Chem.MolFromSmiles(smiles)
    if m is None:
        return None
    Chem.RemoveStereochemistry(m)
    return Chem.MolToSmiles(Chem.RemoveHs(m))


def reference_smiles(atomic_numbers: Sequence, positions: Sequence, charges: Sequence[int] | None = None) -> list[str]:
    """Canonical SMILES of reference (training) molecules perceived from their 3D coordinates by the same route
    as generated ones, so that novelty does not count differences of SMILES writing (charge-separated forms)."""
    out = []
    for z, pos, q in zip(atomic_numbers, positions, _charges(len(atomic_numbers), charges)):
        mol = perceive(z, pos, q)
        if mol is not None:
            out.append(smiles_of(mol))
    return out


def atom_stability(mol) -> list[bool]:
    from rdkit.Chem import GetPeriodicTable

    pt = GetPeriodicTable()
    out = []
    for a in mol.GetAtoms():
        iso = a.GetAtomicNum() - a.GetFormalCharge()
        allowed = set(pt.GetValenceList(iso)) if 0 < iso <= 118 else set()
        out.append(a.GetNumRadicalElectrons() == 0 and a.GetTotalValence() in allowed)
    return out


def evaluate(atomic_numbers: Sequence, positions: Sequence, charges: Sequence[int] | None = None,
             reference_smiles: Sequence[str] | None = None) -> dict[str, float]:
    """Validity (connected and largest-fragment), uniqueness, novelty, atom and molecule stability."""
    from rdkit import Chem

    n = len(atomic_numbers)
    valid = valid_lf = atoms_stable = atoms_total = mols_stable = 0
    smiles = []
    for z, pos, q in zip(atomic_numbers, positions, _charges(n, charges)):
        atoms_total += len(z)
        mol = perceive(z, pos, q)
        if mol is None:
            continue
        valid_lf += 1
        connected = len(Chem.GetMolFrags(mol)) == 1
        valid += connected
        st = atom_stability(mol)
        atoms_stable += sum(st)
        mols_stable += all(st)
        s = canonical(smiles_of(mol))
        if s is not None:
            smiles.append(s)
    unique = set(smiles)
    ref = {c for c in (canonical(s) for s in (reference_smiles or [])) if c is not None}
    denom = max(valid_lf, 1)
    return {"n": n, "valid": valid / max(n, 1), "valid_largest_fragment": valid_lf / max(n, 1),
            "unique": len(unique) / denom, "novel": (len(unique - ref) / denom) if reference_smiles is not None else float("nan"),
            "atom_stable": atoms_stable / max(atoms_total, 1), "mol_stable": mols_stable / max(n, 1)}


class MoleculeValidity(Metric):
    """torchmetrics wrapper: ``update(atomic_numbers, positions, charges=None)`` with per-molecule lists;
    ``compute()`` → fraction valid (connected definition)."""

    full_state_update = False

    def __init__(self, largest_fragment: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.largest_fragment = largest_fragment
        self.add_state("valid", default=torch.tensor(0.0), dist_reduce_fx="sum")
        self.add_state("total", default=torch.tensor(0.0), dist_reduce_fx="sum")

    def update(self, atomic_numbers, positions, charges=None) -> None:
        v = validity(atomic_numbers, positions, charges, self.largest_fragment)
        self.valid += sum(v)
        self.total += len(v)

    def compute(self) -> torch.Tensor:
        return self.valid / self.total.clamp_min(1)
