"""Atom stores: ragged zarr arrays with offsets for molecules and crystals, their builders and converters,
PyG views for training, and periodic neighbour lists.

Layout (DESIGN.md "Atoms"), one zarr group per store::

    atomic_numbers[n_atoms] uint8        positions[n_atoms, 3] float32 (Å)
    offsets[n_systems + 1] int64         cell[n_systems, 3, 3] float32 (Å, rows = lattice vectors; zeros if none)
    pbc[n_systems, 3] bool               charges[n_systems] int16 (total formal charge; optional)
    smiles[n_systems] str (optional)     ids[n_systems] str (optional)
    properties/<name>[n_systems] float32 with attribute ``units``
    attrs: layout="atoms", domain="molecule"|"crystal", source, report (counts and skip reasons)

System ``i`` owns atoms ``offsets[i]:offsets[i+1]``. Builders and converters never crash on one bad record:
they skip it and count the reason in ``attrs["report"]``.
"""

from __future__ import annotations

import io
import json
import math
import multiprocessing as mp
import os
import warnings
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sciformer.data.module import DataModule
from sciformer.errors import DataError
from sciformer.io import atomic_path

SHARED_QM9 = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "molecules" / "qm9_smiles.csv"
QM9_ELEMENTS = (1, 6, 7, 8, 9)
MIN_DISTANCE = 0.5  # Å: closer atoms are "overlapping" (same threshold as crystal structural validity)
DOMAINS = {"crystal": 0, "molecule": 1}  # ADiT's dataset index: 0 periodic, 1 molecules


# ------------------------------------------------------------------------------------------------------
# writing and reading
# ------------------------------------------------------------------------------------------------------
def write_store(out: str | os.PathLike, systems: Sequence[dict[str, Any]], *, domain: str, source: str,
                report: dict[str, Any], units: dict[str, str] | None = None, attrs: dict | None = None) -> Path:
    """Write systems (dicts with ``atomic_numbers``, ``positions`` and optional ``cell``, ``pbc``, ``charge``,
    ``smiles``, ``id``, ``properties``) as an atom store, atomically."""
    import zarr

    if domain not in DOMAINS:
        raise DataError(f"domain must be one of {sorted(DOMAINS)}, got {domain!r}")
    n = len(systems)
    counts = np.array([len(s["atomic_numbers"]) for s in systems], dtype=np.int64)
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    z = np.concatenate([np.asarray(s["atomic_numbers"], np.uint8) for s in systems]) if n else np.zeros(0, np.uint8)
    pos = (np.concatenate([np.asarray(s["positions"], np.float32).reshape(-1, 3) for s in systems])
           if n else np.zeros((0, 3), np.float32))
    cell = np.stack([np.asarray(s.get("cell", np.zeros((3, 3))), np.float32) for s in systems]) if n else np.zeros((0, 3, 3), np.float32)
    pbc = np.stack([np.asarray(s.get("pbc", (False,) * 3), bool) for s in systems]) if n else np.zeros((0, 3), bool)
    prop_names = sorted({k for s in systems for k in s.get("properties", {})})
    out = Path(out)
    # every chunk is written, all-fill ones too (zarr skips them by default): a missing chunk is damage
    with atomic_path(out, is_dir=True) as tmp, zarr.config.set({"array.write_empty_chunks": True}):
        g = zarr.open_group(str(tmp), mode="w", zarr_format=3)
        g.create_array("atomic_numbers", data=z, chunks=(max(1, min(len(z), 1 << 18)),))
        g.create_array("positions", data=pos, chunks=(max(1, min(len(pos), 1 << 16)), 3))
        g.create_array("offsets", data=offsets)
        g.create_array("cell", data=cell, chunks=(max(1, min(n, 1 << 15)), 3, 3))
        g.create_array("pbc", data=pbc, chunks=(max(1, min(n, 1 << 16)), 3))
        if any("charge" in s for s in systems):
            g.create_array("charges", data=np.array([s.get("charge", 0) for s in systems], np.int16))
        for key, name in (("smiles", "smiles"), ("id", "ids")):
            if any(key in s for s in systems):
                arr = g.create_array(name, shape=(n,), dtype=str, chunks=(max(1, n),))
                arr[:] = np.array([str(s.get(key, "")) for s in systems], dtype=object)
        if prop_names:
            pg = g.create_group("properties")
            for p in prop_names:
                vals = np.array([s.get("properties", {}).get(p, np.nan) for s in systems], np.float32)
                a = pg.create_array(p, data=vals)
                a.attrs["units"] = (units or {}).get(p, "")
        g.attrs.update({"layout": "atoms", "domain": domain, "source": source, "report": report,
                        "n_systems": n, "n_atoms": int(len(z)), **(attrs or {}), "all_chunks_written": True})
        with warnings.catch_warnings():  # "consolidated metadata is not in the v3 spec": we read it ourselves
            warnings.simplefilter("ignore")
            zarr.consolidate_metadata(str(tmp))
    return out


class AtomStore:
    """Reader of an atom store. Offsets are read at open; a system's atoms are sliced on demand, or
    ``load()`` reads everything into memory (small stores: QM9 is ≈30 MB)."""

    def __init__(self, path: str | os.PathLike):
        import zarr

        self.path = str(path)
        try:
            self.group = zarr.open_group(self.path, mode="r")
        except Exception as e:
            raise DataError(f"{path}: not a zarr store ({type(e).__name__}: {e})") from None
        if self.group.attrs.get("layout") != "atoms":
            raise DataError(f"{path}: not an atom store (layout={self.group.attrs.get('layout')!r})")
        self.attrs = dict(self.group.attrs)
        self.offsets = self.group["offsets"][:]
        self._mem: dict[str, np.ndarray] | None = None

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def domain(self) -> str:
        return self.attrs["domain"]

    @property
    def property_names(self) -> list[str]:
        return sorted(self.group["properties"].array_keys()) if "properties" in self.group else []

    def property_units(self) -> dict[str, str]:
        return {p: self.group["properties"][p].attrs.get("units", "") for p in self.property_names}

    def load(self) -> AtomStore:
        g = self.group
        self._mem = {k: g[k][:] for k in ("atomic_numbers", "positions", "cell", "pbc")}
        for k in ("charges", "smiles", "ids"):
            if k in g:
                self._mem[k] = g[k][:]
        for p in self.property_names:
            self._mem["properties/" + p] = g["properties"][p][:]
        return self

    def _get(self, key: str, sel):
        return self._mem[key][sel] if self._mem is not None else self.group[key][sel]

    def has(self, key: str) -> bool:
        return key in self.group

    def __getitem__(self, i: int) -> dict[str, Any]:
        if not -len(self) <= i < len(self):
            raise IndexError(f"system {i} out of range for {len(self)} systems")
        i = i % len(self)
        a, b = int(self.offsets[i]), int(self.offsets[i + 1])
        out = {"atomic_numbers": np.asarray(self._get("atomic_numbers", slice(a, b)), np.int64),
               "positions": np.asarray(self._get("positions", slice(a, b)), np.float32),
               "cell": np.asarray(self._get("cell", i), np.float32), "pbc": np.asarray(self._get("pbc", i), bool)}
        if self.has("charges"):
            out["charge"] = int(self._get("charges", i))
        if self.has("smiles"):
            out["smiles"] = str(self._get("smiles", i))
        out["properties"] = {p: float(self._get("properties/" + p, i)) for p in self.property_names}
        return out

    def all_smiles(self) -> list[str]:
        return [str(s) for s in self._get("smiles", slice(None))] if self.has("smiles") else []


def describe(path: Path) -> str:
    """``sciformer data info`` for atom stores."""
    s = AtomStore(path)
    counts = np.diff(s.offsets)
    z = s.group["atomic_numbers"][:]
    pos = s.group["positions"][:]
    from rdkit.Chem import GetPeriodicTable

    pt = GetPeriodicTable()
    elements = ", ".join(f"{pt.GetElementSymbol(int(k))}:{v}" for k, v in sorted(Counter(z.tolist()).items()))
    lines = [f"{path}: atom store ({s.domain}), {len(s)} systems, {len(z)} atoms",
             f"  atoms per system: min {counts.min() if len(counts) else 0}, mean {counts.mean() if len(counts) else 0:.1f}, "
             f"max {counts.max() if len(counts) else 0}",
             f"  elements: {elements}", f"  source: {s.attrs.get('source')}",
             f"  NaN/Inf in positions: {int((~np.isfinite(pos)).sum())}"]
    for p, u in s.property_units().items():
        v = s.group["properties"][p][:]
        lines.append(f"  property {p} [{u}]: mean {np.nanmean(v):.4g}, std {np.nanstd(v):.4g}, missing {int(np.isnan(v).sum())}")
    lines.append("  report: " + json.dumps(s.attrs.get("report", {})))
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------
# checks shared by builders and converters
# ------------------------------------------------------------------------------------------------------
def min_distance(positions: np.ndarray, cell: np.ndarray | None = None, pbc=None) -> float:
    """Smallest interatomic distance (periodic images included where ``pbc``); inf for one atom alone."""
    pos = torch.as_tensor(np.asarray(positions, np.float64))
    if pbc is not None and np.any(pbc):
        cell_t = torch.as_tensor(np.asarray(cell, np.float64))
        shifts = _image_shifts(cell_t, torch.as_tensor(np.asarray(pbc)), 2.0)
        images = (pos[None] + (shifts @ cell_t)[:, None]).reshape(-1, 3)
        d = torch.cdist(pos, images).reshape(len(pos), len(shifts), len(pos))
        zero = (shifts == 0).all(1)
        d[:, zero, :] += torch.eye(len(pos), dtype=d.dtype)[:, None, :] * 1e9
        return float(d.min()) if d.numel() else math.inf
    if len(pos) < 2:
        return math.inf
    d = torch.cdist(pos, pos) + torch.eye(len(pos), dtype=pos.dtype) * 1e9
    return float(d.min())


# ------------------------------------------------------------------------------------------------------
# qm9-etkdg builder
# ------------------------------------------------------------------------------------------------------
def _embed_one(args: tuple[int, str, int, float, tuple[int, ...], int]) -> tuple[int, dict | None, str | None]:
    """ETKDG + MMFF for one SMILES; returns (index, system or None, skip reason or None). Never raises."""
    idx, smi, seed, timeout, elements, mmff_iters = args
    try:
        from rdkit import Chem, RDLogger
        from rdkit.Chem import AllChem

        RDLogger.DisableLog("rdApp.*")
        if not smi.strip():
            return idx, None, "empty SMILES (0 atoms)"
        mol = Chem.MolFromSmiles(smi)
        if mol is None or mol.GetNumAtoms() == 0:
            return idx, None, "unparseable SMILES"
        bad = {a.GetSymbol() for a in mol.GetAtoms() if a.GetAtomicNum() not in elements}
        if bad:
            return idx, None, "unsupported element"
        mol = Chem.AddHs(mol)
        params = AllChem.ETKDGv3()
        params.randomSeed = int(seed)
        params.timeout = max(1, int(math.ceil(timeout)))
        if AllChem.EmbedMolecule(mol, params) != 0:
            params.useRandomCoords = True
            if AllChem.EmbedMolecule(mol, params) != 0:
                return idx, None, "ETKDG embedding failed"
        energy = math.nan
        if mol.GetNumAtoms() > 1:
            props = AllChem.MMFFGetMoleculeProperties(mol)
            if props is None:
                return idx, None, "no MMFF94 parameters"
            ff = AllChem.MMFFGetMoleculeForceField(mol, props)
            ff.Minimize(maxIts=mmff_iters)
            energy = float(ff.CalcEnergy())
        pos = mol.GetConformer().GetPositions().astype(np.float32)
        z = np.array([a.GetAtomicNum() for a in mol.GetAtoms()], np.uint8)
        if min_distance(pos) < MIN_DISTANCE:
            return idx, None, "overlapping atoms"
        return idx, {"atomic_numbers": z, "positions": pos - pos.mean(0), "smiles": Chem.MolToSmiles(Chem.RemoveHs(mol)),
                     "charge": Chem.GetFormalCharge(mol), "id": str(idx),
                     "properties": {"mmff94_energy": energy}}, None
    except Exception as e:  # one bad record never stops the build
        return idx, None, f"error: {type(e).__name__}"


def read_smiles_csv(src: Path) -> list[str]:
    import pandas as pd

    df = pd.read_csv(src, keep_default_na=False, dtype=str)
    col = next((c for c in df.columns if c.lower() == "smiles"), df.columns[0])
    return [str(s) for s in df[col].tolist()]


def build_qm9_etkdg(out: Path, trajectories: int = 0, resolution: int = 0, seed: int = 0, *,
                    src: str | None = None, limit: int | None = None, workers: int | None = None,
                    timeout: float = 10.0, mmff_iters: int = 500, chunk: int = 2000,
                    elements: Sequence[int] = QM9_ELEMENTS) -> Path:
    """3D conformers of QM9 SMILES: RDKit ETKDGv3 (seed ``seed + index``) then MMFF94 minimisation.

    These are force-field geometries, NOT QM9's DFT (B3LYP/6-31G(2df,p)) geometries. ``trajectories`` and
    ``resolution`` are ignored (PDE-builder arguments). Options: ``src`` (CSV with a ``smiles`` column,
    default ``../shared/data/molecules/qm9_smiles.csv``), ``limit`` (first N SMILES), ``workers`` (default:
    all cores), ``timeout`` (s per molecule for ETKDG), ``chunk``. Resumable: finished chunks are kept in
    ``OUT.parts/`` and reused by a rerun with the same options. Skipped molecules are counted by reason.
    """
    out = Path(out)
    src_path = Path(src) if src else SHARED_QM9
    if not src_path.exists():
        raise DataError(f"{src_path}: no such SMILES file (pass --option src=PATH)")
    smiles = read_smiles_csv(src_path)
    if limit is not None:
        smiles = smiles[: int(limit)]
    parts = out.with_name(out.name + ".parts")
    parts.mkdir(parents=True, exist_ok=True)
    key = {"src": str(src_path), "n": len(smiles), "seed": seed, "timeout": timeout, "mmff_iters": mmff_iters,
           "chunk": chunk, "elements": list(elements)}
    keyfile = parts / "options.json"
    if keyfile.exists() and json.loads(keyfile.read_text()) != key:
        raise DataError(f"{parts} holds a build with other options; remove it or use another --out")
    keyfile.write_text(json.dumps(key))
    workers = int(workers or os.cpu_count() or 1)
    starts = list(range(0, len(smiles), chunk))
    remaining = [s for s in starts if not (parts / f"{s:08d}.json").exists()]
    from rich.progress import Progress

    ctx = mp.get_context("fork") if "fork" in mp.get_all_start_methods() else mp.get_context()
    with Progress(transient=False) as bar, ctx.Pool(workers) if workers > 1 else _Serial() as pool:
        task = bar.add_task("ETKDG + MMFF", total=len(smiles), completed=(len(starts) - len(remaining)) * chunk)
        for s in remaining:
            jobs = [(i, smiles[i], seed + i, timeout, tuple(elements), mmff_iters) for i in range(s, min(s + chunk, len(smiles)))]
            results = []
            for r in pool.imap(_embed_one, jobs, chunksize=16):
                results.append(r)
                bar.advance(task)
            _write_part(parts / f"{s:08d}", results)
    systems, reasons = [], Counter()
    for s in starts:
        recs, skipped = _read_part(parts / f"{s:08d}")
        systems += recs
        reasons.update(skipped)
    report = {"requested": len(smiles), "written": len(systems), "skipped": sum(reasons.values()),
              "skip_reasons": dict(reasons)}
    if not systems:  # nothing to resume either: leave no parts behind
        import shutil

        shutil.rmtree(parts, ignore_errors=True)
        _nothing_written(src_path, systems, reasons, "molecule")
    path = write_store(out, systems, domain="molecule", source=f"qm9-etkdg from {src_path.name} (RDKit ETKDGv3 + MMFF94; not DFT geometries)",
                       report=report, units={"mmff94_energy": "kcal/mol"}, attrs={"builder_options": key})
    print(f"qm9-etkdg: {report['written']}/{report['requested']} molecules; skipped {report['skipped']}: {dict(reasons)}")
    return path


class _Serial:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def imap(self, fn, items, chunksize=1):
        return map(fn, items)


def _write_part(stem: Path, results: list[tuple[int, dict | None, str | None]]) -> None:
    ok = [r[1] for r in sorted(results, key=lambda r: r[0]) if r[1] is not None]
    skipped = Counter(r[2] for r in results if r[1] is None)
    arrays = {"z": np.concatenate([s["atomic_numbers"] for s in ok]) if ok else np.zeros(0, np.uint8),
              "pos": np.concatenate([s["positions"] for s in ok]) if ok else np.zeros((0, 3), np.float32),
              "n": np.array([len(s["atomic_numbers"]) for s in ok], np.int64)}
    with atomic_path(stem.with_suffix(".npz")) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
    meta = {"smiles": [s["smiles"] for s in ok], "charge": [s["charge"] for s in ok], "id": [s["id"] for s in ok],
            "energy": [s["properties"]["mmff94_energy"] for s in ok], "skipped": dict(skipped)}
    with atomic_path(stem.with_suffix(".json")) as tmp:  # written last: its presence marks the chunk done
        tmp.write_text(json.dumps(meta))


def _read_part(stem: Path) -> tuple[list[dict], Counter]:
    meta = json.loads(stem.with_suffix(".json").read_text())
    arr = np.load(stem.with_suffix(".npz"))
    off = np.concatenate([[0], np.cumsum(arr["n"])])
    systems = [{"atomic_numbers": arr["z"][a:b], "positions": arr["pos"][a:b], "smiles": meta["smiles"][k],
                "charge": meta["charge"][k], "id": meta["id"][k], "properties": {"mmff94_energy": meta["energy"][k]}}
               for k, (a, b) in enumerate(zip(off[:-1], off[1:]))]
    return systems, Counter(meta["skipped"])


# ------------------------------------------------------------------------------------------------------
# converters: SDF, XYZ, CIF CSV
# ------------------------------------------------------------------------------------------------------
def _checked(systems_with_reasons: Iterable[tuple[dict | None, str | None]], elements: set[int] | None):
    systems, reasons = [], Counter()
    for sys_, reason in systems_with_reasons:
        if sys_ is not None and elements is not None and not set(np.asarray(sys_["atomic_numbers"]).tolist()) <= elements:
            sys_, reason = None, "unsupported element"
        if sys_ is not None and min_distance(sys_["positions"], sys_.get("cell"), sys_.get("pbc")) < MIN_DISTANCE:
            sys_, reason = None, "overlapping atoms"
        if sys_ is None:
            reasons[reason] += 1
        else:
            systems.append(sys_)
    return systems, reasons


def _report(systems, reasons) -> dict:
    return {"requested": len(systems) + sum(reasons.values()), "written": len(systems),
            "skipped": sum(reasons.values()), "skip_reasons": dict(reasons)}


def _elements_option(elements) -> set[int] | None:
    if elements is None:
        return None
    from rdkit.Chem import GetPeriodicTable

    pt = GetPeriodicTable()
    items = elements.split(",") if isinstance(elements, str) else elements
    out = set()
    for e in items:
        try:
            out.add(int(e) if str(e).isdigit() else pt.GetAtomicNumber(str(e).strip()))
        except RuntimeError:  # RDKit: "Element 'Qq' not found"
            raise DataError(f"--option elements: {str(e).strip()!r} is not an element symbol (give e.g. "
                            "elements=H,C,N,O or atomic numbers)") from None
    return out


def _nothing_written(src, systems, reasons, what: str) -> None:
    """A conversion that keeps no system is refused (no empty store is written), with the skip reasons."""
    if not systems:
        why = ", ".join(f"{k}: {v}" for k, v in reasons.most_common()) or f"the file holds no {what}"
        raise DataError(f"{src}: no usable {what} ({why}); nothing written")


def convert_sdf(src: Path, out: Path, *, elements=None, allow_2d: bool = False, remove_hs: bool = False) -> Path:
    """SDF (RDKit) → atom store. Hydrogens are kept; numeric SD tags become properties. Records RDKit cannot
    read, 2D records (all z = 0, unless ``allow_2d``), unsupported elements and overlapping atoms are skipped."""
    from rdkit import Chem, RDLogger

    RDLogger.DisableLog("rdApp.*")

    def records():
        for mol in Chem.SDMolSupplier(str(src), removeHs=remove_hs, sanitize=True):
            if mol is None:
                yield None, "RDKit could not read the record"
                continue
            if mol.GetNumAtoms() == 0 or mol.GetNumConformers() == 0:
                yield None, "no atoms or no coordinates"
                continue
            pos = mol.GetConformer().GetPositions()
            if not allow_2d and np.allclose(pos[:, 2], 0):
                yield None, "2D coordinates"
                continue
            props = {}
            for k, v in mol.GetPropsAsDict().items():
                if isinstance(v, (int, float)) and not isinstance(v, bool):
                    props[k] = float(v)
            yield {"atomic_numbers": np.array([a.GetAtomicNum() for a in mol.GetAtoms()]), "positions": pos,
                   "charge": Chem.GetFormalCharge(mol), "smiles": Chem.MolToSmiles(Chem.RemoveHs(mol)),
                   "id": mol.GetProp("_Name") if mol.HasProp("_Name") else "", "properties": props}, None

    systems, reasons = _checked(records(), _elements_option(elements))
    _nothing_written(src, systems, reasons, "molecule")
    return write_store(out, systems, domain="molecule", source=f"SDF {Path(src).name} (RDKit)", report=_report(systems, reasons))


def read_xyz_frames(text: str) -> Iterable[tuple[dict | None, str | None]]:
    """Multi-frame XYZ: ``N``, a comment line, then N lines ``symbol x y z``. Yields (system, skip reason)."""
    from rdkit.Chem import GetPeriodicTable

    pt = GetPeriodicTable()
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        if not lines[i].strip():
            i += 1
            continue
        try:
            n = int(lines[i].split()[0])
        except ValueError:
            yield None, "malformed XYZ header"
            return
        comment, body = (lines[i + 1] if i + 1 < len(lines) else ""), lines[i + 2: i + 2 + n]
        i += 2 + n
        if len(body) < n:
            yield None, "truncated XYZ frame"
            return
        try:
            z = [pt.GetAtomicNumber(r.split()[0].capitalize()) if not r.split()[0].isdigit() else int(r.split()[0]) for r in body]
            pos = np.array([[float(v) for v in r.split()[1:4]] for r in body])
        except Exception:
            yield None, "unknown element or bad coordinates"
            continue
        yield {"atomic_numbers": np.array(z), "positions": pos, "id": comment.strip()}, None


def convert_xyz(src: Path, out: Path, *, elements=None, charge: int | None = None) -> Path:
    """(Multi-frame) XYZ → atom store; ``charge`` sets every molecule's total charge if given."""
    try:
        text = Path(src).read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{src}: not a text XYZ file (byte {e.start} is not UTF-8); is it another format?") from None
    frames = list(read_xyz_frames(text))
    if charge is not None:
        for s, _ in frames:
            if s is not None:
                s["charge"] = int(charge)
    systems, reasons = _checked(frames, _elements_option(elements))
    _nothing_written(src, systems, reasons, "molecule")
    return write_store(out, systems, domain="molecule", source=f"XYZ {Path(src).name}", report=_report(systems, reasons))


def parse_cif(text: str, niggli: bool = True):
    """One CIF (ase) → (system, None) or (None, reason). Partial occupancy is refused; cells are Niggli-reduced."""
    import ase.io
    from ase.build import niggli_reduce

    try:
        atoms = ase.io.read(io.StringIO(text), format="cif")
    except Exception:
        return None, "unparseable CIF"
    occ = atoms.info.get("occupancy", {})
    if any(abs(float(v) - 1.0) > 1e-6 for site in occ.values() for v in site.values()):
        return None, "partial occupancy"
    if len(atoms) == 0:
        return None, "no atoms"
    if niggli:
        try:
            niggli_reduce(atoms)
        except Exception:
            return None, "Niggli reduction failed"
    atoms.wrap()
    return {"atomic_numbers": atoms.numbers.copy(), "positions": atoms.positions.copy(),
            "cell": np.array(atoms.cell[:]), "pbc": np.array([True, True, True])}, None


def convert_cif_csv(src: Path, out: Path, *, cif_column: str = "cif", id_column: str = "material_id",
                    niggli: bool = True, units: dict | str | None = None, elements=None) -> Path:
    """CDVAE-style CSV of CIF strings (Perov-5, Carbon-24, MP20) → atom store (ase CIF parser).

    Numeric columns other than the index and ``id_column`` become per-structure properties; ``units`` (a dict
    or ``name:unit,...``) labels them (known CDVAE columns are labelled by default)."""
    import pandas as pd

    try:
        df = pd.read_csv(src)
    except (pd.errors.EmptyDataError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise DataError(f"{src}: not a readable CSV of CIF strings ({type(e).__name__}: {' '.join(str(e).split())[:120]})") from None
    if cif_column not in df.columns:
        raise DataError(f"{src}: no column {cif_column!r} (columns: {', '.join(map(str, df.columns))})")
    prop_cols = [c for c in df.columns if c not in (cif_column, id_column) and not str(c).startswith("Unnamed")
                 and pd.api.types.is_numeric_dtype(df[c])]
    default_units = {"heat_all": "eV/atom", "heat_ref": "eV/atom", "dir_gap": "eV", "ind_gap": "eV",
                     "energy_per_atom": "eV/atom", "formation_energy_per_atom": "eV/atom", "band_gap": "eV"}
    if isinstance(units, str):
        units = dict(u.split(":", 1) for u in units.split(","))
    units = {**default_units, **(units or {})}

    def records():
        for _, row in df.iterrows():
            sys_, reason = parse_cif(str(row[cif_column]), niggli=niggli)
            if sys_ is not None:
                sys_["id"] = str(row[id_column]) if id_column in df.columns else ""
                sys_["properties"] = {c: float(row[c]) for c in prop_cols}
            yield sys_, reason

    systems, reasons = _checked(records(), _elements_option(elements))
    _nothing_written(src, systems, reasons, "structure")
    return write_store(out, systems, domain="crystal", source=f"CIF CSV {Path(src).name} (ase CIF parser)",
                       report=_report(systems, reasons), units={c: units.get(c, "") for c in prop_cols},
                       attrs={"niggli_reduced": bool(niggli)})


# ------------------------------------------------------------------------------------------------------
# geometry: lattices, fractional coordinates, periodic neighbour lists
# ------------------------------------------------------------------------------------------------------
def cell_to_params(cell: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[..., 3, 3] rows a, b, c → lengths [..., 3] (Å) and angles [..., 3] (radians: α=∠(b,c), β=∠(a,c), γ=∠(a,b))."""
    lengths = cell.norm(dim=-1)
    a, b, c = cell.unbind(-2)

    def ang(u, v):
        cos = (u * v).sum(-1) / (u.norm(dim=-1) * v.norm(dim=-1)).clamp_min(1e-12)
        return torch.arccos(cos.clamp(-1, 1))

    return lengths, torch.stack([ang(b, c), ang(a, c), ang(a, b)], -1)


def params_to_cell(lengths: torch.Tensor, angles: torch.Tensor) -> torch.Tensor:
    """Lengths [..., 3] and angles [..., 3] (radians) → cell [..., 3, 3] with a along x and b in the xy plane."""
    a, b, c = lengths.unbind(-1)
    al, be, ga = angles.unbind(-1)
    cos_al, cos_be, cos_ga, sin_ga = al.cos(), be.cos(), ga.cos(), ga.sin().clamp_min(1e-6)
    zero = torch.zeros_like(a)
    cx = c * cos_be
    cy = c * (cos_al - cos_be * cos_ga) / sin_ga
    cz = (c**2 - cx**2 - cy**2).clamp_min(1e-12).sqrt()
    return torch.stack([torch.stack([a, zero, zero], -1), torch.stack([b * cos_ga, b * sin_ga, zero], -1),
                        torch.stack([cx, cy, cz], -1)], -2)


def _image_shifts(cell: torch.Tensor, pbc: torch.Tensor, cutoff: float) -> torch.Tensor:
    """Integer lattice shifts [S, 3] that can hold a neighbour within ``cutoff`` (from interplanar spacings)."""
    inv = torch.linalg.inv(cell)  # columns are reciprocal vectors / 2π
    spacing = 1.0 / inv.norm(dim=0).clamp_min(1e-12)
    reps = [int(math.ceil(cutoff / float(spacing[k]))) if bool(pbc[k]) else 0 for k in range(3)]
    ranges = [torch.arange(-r, r + 1, dtype=cell.dtype) for r in reps]
    return torch.cartesian_prod(*ranges).reshape(-1, 3)


def neighbor_list(positions: torch.Tensor, cutoff: float, batch: torch.Tensor | None = None,
                  cell: torch.Tensor | None = None, pbc: torch.Tensor | None = None):
    """Directed edges (i → j) with ``|r_j + S·cell − r_i| < cutoff`` within each system (``torch.cdist``).

    positions [N, 3]; batch [N] system index (default one system); cell [B, 3, 3]; pbc [B, 3] bool.
    Returns ``edge_index`` [2, E] (row 0 = source j, row 1 = target i as in PyG), ``shift`` [E, 3] (Å vectors
    added to r_j) and ``distance`` [E]. Periodic systems include every image within the cutoff (a small cell
    can see an atom's own images); the self-pair at zero shift is excluded.
    """
    n = positions.shape[0]
    batch = torch.zeros(n, dtype=torch.long, device=positions.device) if batch is None else batch
    n_sys = int(batch.max()) + 1 if n else 0
    periodic = torch.zeros(n_sys, dtype=torch.bool, device=positions.device)
    if pbc is not None and cell is not None:
        periodic = pbc.reshape(n_sys, 3).any(-1)
    src, dst, shifts = [], [], []
    mol_atoms = (~periodic)[batch]
    if mol_atoms.any():  # all non-periodic systems at once: block mask over the batch
        idx = mol_atoms.nonzero().squeeze(1)
        d = torch.cdist(positions[idx], positions[idx])
        same = batch[idx][:, None] == batch[idx][None, :]
        keep = same & (d < cutoff) & ~torch.eye(len(idx), dtype=torch.bool, device=d.device)
        i, j = keep.nonzero(as_tuple=True)
        src.append(idx[j]), dst.append(idx[i]), shifts.append(torch.zeros(len(i), 3, dtype=positions.dtype, device=d.device))
    for b in periodic.nonzero().flatten().tolist():
        idx = (batch == b).nonzero().squeeze(1)
        pos, c = positions[idx], cell.reshape(n_sys, 3, 3)[b].to(positions.dtype)
        s = _image_shifts(c.detach(), pbc.reshape(n_sys, 3)[b], cutoff).to(positions.device)
        vec = s @ c  # [S, 3]
        images = (pos[None] + vec[:, None]).reshape(-1, 3)  # [S·n, 3]
        d = torch.cdist(pos, images).reshape(len(idx), len(s), len(idx))  # [i, s, j]
        keep = d < cutoff
        zero = (s == 0).all(1)
        keep[:, zero, :] &= ~torch.eye(len(idx), dtype=torch.bool, device=d.device)[:, None, :]
        i, k, j = keep.nonzero(as_tuple=True)
        src.append(idx[j]), dst.append(idx[i]), shifts.append(vec[k])
    if not src:
        return (torch.zeros(2, 0, dtype=torch.long, device=positions.device),
                positions.new_zeros(0, 3), positions.new_zeros(0))
    src, dst, shift = torch.cat(src), torch.cat(dst), torch.cat(shifts)
    dist = (positions[src] + shift - positions[dst]).norm(dim=-1)
    return torch.stack([src, dst]), shift, dist


# ------------------------------------------------------------------------------------------------------
# PyG views and the DataModule
# ------------------------------------------------------------------------------------------------------
def to_pyg(system: dict[str, Any], dataset_idx: int = 0, properties: Sequence[str] = (),
           mean: Sequence[float] | None = None, std: Sequence[float] | None = None):
    """One system → ``torch_geometric.data.Data`` with ADiT's unified keys: ``atomic_numbers`` [n], ``pos`` [n, 3],
    ``frac_coords`` [n, 3] (zeros for molecules), ``cell`` [1, 3, 3], ``pbc`` [1, 3], ``lengths``/``angles`` [1, 3],
    ``num_atoms``, ``dataset_idx`` [1], ``y`` [1, P] (normalised; NaN→0) and ``y_mask`` [1, P]."""
    from torch_geometric.data import Data

    z = torch.as_tensor(system["atomic_numbers"], dtype=torch.long)
    pos = torch.as_tensor(system["positions"], dtype=torch.float32)
    cell = torch.as_tensor(system["cell"], dtype=torch.float32).reshape(1, 3, 3)
    pbc = torch.as_tensor(system["pbc"], dtype=torch.bool).reshape(1, 3)
    if pbc.any():
        frac = torch.linalg.solve(cell[0].double().T, pos.double().T).T.float() % 1.0
        lengths, angles = cell_to_params(cell)
    else:
        frac = torch.zeros_like(pos)
        lengths, angles = torch.zeros(1, 3), torch.zeros(1, 3)
    vals = torch.tensor([system["properties"].get(p, math.nan) for p in properties], dtype=torch.float32).reshape(1, -1)
    mask = torch.isfinite(vals)
    if mean is not None and len(properties):
        vals = (vals - torch.tensor(mean)) / torch.tensor(std)
    y = torch.where(mask, vals, torch.zeros_like(vals))
    return Data(atomic_numbers=z, pos=pos, frac_coords=frac, cell=cell, pbc=pbc, lengths=lengths, angles=angles,
                num_atoms=torch.tensor([len(z)]), dataset_idx=torch.tensor([dataset_idx]), y=y, y_mask=mask,
                charge=torch.tensor([system.get("charge", 0)]), num_nodes=len(z))


class AtomsDataset(torch.utils.data.Dataset):
    """PyG view over a subset (``indices``) of an :class:`AtomStore` loaded into memory."""

    def __init__(self, store: AtomStore, indices: Sequence[int], properties: Sequence[str] = (),
                 mean=None, std=None):
        self.store, self.indices = store, list(indices)
        self.properties, self.mean, self.std = list(properties), mean, std
        self.dataset_idx = DOMAINS[store.domain]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        return to_pyg(self.store[self.indices[k]], self.dataset_idx, self.properties, self.mean, self.std)


def split_indices(n: int, train_fraction: float) -> tuple[list[int], list[int]]:
    """By index (DECISIONS.md): the first ``train_fraction`` of systems train, the rest validate."""
    cut = int(round(n * train_fraction))
    return list(range(cut)), list(range(cut, n))


class AtomsDataModule(DataModule):
    """Molecules and crystals from atom stores, as PyG batches; several stores are concatenated (joint
    training mixes domains in proportion to their sizes, as ADiT does).

    Args:
        train: stores whose systems are split by index into train (``train_fraction``) and validation.
        test: stores used whole as the test split (e.g. Perov-5 test.csv converted).
        properties: per-system property names to serve as ``y`` (normalised by training mean/std; missing → masked).
        batch_size, num_workers, seed: loader settings.
        limit: use at most this many systems per train store (quick runs).
        train_systems: train on the first N systems of the training split only (sample-count sweeps); the
            validation split is unchanged, the property statistics are the N systems'.
    """

    def __init__(self, train: list[str], test: list[str] | None = None, properties: list[str] | None = None,
                 train_fraction: float = 0.9, batch_size: int = 64, num_workers: int = 0, seed: int = 0,
                 limit: int | None = None, train_systems: int | None = None):
        super().__init__()
        self.train_paths, self.test_paths = list(train), list(test or [])
        self.properties = list(properties or [])
        self.train_fraction, self.batch_size, self.num_workers = train_fraction, batch_size, num_workers
        self.seed, self.limit = seed, limit
        self._stores = [AtomStore(p).load() for p in self.train_paths]
        self._splits = []
        for s in self._stores:
            n = len(s) if limit is None else min(len(s), int(limit))
            tr, va = split_indices(n, train_fraction)
            if train_systems is not None:
                if not 1 <= train_systems <= len(tr):
                    raise DataError(f"train_systems={train_systems}: {s.path} has {len(tr)} training systems")
                tr = tr[:train_systems]
            self._splits.append((tr, va))
        self._spec = self._compute_spec()

    def _compute_spec(self) -> dict[str, Any]:
        mean, std, units = [], [], {}
        for p in self.properties:
            vals = []
            for s, (tr, _) in zip(self._stores, self._splits):
                if p in s.property_names:
                    v = s._mem["properties/" + p][tr]
                    vals.append(v[np.isfinite(v)])
                    units[p] = s.property_units()[p]
            v = np.concatenate(vals) if vals else np.zeros(0)
            if len(v) == 0:
                raise DataError(f"property {p!r} is in none of the training stores {self.train_paths}")
            mean.append(float(v.mean()))
            std.append(float(v.std()) or 1.0)
        hist: dict[str, list[int]] = {}
        elements: set[int] = set()
        for s, (tr, _) in zip(self._stores, self._splits):
            counts = np.diff(s.offsets)[tr]
            h = hist.setdefault(s.domain, [])
            bc = np.bincount(counts).tolist()
            hist[s.domain] = [a + b for a, b in zip(h + [0] * (len(bc) - len(h)), bc + [0] * (len(h) - len(bc)))]
            elements |= set(np.unique(s._mem["atomic_numbers"]).tolist())
        return {"properties": self.properties, "property_mean": mean, "property_std": std, "property_units": units,
                "num_atoms_hist": hist, "domains": sorted({s.domain for s in self._stores}),
                "elements": sorted(int(e) for e in elements), "stores": self.train_paths}

    @property
    def spec(self) -> dict[str, Any]:
        return self._spec

    def _dataset(self, stores, which: int | None):
        from torch.utils.data import ConcatDataset

        parts = []
        for s, split in zip(stores, self._splits if which is not None else [None] * len(stores)):
            idx = split[which] if which is not None else range(len(s))
            parts.append(AtomsDataset(s, idx, self.properties, self._spec["property_mean"], self._spec["property_std"]))
        return ConcatDataset(parts)

    def train_dataset(self):
        return self._dataset(self._stores, 0)

    def val_dataset(self):
        return self._dataset(self._stores, 1)

    def train_smiles(self) -> list[str]:
        out = []
        for s, (tr, _) in zip(self._stores, self._splits):
            if s.has("smiles"):
                sm = s.all_smiles()
                out += [sm[i] for i in tr]
        return out

    def _loader(self, ds, shuffle: bool):
        from torch_geometric.loader.dataloader import Collater

        from sciformer.data.loader import ResumableLoader

        return ResumableLoader(ds, batch_size=self.batch_size, shuffle=shuffle, seed=self.seed,
                               num_workers=self.num_workers, collate_fn=Collater(ds))

    def train_dataloader(self):
        return self._loader(self.train_dataset(), True)

    def val_dataloader(self):
        return self._loader(self.val_dataset(), False)

    def test_dataloader(self):
        return self._loader(self._dataset([AtomStore(p).load() for p in self.test_paths], None), False)
