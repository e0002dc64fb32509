"""ADiT benchmarks: training throughput, sampling speed, autoencoder reconstruction, generation quality.

    python benchmarks/molecules_adit.py throughput [--device cpu|cuda] [--sizes adit-vae-tiny,adit-dit-tiny]
    python benchmarks/molecules_adit.py reconstruction --ae runs/adit_ae_joint_cpu/checkpoints/last.ckpt
    python benchmarks/molecules_adit.py sampling --ldm runs/adit_ldm_joint_cpu/checkpoints/last.ckpt
    python benchmarks/molecules_adit.py quality --samples samples_mol samples_cry
    python benchmarks/molecules_adit.py diagnose --ldm runs/adit_ldm_joint_cpu/checkpoints/last.ckpt
    python benchmarks/molecules_adit.py conditioning --ldm LDM.ckpt --predictor runs/graph_perov5/checkpoints/last.ckpt
    python benchmarks/molecules_adit.py budget --ae AE.ckpt --seconds 270 --out runs/adit_budget   # on a GPU
    python benchmarks/molecules_adit.py score --raw runs/adit_budget/samples_molecule.json        # where RDKit is

Prints a table and writes JSON to benchmarks/results/molecules_adit_<what>.json. Throughput is measured on
synthetic QM9-sized batches (mean 18 atoms, max 29, ADiT's histogram range) so it needs no data; the rest needs
the stores and checkpoints built by the commands in README/configs. Logs `uptime` (the machine is shared).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

RESULTS = Path(__file__).parent / "results"


def _uptime() -> str:
    try:
        return os.popen("uptime").read().strip()
    except Exception:
        return ""


def _save(name: str, obj: dict) -> None:
    RESULTS.mkdir(parents=True, exist_ok=True)
    obj = {"uptime": _uptime(), "torch": torch.__version__, "threads": torch.get_num_threads(),
           "machine": platform.processor() or platform.machine(), **obj}
    (RESULTS / f"molecules_adit_{name}.json").write_text(json.dumps(obj, indent=2, default=float) + "\n")
    print(f"wrote {RESULTS / f'molecules_adit_{name}.json'}")


def _batch(B: int, device, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    n = torch.randint(9, 30, (B,), generator=g)
    N = int(n.max())
    mask = (torch.arange(N)[None] < n[:, None]).to(device)
    types = torch.randint(1, 10, (B, N), generator=g).to(device) * mask
    pos = torch.randn(B, N, 3, generator=g).to(device) * 0.15 * mask[..., None]
    return types, pos, torch.zeros_like(pos), mask, int(n.sum())


def _train_step(name, model, opt, precision, device, types, pos, frac, mask) -> None:
    from sciformer.models.adit import flow

    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        if name.startswith("adit-vae"):
            out = model(types, pos, frac, mask)
            loss = (torch.nn.functional.cross_entropy(out["atom_types"][mask].float(), types[mask])
                    + ((out["pos"].float() - pos) ** 2).mean())
        else:
            x1 = torch.randn(*types.shape, model.config.latent_dim, device=device) * mask[..., None]
            t = torch.rand(types.shape[0], device=device)
            xt = flow.interpolate(flow.centred_noise(x1.shape, mask), x1, t)
            pred = model(xt, t, mask, dataset_idx=torch.ones_like(t, dtype=torch.long)).float()
            loss = flow.loss(pred, x1, t, mask)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()


def throughput(args) -> None:
    from sciformer import models

    device = torch.device(args.device)
    rows = []
    for name in args.sizes.split(","):
        model = models.get(name).to(device)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
        types, pos, frac, mask, atoms = _batch(args.batch, device)
        for precision in args.precisions.split(","):
            def step(name=name, model=model, opt=opt, precision=precision, types=types, pos=pos, frac=frac, mask=mask):
                _train_step(name, model, opt, precision, device, types, pos, frac, mask)

            for _ in range(args.warmup):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            dt = (time.perf_counter() - t0) / args.steps
            params = sum(p.numel() for p in model.parameters())
            rows.append({"model": name, "params_M": params / 1e6, "precision": precision, "device": str(device),
                         "batch": args.batch, "s_per_step": dt, "molecules_per_s": args.batch / dt, "atoms_per_s": atoms / dt})
            print(f"{name:16s} {params / 1e6:8.2f}M {precision:5s} {device}  {dt * 1e3:9.1f} ms/step  "
                  f"{args.batch / dt:9.1f} molecules/s")
    _save(f"throughput_{device.type}", {"rows": rows})


def reconstruction(args) -> None:
    from torch_geometric.data import Batch

    from sciformer.data.atoms import AtomStore, params_to_cell, to_pyg
    from sciformer.metrics import crystals as C
    from sciformer.metrics import molecules as M
    from sciformer.tasks.generative import _autoencoder_from_checkpoint, dense

    ae, _ = _autoencoder_from_checkpoint(args.ae)
    ae.eval()
    out = {}
    for path in args.stores:
        s = AtomStore(path).load()
        start = int(round(0.9 * len(s)))  # the validation part (last 10 % by index)
        idx = list(range(start, min(len(s), start + args.n)))
        data = [to_pyg(s[i], 0 if s.domain == "crystal" else 1) for i in idx]
        recon, truth, errs = [], [], []
        with torch.no_grad():
            for k in range(0, len(data), 128):
                b = Batch.from_data_list(data[k:k + 128])
                d = dense(b)
                mean, _ = ae.encode(d["types"], d["pos_nm"], d["frac"], d["mask"])
                dec = ae.decode(mean, d["mask"])
                types = dec["atom_types"][..., 1:].argmax(-1) + 1
                for i in range(len(types)):
                    n = int(d["mask"][i].sum())
                    if s.domain == "molecule":
                        recon.append({"atomic_numbers": types[i, :n].numpy(), "positions": dec["pos"][i, :n].numpy() * 10})
                        truth.append(d["pos_nm"][i, :n].numpy() * 10)
                    else:
                        lat = dec["lattice"][i]
                        cell = params_to_cell((lat[:3] * n ** (1 / 3)).double().clamp_min(0.5), lat[3:].double().clamp(0.1, 3.04))
                        frac = dec["frac_coords"][i, :n].double() % 1
                        recon.append({"atomic_numbers": types[i, :n].numpy(), "cell": cell.numpy(), "frac_coords": frac.numpy()})
                        true = d["lattice"][i]
                        errs.append([float((lat[:3] - true[:3]).abs().mean() * n ** (1 / 3)),
                                     float((lat[3:] - true[3:]).abs().mean() * 180 / np.pi)])
        if s.domain == "molecule":
            charges = [s[i].get("charge", 0) for i in idx]
            rmsd = float(np.sqrt(np.mean([((r["positions"] - t) ** 2).sum(-1).mean() for r, t in zip(recon, truth)])))
            valid = M.validity([r["atomic_numbers"] for r in recon], [r["positions"] for r in recon], charges)
            real = M.validity([s[i]["atomic_numbers"] for i in idx], [s[i]["positions"] for i in idx], charges)
            out[path] = {"n": len(idx), "pos_rmsd_A": rmsd, "recon_valid": float(np.mean(valid)), "real_valid": float(np.mean(real)),
                         "type_acc": float(np.mean([np.array_equal(r["atomic_numbers"], s[i]["atomic_numbers"]) for r, i in zip(recon, idx)]))}
        else:
            ev = C.evaluate(recon)
            matches = [C.match(r, {"atomic_numbers": s[i]["atomic_numbers"], "positions": s[i]["positions"], "cell": s[i]["cell"]})
                       for r, i in zip(recon, idx)]
            out[path] = {"n": len(idx), "recon_valid": ev["valid"], "match_rate": float(np.mean(matches)),
                         "lengths_mae_A": float(np.mean([e[0] for e in errs])), "angles_mae_deg": float(np.mean([e[1] for e in errs]))}
        print(path, json.dumps(out[path]))
    _save("reconstruction", {"ae": args.ae, "results": out})


def sampling(args) -> None:
    from sciformer.tasks.generative import load_generator

    task = load_generator(args.ldm, args.device)
    rows = []
    for kind in ("molecule", "crystal"):
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        task.generate(args.n, kind, steps=args.steps, cfg_scale=args.cfg, batch_size=args.n, generator=g)
        dt = time.perf_counter() - t0
        rows.append({"kind": kind, "n": args.n, "steps": args.steps, "cfg_scale": args.cfg, "seconds": dt, "per_s": args.n / dt})
        print(f"{kind:9s} {args.n} samples x {args.steps} steps (CFG {args.cfg}): {dt:.1f} s = {args.n / dt:.2f} /s")
    _save(f"sampling_{args.device}", {"ldm": args.ldm, "rows": rows})


def quality(args) -> None:
    rows = {}
    for d in args.samples:
        m = json.loads((Path(d) / "metrics.json").read_text())
        rows[d] = m
        keys = [k for k in ("valid", "valid_largest_fragment", "unique", "novel", "atom_stable", "mol_stable",
                            "struct_valid", "comp_valid") if k in m]
        print(d, m["kind"], "  ".join(f"{k} {100 * m[k]:.1f}%" for k in keys))
    _save("quality", {"rows": rows})


def conditioning(args) -> None:
    """Property conditioning check: sample crystals at two target values of one property and predict that
    property of the structurally valid samples with a trained PropertyTask checkpoint."""
    from torch_geometric.data import Batch

    from sciformer.data.atoms import to_pyg
    from sciformer.metrics import crystals as C
    from sciformer.tasks.generative import load_generator
    from sciformer.tasks.property import PropertyTask

    gen = load_generator(args.ldm)
    prop = PropertyTask.load_from_checkpoint(args.predictor, map_location="cpu", weights_only=True).eval()
    spec = prop.hparams.data_spec
    k = spec["properties"].index(args.property)
    rows = []
    for value in args.values:
        g = torch.Generator().manual_seed(0)
        items = gen.generate(args.n, "crystal", steps=args.steps, cfg_scale=args.cfg, properties={args.property: value},
                             batch_size=args.n, generator=g)
        ok = [c for c in items if C.structural_validity(c)]
        data = [to_pyg({"atomic_numbers": c["atomic_numbers"], "positions": c["positions"], "cell": c["cell"],
                        "pbc": np.ones(3, bool), "properties": {}}, 0) for c in ok]
        with torch.no_grad():
            pred = prop.model(Batch.from_data_list(data))[:, k] * spec["property_std"][k] + spec["property_mean"][k]
        rows.append({"target": value, "n_valid": len(ok), "predicted_mean": float(pred.mean()), "predicted_std": float(pred.std())})
        print(f"{args.property} = {value}: {len(ok)}/{args.n} structurally valid, predicted {float(pred.mean()):.3f} ± {float(pred.std()):.3f}")
    _save("conditioning", {"ldm": args.ldm, "predictor": args.predictor, "property": args.property, "rows": rows})


def _mol_stats(items: list[dict]) -> dict[str, float]:
    """Geometry and composition of molecules: validity, nearest-neighbour distance (median over atoms), share of
    atoms closer than 0.7 Å to another atom, hydrogen fraction, radius of gyration."""
    from sciformer.metrics import molecules as M

    nn, close, h, rg = [], [], [], []
    for m in items:
        pos, z = np.asarray(m["positions"], float), np.asarray(m["atomic_numbers"])
        d = np.linalg.norm(pos[:, None] - pos[None], axis=-1) + np.eye(len(pos)) * 1e9
        nn += d.min(1).tolist()
        close.append(float((d.min(1) < 0.7).mean()))
        h.append(float((z == 1).mean()))
        rg.append(float(np.sqrt(((pos - pos.mean(0)) ** 2).sum(-1).mean())))
    valid = M.validity([m["atomic_numbers"] for m in items], [m["positions"] for m in items],
                       [m.get("charge", 0) for m in items])
    return {"valid": float(np.mean(valid)), "nn_dist_median_A": float(np.median(nn)), "atoms_closer_0.7A": float(np.mean(close)),
            "h_fraction": float(np.mean(h)), "radius_gyration_A": float(np.mean(rg))}


def _latent_stats(z: torch.Tensor, mask: torch.Tensor) -> dict[str, Any]:
    v = z[mask]
    return {"mean_per_dim": [round(float(x), 3) for x in v.mean(0)], "std_per_dim": [round(float(x), 3) for x in v.std(0)],
            "token_norm": float(v.norm(dim=-1).mean())}


def diagnose(args) -> None:
    """Where generated molecules fail: decode the encoder's latents of real molecules (reconstruction), the same
    latents with Gaussian noise of σ·latent_std (the decoder's tolerance to latent error), the DiT's one-shot
    estimate x̂₁ from x_t of real latents at several t (denoiser accuracy), and latents drawn by the sampler
    (compare their per-dimension statistics with the encoder's: a scaling or time-direction bug shows here)."""
    from torch_geometric.data import Batch

    from sciformer.data.atoms import AtomStore, to_pyg
    from sciformer.models.adit import flow
    from sciformer.tasks.generative import dense, load_generator

    task = load_generator(args.ldm, decoder=args.decoder)
    store = args.store or next(p for p in task.hparams.data_spec["stores"] if AtomStore(p).domain == "molecule")
    s = AtomStore(store).load()
    start = int(round(0.9 * len(s)))
    idx = list(range(start, min(len(s), start + args.n)))
    b = Batch.from_data_list([to_pyg(s[i], 1) for i in idx])
    d = dense(b)
    mask, std = d["mask"], task.latent_std
    g = torch.Generator().manual_seed(0)
    charges = [s[i].get("charge", 0) for i in idx]

    def decoded(z):
        items = task.decode_latents(z, mask, "molecule")
        for it, q in zip(items, charges):
            it["charge"] = q
        return _mol_stats(items)

    with torch.no_grad():
        mean, logvar = task.autoencoder.encode(d["types"], d["pos_nm"], d["frac"], mask)
        x1 = mean / std * mask[..., None]
        post = (0.5 * logvar).exp() / std  # the LDM is trained on posterior samples mean + post·ε (scaled units)
        rows = {"real": _mol_stats([{"atomic_numbers": s[i]["atomic_numbers"], "positions": s[i]["positions"],
                                     "charge": q} for i, q in zip(idx, charges)]),
                "decode(encoder mean)": decoded(x1),
                "decode(posterior sample)": {**decoded(x1 + post * torch.randn(x1.shape, generator=g) * mask[..., None]),
                                             "posterior_std": float(post[mask].mean())}}
        for sigma in args.sigmas:
            rows[f"decode(mean + {sigma}·N)"] = decoded(x1 + sigma * torch.randn(x1.shape, generator=g) * mask[..., None])
        labels = dict(dataset_idx=torch.ones(len(idx), dtype=torch.long))
        if task.model.config.num_properties:
            P = task.model.config.num_properties
            labels.update(properties=torch.zeros(len(idx), P), property_mask=torch.zeros(len(idx), P, dtype=torch.bool))
        denoise = {}
        for t in args.times:
            x0 = flow.centred_noise(x1.shape, mask, generator=g)
            tt = torch.full((len(idx),), t)
            xt = flow.interpolate(x0, x1, tt)
            x1_hat = task.model(xt, tt, mask, task.model(xt, tt, mask, None, **labels), **labels)
            err = float(((x1_hat - x1) ** 2)[mask].mean().sqrt())
            rows[f"decode(DiT x̂₁ at t={t})"] = {**decoded(x1_hat), "latent_rmse": err}
            denoise[t] = err
        for steps in args.steps:
            for cfg in args.cfg:
                z, m2 = task.sample_latents(d["n_atoms"].long(), "molecule", steps=steps, cfg_scale=cfg, generator=g)
                rows[f"sampled {steps} steps cfg {cfg}"] = {**decoded(z), "latents": _latent_stats(z, m2)}
        rows["decode(encoder mean)"]["latents"] = _latent_stats(x1, mask)
    for k, v in rows.items():
        print(f"{k:32s} " + "  ".join(f"{a} {b:.3f}" for a, b in v.items() if isinstance(b, float)))
        if "latents" in v:
            print(f"{'':32s} latent mean {v['latents']['mean_per_dim']}\n{'':32s} latent std  {v['latents']['std_per_dim']}")
    _save("diagnosis" + ("_decoder" if args.decoder else ""), {"ldm": args.ldm, "decoder": args.decoder, "store": store, "n": len(idx), "latent_std": float(std), "rows": rows})


def budget(args) -> None:
    """Time-boxed latent-DiT training through the shipped config (``sciformer fit`` path): a short run measures
    steps/s, then the real run's cosine schedule spans the steps that fit ``--seconds``; then molecules and
    crystals are sampled and saved raw (JSON), so they can be scored where RDKit is installed (``score``)."""
    import lightning as L

    from sciformer.io import write_json
    from sciformer.lightning_cli import SciformerCLI
    from sciformer.tasks.generative import load_generator

    out = Path(args.out)
    stores = json.dumps(args.stores)

    def cli(steps: int, work: Path, max_s: float) -> SciformerCLI:
        c = SciformerCLI(args=["-c", args.config, "--model.init_args.autoencoder", args.ae,
                               "--model.init_args.model", args.model, "--model.init_args.lr", str(args.lr),
                               "--model.init_args.warmup_steps", str(min(args.warmup, steps // 10)),
                               "--model.init_args.min_lr_ratio", "0.05", "--model.init_args.val_samples", "0",
                               "--data.init_args.train", stores, "--data.init_args.batch_size", str(args.batch),
                               "--data.init_args.num_workers", str(args.workers),
                               "--trainer.max_steps", str(steps), "--trainer.max_epochs", "-1",
                               "--trainer.max_time", time.strftime("00:%H:%M:%S", time.gmtime(max_s)),
                               "--trainer.precision", args.precision, "--trainer.check_val_every_n_epoch", "1000",
                               "--trainer.default_root_dir", str(work), "--trainer.logger.init_args.save_dir", str(work),
                               "--trainer.enable_progress_bar", "false"], run=False)
        c.trainer.checkpoint_callback.dirpath = str(work / "checkpoints")
        return c

    class Clock(L.Callback):
        def __init__(self):
            self.t: dict[int, float] = {}

        def on_train_batch_end(self, trainer, *a):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            self.t[trainer.global_step] = time.perf_counter()

    probe, clock = cli(args.probe_steps, out / "probe", 600), Clock()
    probe.trainer.callbacks.append(clock)
    probe.trainer.fit(probe.model, datamodule=probe.datamodule)
    a, b = args.probe_steps // 3, args.probe_steps
    rate = (b - a) / (clock.t[b] - clock.t[a])
    steps = int(rate * args.seconds)
    print(f"probe: {rate:.1f} steps/s at batch {args.batch} -> {steps} steps in {args.seconds} s", flush=True)
    run, clock = cli(steps, out / "run", 1.15 * args.seconds + 20), Clock()  # max_time: a guard if others slow it
    run.trainer.callbacks.append(clock)
    t0 = time.perf_counter()
    run.trainer.fit(run.model, datamodule=run.datamodule)
    train_s = time.perf_counter() - t0
    res = {"model": args.model, "ae": args.ae, "batch": args.batch, "precision": args.precision, "lr": args.lr,
           "steps": steps, "train_s": train_s, "steps_per_s": rate, "systems_per_s": rate * args.batch,
           "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
           "final_loss": float(run.trainer.callback_metrics.get("train/loss", float("nan"))), "samples": {}}
    task = load_generator(out / "run" / "checkpoints" / "last.ckpt", "cuda" if torch.cuda.is_available() else "cpu")
    for kind in ("molecule", "crystal"):
        g = torch.Generator().manual_seed(0)
        t0 = time.perf_counter()
        items = task.generate(args.n, kind, steps=100, cfg_scale=2.0, batch_size=args.n, generator=g)
        dt = time.perf_counter() - t0
        res["samples"][kind] = {"n": args.n, "seconds": dt, "per_s": args.n / dt}
        write_json(out / f"samples_{kind}.json", {"kind": kind, "stores": args.stores, "items": [
            {k: np.asarray(v).tolist() for k, v in it.items()} for it in items]})
        print(f"{kind}: {args.n} samples in {dt:.1f} s", flush=True)
    write_json(out / "budget.json", res)
    print(json.dumps(res, default=float))


def score(args) -> None:
    """Score raw samples saved by ``budget``: write XYZ/SDF or CIF next to them and the metrics of ``sciformer
    sample`` (novelty against the training part of the stores they were trained on)."""
    from sciformer.io import write_json
    from sciformer.tasks.generative import score_samples, write_samples

    raw = json.loads(Path(args.raw).read_text())
    items = [{k: np.asarray(v) for k, v in it.items()} for it in raw["items"]]
    out = Path(args.raw).with_suffix("")
    write_samples(out, items, raw["kind"])
    m = score_samples(items, raw["kind"], args.stores or raw["stores"])
    write_json(out / "metrics.json", {"kind": raw["kind"], "n": len(items), **m})
    print(raw["kind"], json.dumps(m, default=float))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--device", default="cpu")
    t.add_argument("--sizes", default="adit-vae-tiny,adit-dit-tiny,adit-vae-small,adit-dit-small")
    t.add_argument("--precisions", default="fp32,bf16")
    t.add_argument("--batch", type=int, default=64)
    t.add_argument("--steps", type=int, default=5)
    t.add_argument("--warmup", type=int, default=2)
    r = sub.add_parser("reconstruction")
    r.add_argument("--ae", required=True)
    r.add_argument("--stores", nargs="+", default=["data/qm9_etkdg_30k.zarr", "data/perov_5_val.zarr", "data/carbon_24_val.zarr"])
    r.add_argument("--n", type=int, default=500)
    s = sub.add_parser("sampling")
    s.add_argument("--ldm", required=True)
    s.add_argument("--device", default="cpu")
    s.add_argument("--n", type=int, default=64)
    s.add_argument("--steps", type=int, default=100)
    s.add_argument("--cfg", type=float, default=2.0)
    q = sub.add_parser("quality")
    q.add_argument("--samples", nargs="+", required=True)
    c = sub.add_parser("conditioning")
    c.add_argument("--ldm", required=True)
    c.add_argument("--predictor", required=True)
    c.add_argument("--property", default="heat_ref")
    c.add_argument("--values", type=float, nargs="+", default=[0.5, 2.5])
    c.add_argument("--n", type=int, default=200)
    c.add_argument("--steps", type=int, default=100)
    c.add_argument("--cfg", type=float, default=2.0)
    dg = sub.add_parser("diagnose")
    dg.add_argument("--ldm", required=True)
    dg.add_argument("--decoder", default=None, help="AutoencoderTask checkpoint whose decoder replaces the LDM's")
    dg.add_argument("--store", default=None, help="molecule store (default: the checkpoint's training store)")
    dg.add_argument("--n", type=int, default=200)
    dg.add_argument("--sigmas", type=float, nargs="+", default=[0.1, 0.3, 0.5])
    dg.add_argument("--times", type=float, nargs="+", default=[0.5, 0.9])
    dg.add_argument("--steps", type=int, nargs="+", default=[100])
    dg.add_argument("--cfg", type=float, nargs="+", default=[1.0, 2.0])
    b = sub.add_parser("budget")
    b.add_argument("--ae", required=True, help="AutoencoderTask checkpoint (frozen, embedded in the LDM)")
    b.add_argument("--config", default="configs/molecules/adit_ldm_joint.yaml")
    b.add_argument("--stores", nargs="+", default=["data/qm9_etkdg_30k.zarr", "data/perov_5_val.zarr", "data/carbon_24_val.zarr"])
    b.add_argument("--model", default="adit-dit-s")
    b.add_argument("--seconds", type=float, default=270)
    b.add_argument("--probe-steps", type=int, default=90)
    b.add_argument("--batch", type=int, default=256)
    b.add_argument("--lr", type=float, default=3e-4)
    b.add_argument("--warmup", type=int, default=300)
    b.add_argument("--precision", default="bf16-mixed")
    b.add_argument("--workers", type=int, default=4)
    b.add_argument("--n", type=int, default=1000)
    b.add_argument("--out", default="runs/adit_budget")
    sc = sub.add_parser("score")
    sc.add_argument("--raw", required=True)
    sc.add_argument("--stores", nargs="*", help="reference stores (default: those the samples were trained on)")
    args = p.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", torch.get_num_threads())))
    {"throughput": throughput, "reconstruction": reconstruction, "sampling": sampling, "quality": quality,
     "conditioning": conditioning, "diagnose": diagnose, "budget": budget, "score": score}[args.what](args)


if __name__ == "__main__":
    main()
