"""ONNX export of the surrogate families (scOT, FactFormer, FNO, iTransformer), to run beside a solver without
PyTorch: ``sciformer export CKPT OUT --onnx`` writes ``OUT/model.onnx`` next to the safetensors export.

The graph (opset ≥ 18, torch's dynamo exporter; the TorchScript-based one if that fails) has a dynamic batch
axis; operator models take ``x [B, C_in, *spatial]`` and the lead time ``t [B]`` (DECISIONS: in units of the
store's time span; 1 for steady problems) and give ``y [B, C_out, *spatial]``; iTransformer takes
``x [B, L, N]`` (globally standardised, any number of variates N) and, when it was trained with calendar
features, ``x_mark [B, L, F]``, and gives ``y [B, H, N]`` (``[B, H, N, Q]`` with quantiles).

Spatial axes are dynamic where the model allows it: FactFormer and FNO (any grid; FNO needs at least its
Fourier modes per axis). scOT's windows, shifts, paddings and masks are functions of the grid size computed
in Python, so its graph is fixed to one grid (``size=``; default the training grid): export one file per
resolution. The exported graphs do not re-check inputs (NaN/shape checks of the PyTorch models).

Export happens from outside the models: the reference kernels (``sciformer.kernels.use("reference")``), SDPA
on more than 4 axes folded to 4-D while tracing (``_FoldSDPA``: the exporter maps only 4-D SDPA; scOT's window
attention is 5-D), the eager input checks dropped on the traced copy, and FNO's spectral convolutions and grid
embedding replaced by the same functions in real arithmetic (``_RealSpectralConv``: ONNX has no complex
tensors, and neuraloperator keeps complex weights). Tracing fills scOT's geometry caches with traced tensors;
they are emptied afterwards. Every export is checked with onnxruntime against PyTorch on a batch size (and, if
dynamic, a grid) other than the traced one before the file is written.

The runtime's metadata (variables, normalisation statistics, lead-time convention, input/output layout) is
written into the model's ``metadata_props`` under ``"sciformer"`` (JSON), readable with onnxruntime alone
(``session.get_modelmeta().custom_metadata_map``); ``examples/onnx_rollout.py`` uses it.
"""

from __future__ import annotations

import copy
import dataclasses
import io
import json
import logging
import math
import os
import re
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from sciformer.errors import ConfigError, ExportError
from sciformer.io import atomic_path

log = logging.getLogger(__name__)

ONNX_FILE = "model.onnx"
METADATA_KEY = "sciformer"
FORMAT = "sciformer-onnx/1"
MIN_OPSET = 18  # the dynamo exporter's ONNX functions (onnxscript torchlib) target opset 18 and later
TOLERANCE = 1e-4  # max |onnxruntime − PyTorch| / max |PyTorch|, float32
MIN_STD = 1e-8  # as sciformer.data.normalization: a constant field keeps std 1
SUPPORTED = ("ScOT", "FactFormer", "FNO", "ITransformer")

# Families that are not exported, and why (the README lists them).
REFUSED = {
    "GraphTransformer": (
        "its input is a torch_geometric batch, not tensors; the radius graph (sciformer.data.atoms.neighbor_list) "
        "has a data-dependent number of edges (aten.nonzero) and the readout is sized by int(batch.max()), a "
        "value read back from the data, so no fixed ONNX graph describes it"),
    "LatentDiT": (
        "ADiT's denoiser is one step of a sampler (`sciformer sample`: an ODE loop with classifier-free guidance "
        "over many denoiser calls, then the VAE decoder), not a surrogate that maps a state to a state; "
        "exporting the bare denoiser would not reproduce sampling"),
    "AllAtomAutoencoder": (
        "ADiT's VAE samples its latent (torch.randn in forward) and is only useful together with the generative "
        "sampler; it is not a surrogate that maps a state to a state"),
}


@dataclass
class _Plan:
    """What to trace: the module, example inputs, names and dynamic axes, and inputs to verify with."""

    module: nn.Module
    args: tuple[torch.Tensor, ...]
    input_names: list[str]
    output_names: list[str]
    dynamic: dict[str, dict[int, Any]]  # torch.export Dims per input
    axis_names: dict[str, dict[int, str]]  # the same axes by name (TorchScript exporter, metadata)
    checks: list[tuple[torch.Tensor, ...]] = field(default_factory=list)
    dynamic_spatial: bool = False
    notes: list[str] = field(default_factory=list)


# ---- public entry point ---------------------------------------------------------------------------------
def export_onnx(export_dir: str | os.PathLike, *, opset: int = MIN_OPSET, size: Sequence[int] | None = None,
                out: str | os.PathLike | None = None, batch: int = 2) -> Path:
    """Write ``export_dir/model.onnx`` (or ``out``) for the model of an export directory; returns its path.

    ``size``: the grid to trace operator models at (scOT's graph is fixed to it; for FactFormer and FNO it is
    only the example, the grid stays dynamic); default: the data's grid, else the model's nominal one.
    ``batch``: the example batch size (the batch axis is dynamic; ≥ 2 so that it is not specialised).
    Raises ``ExportError`` naming the family or operator that cannot be exported.
    """
    from sciformer.checkpoints import read

    if opset < MIN_OPSET:
        raise ConfigError(f"--opset {opset}: ONNX export needs opset ≥ {MIN_OPSET} (the ONNX functions of "
                          "torch's exporter are written for opset 18 and later)")
    if batch < 2:
        raise ConfigError(f"batch={batch}: the example batch must be ≥ 2 (a batch of 1 is specialised by the "
                          "tracer and the batch axis would not be dynamic)")
    _require_runtime()
    export_dir = Path(export_dir)
    ck = read(export_dir)
    name = ck.model_class
    if name in REFUSED:
        raise ExportError(f"{export_dir}: {name} models cannot be exported to ONNX: {REFUSED[name]}. ONNX export "
                          f"supports {', '.join(SUPPORTED)}")
    if name not in SUPPORTED:
        raise ExportError(f"{export_dir}: no ONNX export is defined for {name} models; supported: "
                          f"{', '.join(SUPPORTED)}")
    model = ck.build()
    plan = _plan(model, ck.data_spec, size, batch)
    proto, exporter = _export(plan, opset, name)
    errors = _verify(proto, model, plan, name)
    graph_inputs = {i.name for i in proto.graph.input}  # an unused t (no time conditioning) is not an input
    meta = _metadata(ck, model, plan, opset, exporter, errors, graph_inputs)
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(meta)
    target = Path(out) if out is not None else export_dir / ONNX_FILE
    import onnx

    with atomic_path(target) as tmp:
        onnx.save_model(proto, str(tmp))
    log.info("wrote %s (%s exporter, opset %d, max relative error vs PyTorch %.2e)", target, exporter, opset,
             max(errors))
    return target


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The ``sciformer`` metadata of an exported ``model.onnx`` (through onnxruntime, as a deployment would)."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    raw = sess.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
    if raw is None:
        raise ExportError(f"{path}: no {METADATA_KEY!r} metadata; it was not written by `sciformer export --onnx`")
    return json.loads(raw)


def _require_runtime() -> None:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    except ImportError as e:
        raise ExportError(f"ONNX export needs the onnx extra ({e.name} is missing): pip install 'sciformer[onnx]'") \
            from None


# ---- per-family plans -----------------------------------------------------------------------------------
class _Operator(nn.Module):
    """``(x, t) -> y`` around an operator model whose eager input checks are dropped for tracing (they read
    tensor values back into Python, which a graph cannot; ONNX runtimes do not check NaNs either)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        if hasattr(model, "_check"):
            model._check = _no_check  # instance attribute on the export copy only

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return self.model(x, t)


class _Series(nn.Module):
    def __init__(self, model: nn.Module, with_marks: bool):
        super().__init__()
        self.model, self.with_marks = model, with_marks

    def forward(self, x: torch.Tensor, x_mark: torch.Tensor | None = None) -> torch.Tensor:
        return self.model(x, x_mark if self.with_marks else None)


def _no_check(*args, **kwargs) -> None:
    return None


def _plan(model: nn.Module, spec: dict[str, Any], size: Sequence[int] | None, batch: int) -> _Plan:
    name = type(model).__name__
    if name == "ITransformer":
        return _series_plan(model, spec, batch)
    cfg = model.config
    nd = 2 if name == "ScOT" else int(cfg.spatial_dims)
    grid = _grid(name, cfg, spec, size, nd)
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch, cfg.in_channels, *grid, generator=gen)
    t = torch.rand(batch, generator=gen)
    work = copy.deepcopy(model)  # tracing may cache shapes on modules (neuraloperator's grid embedding)
    B = torch.export.Dim("batch", min=1, max=65536)
    dims: dict[int, Any] = {0: B}
    names = {0: "batch"}
    dynamic_spatial = name != "ScOT" and not (name == "FactFormer" and cfg.quadrature)
    notes = []
    if name == "FNO":
        _replace_spectral_convs(work)
        minimum = _fno_min_grid(work, nd)
        if any(g < m for g, m in zip(grid, minimum)):
            raise ConfigError(f"size {list(grid)}: FNO with these modes needs a grid of at least {minimum}")
    else:
        minimum = [4 if name == "ScOT" else 2] * nd
    if dynamic_spatial:
        for a in range(nd):
            dims[2 + a] = torch.export.Dim(f"s{a}", min=max(2, minimum[a]), max=65536)
            names[2 + a] = f"s{a}"
        notes.append(f"spatial axes dynamic (at least {minimum} points)")
    else:
        notes.append(f"spatial size fixed to {list(grid)}: export once per grid (size=...)")
    other = [g + 3 + 2 * a for a, g in enumerate(grid)] if dynamic_spatial else list(grid)
    checks = [(torch.randn(batch + 1, cfg.in_channels, *grid, generator=gen), torch.rand(batch + 1, generator=gen))]
    if dynamic_spatial:
        checks.append((torch.randn(1, cfg.in_channels, *other, generator=gen), torch.rand(1, generator=gen)))
    return _Plan(_Operator(work).eval(), (x, t), ["x", "t"], ["y"], {"x": dims, "t": {0: B}},
                 {"x": names, "t": {0: "batch"}, "y": names}, checks, dynamic_spatial, notes)


def _grid(name: str, cfg, spec: dict[str, Any], size: Sequence[int] | None, nd: int) -> list[int]:
    if size is not None:
        grid = [int(s) for s in (size if isinstance(size, Sequence) else [size])]
        grid = grid * nd if len(grid) == 1 else grid
    elif spec.get("spatial_shape"):
        grid = [int(s) for s in spec["spatial_shape"]]
    elif name == "ScOT":
        s = cfg.image_size
        grid = [int(s)] * 2 if isinstance(s, int) else [int(v) for v in s]
    else:
        grid = [32] * nd
    if len(grid) != nd:
        raise ConfigError(f"size {grid}: the model has {nd} spatial axes")
    return grid


def _series_plan(model: nn.Module, spec: dict[str, Any], batch: int) -> _Plan:
    cfg = model.config
    n = len(spec.get("variates") or []) or 7
    n = max(n, 2)
    gen = torch.Generator().manual_seed(0)
    marks = cfg.n_time_features > 0
    B = torch.export.Dim("batch", min=1, max=65536)
    N = torch.export.Dim("variates", min=1, max=65536)
    args = (torch.randn(batch, cfg.seq_len, n, generator=gen),)
    checks = [(torch.randn(batch + 1, cfg.seq_len, n + 3, generator=gen),),
              (torch.randn(1, cfg.seq_len, 1, generator=gen),)]
    dynamic: dict[str, dict[int, Any]] = {"x": {0: B, 2: N}}
    axis_names = {"x": {0: "batch", 2: "variates"}, "y": {0: "batch", 2: "variates"}}
    names = ["x"]
    if marks:
        args += (torch.rand(batch, cfg.seq_len, cfg.n_time_features, generator=gen) - 0.5,)
        checks = [c + (torch.rand(c[0].shape[0], cfg.seq_len, cfg.n_time_features, generator=gen) - 0.5,)
                  for c in checks]
        dynamic["x_mark"] = {0: B}
        axis_names["x_mark"] = {0: "batch"}
        names.append("x_mark")
    return _Plan(_Series(copy.deepcopy(model), marks).eval(), args, names, ["y"], dynamic, axis_names, checks,
                 False, ["variates axis dynamic"])


# ---- FNO: spectral convolution in real arithmetic -----------------------------------------------------------
def _spectral_convs(model: nn.Module):
    from neuralop.layers.spectral_convolution import SpectralConv

    return [(n, m) for n, m in model.named_modules() if isinstance(m, SpectralConv)]


def _replace_spectral_convs(model: nn.Module) -> None:
    """Swap neuraloperator's complex spectral convs and its grid embedding (``linspace(0, 1, n + 1)[:-1]``,
    which the tracer specialises to the example grid) for graph-friendly versions of the same functions."""
    from neuralop.layers.embeddings import GridEmbeddingND

    swaps = [(q, _RealSpectralConv(m)) for q, m in _spectral_convs(model)]
    swaps += [(q, _GridEmbedding(m)) for q, m in model.named_modules() if isinstance(m, GridEmbeddingND)]
    for qual, new in swaps:
        parent, attr = model.get_submodule(qual.rpartition(".")[0]), qual.rpartition(".")[2]
        setattr(parent, attr, new)


class _GridEmbedding(nn.Module):
    """neuraloperator's ``GridEmbeddingND``: the regular grid's coordinates appended as channels,
    ``start + (stop − start)·j/n`` per axis (= ``linspace(start, stop, n + 1)[:-1]``), built with ``arange``."""

    def __init__(self, emb: nn.Module):
        super().__init__()
        self.bounds = [(float(a), float(b)) for a, b in emb.grid_boundaries]

    def forward(self, data: torch.Tensor, batched: bool = True) -> torch.Tensor:
        sizes = data.shape[2:]
        axes = [a + (b - a) * torch.arange(n, device=data.device, dtype=data.dtype) / n
                for n, (a, b) in zip(sizes, self.bounds)]
        grids = torch.meshgrid(*axes, indexing="ij")
        shape = (data.shape[0], 1, *sizes)
        return torch.cat((data, *(g[None, None].expand(shape) for g in grids)), dim=1)


def _fno_min_grid(model: nn.Module, nd: int) -> list[int]:
    """Smallest grid on which every spectral conv keeps all its modes (then no weight slicing happens):
    ``n ≥ K`` on the full-FFT axes and ``n ≥ 2K − 1`` on the last (half-spectrum) axis."""
    need = [2] * nd
    for conv in (m for m in model.modules() if isinstance(m, _RealSpectralConv)):
        modes = conv.modes
        for a in range(nd - 1):
            need[a] = max(need[a], modes[a])
        need[-1] = max(need[-1], 2 * modes[-1] - 1)
    return need


class _RealSpectralConv(nn.Module):
    """neuraloperator's ``SpectralConv`` (real input, dense or separable weights) with the truncated FFTs written
    as real DFT matrix products: ONNX has no complex tensors. The DFT matrices are built in the graph from the
    grid size, so the grid stays dynamic. Frequencies kept: ``−K//2 … K//2 + K%2 − 1`` on every axis but the
    last (fftshift-centred, as upstream), ``0 … K−1`` of the half spectrum on the last; the inverse treats the
    half spectrum as ``irfftn`` does (weight 1 for frequency 0, 2 for the others; the grid is large enough that
    the Nyquist bin is never kept)."""

    def __init__(self, conv: nn.Module):
        super().__init__()
        if conv.complex_data or conv.resolution_scaling_factor is not None or conv.fno_block_precision != "full":
            raise ExportError("FNO: the ONNX export supports real-valued, full-precision spectral convolutions without "
                              "resolution scaling (complex_data / resolution_scaling_factor / fno_block_precision are set)")
        w = conv.weight.to_tensor() if hasattr(conv.weight, "to_tensor") else conv.weight
        w = w.detach().to(torch.complex64)
        self.separable = bool(conv.separable)
        self.modes = list(w.shape[1 if self.separable else 2:])
        self.order = len(self.modes)
        self.fft_norm = conv.fft_norm
        if self.fft_norm not in ("forward", "backward", "ortho"):
            raise ExportError(f"FNO: fft_norm {self.fft_norm!r} has no ONNX export")
        self.register_buffer("w_re", w.real.contiguous())
        self.register_buffer("w_im", w.imag.contiguous())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(), requires_grad=False)

    def transform(self, x: torch.Tensor, output_shape=None) -> torch.Tensor:
        return x  # no resolution scaling (checked in __init__)

    @staticmethod
    def _angles(n: int, freqs: torch.Tensor, device, odd_shift: bool = False) -> torch.Tensor:
        """2π·((j·k) mod n)/n for j < n and the kept k: [n, K] (the modulo keeps float32 angles exact).
        ``odd_shift``: k − (n mod 2), the frequencies upstream's inverse uses (see ``forward``)."""
        j = torch.arange(n, device=device)
        n_t = j[-1:] + 1  # n as a tensor: the exporter maps tensor-tensor remainder/division for symbolic n
        if odd_shift:
            freqs = freqs - torch.remainder(n_t, 2)
        prod = torch.remainder(j[:, None] * freqs[None, :], n_t)
        return prod.to(torch.float32) * (2 * math.pi) / n_t.to(torch.float32)

    def _contract(self, re: torch.Tensor, im: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.separable:
            return re * self.w_re - im * self.w_im, re * self.w_im + im * self.w_re
        axes = "xyzuv"[:self.order]
        eq = f"bi{axes},io{axes}->bo{axes}"
        ein = torch.einsum
        return ein(eq, re, self.w_re) - ein(eq, im, self.w_im), ein(eq, re, self.w_im) + ein(eq, im, self.w_re)

    def forward(self, x: torch.Tensor, output_shape=None) -> torch.Tensor:
        if output_shape is not None:
            raise ExportError("FNO: output_shape (super-resolution) has no ONNX export")
        sizes = x.shape[2:]
        device = x.device
        total = 1
        for s in sizes:
            total = total * s
        # forward: last axis real -> half spectrum, k = 0..K-1
        k_last = torch.arange(self.modes[-1], device=device)
        ang = self._angles(sizes[-1], k_last, device)  # [n, K]
        c, s = ang.cos(), ang.sin()
        re, im = x @ c, -(x @ s)
        mats = [None] * self.order
        mats[-1] = (c, s)
        # the other axes: full complex DFT at the centred frequencies
        for a in range(self.order - 1):
            k = self.modes[a]
            freqs = torch.arange(k, device=device) - k // 2
            ang = self._angles(sizes[a], freqs, device)
            c, s = ang.cos(), ang.sin()
            # upstream applies fftshift (not ifftshift) before the inverse: on an odd axis the kept modes come
            # back one frequency lower; reproduced here so the graph computes what the PyTorch model does
            ang = self._angles(sizes[a], freqs, device, odd_shift=True)
            mats[a] = (ang.cos(), ang.sin())
            dim = 2 + a
            r, i = re.movedim(dim, -1), im.movedim(dim, -1)
            re, im = (r @ c + i @ s).movedim(-1, dim), (i @ c - r @ s).movedim(-1, dim)
        re, im = self._contract(re, im)
        # inverse: full axes first (e^{+iθ}), then the half spectrum back to real
        for a in range(self.order - 1):
            c, s = mats[a]
            dim = 2 + a
            r, i = re.movedim(dim, -1), im.movedim(dim, -1)
            re, im = (r @ c.T - i @ s.T).movedim(-1, dim), (i @ c.T + r @ s.T).movedim(-1, dim)
        c, s = mats[-1]
        weight = torch.full((self.modes[-1],), 2.0, device=device, dtype=x.dtype)
        weight[0] = 1.0
        y = re @ (c * weight).T - im @ (s * weight).T
        # every fft_norm ("forward", "backward", "ortho") scales the round trip by 1/N in total
        y = y / total
        if self.bias is not None:
            y = y + self.bias
        return y


# ---- export and verification --------------------------------------------------------------------------------
class _FoldSDPA(torch.overrides.TorchFunctionMode):
    """While tracing: SDPA on more than 4 axes (scOT's [B, nW, heads, N, d]) runs as 4-D SDPA on the leading
    axes folded into one, with the mask broadcast to match; the exporter's SDPA function takes only 4-D."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func is torch.nn.functional.scaled_dot_product_attention:
            q, k, v = args[:3]
            if q.ndim > 4:
                mask = kwargs.pop("attn_mask", args[3] if len(args) > 3 else None)
                lead = q.shape[:-2]
                n, m = q.shape[-2], k.shape[-2]
                fold = [t.reshape(-1, *t.shape[-3:]) for t in (q, k, v)]
                if mask is not None:  # broadcast over the folded axes: [..., N, M] -> [prod(lead[:-1]), heads, N, M]
                    mask = mask.expand(*lead, n, m).reshape(-1, q.shape[-3], n, m)
                out = func(*fold, mask, *args[4:], **kwargs)
                return out.reshape(*lead, n, v.shape[-1])
        return func(*args, **kwargs)


def _failing_op(e: BaseException) -> str | None:
    """The operator an exporter error names (``aten.alias``, ...), searched through the exception chain."""
    text, seen = "", set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        text += f" {e}"
        e = e.__cause__ or e.__context__
    m = re.search(r"op='([\w.]+)'", text) or re.search(r"No ONNX function found for (\S+)", text)
    return m.group(1) if m else None


def _summary(e: BaseException) -> str:
    first = str(e).strip().splitlines()
    return f"{type(e).__name__}: {first[0][:200] if first else ''}"


def _export(plan: _Plan, opset: int, name: str):
    """Trace with the reference kernels (no oneDNN/compiled fast paths in the graph), then empty the caches."""
    from sciformer.kernels import use

    try:
        with use("reference"), torch.no_grad():
            return _run_exporters(plan, opset, name)
    finally:
        _clear_caches()


def _clear_caches() -> None:
    """Empty sciformer's functools caches: tracing fills the geometry caches (scOT's masks and coordinate
    tables) with traced tensors that eager calls must not reuse; every entry is recomputed on demand."""
    for mod_name, mod in list(sys.modules.items()):
        if mod is None or not (mod_name == "sciformer" or mod_name.startswith("sciformer.")):
            continue
        for value in list(vars(mod).values()):
            if callable(getattr(value, "cache_clear", None)) and hasattr(value, "cache_info"):
                value.cache_clear()


def _run_exporters(plan: _Plan, opset: int, name: str):
    """(ModelProto, exporter name): dynamo first, the TorchScript-based exporter if that fails."""
    import onnx

    try:
        with _FoldSDPA():
            ep = torch.export.export(plan.module, plan.args, dynamic_shapes=plan.dynamic, strict=False)
        prog = torch.onnx.export(ep, opset_version=opset, input_names=plan.input_names,
                                 output_names=plan.output_names, dynamo=True, external_data=False,
                                 optimize=True, verbose=False)
        return prog.model_proto, "dynamo"
    except Exception as e:  # noqa: BLE001 - every exporter failure is reported with its operator
        dynamo_error = e
        log.info("dynamo export of %s failed (%s); trying the TorchScript-based exporter", name, _summary(e))
    buf = io.BytesIO()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(plan.module, plan.args, buf, dynamo=False, opset_version=opset,
                              input_names=plan.input_names, output_names=plan.output_names,
                              dynamic_axes=plan.axis_names)
        return onnx.load_from_string(buf.getvalue()), "torchscript"
    except Exception as e:  # noqa: BLE001
        op = _failing_op(dynamo_error) or _failing_op(e)
        what = f"operator {op} has no ONNX mapping" if op else "the exporters failed"
        raise ExportError(f"{name}: cannot export to ONNX: {what} (dynamo exporter: {_summary(dynamo_error)}; "
                          f"TorchScript exporter: {_summary(e)})") from None


def _verify(proto, model: nn.Module, plan: _Plan, name: str) -> list[float]:
    """Run the graph with onnxruntime on the check inputs; refuse it beyond ``TOLERANCE`` (relative)."""
    import onnxruntime as ort

    try:
        sess = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - an invalid graph from the exporter
        raise ExportError(f"{name}: the exported graph is not valid ONNX for onnxruntime ({_summary(e)})") from None
    graph_inputs = [i.name for i in sess.get_inputs()]
    errors = []
    for args in plan.checks:
        with torch.no_grad():
            ref = model(*args).numpy()
        feed = {n: a.numpy() for n, a in zip(plan.input_names, args) if n in graph_inputs}
        try:
            got = sess.run(None, feed)[0]
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own types
            shapes = {n: list(a.shape) for n, a in feed.items()}
            raise ExportError(f"{name}: the exported graph does not run on inputs {shapes} in onnxruntime "
                              f"({_summary(e)})") from None
        if got.shape != ref.shape:
            raise ExportError(f"{name}: onnxruntime gives shape {got.shape}, PyTorch {ref.shape}")
        err = float(np.abs(got - ref).max() / max(float(np.abs(ref).max()), 1e-30))
        if not err <= TOLERANCE:
            shapes = [list(a.shape) for a in args]
            raise ExportError(f"{name}: onnxruntime differs from PyTorch by {err:.2e} (relative, inputs {shapes}); "
                              f"the exported graph is wrong, not written")
        errors.append(err)
    return errors


def _stats(names: Sequence[str], stats: dict[str, Any]) -> dict[str, list[float]]:
    mean, std = [], []
    for n in names:
        s = stats.get(n, {"mean": 0.0, "std": 1.0})
        mean.append(float(s["mean"]))
        std.append(float(s["std"]) if float(s["std"]) > MIN_STD else 1.0)
    return {"mean": mean, "std": std}


def _metadata(ck, model: nn.Module, plan: _Plan, opset: int, exporter: str, errors: list[float],
              graph_inputs: set[str]) -> dict[str, Any]:
    spec = dict(ck.data_spec or {})
    ios = {}
    for n, a in zip(plan.input_names, plan.args):
        if n not in graph_inputs:
            continue
        axes = plan.axis_names.get(n, {})
        ios[n] = [axes.get(i, int(s)) for i, s in enumerate(a.shape)]
    meta: dict[str, Any] = {
        "format": FORMAT, "class": ck.model_class, "model_name": ck.model_name, "kind": ck.kind,
        "inputs": ios, "outputs": plan.output_names, "opset": opset, "exporter": exporter,
        "torch": torch.__version__, "dynamic_spatial": plan.dynamic_spatial, "notes": plan.notes,
        "max_relative_error": max(errors), "config": _plain(dataclasses.asdict(model.config)),
    }
    stats = spec.get("stats") or {}
    if ck.kind == "operator":
        inputs, outputs = list(spec.get("inputs") or []), list(spec.get("outputs") or [])
        meta["variables"] = {"inputs": inputs, "outputs": outputs}
        meta["normalization"] = {"rule": "x_norm = (x - mean) / std per channel; y = y_norm * std + mean",
                                 "inputs": _stats(inputs, stats), "outputs": _stats(outputs, stats)}
        meta["lead_time"] = ("t = (time[j] - time[i]) / (time[-1] - time[0]) (units of the store's time span); "
                             "1 for steady problems")
        meta["roles"] = dict(spec.get("roles") or {})
        meta["steady"] = bool(spec.get("steady", False))
        meta["spatial_shape"] = spec.get("spatial_shape")
    else:
        variates = list(spec.get("variates") or [])
        meta["variables"] = {"variates": variates}
        meta["normalization"] = {"rule": "x_norm = (x - mean) / std per variate; y = y_norm * std + mean",
                                 "variates": _stats(variates, stats)}
        meta["time_features"] = spec.get("time_features")
        meta["lookback"], meta["horizon"] = model.config.seq_len, model.config.pred_len
    return meta


def _plain(obj):
    return json.loads(json.dumps(obj, default=lambda o: o.tolist() if hasattr(o, "tolist") else str(o)))
