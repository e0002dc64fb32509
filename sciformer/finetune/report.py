"""The sweep's summary and report: errors per sample count and model, AG/EG, physics metrics, plots."""

from __future__ import annotations

from pathlib import Path

from sciformer.finetune.gains import accuracy_gain, efficiency_gain


def cell_key(n: int, kind: str, seed: int) -> str:
    return f"n={n}/{kind}/seed={seed}"


METRIC = "test/median_rel_l1"  # Poseidon's headline: median over samples of the relative L1 (%), mean over groups


def summarise(cells: dict[str, dict], cfg) -> dict:
    """Per sample count and model: mean and spread of the error over seeds; AG and EG of the fine-tuned model."""
    import statistics

    kinds = ["finetuned", *cfg.baselines]
    names = [METRIC, *sorted({k for c in cells.values() for k in c if k.startswith(("phys/", f"{METRIC}/"))})]
    tables: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    for metric in names:
        tables[metric] = {k: {} for k in kinds}
        for kind in kinds:
            for n in cfg.samples:
                vals = [v for s in cfg.seeds if (v := cells.get(cell_key(n, kind, s), {}).get(metric)) is not None]
                if vals:
                    tables[metric][kind][n] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals),
                                               "seeds": len(vals)}
    table = tables[METRIC]
    gains: dict[str, dict] = {}
    model = table["finetuned"]
    for base in cfg.baselines:
        ns = [n for n in cfg.samples if n in model and n in table[base]]
        if not ns:
            continue
        S = max(ns)
        eg, eg_text = efficiency_gain([n for n in cfg.samples if n in model],
                                      [model[n]["mean"] for n in cfg.samples if n in model],
                                      table[base][S]["mean"], S)
        gains[base] = {
            "AG": {n: accuracy_gain(table[base][n]["mean"], model[n]["mean"]) for n in ns},
            "EG": {"S": S, "value": eg, "text": eg_text},
        }
    return {"metric": METRIC, "table": table, "gains": gains, "tables": tables}


def write_report(out: Path, summary: dict, cfg, meta: dict) -> None:
    """``report.md`` (table of errors and gains) and ``error_vs_samples.png`` (log-log, one curve per model)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sciformer.io import atomic_path

    table = summary["table"]
    lines = [f"# Fine-tuning sweep: {meta['data']}", "",
             f"Pretrained: `{meta['ckpt']}`. Budget per cell: {cfg.epochs} epochs, batch {cfg.batch_size}, "
             f"seeds {cfg.seeds}, mode {cfg.mode}.", "",
             *_variables_lines(meta.get("variables")),
             f"Error: {METRIC} — median over test samples of the relative L1 error in percent on normalised fields "
             "(Poseidon's convention), mean over channel groups; mean ± std over seeds.", "",
             "| " + " | ".join(["samples", *table, *(f"AG vs {b}" for b in summary["gains"])]) + " |",
             "|---" * (1 + len(table) + len(summary["gains"])) + "|"]
    for n in cfg.samples:
        row = [str(n)]
        for kind in table:
            v = table[kind].get(n)
            row.append(f"{v['mean']:.2f} ± {v['std']:.2f}" if v else "—")
        for g in summary["gains"].values():
            row.append(f"{g['AG'][n]:.2f}" if n in g["AG"] else "—")
        lines.append("| " + " | ".join(row) + " |")
    for base, g in summary["gains"].items():
        lines.append("")
        lines.append(f"Efficiency gain vs {base} at S={g['EG']['S']}: EG = {g['EG']['text']} "
                     "(samples the baseline needs / samples the fine-tuned model needs for the same error).")
    for metric, tab in summary.get("tables", {}).items():
        if metric == METRIC:
            continue
        what = PHYSICS_DEFINITIONS.get(metric.split("/", 1)[1], "") if metric.startswith("phys/") else \
            f"median relative L1 (%) of channel group {metric.split('/')[-1]!r}"
        lines += ["", f"### {metric}", "", what, "", "| " + " | ".join(["samples", *tab]) + " |",
                  "|---" * (1 + len(tab)) + "|"]
        for n in cfg.samples:
            cellv = [tab[k].get(n) for k in tab]
            lines.append("| " + " | ".join([str(n), *(f"{v['mean']:.4g} ± {v['std']:.2g}" if v else "—"
                                                      for v in cellv)]) + " |")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    _plot_groups(summary.get("tables", {}), cfg, out / "error_by_channel_group.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    for kind, rows in table.items():
        ns = sorted(rows)
        if ns:
            ax.errorbar(ns, [rows[n]["mean"] for n in ns], yerr=[rows[n]["std"] for n in ns], marker="o",
                        label=kind, capsize=3)
    ax.set(xscale="log", yscale="log", xlabel="training trajectories", ylabel="median rel. L1 error (%)")
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "error_vs_samples.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


PHYSICS_DEFINITIONS = {
    "vrmse": "VRMSE (The Well): sqrt(mean (ŷ−y)² / (var y + 1e-7)) per channel, physical units, mean over test pairs.",
    "nrmse": "nRMSE (PDEBench): sqrt(mean (ŷ−y)²) / sqrt(mean y²) per channel, mean over test pairs.",
    "energy_spectrum_error": "energy-spectrum error: Σ_k |E_pred(k) − E_true(k)| / Σ_k E_true(k) over isotropic shells.",
    "boundary_rmse": "RMSE on the boundary points of the non-periodic axes (physical units).",
    "divergence_pred": "RMS divergence of the predicted velocity (physical units; compare with divergence_data).",
    "divergence_data": "RMS divergence of the data's velocity at the same resolution (the floor for divergence_pred).",
}


def _variables_lines(v: dict | None) -> list[str]:
    """What the fine-tuned model reuses: channels are matched by variable name, never by position."""
    if not v:
        return []
    fmt = lambda names: ", ".join(names) or "none"  # noqa: E731
    return [f"Variables matched by name: inputs reused {fmt(v['inputs_reused'])}, new {fmt(v['inputs_new'])}; "
            f"outputs reused {fmt(v['outputs_reused'])}, new {fmt(v['outputs_new'])} (new channels start fresh).", ""]


def _plot_groups(tables: dict, cfg, path: Path) -> None:
    """Bars per channel group at the largest sample count every model reached (mean over seeds)."""
    from sciformer import report

    groups = {m.split("/")[-1]: t for m, t in tables.items() if m.startswith(f"{METRIC}/")}
    if not groups:
        return
    kinds = list(next(iter(groups.values())))
    ns = [n for n in cfg.samples if all(n in t[k] for t in groups.values() for k in kinds)]
    if not ns:
        return
    n = max(ns)
    fig, axes = report.figure(1, 1, 1.2 + 1.1 * len(groups), 3.2)
    ax, width = axes[0, 0], 0.8 / len(kinds)
    for i, kind in enumerate(kinds):
        ax.bar([g + i * width for g in range(len(groups))], [t[kind][n]["mean"] for t in groups.values()],
               width, yerr=[t[kind][n]["std"] for t in groups.values()], label=kind, capsize=2)
    ax.set_xticks([g + width * (len(kinds) - 1) / 2 for g in range(len(groups))], list(groups))
    ax.set(ylabel="median rel. L1 (%)", title=f"{n} training trajectories")
    ax.legend()
    report.save_figure(fig, path)


# Settings a resumed sweep may change (they add cells); every other one changes what a finished cell means.
