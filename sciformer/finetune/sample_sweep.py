"""The sample-count sweep behind ``sciformer finetune``, one implementation for every kind of store.

Every cell (samples × model × seed) is trained with the same budget and scored on the same test split; the
store's layout chooses the kind (``fields``, ``series``, ``atoms``: how a cell is built and scored), and the
checkpoint must be a model of that kind. Results are written after every cell, so a killed sweep resumes from
its finished cells; a resumed sweep with other settings is refused.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from sciformer import checkpoints
from sciformer.errors import SciformerError
from sciformer.finetune import atoms, fields, series
from sciformer.finetune.config import SweepConfig, SweepKind
from sciformer.finetune.report import cell_key, summarise, write_report

KINDS: dict[str, SweepKind] = {k.layout: k for k in (fields.KIND, series.KIND, atoms.KIND)}

# Settings a resumed sweep may change (they add cells); every other one changes what a finished cell means.
EXTENDABLE = ("samples", "seeds", "baselines", "num_workers")


def kind_of(data: Path) -> SweepKind:
    """The sweep kind of a store, from its layout attribute."""
    from sciformer.data.commands import store_layout

    layout = store_layout(data)
    if layout not in KINDS:
        raise SciformerError(f"{data}: a {layout!r} store; `sciformer finetune` sweeps {', '.join(KINDS)} stores")
    return KINDS[layout]


def run_cell(kind: SweepKind, ckpt: Path, data: Path, n: int, model: str, seed: int, cfg: SweepConfig,
             workdir: Path) -> dict[str, float]:
    """Train and score one cell: ``model`` is "finetuned" or one of the kind's baselines."""
    import lightning as L

    L.seed_everything(seed, verbose=False)
    return kind.run_cell(ckpt, data, n, model, seed, cfg, workdir)


def _check_same_sweep(state: dict, ckpt: Path, data: Path, cfg: SweepConfig, results_file: Path) -> None:
    """Refuse to resume finished cells that were made with another checkpoint, store or budget."""
    if not state:
        return
    old = {"ckpt": state.get("ckpt"), "data": state.get("data"),
           **{k: v for k, v in state.get("config", {}).items() if k not in EXTENDABLE}}
    new = {"ckpt": str(ckpt), "data": str(data),
           **{k: v for k, v in dataclasses.asdict(cfg).items() if k not in EXTENDABLE}}
    changed = [k for k in new if k in old and old[k] != new[k]]
    if changed:
        diff = ", ".join(f"{k}: {old[k]!r} -> {new[k]!r}" for k in changed)
        raise SciformerError(f"{results_file} holds a sweep with other settings ({diff}); write to another --out, "
                             "or delete it to start over")


def _read_state(results_file: Path) -> dict:
    import json

    if not results_file.is_file():
        return {}
    try:
        state = json.loads(results_file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SciformerError(f"{results_file}: not a readable sweep record ({e}); it was damaged: move it away to "
                             "start over, or write to another --out") from None
    if not isinstance(state, dict) or not isinstance(state.get("cells", {}), dict):
        raise SciformerError(f"{results_file}: not a sweep record of `sciformer finetune`; write to another --out")
    return state


def sweep(ckpt: Path, data: Path, cfg: SweepConfig, out: Path) -> dict:
    """Run (or resume) every cell; write results.json after each cell, then report.md and plots."""
    from rich.progress import Progress

    from sciformer.io import exclusive_lock, write_json

    kind = kind_of(data)
    cfg = kind.resolve(cfg)
    ck = checkpoints.read(ckpt, kind=kind.model_kind)  # a wrong checkpoint fails here, once, not in every cell
    ck.build()
    if kind.prepare is not None:
        cfg = kind.prepare(cfg, data, ck)
    variables = kind.variables(ck, data, cfg)
    out.mkdir(parents=True, exist_ok=True)
    with exclusive_lock(out):  # a second sweep on the same --out is refused, naming this process
        results_file = out / "results.json"
        state = _read_state(results_file)
        _check_same_sweep(state, ckpt, data, cfg, results_file)
        cells, skipped = state.get("cells", {}), state.get("skipped", {})
        remaining = [(n, model, seed) for n in cfg.samples for model in ["finetuned", *cfg.baselines]
                     for seed in cfg.seeds if cell_key(n, model, seed) not in cells]
        meta = {"kind": kind.layout, "metric": kind.metric, "unit": kind.unit, "ckpt": str(ckpt), "data": str(data),
                "config": dataclasses.asdict(cfg), "variables": variables}
        with Progress() as progress:
            bar = progress.add_task("fine-tuning sweep", total=len(remaining))
            for n, model, seed in remaining:
                key = cell_key(n, model, seed)
                progress.update(bar, description=f"sweep {key}")
                try:
                    cells[key] = run_cell(kind, ckpt, data, n, model, seed, cfg, out / "cells")
                    skipped.pop(key, None)
                except SciformerError as e:  # e.g. more samples than the training split holds: skip, keep going
                    skipped[key] = str(e)
                    progress.console.print(f"[yellow]skipped {key}: {e}")
                write_json(results_file, {**meta, "cells": cells, "skipped": skipped})
                progress.advance(bar)
        summary = summarise(cells, cfg, kind)
        write_json(results_file, {**meta, "cells": cells, "skipped": skipped, "summary": summary})
        write_report(out, summary, cfg, meta, kind)
    return summary
