"""Seconds per epoch of iTransformer on ETTh1 96→96 at the paper's settings, through the Lightning Trainer.

The shipped config (batch 32, d_model = d_ff = 256, float32) is trained for a few epochs with validation
every epoch; the table gives the training loop, the validation pass (2,785 windows) and the test pass
(2,785 windows, batched), and their sum — the quantity the upstream figure measures (its train loop plus
its val + per-window test evaluation). Upstream on this machine kind (idle, 2 threads; DECISIONS):
6.5 s train loop, 10.7 s with evaluation. Run on an idle machine; the load average is recorded.

    python benchmarks/itransformer_epoch.py --threads 2 --epochs 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from itransformer_reproduce import ROOT, build, epoch_timer  # noqa: E402

UPSTREAM = {"train_s": 6.5, "epoch_with_eval_s": 10.7}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--precision", default="32-true", help="32-true (the comparison) or bf16-mixed (reported apart)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "itransformer_epoch.json")
    args = p.parse_args()
    import torch

    from sciformer.io import write_json

    torch.set_num_threads(args.threads)
    load_before = os.getloadavg()
    cli = build("etth1", 96, 2023, ROOT / "runs" / "bench_epoch",
                ["--trainer.max_epochs", str(args.epochs), "--trainer.precision", args.precision,
                 "--trainer.callbacks", "[]", "--trainer.logger", "false", "--trainer.enable_checkpointing", "false"])
    timer = epoch_timer()
    cli.trainer.callbacks.append(timer)
    cli.trainer.fit(cli.model, datamodule=cli.datamodule)
    tests = []
    for _ in range(2):
        t0 = time.perf_counter()
        cli.trainer.test(cli.model, datamodule=cli.datamodule, verbose=False)
        tests.append(time.perf_counter() - t0)
    # the first epoch includes one-off warm-up (allocations, lazy imports): report the later ones
    train = timer.train[1:] or timer.train
    val = timer.val[1:] or timer.val
    res = {"threads": args.threads, "precision": args.precision, "epochs": args.epochs,
           "train_epoch_s": timer.train, "val_s": timer.val, "test_s": tests,
           "median_train_s": statistics.median(train), "median_val_s": statistics.median(val),
           "median_test_s": statistics.median(tests), "load_before": load_before, "load_after": os.getloadavg(),
           "upstream": UPSTREAM, "torch": torch.__version__}
    res["epoch_with_eval_s"] = res["median_train_s"] + res["median_val_s"] + res["median_test_s"]
    write_json(args.out, res)
    print(f"| ETTh1 96→96, {args.threads} threads, {args.precision} | train loop | val | test | epoch incl. eval |")
    print("|---|---|---|---|---|")
    print(f"| sciformer (Lightning Trainer) | {res['median_train_s']:.2f} s | {res['median_val_s']:.2f} s | "
          f"{res['median_test_s']:.2f} s | {res['epoch_with_eval_s']:.2f} s |")
    print(f"| upstream (quoted, idle machine) | {UPSTREAM['train_s']} s | | | {UPSTREAM['epoch_with_eval_s']} s |")
    print(f"load average before/after: {load_before[0]:.1f} / {res['load_after'][0]:.1f} (2 cores)")


if __name__ == "__main__":
    main()
