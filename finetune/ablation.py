"""The recipe ablation of issue 17 (finetune/ablation.yaml): pretrain each variant on the NS mixture under one
wall-clock budget, fine-tune it on four unseen physics against shared scratch/FNO baselines and the zero and
persistence predictors, roll it out on the pretraining physics, and write OUT/results.json and finetune/ABLATION.md.
Rerunning resumes: stores, finished pretrainings and finished sweep cells are kept.

    python finetune/ablation.py --out runs/ablation --jobs 2 [--only VARIANT,...] [--best rms,jitter,noise] [--tiny]
"""

from __future__ import annotations

import argparse
import copy
import csv
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BASELINE_VARIANT = "today"  # its sweeps train the scratch and FNO cells every variant is compared with
HEADLINE = "## Fine-tuned error per variant, baselines, AG vs scratch"  # the table RESULTS.md gets too
TARGETS = "## Targets"


# ---- plan ------------------------------------------------------------------------------------------------------
def load_plan(path: Path, tiny: bool) -> dict:
    """The yaml with the --tiny sizes merged in (pretraining stores shrink to the tiny grid and count)."""
    plan = yaml.safe_load(Path(path).read_text())
    if tiny:
        t = plan["tiny"]
        pre = dict(t["pretrain"])
        res, n = pre.pop("resolution"), pre.pop("trajectories")
        plan["budget"]["pretrain"].update(pre, resolution=res)
        plan["budget"]["pretrain"]["stores"] = [{**s, "trajectories": n} for s in plan["budget"]["pretrain"]["stores"]]
        plan["budget"]["downstream"].update(t["downstream"])
        plan["budget"]["rollout"]["horizon"].update(t["rollout"])
    return plan


def merge(a: dict, b: dict) -> dict:
    """``b`` over ``a``, nested mappings merged (a variant's options over another's)."""
    out = copy.deepcopy(a)
    for k, v in b.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else copy.deepcopy(v)
    return out


def variants(plan: dict, only: str | None, best: list[str] | None) -> dict[str, dict]:
    """The variants to run: all single options (or the comma-separated ``only``), plus "best" combining the
    ``best`` ones."""
    from sciformer.errors import ConfigError

    table = dict(plan["variants"])
    if best:
        unknown = [b for b in best if b not in table]
        if unknown:
            raise ConfigError(f"--best: unknown variant(s) {unknown}; choose from {', '.join(table)}")
        combo: dict = {}
        for b in best:
            combo = merge(combo, table[b])
        table["best"] = {**combo, "of": list(best)}
    if len(table) > 7:
        raise ConfigError(f"variants: {len(table)} listed; DECISIONS allows at most 7")
    if only is not None:
        names = [o.strip() for o in only.split(",")]
        unknown = [o for o in names if o not in table]
        if unknown:
            raise ConfigError(f"--only: unknown variant(s) {unknown}; choose from {', '.join(table)}")
        return {o: table[o] for o in names}
    return table


# ---- data ------------------------------------------------------------------------------------------------------
def build(name: str, out: Path, trajectories: int, resolution: int, seed: int, **options) -> Path:
    """One store by its builder (a finished build is kept, an interrupted one resumes)."""
    from sciformer.data.commands import BUILDERS, _resolve

    return Path(_resolve(BUILDERS, name, "builder")(out, trajectories=trajectories, resolution=resolution, seed=seed,
                                                       **options))


def build_all(plan: dict, data_dir: Path) -> tuple[list[Path], dict[str, Path]]:
    pre, down = plan["budget"]["pretrain"], plan["budget"]["downstream"]
    stores = [build(s["name"], data_dir / f"{s['name'].replace('-', '_')}_{pre['resolution']}.zarr",
                    s["trajectories"], pre["resolution"], s["seed"]) for s in pre["stores"]]
    tasks = {t["name"]: build(t["name"], data_dir / f"{t['name']}-{down['resolution']}.zarr", down["trajectories"],
                              down["resolution"], 1000 + i) for i, t in enumerate(plan["tasks"])}
    return stores, tasks


def build_rollout_stores(plan: dict, data_dir: Path) -> list[Path]:
    """Held-out trajectories of the pretraining physics over a longer horizon than the pretraining stores (whose
    10 model steps a good model outlives, which caps the valid length): fresh seeds, same grid and time step."""
    pre, long = plan["budget"]["pretrain"], plan["budget"]["rollout"]["horizon"]
    return [build(s["name"], data_dir / f"{s['name'].replace('-', '_')}_{pre['resolution']}_long.zarr",
                  long["trajectories"], pre["resolution"], long["seed"] + i,
                  t_end=long["t_end"], snapshots=long["snapshots"])
            for i, s in enumerate(pre["stores"])]


# ---- pretraining -----------------------------------------------------------------------------------------------
def fit_args(plan: dict, options: dict, stores: list[Path], root: Path) -> list[str]:
    """`sciformer fit` arguments: the pretraining config, this variant's options, the run's directory and budget."""
    pre = plan["budget"]["pretrain"]
    secs = round(60 * pre["minutes"])
    args = ["fit", "-c", str(ROOT / pre["config"]),
            f"--trainer.default_root_dir={root}", f"--trainer.logger.init_args.save_dir={root}",
            f"--trainer.max_time=00:{secs // 3600:02d}:{secs % 3600 // 60:02d}:{secs % 60:02d}",
            f"--trainer.max_epochs={pre['max_epochs']}", f"--data.init_args.stores={json.dumps([str(s) for s in stores])}"]
    task = dict(options.get("task", {}))
    if "model_options" in task:  # over the config's {residual: true}
        base = yaml.safe_load((ROOT / pre["config"]).read_text())["model"]["init_args"].get("model_options") or {}
        task["model_options"] = {**base, **task["model_options"]}
    args += [f"--model.init_args.{k}={_cli(v)}" for k, v in task.items()]
    args += [f"--data.init_args.{k}={_cli(v)}" for k, v in options.get("data", {}).items()]
    return args


def _cli(value) -> str:
    """A value as jsonargparse reads it: strings bare (JSON quotes would become part of the string)."""
    return value if isinstance(value, str) else json.dumps(value)


def sciformer_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("sciformer")
    return [str(exe)] if exe.is_file() else [sys.executable, "-c", "import sys; from sciformer.cli import main; sys.exit(main())"]


def child_env(threads: int) -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def pretrain(plan: dict, variant: str, options: dict, stores: list[Path], out: Path) -> dict:
    """Pretrain one variant (or reuse a finished run: its record pretrain.json and checkpoint); the record holds
    wall time, epochs and steps reached, and the last validation median rel. L1."""
    root = out / variant / "pretrain"
    record_file, ckpt = root / "pretrain.json", root / "csv" / "version_0" / "checkpoints" / "last.ckpt"
    if record_file.is_file() and ckpt.is_file():
        return json.loads(record_file.read_text())
    if root.exists():  # an interrupted run: the budget is wall clock, so it starts over
        shutil.rmtree(root)
    root.mkdir(parents=True)
    args = fit_args(plan, options, stores, root)
    t0 = time.perf_counter()
    with open(root / "fit.log", "w") as log:
        proc = subprocess.run([*sciformer_cmd(), *args], cwd=ROOT, env=child_env(plan["budget"]["pretrain"]["threads"]),
                              stdout=log, stderr=subprocess.STDOUT)
    wall = time.perf_counter() - t0
    if proc.returncode != 0 or not ckpt.is_file():
        raise RuntimeError(f"pretraining {variant} failed (exit {proc.returncode}); see {root / 'fit.log'}")
    import torch

    state = torch.load(ckpt, map_location="cpu", weights_only=False)
    from sciformer import checkpoints

    want = options.get("task", {}).get("target", "state")
    got = checkpoints.read(ckpt).data_spec.get("target", "state")  # what `sciformer rollout` will read
    if got != want:
        print(f"warning: {variant}: trained with target {want!r} but its checkpoint reads as {got!r}; its rollout "
              f"is scored as a {got} model", file=sys.stderr)
    record = {"variant": variant, "options": options, "ckpt": str(ckpt), "wall_s": wall,
              "target": want, "target_in_checkpoint": got,
              "steps": int(state["global_step"]), "args": args, "machine": machine(),
              **last_validation(root / "csv" / "version_0" / "metrics.csv")}
    from sciformer.io import write_json

    write_json(record_file, record)
    return record


def last_validation(metrics_csv: Path) -> dict:
    """Epochs reached (logged) and the last validation row of a Lightning CSV log: median rel. L1 of the model
    and of persistence."""
    last, epochs = None, 0
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            epochs = max(epochs, int(row["epoch"]) + 1) if row.get("epoch") else epochs
            if row.get("val/median_rel_l1"):
                last = row
    if last is None:
        return {"epochs": epochs, "val_median_rel_l1": None, "val_persistence": None, "val_epoch": None}
    return {"epochs": epochs, "val_median_rel_l1": float(last["val/median_rel_l1"]),
            "val_persistence": float(last.get("val/median_rel_l1_persistence") or "nan"), "val_epoch": int(last["epoch"])}


# ---- fine-tuning -----------------------------------------------------------------------------------------------
def sweep_config(plan: dict, variant: str, options: dict):
    from sciformer.finetune import SweepConfig

    d = plan["budget"]["downstream"]
    task_options = {k: v for k, v in options.get("task", {}).items() if k != "model_options"} or None
    return SweepConfig(samples=list(d["samples"]), seeds=list(d["seeds"]), epochs=d["epochs"],
                       batch_size=d["batch_size"], time_stride=d["time_stride"],
                       baselines=list(d["baselines"]) if variant == BASELINE_VARIANT else [],
                       task_options=task_options, normalization=options.get("data", {}).get("normalization", "zscore"))


def _sweep_job(ckpt: str, store: str, cfg, out: str) -> dict:
    """One (variant, task) sweep in a worker process, on one thread."""
    import torch

    from sciformer.finetune import sweep

    torch.set_num_threads(1)
    return sweep(Path(ckpt), Path(store), cfg, Path(out))


def reference_predictors(store: Path, plan: dict) -> dict:
    """The zero predictor (normalised prediction 0, i.e. the mean field) and persistence (the input; not for a
    steady store) on the test split, scored as the baseline cells: median rel. L1 (%) on z-score fields, and
    VRMSE in physical units (mean over test pairs and channels)."""
    import torch

    from sciformer.data.fields import FieldDataModule
    from sciformer.data.normalization import Normalizer
    from sciformer.metrics.fields import GroupRelativeError, vrmse
    from sciformer.tasks.operator import OperatorTask

    d = plan["budget"]["downstream"]
    dm = FieldDataModule(stores=[str(store)], sampler="all2all", time_stride=d["time_stride"], batch_size=d["batch_size"])
    task = OperatorTask(model="fno-2d", data_spec=dm.spec)  # its channel groups and persistence channels
    outputs, norm = list(dm.spec["outputs"]), Normalizer(dm.spec["stats"])
    steady = bool(dm.spec.get("steady"))
    predictors = {"zero": lambda x: torch.zeros(x.shape[0], len(outputs), *x.shape[2:])}
    if not steady and all(i is not None for i in task.persist_index):
        predictors["persistence"] = lambda x: x[:, task.persist_index]
    out = {}
    for name, predict in predictors.items():
        metric, vr = GroupRelativeError(task.groups), []
        for batch in dm.test_dataloader():
            y = batch["y"]
            mask = batch.get("mask", torch.ones(y.shape[:2]))
            pred = predict(batch["x"])
            metric.update(pred, y, mask)
            p, t = (norm.denormalize_channels(a.double(), outputs) for a in (pred, y))
            vr.append(vrmse(p, t).reshape(len(y), -1).mean(1))
        out[name] = {"median_rel_l1": float(metric.compute()["median"].nanmean()), "vrmse": float(torch.cat(vr).mean())}
    return out


# ---- rollout ---------------------------------------------------------------------------------------------------
def rollout_length(ckpt: Path, store: Path, out: Path, stride: int) -> dict:
    """`sciformer rollout` over all of a held-out store (next-step AR); its valid-rollout length (summary.json)."""
    summary = out / "summary.json"
    if not summary.is_file():
        cmd = [*sciformer_cmd(), "rollout", "--ckpt", str(ckpt), "--data", str(store), "--split", "all",
               "--mode", "ar", "--stride", str(stride), "--device", "cpu", "--out", str(out / "rollout.zarr")]
        out.mkdir(parents=True, exist_ok=True)
        with open(out / "rollout.log", "w") as log:
            proc = subprocess.run(cmd, cwd=ROOT, env=child_env(1), stdout=log, stderr=subprocess.STDOUT)
        if proc.returncode != 0:
            raise RuntimeError(f"rollout failed (exit {proc.returncode}); see {out / 'rollout.log'}")
    s = json.loads(summary.read_text())
    v = s["valid_rollout_length"]
    return {"mean": v["mean"], "median": v["median"], "scored_steps": v["scored_steps"],
            "correlation_time": s["correlation_time"]["step"]}


# ---- evaluation ------------------------------------------------------------------------------------------------
def error_table(summary: dict | None, model: str, metric: str) -> dict[int, dict]:
    """{n: {"mean", "std"}} of one model in a sweep summary (``metric``: a key of its tables); JSON keys → int."""
    if not summary:
        return {}
    tab = summary["tables"].get(metric, {}).get(model, {})
    return {int(n): v for n, v in tab.items()}


def gains(tuned: dict[int, dict], base: dict[int, dict]) -> dict:
    """AG per sample count and EG at the largest count both reached, of a fine-tuned error curve against a
    baseline's (the shared baseline cells of the 'today' sweeps)."""
    from sciformer.finetune import accuracy_gain, efficiency_gain

    ns = sorted(n for n in tuned if n in base)
    if not ns:
        return {"AG": {}, "EG": None}
    S = max(ns)
    eg, text = efficiency_gain(sorted(tuned), [tuned[n]["mean"] for n in sorted(tuned)], base[S]["mean"], S)
    return {"AG": {n: accuracy_gain(base[n]["mean"], tuned[n]["mean"]) for n in ns},
            "EG": {"S": S, "value": eg, "text": text}}


def evaluate_targets(best: dict, today: dict, targets: dict) -> dict:
    """Issue 17's targets for the best variant against today's, each met (True), missed (False) or not
    evaluable (None, with why).

    ``best``/``today``: {"ag": {task: AG at targets["samples"]}, "error": {task: fine-tuned error there},
    "zero": {task: zero predictor's error}, "rollout": valid length (mean over the pretraining stores)}.
    """
    n_need, ag_min, factor = targets["tasks"], targets["ag"], targets["rollout_factor"]
    ags = {t: a for t, a in best["ag"].items() if a is not None and math.isfinite(a)}
    ag_ok = sorted(t for t, a in ags.items() if a >= ag_min)
    out = {"ag": {"target": f"AG ≥ {ag_min:g} at {targets['samples']} trajectories on ≥ {n_need} tasks",
                  "met": (len(ag_ok) >= n_need) if len(ags) >= n_need or len(ag_ok) >= n_need else None,
                  "tasks_met": ag_ok, "values": best["ag"]}}
    worse = sorted(t for t, e in best["error"].items() if e is not None and t in best["zero"] and e > best["zero"][t])
    known = [t for t, e in best["error"].items() if e is not None and t in best["zero"]]
    out["zero"] = {"target": "no task where the fine-tuned model is worse than the zero predictor",
                   "met": (not worse) if known else None, "worse_than_zero": worse}
    rb, rt = best.get("rollout"), today.get("rollout")
    out["rollout"] = {"target": f"valid-rollout length ≥ {factor:g}× today's",
                      "met": (rb >= factor * rt) if rb is not None and rt else None,
                      "best": rb, "today": rt, "ratio": (rb / rt) if rb is not None and rt else None}
    return out


def collect(plan: dict, names: list[str], sweeps: dict, refs: dict, rollouts: dict) -> dict:
    """Per task and sample count: every variant's fine-tuned error (z-score scale, comparable across variants),
    the shared baselines, zero and persistence, AG/EG vs scratch, VRMSE."""
    d = plan["budget"]["downstream"]
    base_sw = {t: sweeps.get((BASELINE_VARIANT, t)) for t in refs}
    out = {}
    for t in refs:
        scratch = error_table(base_sw[t], "scratch", "zscore/median_rel_l1")
        entry = {"baselines": {b: error_table(base_sw[t], b, "zscore/median_rel_l1") for b in d["baselines"]},
                 "baselines_vrmse": {b: error_table(base_sw[t], b, "phys/vrmse") for b in d["baselines"]},
                 "reference": refs[t], "variants": {}}
        for v in names:
            tuned = error_table(sweeps.get((v, t)), "finetuned", "zscore/median_rel_l1")
            entry["variants"][v] = {"error": tuned, "vrmse": error_table(sweeps.get((v, t)), "finetuned", "phys/vrmse"),
                                    "vs_scratch": gains(tuned, scratch)}
        out[t] = entry
    return out


def target_inputs(tasks: dict, rollouts: dict, variant: str, n: int) -> dict:
    ag, err, zero = {}, {}, {}
    for t, e in tasks.items():
        v = e["variants"].get(variant)
        if v is None:
            continue
        ag[t] = v["vs_scratch"]["AG"].get(n)
        err[t] = v["error"].get(n, {}).get("mean")
        zero[t] = e["reference"]["zero"]["median_rel_l1"]
    r = [x["mean"] for x in rollouts.get(variant, {}).values()]
    return {"ag": ag, "error": err, "zero": zero, "rollout": statistics.fmean(r) if r else None}


# ---- report ----------------------------------------------------------------------------------------------------
def machine() -> str:
    """The CPU the wall-clock budget was spent on (the budget buys different steps on another machine)."""
    import platform

    info = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").is_file() else ""
    name = next((ln.split(":", 1)[1].strip() for ln in info.splitlines() if ln.startswith("model name")),
                platform.processor() or platform.machine())
    isa = "AVX-512" if "avx512f" in info else "AVX2" if "avx2" in info else "no AVX2"
    return f"{name}, {os.cpu_count()} cores, {isa}, {time.strftime('%Y-%m-%d')}"


def _pm(v: dict | None, fmt: str = ".2f") -> str:
    return f"{v['mean']:{fmt}} ± {v['std']:{fmt}}" if v else "—"


def _num(x, fmt: str = ".2f") -> str:
    return "—" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:{fmt}}"


def _verdict(m) -> str:
    return {True: "**met**", False: "**missed**", None: "not evaluable yet"}[m]


def write_markdown(path: Path, plan: dict, results: dict) -> list[str]:
    from sciformer.io import atomic_path
    from sciformer.report import markdown_table

    b, d = plan["budget"]["pretrain"], plan["budget"]["downstream"]
    names = list(results["variants"])
    # where each wall-clock budget was spent (records written before the field: this run's machine)
    machines = sorted({p.get("machine") or results["machine"] for p in results["pretrain"].values()})
    lines = ["# Recipe ablation (issue 17)", "",
             f"Generated by `python finetune/ablation.py` from `finetune/ablation.yaml`{' (--tiny)' if results['tiny'] else ''}. "
             f"Budget: every variant pretrained from `{b['config']}` (scot-tiny, {b['resolution']}², NS-Sines + "
             f"NS-Gauss, all2all) for at most {b['minutes']:g} min wall clock or {b['max_epochs']} epochs, "
             f"{b['threads']} thread, on {'; '.join(machines)}. "
             f"Downstream at {d['resolution']}², {d['trajectories']} trajectories per store, "
             f"{d['epochs']} epochs per cell, batch {d['batch_size']}, snapshot stride {d['time_stride']}, seeds "
             f"{d['seeds']} (mean ± std). Scratch and FNO are trained once per task and seed and shared by all "
             "variants. Error: median relative L1 (%) on the test split, on the store's own z-score fields (the "
             "baselines' scale; zero predictor = 100 % by construction).", ""]
    rows = []
    for t, e in results["tasks"].items():
        for n in d["samples"]:
            row = {"task": t, "n": n}
            for v in names:
                row[v] = _pm(e["variants"][v]["error"].get(n))
            for base in d["baselines"]:
                row[base] = _pm(e["baselines"][base].get(n))
            row["zero"] = _num(e["reference"]["zero"]["median_rel_l1"])
            row["persistence"] = _num(e["reference"].get("persistence", {}).get("median_rel_l1"))
            for v in names:
                row[f"AG {v}"] = _num(e["variants"][v]["vs_scratch"]["AG"].get(n))
            rows.append(row)
    lines += [HEADLINE, "", markdown_table(rows), ""]
    rows = [{"task": t, **{f"EG {v}": (e["variants"][v]["vs_scratch"]["EG"] or {}).get("text", "—") for v in names}}
            for t, e in results["tasks"].items()]
    lines += ["Efficiency gain vs scratch at the largest sample count (samples scratch needs / samples the fine-tuned "
              "model needs for the same error):", "", markdown_table(rows), ""]
    rows = []
    for t, e in results["tasks"].items():
        for n in d["samples"]:
            row = {"task": t, "n": n, **{v: _pm(e["variants"][v]["vrmse"].get(n), ".3f") for v in names},
                   **{b: _pm(e["baselines_vrmse"][b].get(n), ".3f") for b in d["baselines"]},
                   "zero": _num(e["reference"]["zero"]["vrmse"], ".3f"),
                   "persistence": _num(e["reference"].get("persistence", {}).get("vrmse"), ".3f")}
            rows.append(row)
    lines += ["## VRMSE (physical units, mean over test pairs)", "", markdown_table(rows), ""]
    rows = [{"variant": v, **{Path(s).stem: _num(r["mean"]) for s, r in results["rollout"].get(v, {}).items()},
             "scored steps": next(iter(results["rollout"].get(v, {}).values()), {}).get("scored_steps")}
            for v in names]
    h = plan["budget"]["rollout"]["horizon"]
    lines += [f"## Valid-rollout length on the pretraining physics ({h['trajectories']} held-out trajectories per "
              f"physics to t = {h['t_end']:g}, past the pretraining stores' t = 1; "
              "next-step AR; mean steps before the correlation falls below 0.8)", "", markdown_table(rows), ""]
    rows = [{"variant": v, "options": json.dumps(p["options"]), "wall (s)": _num(p["wall_s"], ".0f"),
             "epochs": p["epochs"], "steps": p["steps"], "val median rel. L1 (%)": _num(p["val_median_rel_l1"]),
             "persistence (%)": _num(p["val_persistence"]),
             "target (checkpoint reads)":
                 f"{p['options'].get('task', {}).get('target', 'state')} ({p.get('target_in_checkpoint', '?')})"}
            for v, p in results["pretrain"].items()]
    lines += ["## Pretraining per variant (same budget)", "", markdown_table(rows), ""]
    tg = results.get("targets")
    if tg:
        lines += [f"{TARGETS}: `{tg['variant']}` vs today", ""]
        for k in ("ag", "zero", "rollout"):
            lines.append(f"- {tg[k]['target']}: {_verdict(tg[k]['met'])}")
        lines.append("")
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines))
    return lines


BEGIN, END = "<!-- ablation:begin (written by finetune/ablation.py) -->", "<!-- ablation:end -->"


def update_results(path: Path, table: Path, lines: list[str]) -> None:
    """Put the ablation's headline (its first table and the targets) into ``path`` between the markers, appended
    at the end the first time; the rest stays in ``table``."""
    from sciformer.io import atomic_path

    start = lines.index(HEADLINE) + 2
    table_rows = lines[start:lines.index("", start)]
    t0 = next((i for i, ln in enumerate(lines) if ln.startswith(TARGETS)), None)
    targets = [] if t0 is None else [f"**{lines[t0][3:]}**", *lines[t0 + 1:]]
    block = [BEGIN, lines[2], "", *table_rows, "", *targets,
             f"VRMSE, efficiency gains, valid-rollout lengths and the pretraining record: `{table.name}`.", END]
    text = path.read_text() if path.is_file() else ""
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        text = head + "\n".join(block) + rest.split(END, 1)[1]
    else:
        text = text.rstrip("\n") + "\n\n## Recipe ablation (issue 17)\n\n" + "\n".join(block) + "\n"
    with atomic_path(path) as tmp:
        tmp.write_text(text)


# ---- main ------------------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/ablation"))
    ap.add_argument("--plan", type=Path, default=HERE / "ablation.yaml")
    ap.add_argument("--jobs", type=int, default=1, help="parallel sweeps (and pretrainings), one thread each")
    ap.add_argument("--only", help="run one variant")
    ap.add_argument("--best", help="comma-separated variants whose options form the 'best' combination")
    ap.add_argument("--baselines", help="comma-separated baselines of this run (default: the plan's); a rerun with "
                    "more adds them to the same sweeps")
    ap.add_argument("--tiny", action="store_true", help="test sizes (16², 4 trajectories, 1 epoch, 20 s pretraining)")
    ap.add_argument("--data-dir", type=Path, help="where stores are built (default data/ablation; --tiny: OUT/data)")
    ap.add_argument("--markdown", type=Path, help="the table (default finetune/ABLATION.md; --tiny: OUT/ABLATION.md)")
    ap.add_argument("--results", type=Path, help="where the headline table goes too (default finetune/RESULTS.md; "
                    "--tiny: OUT/RESULTS.md)")
    args = ap.parse_args(argv)
    from sciformer.io import write_json

    plan = load_plan(args.plan, args.tiny)
    if args.baselines:
        plan["budget"]["downstream"]["baselines"] = [b.strip() for b in args.baselines.split(",")]
    best = [b.strip() for b in args.best.split(",")] if args.best else None
    todo = variants(plan, args.only, best)
    out = args.out.resolve()
    data_dir = args.data_dir or (out / "data" if args.tiny else ROOT / "data" / "ablation")
    markdown = args.markdown or (out / "ABLATION.md" if args.tiny else HERE / "ABLATION.md")
    results_md = args.results or (out / "RESULTS.md" if args.tiny else HERE / "RESULTS.md")
    os.environ["OMP_NUM_THREADS"] = "1"  # the sweep workers inherit it
    stores, task_stores = build_all(plan, data_dir)
    long_stores = build_rollout_stores(plan, data_dir)

    with ThreadPoolExecutor(args.jobs) as pool:  # each pretraining is a one-thread subprocess
        futures = {v: pool.submit(pretrain, plan, v, {k: o for k, o in opt.items() if k != "of"}, stores, out)
                   for v, opt in todo.items()}
        pre = {v: f.result() for v, f in futures.items()}

    refs = {t: reference_predictors(s, plan) for t, s in task_stores.items()}
    jobs = [(v, t) for v in sorted(todo, key=lambda v: v != BASELINE_VARIANT) for t in task_stores]
    sweeps: dict[tuple[str, str], dict] = {}
    import multiprocessing as mp

    with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
        futures = {(v, t): pool.submit(_sweep_job, pre[v]["ckpt"], str(task_stores[t]),
                                       sweep_config(plan, v, todo[v]), str(out / v / t)) for v, t in jobs}
        for key, f in futures.items():
            sweeps[key] = f.result()

    stride = plan["budget"]["rollout"]["stride"]
    rollouts = {v: {str(s.name): rollout_length(Path(pre[v]["ckpt"]), s, out / v / "rollout" / s.stem, stride)
                    for s in long_stores} for v in todo}

    # merge with what earlier runs (other --only variants) recorded
    results_file = out / "results.json"
    old = json.loads(results_file.read_text()) if results_file.is_file() else {}
    all_pre = {**old.get("pretrain", {}), **pre}
    all_rollouts = {**old.get("rollout", {}), **rollouts}
    all_variants = {**old.get("variants", {}), **todo}
    for v in all_variants:  # sweeps of earlier runs: read back from their results.json
        for t in task_stores:
            f = out / v / t / "results.json"
            if (v, t) not in sweeps and f.is_file():
                sweeps[(v, t)] = json.loads(f.read_text()).get("summary")
    tasks = collect(plan, list(all_variants), sweeps, refs, all_rollouts)
    results = {"plan": plan, "tiny": args.tiny, "machine": machine(), "variants": all_variants, "pretrain": all_pre,
               "rollout": all_rollouts, "tasks": tasks}
    top = "best" if "best" in all_variants else None
    if top and BASELINE_VARIANT in all_variants:
        n = plan["targets"]["samples"]
        n = n if n in plan["budget"]["downstream"]["samples"] else max(plan["budget"]["downstream"]["samples"])
        results["targets"] = {"variant": top, **evaluate_targets(target_inputs(tasks, all_rollouts, top, n),
                                                                 target_inputs(tasks, all_rollouts, BASELINE_VARIANT, n),
                                                                 {**plan["targets"], "samples": n})}
    write_json(results_file, results)
    update_results(results_md, markdown, write_markdown(markdown, plan, results))
    print(markdown.read_text())
    return results


if __name__ == "__main__":
    main()
