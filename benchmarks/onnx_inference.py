"""CPU inference: onnxruntime on the exported graph against PyTorch eager, same process, same inputs.

For each family at a realistic size (scOT-T at 128², FactFormer-2D at 64², FNO-2D at 128², iTransformer
ETTh1-96: 7 variates, 4 calendar features) and batch 1 and 8: the model (random weights; speed does not
depend on them) is exported with ``sciformer.onnx_export.export_onnx`` and both runtimes are called in
interleaved pairs (the order alternates), ``--repeats`` pairs after a warm-up, with the same fixed number of
intra-op threads (``torch.set_num_threads`` = onnxruntime ``intra_op_num_threads``, one inter-op thread).
PyTorch runs the product path (``model(x, t)`` under ``torch.inference_mode``, kernel mode ``auto``). The
table gives medians and the PyTorch/onnxruntime ratio; the JSON also holds every time, the export time, the
agreement of the two outputs and the load average (``uptime``) before and after. Exports in ``--work`` are
reused (the export time then comes from the files' modification times).

    OMP_NUM_THREADS=1 python benchmarks/onnx_inference.py --threads 1 --repeats 10
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CASES = {
    # name: (registered size, overrides, input kind, spatial grid / series shape)
    "scot-t-128": ("scot-t", dict(in_channels=4, out_channels=4), "operator", (128, 128)),
    "factformer-2d-64": ("factformer-2d", dict(in_channels=4, out_channels=4), "operator", (64, 64)),
    "fno-2d-128": ("fno-2d", dict(in_channels=4, out_channels=4), "operator", (128, 128)),
    "itransformer-etth1-96": ("itransformer-etth1-96", {}, "series", (96, 7)),
}


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "load average: {:.2f}, {:.2f}, {:.2f}".format(*os.getloadavg())


def _inputs(kind: str, shape, batch: int, n_marks: int):
    import torch

    g = torch.Generator().manual_seed(batch)
    if kind == "operator":
        return {"x": torch.randn(batch, 4, *shape, generator=g), "t": torch.rand(batch, generator=g)}
    seq, n = shape
    out = {"x": torch.randn(batch, seq, n, generator=g)}
    if n_marks:
        out["x_mark"] = torch.rand(batch, seq, n_marks, generator=g) - 0.5
    return out


def run_case(name: str, batches: list[int], repeats: int, threads: int, work: Path) -> list[dict]:
    import numpy as np
    import onnxruntime as ort
    import torch

    from sciformer.models import get, save
    from sciformer.onnx_export import export_onnx, read_metadata

    size, overrides, kind, shape = CASES[name]
    torch.manual_seed(0)
    model = get(size, **overrides).eval()
    export = work / name
    onnx_path = export / "model.onnx"
    export_s = None
    if not onnx_path.is_file():  # reuse an earlier export of the same case (same seed, same weights)
        save(model, export)
        t0 = time.perf_counter()
        export_onnx(export, size=shape if kind == "operator" else None)
        export_s = time.perf_counter() - t0
    else:
        from sciformer.checkpoints import read

        model = read(export).build()
        # the export wrote model.safetensors, then traced and wrote model.onnx: its duration from the file times
        export_s = onnx_path.stat().st_mtime - (export / "model.safetensors").stat().st_mtime
    meta = read_metadata(onnx_path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    sess = ort.InferenceSession(str(onnx_path), opts, providers=["CPUExecutionProvider"])
    graph_inputs = {i.name for i in sess.get_inputs()}
    n_marks = getattr(model.config, "n_time_features", 0)
    rows = []
    for batch in batches:
        feed_t = _inputs(kind, shape, batch, n_marks)
        feed_np = {k: v.numpy() for k, v in feed_t.items() if k in graph_inputs}
        args = tuple(feed_t.values())

        def torch_call(args=args):
            with torch.inference_mode():
                return model(*args)

        def ort_call(feed_np=feed_np):
            return sess.run(None, feed_np)[0]

        ref, got = torch_call().numpy(), ort_call()
        rel = float(np.abs(got - ref).max() / np.abs(ref).max())
        for _ in range(1):  # warm-up (the first calls also ran above)
            torch_call(), ort_call()
        times = {"torch": [], "onnxruntime": []}
        for r in range(repeats):
            order = (("torch", torch_call), ("onnxruntime", ort_call))
            for key, fn in (order if r % 2 == 0 else order[::-1]):
                t0 = time.perf_counter()
                fn()
                times[key].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        row = {"case": name, "model": size, "batch": batch, "input": {k: list(v.shape) for k, v in feed_t.items()},
               "torch_ms": 1e3 * med["torch"], "onnxruntime_ms": 1e3 * med["onnxruntime"],
               "speedup": med["torch"] / med["onnxruntime"], "max_relative_difference": rel,
               "times_s": times, "export_s": export_s, "exporter": meta["exporter"], "opset": meta["opset"]}
        rows.append(row)
        print(f"{name} batch {batch}: torch {row['torch_ms']:.1f} ms, onnxruntime {row['onnxruntime_ms']:.1f} ms, "
              f"x{row['speedup']:.2f} (rel. difference {rel:.1e})", flush=True)
    return rows


def table(rows: list[dict], threads: int) -> str:
    lines = ["| model | input | batch | PyTorch eager ms, median (min) | onnxruntime ms, median (min) | PyTorch / ORT "
             "(medians) | max rel. diff |", "|---|---|---:|---:|---:|---:|---:|"]
    for r in rows:
        shape = "96×7" if r["case"].startswith("itransformer") else "×".join(str(s) for s in r["input"]["x"][2:])
        lo = {k: 1e3 * min(v) for k, v in r["times_s"].items()}
        lines.append(f"| {r['model']} | {shape} | {r['batch']} | {r['torch_ms']:.1f} ({lo['torch']:.1f}) | "
                     f"{r['onnxruntime_ms']:.1f} ({lo['onnxruntime']:.1f}) | {r['speedup']:.2f} | "
                     f"{r['max_relative_difference']:.1e} |")
    lines.append(f"\n{threads} intra-op thread(s) for both runtimes; {len(rows[0]['times_s']['torch'])} interleaved "
                 "pairs per row; float32; CPU.")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default=",".join(CASES), help=f"comma-separated, from {', '.join(CASES)}")
    p.add_argument("--batches", default="1,8")
    p.add_argument("--repeats", type=int, default=10)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--work", type=Path, default=ROOT / "runs" / "bench_onnx", help="exports (reused if present)")
    p.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "onnx_inference.json")
    args = p.parse_args()
    import onnxruntime
    import torch

    from sciformer.io import write_json

    torch.set_num_threads(args.threads)
    before = _uptime()
    print("uptime before:", before, flush=True)
    rows = []
    for name in args.cases.split(","):
        if name not in CASES:
            sys.exit(f"--cases: unknown case {name!r}; choose from {', '.join(CASES)}")
        rows += run_case(name, [int(b) for b in args.batches.split(",")], args.repeats, args.threads, args.work)
    after = _uptime()
    print("uptime after:", after)
    result = {"threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
              "onnxruntime": onnxruntime.__version__, "cpu_count": os.cpu_count(), "uptime_before": before,
              "uptime_after": after, "rows": rows}
    write_json(args.out, result)
    print(table(rows, args.threads))


if __name__ == "__main__":
    main()
