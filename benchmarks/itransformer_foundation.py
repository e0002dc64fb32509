"""Foundation use of iTransformer: mixture pretraining, zero-shot, few-window fine-tuning, unseen variates.

Protocol (lookback 96, horizon 96, one architecture for every arm: d_model = d_ff = 128, 2 layers, 8 heads,
4 hourly time features; MSE/MAE on each store's standardised scale, every test window scored):
  pretrain   one model on the mixture ETTh1 + ETTh2 + ETTm1 + ETTm2 + Exchange + ILI (7, 7, 7, 7, 8, 7 variates;
             each batch from one store), Weather (21 variates, another domain) held out entirely.
  (a)        zero-shot: the pretrained model on Weather's test windows, vs a model trained from scratch on
             the whole Weather training split (same epochs cap) and the persistence / lookback-mean baselines.
  (b)        fine-tune on the last N Weather training windows vs scratch on the same N windows; both arms get
             the same budget (epochs, early stopping on validation) and the same LR grid, best LR chosen on
             validation; several seeds.
  (c)        unseen variates: train from scratch on the first 20 % of Weather's variates (4 of 21), validate on
             them, test on all 21 without fine-tuning; vs the same model trained on all 21.
Everything runs through ForecastTask + SeriesDataModule + the Lightning Trainer. Budgets are arguments; the
JSON records them with the results and the machine load.

``--dataset-tokens`` gives every arm's model a learned data-set token (ITransformer ``dataset_tokens``; the
per-variate scaling is the model's ``use_norm``, on in every arm). The pretrained vocabulary is the six mixture
stores; during pretraining a sample's id becomes the "unknown" id with probability ``--dataset-dropout`` so that
the unknown token is trained. Weather is not in the vocabulary: zero-shot it reads the unknown token, and
fine-tuning keeps that id, so the unknown token is what adapts to Weather (a new id would start untrained).
Scratch arms get a vocabulary of one (Weather). (c) then also fine-tunes the pretrained model on the 4 variates
(``partial_pretrained``), the foundation form of the unseen-variates question. Results go to
``itransformer_foundation_tokens.json`` and runs to ``runs/foundation_tokens``, so the plain results stay.

    python benchmarks/itransformer_foundation.py --threads 1
    python benchmarks/itransformer_foundation.py --threads 1 --dataset-tokens
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from itransformer_reproduce import ROOT, ensure_store  # noqa: E402

MIXTURE = ["etth1", "etth2", "ettm1", "ettm2", "exchange", "ili"]
TARGET = "weather"
SIZE = "itransformer-etth2-96"  # d_model = d_ff = 128, 2 layers (the reference's ETTh2/ETTm/Exchange size)


def vocabulary(ckpt: str | None) -> list[str] | None:
    """A checkpoint's data-set vocabulary (None: none recorded, or no checkpoint): ids keep their meaning."""
    from sciformer import checkpoints

    return checkpoints.read(ckpt).data_spec.get("datasets") if ckpt else None


def train_and_test(stores, workdir: Path, *, epochs: int, lr: float, seed: int, pretrained: str | None = None,
                   train_windows: int | None = None, train_variates: int | None = None,
                   limit_val_batches: float | int = 1.0, test_stores=None, tokens: float | None = None,
                   limit_batches: int | None = None) -> dict:
    """``tokens``: a fresh model gets dataset tokens with this dataset dropout (None: no tokens).
    ``limit_batches``: cap on the training and validation batches of an epoch (smoke tests)."""
    import lightning as L
    from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint

    from sciformer.data.series_module import SeriesDataModule
    from sciformer.tasks.forecast import ForecastTask

    if limit_batches:  # a count caps a count; it replaces the default fraction 1.0 (every batch)
        limit_val_batches = limit_batches if limit_val_batches == 1.0 else min(limit_val_batches, limit_batches)

    L.seed_everything(seed, verbose=False)
    dm = SeriesDataModule([str(ensure_store(s)) for s in stores], batch_size=32, eval_batch_size=256,
                          train_windows=train_windows, train_variates=train_variates, seed=seed,
                          datasets=vocabulary(pretrained))
    options = None if tokens is None or pretrained else {"dataset_tokens": len(dm.spec["datasets"]),
                                                          "dataset_dropout": tokens}
    task = ForecastTask(model=None if pretrained else SIZE, pretrained=pretrained, lr=lr, data_spec=dm.spec,
                        model_options=options)
    ckpt = ModelCheckpoint(dirpath=workdir / "checkpoints", filename="best", monitor="val/mse", mode="min")
    trainer = L.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[ckpt, EarlyStopping("val/mse", patience=3)],
                        limit_train_batches=limit_batches or 1.0, limit_val_batches=limit_val_batches,
                        num_sanity_val_steps=0, default_root_dir=workdir)
    t0 = time.perf_counter()
    if epochs > 0:
        trainer.fit(task, datamodule=dm)
    fit_s = time.perf_counter() - t0
    out = {"fit_s": fit_s, "epochs": trainer.current_epoch, "lr": lr, "seed": seed,
           "best_val_mse": float(ckpt.best_model_score) if ckpt.best_model_score is not None else None,
           "ckpt": ckpt.best_model_path or None}
    if test_stores is not None:
        out["test"] = test(out["ckpt"] or pretrained, test_stores, seed)
    return out


def test(ckpt: str, stores, seed: int) -> dict:
    """Test a checkpoint (its weights as they are) on every test window of ``stores``."""
    import lightning as L

    from sciformer.data.series_module import SeriesDataModule
    from sciformer.tasks.forecast import ForecastTask

    dm = SeriesDataModule([str(ensure_store(s)) for s in stores], eval_batch_size=256, seed=seed,
                          datasets=vocabulary(ckpt))
    task = ForecastTask(model=None, pretrained=ckpt, data_spec=dm.spec)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    (res,) = trainer.test(task, datamodule=dm, verbose=False)
    return {k.removeprefix("test/"): float(v) for k, v in res.items()}


def _summary(runs: list[dict]) -> str:
    mse = [r["test"]["mse"] for r in runs]
    return f"{statistics.mean(mse):.4f}" + (f" ± {statistics.stdev(mse):.4f}" if len(mse) > 1 else "")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--pretrain-epochs", type=int, default=2)
    p.add_argument("--scratch-epochs", type=int, default=2, help="cap for full-data scratch runs (a) and (c)")
    p.add_argument("--few-windows", nargs="+", type=int, default=[256])
    p.add_argument("--few-epochs", type=int, default=10)
    p.add_argument("--lrs", nargs="+", type=float, default=[1e-4, 1e-3])
    p.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    p.add_argument("--few-val-batches", type=int, default=5, help="validation batches (of 256) for model selection")
    p.add_argument("--parts", nargs="+", default=["pretrain", "a", "b", "c"],
                   help="pretrain, a, b, c; 'zero': (a)'s zero-shot score without its scratch arm; (c) trains its "
                        "all-variates model only with a (or reads a's)")
    p.add_argument("--dataset-tokens", action="store_true", help="a learned data-set token in every arm's model")
    p.add_argument("--dataset-dropout", type=float, default=0.2,
                   help="with --dataset-tokens: chance a training sample reads the unknown token instead of its own")
    p.add_argument("--limit-batches", type=int, default=None,
                   help="cap every epoch at this many training and validation batches (a smoke test, not a result)")
    p.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/itransformer_foundation"
                                                          "[_tokens].json")
    p.add_argument("--workdir", type=Path, default=None, help="default: runs/foundation[_tokens]")
    args = p.parse_args()
    suffix = "_tokens" if args.dataset_tokens else ""
    args.out = args.out or ROOT / "benchmarks" / "results" / f"itransformer_foundation{suffix}.json"
    args.workdir = args.workdir or ROOT / "runs" / f"foundation{suffix}"
    tokens = args.dataset_dropout if args.dataset_tokens else None
    arms = {"tokens": tokens, "limit_batches": args.limit_batches}
    import torch

    from sciformer.io import write_json

    torch.set_num_threads(args.threads)
    res = json.loads(args.out.read_text()) if args.out.exists() else {}
    res.setdefault("invocations", []).append({k: v for k, v in vars(args).items() if k not in ("out", "workdir")})
    save = lambda: write_json(args.out, res)  # noqa: E731
    pre_ckpt = str(args.workdir / "pretrain" / "checkpoints" / "best.ckpt")
    if "pretrain" in args.parts:
        r = train_and_test(MIXTURE, args.workdir / "pretrain", epochs=args.pretrain_epochs, lr=1e-4, seed=0, **arms)
        res["pretrain"] = {**r, "stores": MIXTURE, "datasets": vocabulary(r["ckpt"]) if tokens is not None else None,
                           "load": os.getloadavg()}
        save()
        print(f"pretrained on {MIXTURE}: best val MSE {r['best_val_mse']:.4f} ({r['fit_s']:.0f} s)", flush=True)
    if "zero" in args.parts:  # (a) without its scratch arm: a pretraining budget's zero-shot score alone
        zero = test(pre_ckpt, [TARGET], 0)
        res["zero_shot"] = zero
        save()
        print(f"{TARGET} zero-shot MSE {zero['mse']:.4f} | persistence {zero['mse_persistence']:.4f} | lookback "
              f"mean {zero['mse_mean']:.4f}", flush=True)
    if "a" in args.parts:
        zero = res["zero_shot"] if "zero" in args.parts else test(pre_ckpt, [TARGET], 0)
        scratch = train_and_test([TARGET], args.workdir / "a_scratch", epochs=args.scratch_epochs, lr=1e-4, seed=0,
                                 test_stores=[TARGET], **arms)
        res["a_zero_shot"] = {"zero_shot": zero, "scratch_full": scratch, "load": os.getloadavg()}
        save()
        print(f"(a) {TARGET} zero-shot MSE {zero['mse']:.4f} MAE {zero['mae']:.4f} | scratch (all training "
              f"windows, {scratch['epochs']} epochs) {scratch['test']['mse']:.4f} | persistence "
              f"{zero['mse_persistence']:.4f} | lookback mean {zero['mse_mean']:.4f}", flush=True)
    if "b" in args.parts:
        res.setdefault("b_few_windows", {})
        for n in args.few_windows:
            cell = {}
            for arm, pre in (("finetuned", pre_ckpt), ("scratch", None)):
                runs = []
                for seed in args.seeds:
                    cands = [train_and_test([TARGET], args.workdir / f"b_{n}_{arm}_{seed}_{lr:g}", epochs=args.few_epochs,
                                            lr=lr, seed=seed, pretrained=pre, train_windows=n,
                                            limit_val_batches=args.few_val_batches, **arms) for lr in args.lrs]
                    best = min(cands, key=lambda c: c["best_val_mse"])
                    best["test"] = test(best["ckpt"], [TARGET], seed)
                    runs.append(best)
                cell[arm] = {"runs": runs, "test_mse": _summary(runs)}
            res["b_few_windows"][str(n)] = cell
            save()
            print(f"(b) {n} windows: fine-tuned {cell['finetuned']['test_mse']} vs scratch "
                  f"{cell['scratch']['test_mse']} (test MSE, {len(args.seeds)} seeds)", flush=True)
    if "c" in args.parts:
        k = 21 // 5
        part = train_and_test([TARGET], args.workdir / "c_partial", epochs=args.scratch_epochs, lr=1e-4, seed=0,
                              train_variates=k, test_stores=[TARGET], **arms)
        full = res.get("a_zero_shot", {}).get("scratch_full")
        if full is None and "a" in args.parts:
            full = train_and_test([TARGET], args.workdir / "a_scratch", epochs=args.scratch_epochs, lr=1e-4, seed=0,
                                  test_stores=[TARGET], **arms)
        res["c_unseen_variates"] = {"train_variates": k, "partial": part, "all": full, "load": os.getloadavg()}
        if args.dataset_tokens:
            res["c_unseen_variates"]["partial_pretrained"] = train_and_test(
                [TARGET], args.workdir / "c_partial_pretrained", epochs=args.scratch_epochs, lr=1e-4, seed=0,
                pretrained=pre_ckpt, train_variates=k, test_stores=[TARGET], **arms)
        save()
        print(f"(c) trained on {k}/21 variates: test MSE on all 21 {part['test']['mse']:.4f}"
              + (f" vs trained on all 21 {full['test']['mse']:.4f}" if full else "")
              + f" | lookback mean {part['test']['mse_mean']:.4f}", flush=True)
        if args.dataset_tokens:
            print(f"(c) pretrained, fine-tuned on {k}/21 variates: test MSE on all 21 "
                  f"{res['c_unseen_variates']['partial_pretrained']['test']['mse']:.4f}", flush=True)


if __name__ == "__main__":
    main()
