"""`sciformer data build|convert|info`: dispatch to the builder, converter or store describer registered here.

Each registry maps a name to "module:function" and is imported only when used. To add a format or a
builder, add one line here.

- converter: ``fn(src: Path, out: Path, **options) -> Path`` writes a canonical store atomically.
- builder:   ``fn(out: Path, trajectories: int, resolution: int, seed: int, **options) -> Path``.
- describer: ``fn(path: Path) -> str`` for ``data info``; chosen by the store's ``layout`` attribute.
"""

from __future__ import annotations

import argparse
import importlib
import json
from collections.abc import Callable
from pathlib import Path

from sciformer.errors import DataError, SciformerError

# name -> "module:function", imported only when used (so `sciformer data --help` stays fast).
CONVERTERS: dict[str, str] = {
    "poseidon": "sciformer.data.formats.poseidon:convert_poseidon",
    "well": "sciformer.data.formats.well:convert_well",
    "well-dir": "sciformer.data.formats.well_collection:convert_well_directory",  # one split of a Well directory
    "pdebench": "sciformer.data.formats.pdebench:convert_pdebench",
    "csv": "sciformer.data.series:convert_csv",  # series CSV (ETT, Weather, ...)
    "sdf": "sciformer.data.atoms:convert_sdf",
    "xyz": "sciformer.data.atoms:convert_xyz",
    "cif-csv": "sciformer.data.atoms:convert_cif_csv",
}
BUILDERS: dict[str, str] = {
    "qm9-etkdg": "sciformer.data.atoms:build_qm9_etkdg",  # RDKit ETKDG+MMFF conformers (not DFT); --option limit=N
    "tgv-3d": "sciformer.data.builders_3d:build_taylor_green_3d",  # 3D perturbed Taylor-Green vortex
    # 2D verified solvers (sciformer/solvers/)
    **{n: f"sciformer.data.builders_2d:build_{n.replace('-', '_')}" for n in (
        "ns-sines", "ns-gauss", "ns-pwc", "ns-shear-layer", "ns-vortex-sheet", "ns-tracer", "ns-kolmogorov",
        "wave-gauss", "wave-layer", "allen-cahn", "poisson-gauss")},
}
DESCRIBERS: dict[str, str] = {
    "fields": "sciformer.data.store:describe",
    "atoms": "sciformer.data.atoms:describe",
    "series": "sciformer.data.series:describe",
}

EXAMPLES = """examples:
  sciformer data build ns-sines --out data/ns_sines.zarr --trajectories 64 --resolution 64 --seed 0
  sciformer data convert NS-Sines.nc data/ns_sines.zarr --from poseidon
  sciformer data convert shear_flow_00.hdf5 data/shear.zarr --from well
  sciformer data convert the_well/datasets/shear_flow data/shear_valid.zarr --from well-dir --option split=valid
  sciformer data convert ETTh1.csv data/etth1.zarr --from csv --option target=OT
  sciformer data info data/ns_sines.zarr
"""


def _resolve(registry: dict[str, str], name: str, what: str) -> Callable:
    if name not in registry:
        known = ", ".join(sorted(registry)) or "(none)"
        raise SciformerError(f"unknown {what} {name!r}; available: {known}")
    module, attr = registry[name].split(":")
    return getattr(importlib.import_module(module), attr)


def _options(pairs: list[str]) -> dict:
    """``key=value`` pairs; values parsed as JSON where possible (numbers, lists, booleans)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SciformerError(f"--option {pair!r}: expected key=value")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _checked_options(fn: Callable, name: str, options: dict, fixed: tuple[str, ...]) -> dict:
    """Refuse ``--option`` keys ``fn`` does not take, naming them and the valid ones. A function with ``**options``
    checks its own (the NS and wave builders: their families' parameters)."""
    import inspect

    params = inspect.signature(fn).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return options
    valid = [n for n, p in params.items() if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and n not in fixed]
    unknown = [k for k in options if k not in valid]
    if unknown:
        raise SciformerError(f"--option {unknown[0]}={options[unknown[0]]}: {name} has no option(s) "
                             f"{', '.join(map(repr, unknown))}; valid: {', '.join(valid) or '(none)'}")
    return options


def store_layout(path: Path) -> str:
    """The ``layout`` attribute of a zarr store (fields | series | atoms), with clear errors."""
    import zarr

    if not Path(path).exists() and "://" not in str(path):
        from sciformer.io import recover_for_reading

        if not recover_for_reading(path):  # an interrupted replace may have left only .NAME.old
            raise DataError(f"{path}: no such store")
    try:
        group = zarr.open_group(str(path), mode="r")
    except Exception as e:
        raise DataError(f"{path}: not a zarr store ({type(e).__name__}: {e})") from None
    layout = group.attrs.get("layout")
    if layout is None:
        raise DataError(f"{path}: zarr store without a sciformer 'layout' attribute; convert it with `sciformer data convert`")
    return str(layout)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sciformer data", description="Build, convert and inspect data stores.",
                                epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="generate a data set with a verified numerical solver",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    b.add_argument("name", help="builder name (see `sciformer info`)")
    b.add_argument("--out", required=True, type=Path, help="output store (written atomically; a rerun resumes)")
    b.add_argument("--trajectories", type=int, default=64)
    b.add_argument("--resolution", type=int, default=64)
    b.add_argument("--seed", type=int, default=0)
    b.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="builder-specific option")
    c = sub.add_parser("convert", help="convert an external file to a canonical store",
                       epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    c.add_argument("src", type=Path)
    c.add_argument("out", type=Path)
    c.add_argument("--from", dest="fmt", required=True, help="source format")
    c.add_argument("--option", action="append", default=[], metavar="KEY=VALUE", help="converter-specific option")
    i = sub.add_parser("info", help="print variables, shapes, statistics; check for NaN/Inf")
    i.add_argument("store", type=Path)
    i.add_argument("--verify", action="store_true",
                   help="read every chunk of every array: check it is present and finite; exit 1 on a problem")
    return p


def main(argv: list[str]) -> None:
    args = parser().parse_args(argv)
    if args.action == "build":
        fn = _resolve(BUILDERS, args.name, "builder")
        options = _checked_options(fn, args.name, _options(args.option), ("out", "trajectories", "resolution", "seed"))
        out = fn(args.out, trajectories=args.trajectories, resolution=args.resolution, seed=args.seed, **options)
        print(f"built {args.name} -> {out}")
    elif args.action == "convert":
        fn = _resolve(CONVERTERS, args.fmt, "format")
        if not args.src.exists() and "://" not in str(args.src):
            raise DataError(f"{args.src}: no such file")
        out = fn(args.src, args.out, **_checked_options(fn, f"--from {args.fmt}", _options(args.option), ("src", "out")))
        print(f"converted {args.src} -> {out}")
    elif args.verify:
        from sciformer.data.store import verify_store

        store_layout(args.store)  # clear errors for a missing or foreign store
        result = verify_store(args.store)
        for line in result.problems[:50]:
            print(f"  {line}")
        if len(result.problems) > 50:
            print(f"  ... and {len(result.problems) - 50} more")
        if not result.ok:
            raise DataError(result.summary())
        print(result.summary())
    else:
        print(_resolve(DESCRIBERS, store_layout(args.store), "store layout")(args.store))
