"""The model card (``README.md`` in the Hub's format) of an export, generated from what was recorded.

Nothing in a card is typed in by hand: the front matter (licence, tags, ``library_name: sciformer``, a
``model-index`` of the measured metrics) is built with ``huggingface_hub.ModelCardData``; the body comes from
the checkpoint (class, config, parameter count, hyper-parameters, the data spec with its variables and
normalisation statistics), from the training run beside a Lightning checkpoint (``metrics.csv`` or TensorBoard
events, ``config.yaml``: the command that made the metrics), from the stores the data spec names (units, PDE,
generator, and so the data card in ``datasets/``) when they are still readable, and from result files given
with ``--results`` (a ``sciformer finetune`` ``results.json``, a ``sciformer rollout`` ``summary.json``).
Whatever is absent is written as "not recorded", never guessed.
"""

from __future__ import annotations

import csv
import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sciformer.errors import SciformerError

NOT_RECORDED = "not recorded"
# what each kind of model does, as a Hub task type (model-index) and pipeline tag where the Hub has one
TASKS = {"operator": ("pde-surrogate", None), "series": ("time-series-forecasting", "time-series-forecasting"),
         "property": ("property-regression", "graph-ml"), "generative": ("structure-generation", None)}
# upstream papers of converted checkpoints, by the converter's source format (what the converter read)
UPSTREAM_CITATIONS = {
    "poseidon": "@inproceedings{herde2024poseidon,\n  title = {Poseidon: Efficient Foundation Models for PDEs},\n"
                "  author = {Herde, Maximilian and Raoni{\\'c}, Bogdan and Rohner, Tobias and K{\\\"a}ppeli, Roger "
                "and Molinaro, Roberto and de B{\\'e}zenac, Emmanuel and Mishra, Siddhartha},\n"
                "  booktitle = {Advances in Neural Information Processing Systems},\n  year = {2024},\n"
                "  note = {arXiv:2405.19101}\n}",
}


@dataclass
class Metric:
    """One measured number with where it came from and the command that made it."""

    name: str
    value: float
    dataset: str
    source: str  # the file it was read from
    command: str
    split: str | None = None
    note: str = ""
    baseline: bool = False  # a baseline's number logged beside the model's (persistence, scratch, fno...)


@dataclass
class Record:
    """Everything the card is made of (tests compare its numbers with the card's)."""

    metrics: list[Metric] = field(default_factory=list)
    sections: list[tuple[str, list[str]]] = field(default_factory=list)  # (title, markdown lines)


def run_dir(ckpt: str | os.PathLike) -> Path | None:
    """The Lightning log directory of a checkpoint (``.../version_N/checkpoints/x.ckpt`` -> ``version_N``; a sharded
    checkpoint is a directory of that name)."""
    p = Path(ckpt)
    if p.exists() and p.parent.name == "checkpoints" and not (p / "config.json").is_file():
        return p.parent.parent
    return None


def _last_values(metrics_csv: Path) -> dict[str, tuple[float, dict[str, str]]]:
    """Each column's last finite value in Lightning's ``metrics.csv``, with the epoch/step of its row."""
    out: dict[str, tuple[float, dict[str, str]]] = {}
    with open(metrics_csv, newline="") as fh:
        for row in csv.DictReader(fh):
            at = {k: row[k] for k in ("epoch", "step") if row.get(k)}
            for k, v in row.items():
                if k in ("epoch", "step") or k is None or v in (None, ""):
                    continue
                try:
                    x = float(v)
                except ValueError:
                    continue
                if math.isfinite(x):
                    out[k] = (x, at)
    return out


def _tensorboard_values(run: Path) -> dict[str, tuple[float, dict[str, str]]]:
    """Each scalar's last value in the run's TensorBoard event files."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out: dict[str, tuple[float, dict[str, str]]] = {}
    for events in sorted(run.glob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            last = acc.Scalars(tag)[-1]
            if math.isfinite(last.value):
                out[tag] = (float(last.value), {"step": str(last.step)})
    return out


def training_metrics(ckpt: str | os.PathLike, dataset: str) -> tuple[list[Metric], list[str]]:
    """The last logged value of every metric of the run that wrote ``ckpt`` and the lines that describe it."""
    run = run_dir(ckpt)
    if run is None:
        return [], [f"Training metrics: {NOT_RECORDED} (`{ckpt}` is not a checkpoint inside a Lightning run "
                    "directory)."]
    config = run / "config.yaml"
    command = f"sciformer fit -c {config}" if config.is_file() else NOT_RECORDED
    if (run / "metrics.csv").is_file():
        source, values = run / "metrics.csv", _last_values(run / "metrics.csv")
    elif any(run.glob("events.out.tfevents.*")):
        source, values = run, _tensorboard_values(run)
    else:
        return [], [f"Training metrics: {NOT_RECORDED} (no metrics.csv or TensorBoard events in `{run}`)."]
    values = {k: v for k, v in values.items() if not k.startswith(("lr-", "lr_", "epoch"))}
    metrics = [Metric(k, v, dataset, str(source), command, split=_split(k),
                      note=", ".join(f"{a} {b}" for a, b in at.items()), baseline="persistence" in k)
               for k, (v, at) in sorted(values.items())]
    lines = [f"Last logged value of each metric of the training run, read from `{source}`; made by `{command}`.",
             "", "| metric | value | at | of |", "|---|---|---|---|"]
    lines += [f"| {m.name} | {m.value:.6g} | {m.note or NOT_RECORDED} | "
              f"{'baseline (persistence: the input copied)' if m.baseline else 'this model'} |" for m in metrics]
    return metrics, lines


def _split(name: str) -> str | None:
    return next((s for s in ("train", "val", "test") if name.startswith(s)), None)


def _finetune_command(res: dict, out: Path) -> str:
    """The `sciformer finetune` command of a sweep, from the settings its results.json records."""
    cfg = res.get("config", {})
    words = ["sciformer finetune", f"--ckpt {res.get('ckpt')}", f"--data {res.get('data')}"]
    for flag, key in (("samples", "samples"), ("baseline", "baselines"), ("seeds", "seeds")):
        if cfg.get(key):
            words.append(f"--{flag} {','.join(map(str, cfg[key]))}")
    for key in ("epochs", "batch_size", "mode", "lr", "scratch_lr", "precision", "time_stride", "test_data"):
        if cfg.get(key) is not None:
            words.append(f"--{key} {cfg[key]}")
    words.append(f"--out {out}")
    return " ".join(words)


def finetune_metrics(path: Path, res: dict) -> tuple[list[Metric], list[str]]:
    summary = res.get("summary")
    if not summary:
        raise SciformerError(f"{path}: a sweep without a summary (unfinished); rerun `sciformer finetune` to "
                             "finish it before writing it into a model card")
    command = _finetune_command(res, path.parent)
    metric, dataset = summary["metric"], Path(str(res.get("data"))).name
    rows, metrics = [], []
    for model, by_n in summary["table"].items():
        for n, v in sorted(by_n.items(), key=lambda kv: int(kv[0])):
            m = Metric(f"{metric} ({model}, n={n})", float(v["mean"]), dataset, str(path), command, "test",
                       note=f"± {v['std']:.2g} over {v['seeds']} seed(s)", baseline=model != "finetuned")
            metrics.append(m)
            rows.append(f"| {n} | {model} | {m.value:.6g} | {v['std']:.2g} | {v['seeds']} |")
    lines = [f"Fine-tuning sweep read from `{path}`; made by `{command}`. {metric}, mean over seeds, test split "
             f"of `{res.get('data')}`; samples = {res.get('unit', NOT_RECORDED)}.", "",
             "| samples | model | mean | std | seeds |", "|---|---|---|---|---|", *rows]
    for base, g in summary.get("gains", {}).items():
        ag = ", ".join(f"n={n}: {v:.3g}" for n, v in g.get("AG", {}).items())
        lines.append(f"\nAccuracy gain vs {base}: {ag}; efficiency gain at S={g['EG']['S']}: {g['EG']['text']}.")
    return metrics, lines


def rollout_metrics(path: Path, res: dict) -> tuple[list[Metric], list[str]]:
    command = (f"sciformer rollout --ckpt {res.get('checkpoint')} --data {res.get('store')} --split "
               f"{res.get('split')} --mode {res.get('mode')} --out {path.parent / str(res.get('dataset'))}")
    dataset = Path(str(res.get("store"))).name
    metrics, lines = [], [f"Rollout read from `{path}`; made by `{command}` ({res.get('steps')} steps, "
                          f"{len(res.get('trajectories', []))} trajectories, {res.get('metrics_on', '')}).", ""]
    per_step = res.get("per_step") or {}
    if not per_step:
        return [], [*lines, f"Scored metrics: {NOT_RECORDED} (no ground truth)."]
    lines += ["| metric | variable | first step | last step | persistence, last step |", "|---|---|---|---|---|"]
    base = (res.get("baseline_persistence") or {}).get("per_step", {})
    for name, by_var in per_step.items():
        for var, values in by_var.items():
            finite = [v for v in values if v is not None]
            if not finite:
                continue
            m = Metric(f"rollout {name} {var} (step {len(values)})", float(values[-1] if values[-1] is not None
                                                                             else math.nan),
                       dataset, str(path), command, res.get("split"))
            if var == "mean":
                metrics.append(m)
            b = base.get(name, {}).get("mean", [None])[-1] if var == "mean" else None
            lines.append(f"| {name} | {var} | {finite[0]:.6g} | {m.value:.6g} | "
                         f"{'—' if b is None else format(b, '.6g')} |")
    return [m for m in metrics if math.isfinite(m.value)], lines


def result_metrics(path: str | os.PathLike) -> tuple[list[Metric], list[str]]:
    """Metrics of a result file: a finetune ``results.json`` or a rollout ``summary.json``."""
    path = Path(path)
    try:
        res = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SciformerError(f"--results {path}: cannot read it ({e}); give a results.json of `sciformer "
                             "finetune` or a summary.json of `sciformer rollout`") from None
    if isinstance(res, dict) and "cells" in res:
        return finetune_metrics(path, res)
    if isinstance(res, dict) and res.get("title") == "sciformer rollout":
        return rollout_metrics(path, res)
    raise SciformerError(f"--results {path}: neither a `sciformer finetune` results.json nor a `sciformer rollout` "
                         "summary.json")


# ---- the data -----------------------------------------------------------------------------------
def store_facts(path: str) -> dict[str, Any]:
    """Units, PDE and generator from a store's own attributes, if the store is still readable here."""
    try:
        import zarr

        g = zarr.open_group(str(path), mode="r")
        attrs = dict(g.attrs)
        units = {}
        for name in attrs.get("variables", []) or [k for k in g.array_keys()]:
            if name in g:
                u = g[name].attrs.get("units")
                if u is not None:
                    units[name] = str(u)
        return {"attrs": attrs, "units": units}
    except Exception:  # moved, deleted, remote and unreachable, or not a zarr store: nothing recorded here
        return {}


def data_card(facts: dict[str, Any]) -> str | None:
    """The data card in ``datasets/`` that documents the builder that made a store (named in its first line)."""
    gen = (facts.get("attrs") or {}).get("generator")
    name = gen.get("name") if isinstance(gen, dict) else None
    root = Path(__file__).resolve().parents[1] / "datasets"
    if not name or not root.is_dir():
        return None
    for card in sorted(root.glob("*/README.md")):
        first = card.read_text(errors="replace").split("\n", 1)[0]
        if f"`{name}`" in first or card.parent.name == name:
            return str(card.relative_to(root.parent))
    return None


def _stores(spec: dict[str, Any]) -> list[dict[str, Any]]:
    if isinstance(spec.get("stores"), list):
        return [s for s in spec["stores"] if isinstance(s, dict)]
    for key in ("store", "path", "data"):
        if isinstance(spec.get(key), str):
            return [{"path": spec[key]}]
    return []


def _fmt(x: Any) -> str:
    return format(x, ".6g") if isinstance(x, float) else str(x)


def data_sections(spec: dict[str, Any]) -> tuple[list[str], list[str], dict[str, Any]]:
    """(training-data lines, variable lines, facts of the first store)."""
    stores = _stores(spec)
    facts = [store_facts(s["path"]) for s in stores]
    data = []
    if not stores:
        data.append(f"Training data: {NOT_RECORDED}.")
    for s, f in zip(stores, facts):
        attrs = f.get("attrs", {})
        gen = attrs.get("generator") if isinstance(attrs.get("generator"), dict) else {}
        card = data_card(f)
        bits = [f"`{s['path']}`"]
        if s.get("n_trajectories") is not None:
            bits.append(f"{s['n_trajectories']} trajectories")
        if s.get("variables"):
            bits.append("variables " + ", ".join(s["variables"]))
        data.append("- " + "; ".join(bits))
        data.append(f"  - PDE: {attrs.get('pde', NOT_RECORDED)}; generator: {gen.get('name', NOT_RECORDED)}"
                    f"{' (' + gen['solver'] + ')' if gen.get('solver') else ''}; boundary conditions: "
                    f"{_fmt(s.get('boundary_conditions') or attrs.get('boundary_conditions') or NOT_RECORDED)}")
        data.append(f"  - data card: {'`' + card + '`' if card else NOT_RECORDED}")
        if not f:
            data.append("  - (the store is not readable here: its units, PDE and card are not recorded)")
    for key, text in (("spatial_shape", "grid"), ("steady", "steady"), ("time_span", "time span"),
                      ("sampler", "sampler"), ("lookback", "lookback"), ("horizon", "horizon"),
                      ("target", "target"), ("freq", "frequency")):
        if spec.get(key) is not None:
            data.append(f"- {text}: {_fmt(spec[key])}")

    stats = spec.get("stats") or {}
    inputs, outputs = spec.get("inputs") or [], spec.get("outputs") or []
    names = list(dict.fromkeys([*inputs, *outputs, *(spec.get("variates") or []), *stats]))
    roles = spec.get("roles") or {}
    units = dict(spec.get("units") or {})
    for f in facts:
        for k, v in f.get("units", {}).items():
            units.setdefault(k, v)
    if not names:
        return data, [f"Variables: {NOT_RECORDED}."], facts[0] if facts else {}
    var = ["The model sees every field normalised as (x − mean) / std with these statistics (they travel with "
           "the weights in config.json; `sciformer` applies them).", "",
           "| variable | role | units | input | output | mean | std |", "|---|---|---|---|---|---|---|"]
    for v in names:
        st = stats.get(v) if isinstance(stats.get(v), dict) else {}
        var.append(f"| {v} | {roles.get(v, NOT_RECORDED)} | {units.get(v, NOT_RECORDED)} | "
                   f"{'yes' if v in inputs else 'no'} | {'yes' if v in outputs else 'no'} | "
                   f"{_fmt(st['mean']) if 'mean' in st else NOT_RECORDED} | "
                   f"{_fmt(st['std']) if 'std' in st else NOT_RECORDED} |")
    return data, var, facts[0] if facts else {}


# ---- the card -----------------------------------------------------------------------------------
def _version() -> str:
    from sciformer import __version__

    return __version__


def _package_license() -> str | None:
    from importlib.metadata import PackageNotFoundError, metadata

    try:
        meta = metadata("sciformer")
    except PackageNotFoundError:
        return None
    text = meta.get("License-Expression") or meta.get("License")
    return text.lower() if text and len(text) < 40 else None


def build(ckpt: str | os.PathLike, *, results: list[str | os.PathLike] | None = None, license: str | None = None,
          repo_id: str | None = None, export_dir: str | os.PathLike | None = None) -> tuple[str, Record]:
    """The card's text and the record it was made from."""
    from huggingface_hub import EvalResult, ModelCardData

    from sciformer.checkpoints import read

    ck = read(ckpt)
    spec = ck.data_spec or {}
    kind = ck.kind
    task_type, pipeline = TASKS.get(kind, (kind, None))
    converted = ck.source == "poseidon"
    name = repo_id.split("/")[-1] if repo_id else (ck.model_name or ck.model_class)
    n_params = sum(t.numel() for t in ck.state.values())

    data_lines, var_lines, facts = data_sections(spec)
    dataset = Path(_stores(spec)[0]["path"]).name if _stores(spec) else NOT_RECORDED
    record = Record()
    metric_lines: list[str] = []
    m, lines = training_metrics(ckpt, dataset)
    record.metrics += m
    metric_lines += lines
    for path in results or []:
        m, lines = result_metrics(path)
        record.metrics += m
        metric_lines += ["", *lines]

    if license is None:
        license = "other" if converted else (_package_license() or "other")
    pde = (facts.get("attrs") or {}).get("pde")
    tags = ["sciformer", ck.model_class.lower(), kind, "safetensors", *(["poseidon"] if converted else []),
            *(["pde", "neural-operator"] if kind == "operator" else []), *([str(pde)] if pde else [])]
    eval_results = [EvalResult(task_type=task_type, dataset_type=x.dataset, dataset_name=x.dataset,
                               dataset_split=x.split, metric_type=x.name, metric_name=x.name, metric_value=x.value)
                    for x in record.metrics if not x.baseline]
    data = ModelCardData(license=license, library_name="sciformer", tags=list(dict.fromkeys(tags)),
                         pipeline_tag=pipeline, model_name=name, eval_results=eval_results or None)

    where = f"hf://{repo_id}" if repo_id else str(export_dir or "EXPORT_DIR")
    hp = {k: v for k, v in ck.hparams.items()
          if k not in ("data_spec", "model_options") and not k.startswith("_") and v is not None}
    options = ck.hparams.get("model_options") or {}
    model_lines = [f"- class `{ck.model_class}` ({kind} model), registered size: {ck.model_name or NOT_RECORDED}; "
                   f"{n_params:,} parameters", f"- training task: {ck.task or NOT_RECORDED}; read from `{ck.path}`",
                   f"- config: `{json.dumps(ck.config, default=str)}`"]
    if converted:
        src = json.loads((Path(ck.path) / "config.json").read_text()).get("source", {})
        model_lines.append(f"- converted with `sciformer convert poseidon {src.get('path', NOT_RECORDED)} OUT` "
                           f"({src.get('tensors', NOT_RECORDED)} upstream tensors); licence of the upstream weights: "
                           f"{NOT_RECORDED} here (see the upstream repo's card; the front matter says "
                           f"`license: {license}`)")
    if ck.lora:
        model_lines.append(f"- LoRA updates merged (rank {ck.lora['rank']}, alpha {ck.lora['alpha']})")
    train_lines = ([f"- {k}: `{json.dumps(v, default=str)}`" for k, v in sorted(hp.items())]
                   + ([f"- model_options: `{json.dumps(options, default=str)}`"] if options else [])) or \
        [f"Hyper-parameters: {NOT_RECORDED} (an export keeps only the model's config)."]
    run = run_dir(ckpt)
    train_lines.append(f"- run directory: {'`' + str(run) + '`' if run else NOT_RECORDED}")

    grid = spec.get("spatial_shape")
    use = [f"- Use: {task_type.replace('-', ' ')} for the variables above"
           + (f" on a {'×'.join(map(str, grid))} grid" if grid else "")
           + (f", {pde}" if pde else "") + ". Load it with `sciformer.models.load(\"" + where + "\")`; "
           "variables are matched by name, so give a store with these variable names.",
           "- Limits: validated only where the metrics above were measured (their data set and split); "
           "other PDE parameters, grids, boundary conditions or lead times are extrapolation and not measured "
           "here."]
    if kind == "operator" and not spec.get("steady", True):
        use.append("- Lead time: in units of the training store's time span, (t_j − t_i)/(t_end − t_0).")
    if not record.metrics:
        use.append(f"- No metrics were recorded for this export, so its accuracy is {NOT_RECORDED}.")
    cite = [f"```bibtex\n@software{{sciformer,\n  title = {{sciformer}},\n  version = {{{_version()}}},\n"
            f"  note = {{model exported with sciformer {_version()}}}\n}}\n```"]
    if converted and "poseidon" in UPSTREAM_CITATIONS:
        cite += ["", "The weights are converted from Poseidon; cite it:", "",
                 f"```bibtex\n{UPSTREAM_CITATIONS['poseidon']}\n```"]

    body = [f"# {name}", "",
            f"A {ck.model_class} {kind} model exported by sciformer {_version()}: `model.safetensors` + "
            "`config.json` (this card is generated from what the checkpoint and its run recorded).", "",
            "## Model", "", *model_lines, "",
            "## Training data", "", *data_lines, "",
            "## Variables and normalisation", "", *var_lines, "",
            "## Training", "", *train_lines, "",
            "## Metrics", "", *metric_lines, "",
            "## Intended use and limits", "", *use, "",
            "## Citation", "", *cite, ""]
    record.sections = [("body", body)]
    return f"---\n{data.to_yaml()}\n---\n\n" + "\n".join(body), record


def write(ckpt: str | os.PathLike, out: str | os.PathLike, **kwargs: Any) -> Path:
    """Write ``out/README.md`` (atomically)."""
    from sciformer.io import atomic_path

    text, _ = build(ckpt, export_dir=out, **kwargs)
    path = Path(out) / "README.md"
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return path
