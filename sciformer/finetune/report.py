"""The sweep's summary and report: errors per sample count and model, AG/EG, physics metrics, plots."""

from __future__ import annotations

from pathlib import Path

from sciformer.finetune.gains import accuracy_gain, efficiency_gain


def cell_key(n: int, kind: str, seed: int) -> str:
    return f"n={n}/{kind}/seed={seed}"


def summarise(cells: dict[str, dict], cfg, kind) -> dict:
    """Per sample count and model: mean and spread of each metric over seeds; AG and EG of the fine-tuned model
    on the kind's headline metric."""
    import statistics

    metric = kind.metric
    models = ["finetuned", *cfg.baselines]
    names = [metric, *sorted({k for c in cells.values() for k in c if k != metric and k.startswith(kind.tables)})]
    tables: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
    for name in names:
        tables[name] = {k: {} for k in models}
        for model in models:
            for n in cfg.samples:
                vals = [v for s in cfg.seeds if (v := cells.get(cell_key(n, model, s), {}).get(name)) is not None]
                if vals:
                    tables[name][model][n] = {"mean": statistics.fmean(vals), "std": statistics.pstdev(vals),
                                              "seeds": len(vals)}
    table = tables[metric]
    gains: dict[str, dict] = {}
    tuned = table["finetuned"]
    for base in cfg.baselines:
        ns = [n for n in cfg.samples if n in tuned and n in table[base]]
        if not ns:
            continue
        S = max(ns)
        eg, eg_text = efficiency_gain([n for n in cfg.samples if n in tuned],
                                      [tuned[n]["mean"] for n in cfg.samples if n in tuned],
                                      table[base][S]["mean"], S)
        gains[base] = {
            "AG": {n: accuracy_gain(table[base][n]["mean"], tuned[n]["mean"]) for n in ns},
            "EG": {"S": S, "value": eg, "text": eg_text},
        }
    return {"metric": metric, "table": table, "gains": gains, "tables": tables}


def write_report(out: Path, summary: dict, cfg, meta: dict, kind) -> None:
    """``report.md`` (errors, gains, one table per further metric) and ``error_vs_samples.png`` (log-log, one
    curve per model); the same sections for every kind of sweep."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sciformer.io import atomic_path

    metric, table = kind.metric, summary["table"]
    lines = [f"# Fine-tuning sweep: {meta['data']}", "",
             f"Pretrained: `{meta['ckpt']}`. Samples: {kind.unit}. Budget per cell: {cfg.epochs} epochs, batch "
             f"{cfg.batch_size}, seeds {cfg.seeds}, mode {cfg.mode}.", "",
             *_variables_lines(meta.get("variables")),
             f"Error: {metric} — {kind.metric_text}; mean ± std over seeds.", "",
             "| " + " | ".join(["samples", *table, *(f"AG vs {b}" for b in summary["gains"])]) + " |",
             "|---" * (1 + len(table) + len(summary["gains"])) + "|"]
    for n in cfg.samples:
        row = [str(n)]
        for model in table:
            v = table[model].get(n)
            row.append(f"{v['mean']:.4g} ± {v['std']:.2g}" if v else "—")
        for g in summary["gains"].values():
            row.append(f"{g['AG'][n]:.2f}" if n in g["AG"] else "—")
        lines.append("| " + " | ".join(row) + " |")
    for base, g in summary["gains"].items():
        lines.append("")
        lines.append(f"Efficiency gain vs {base} at S={g['EG']['S']}: EG = {g['EG']['text']} "
                     "(samples the baseline needs / samples the fine-tuned model needs for the same error).")
    for name, tab in summary.get("tables", {}).items():
        if name == metric:
            continue
        suffix = name.split("/", 1)[1]
        what = kind.definitions.get(suffix) or (
            f"{metric} of channel group {name.split('/')[-1]!r}" if name.startswith(f"{metric}/") else "")
        lines += ["", f"### {name}", "", what, "", "| " + " | ".join(["samples", *tab]) + " |",
                  "|---" * (1 + len(tab)) + "|"]
        for n in cfg.samples:
            cellv = [tab[k].get(n) for k in tab]
            lines.append("| " + " | ".join([str(n), *(f"{v['mean']:.4g} ± {v['std']:.2g}" if v else "—"
                                                      for v in cellv)]) + " |")
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
    _plot_groups(summary.get("tables", {}), cfg, metric, out / "error_by_channel_group.png")
    fig, ax = plt.subplots(figsize=(5, 4))
    for model, rows in table.items():
        ns = sorted(rows)
        if ns:
            ax.errorbar(ns, [rows[n]["mean"] for n in ns], yerr=[rows[n]["std"] for n in ns], marker="o",
                        label=model, capsize=3)
    ax.set(xscale="log", yscale="log", xlabel=kind.unit, ylabel=metric)
    ax.legend()
    fig.tight_layout()
    with atomic_path(out / "error_vs_samples.png") as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def _variables_lines(v: dict | None) -> list[str]:
    """What the fine-tuned model reuses: variables are matched by name, never by position."""
    if not v:
        return []
    fmt = lambda names: ", ".join(names) or "none"  # noqa: E731
    parts = [f"{side} reused {fmt(v[f'{side}_reused'])}, new {fmt(v[f'{side}_new'])}"
             for side in ("inputs", "outputs", "properties", "variates") if f"{side}_reused" in v]
    return [f"Variables matched by name: {'; '.join(parts)} (new ones start fresh).", ""]


def _plot_groups(tables: dict, cfg, metric: str, path: Path) -> None:
    """Bars per channel group at the largest sample count every model reached (mean over seeds)."""
    from sciformer import report

    groups = {m.split("/")[-1]: t for m, t in tables.items() if m.startswith(f"{metric}/")}
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
    ax.set(ylabel=metric, title=f"n = {n}")
    ax.legend()
    report.save_figure(fig, path)


def log_outputs(logger, out: Path, summary: dict, cfg) -> list[str]:
    """Send the sweep's plots (images) and tables (the headline error with AG per sample count, one per further
    metric) to a ``sciformer.loggers`` logger; returns the tags sent."""
    sent = []
    for name in ("error_vs_samples", "error_by_channel_group"):
        if (out / f"{name}.png").is_file():
            logger.image(f"finetune/{name}", out / f"{name}.png")
            sent.append(f"finetune/{name}")
    metric, table, gains = summary["metric"], summary["table"], summary["gains"]
    rows = []
    for n in cfg.samples:
        row: list = [n]
        for model in table:
            v = table[model].get(n)
            row += [v["mean"] if v else None, v["std"] if v else None]
        row += [g["AG"].get(n) for g in gains.values()]
        rows.append(row)
    columns = ["samples", *(f"{m} {s}" for m in table for s in ("mean", "std")), *(f"AG vs {b}" for b in gains)]
    logger.table(f"finetune/{metric}", columns, rows)
    sent.append(f"finetune/{metric}")
    for name, tab in summary.get("tables", {}).items():
        if name == metric:
            continue
        logger.table(f"finetune/{name}", ["samples", *tab],
                     [[n, *((tab[k][n]["mean"] if n in tab[k] else None) for k in tab)] for n in cfg.samples])
        sent.append(f"finetune/{name}")
    return sent
