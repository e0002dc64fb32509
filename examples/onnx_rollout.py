"""Autoregressive rollout of an exported sciformer surrogate with onnxruntime and numpy only (no PyTorch).

Export first (``sciformer export CKPT OUT --onnx`` writes ``OUT/model.onnx``), then::

    python examples/onnx_rollout.py OUT/model.onnx STORE.zarr --trajectory 0 --steps 10 --out pred.npy
    python examples/onnx_rollout.py OUT/model.onnx initial.npy --dt 0.05 --steps 10 --out pred.npy

The initial state is read from a sciformer field store (zarr, through zarr-python: each input variable by name,
a state at ``--start``, a static field of the trajectory) or from an ``.npy`` array ``[C_in, *spatial]`` in the
model's input order, in physical units. Everything else comes from the model's ``sciformer`` metadata: the
input and output variables, their normalisation statistics and which inputs are static (re-inserted at every
step, never predicted). Each step feeds the prediction of every output variable back into the input channel of
the same name and advances by the lead time ``dt`` (units of the store's time span, as in training; from a
store it is the spacing of its snapshots × ``--stride``). The output ``[steps, C_out, *spatial]`` is in
physical units.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnxruntime as ort

STATIC_ROLES = ("coefficient", "forcing", "source")


def load_session(model: str | Path, threads: int = 0) -> tuple[ort.InferenceSession, dict]:
    """The onnxruntime session and the model's sciformer metadata."""
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(str(model), opts, providers=["CPUExecutionProvider"])
    raw = sess.get_modelmeta().custom_metadata_map.get("sciformer")
    if raw is None:
        sys.exit(f"{model}: no sciformer metadata; export it with `sciformer export CKPT OUT --onnx`")
    meta = json.loads(raw)
    if meta.get("kind") != "operator":
        sys.exit(f"{model}: a {meta.get('class')} ({meta.get('kind')}) model; this example rolls out operator models")
    return sess, meta


def read_store(path: str | Path, names: list[str], roles: dict, trajectory: int, start: int, stride: int):
    """Physical initial state [C_in, *S] from a field store, and the lead time of one step."""
    import zarr

    g = zarr.open_group(str(path), mode="r")
    steady = "time" not in g
    fields = []
    for name in names:
        if name not in g:
            sys.exit(f"{path}: no variable {name!r} (the model's inputs are {names})")
        static = steady or roles.get(name) in STATIC_ROLES
        a = g[name]
        fields.append(np.asarray(a[trajectory] if static else a[trajectory, start], dtype=np.float32))
    if steady:
        return np.stack(fields), 1.0
    time = np.asarray(g["time"][:], dtype=np.float64)
    if start + stride >= len(time):
        sys.exit(f"{path}: start {start} + stride {stride} is past the last of {len(time)} snapshots")
    return np.stack(fields), float((time[start + stride] - time[start]) / (time[-1] - time[0]))


def rollout(sess: ort.InferenceSession, meta: dict, initial: np.ndarray, steps: int, dt: float) -> np.ndarray:
    """``steps`` autoregressive steps from ``initial`` [C_in, *S] (physical) -> [steps, C_out, *S] (physical)."""
    inputs, outputs = meta["variables"]["inputs"], meta["variables"]["outputs"]
    norm = meta["normalization"]
    in_mean = np.asarray(norm["inputs"]["mean"], np.float32).reshape(-1, *[1] * (initial.ndim - 1))
    in_std = np.asarray(norm["inputs"]["std"], np.float32).reshape(in_mean.shape)
    out_mean = np.asarray(norm["outputs"]["mean"], np.float32).reshape(-1, *[1] * (initial.ndim - 1))
    out_std = np.asarray(norm["outputs"]["std"], np.float32).reshape(out_mean.shape)
    if initial.shape[0] != len(inputs):
        sys.exit(f"initial state has {initial.shape[0]} channels; the model's inputs are {inputs}")
    feedback = [(inputs.index(name), k) for k, name in enumerate(outputs) if name in inputs]
    x = ((initial.astype(np.float32) - in_mean) / in_std)[None]  # [1, C_in, *S], normalised
    t = np.full((1,), dt, dtype=np.float32)
    takes_t = "t" in {i.name for i in sess.get_inputs()}  # a model without time conditioning has no t input
    pred = np.empty((steps, len(outputs), *initial.shape[1:]), dtype=np.float32)
    for s in range(steps):
        y = sess.run(["y"], {"x": x, "t": t} if takes_t else {"x": x})[0]  # [1, C_out, *S], normalised
        pred[s] = y[0] * out_std + out_mean
        x = x.copy()
        for i, k in feedback:  # predicted states replace their inputs; static fields stay
            x[0, i] = y[0, k]
    return pred


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("model", help="model.onnx written by `sciformer export CKPT OUT --onnx`")
    p.add_argument("initial", help="a field store (zarr) or an .npy array [C_in, *spatial] in physical units")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--dt", type=float, help="lead time of one step (units of the store's time span); "
                   "default from the store's snapshots")
    p.add_argument("--trajectory", type=int, default=0)
    p.add_argument("--start", type=int, default=0, help="snapshot index of the initial state")
    p.add_argument("--stride", type=int, default=1, help="snapshots per step (sets the default --dt)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    p.add_argument("--out", default="rollout.npy", help="where to write [steps, C_out, *spatial] (physical)")
    args = p.parse_args(argv)
    sess, meta = load_session(args.model, args.threads)
    inputs = meta["variables"]["inputs"]
    if args.initial.endswith(".npy"):
        initial = np.load(args.initial).astype(np.float32)
        dt = 1.0 if meta.get("steady") else args.dt
        if dt is None:
            sys.exit("--dt is needed with an .npy initial state (lead time per step, units of the time span)")
    else:
        initial, store_dt = read_store(args.initial, inputs, meta.get("roles") or {}, args.trajectory, args.start,
                                       args.stride)
        dt = store_dt if args.dt is None else args.dt
    pred = rollout(sess, meta, initial, args.steps, dt)
    np.save(args.out, pred)
    print(f"{args.steps} steps of {meta['class']} (dt = {dt:.6g}) from {args.initial}: wrote {args.out} "
          f"{list(pred.shape)}; torch imported: {'torch' in sys.modules}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
