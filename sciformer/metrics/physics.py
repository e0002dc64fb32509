"""Physics checks of predicted fields (conservation drift, divergence of velocity) and the choice of metrics
that apply to a store, from its metadata (roles, boundary conditions per axis, velocity components).

Velocity components are recognised by name (``u, v, w``; ``vx, vy, vz``; ``velocity_x, …``) and belong to the
store's spatial axes in order (first component along the first axis). Derivatives are spectral along periodic
axes and second-order finite differences elsewhere (central inside, one-sided second-order at the edges).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from sciformer.data.conventions import TIME_ROLES
from sciformer.errors import SciformerError
from sciformer.metrics.fields import SampleMean, spatial_axes

VELOCITY_GROUPS = (("u", "v", "w"), ("vx", "vy", "vz"), ("velocity_x", "velocity_y", "velocity_z"))


# ---- conservation ---------------------------------------------------------------------------------
def spatial_integral(f: Tensor, spatial_dims: int | None = None, cell_volume: float = 1.0) -> Tensor:
    """``∫ f dV ≈ Σ_x f · ΔV`` over the trailing spatial axes (uniform cells of volume ``cell_volume``)."""
    return f.sum(spatial_axes(f, spatial_dims)) * cell_volume


def conservation_drift(traj: Tensor, spatial_dims: int, time_dim: int = 1) -> Tensor:
    """Relative drift of a spatial integral along a trajectory ``[B, T, ..., *S]``:
    ``(∫ f(t) − ∫ f(t₀)) / ∫ |f(t₀)|``, signed, one value per sample, step and channel (``[B, T, ...]``).

    Pass the conserved density itself: a mass-like variable, or ``½ Σ u_i²`` for kinetic energy. The
    normaliser ``∫|f(t₀)|`` is positive for any non-zero field (for a positive density it is the integral
    itself), so zero-mean fields such as velocities still get a finite relative number; the cell volume
    cancels. Zero drift is expected only where the physics conserves the quantity.
    """
    integral = spatial_integral(traj, spatial_dims)  # [B, T, ...]
    first = integral.select(time_dim, 0).unsqueeze(time_dim)
    scale = spatial_integral(traj.select(time_dim, 0).abs(), spatial_dims).unsqueeze(time_dim)
    return (integral - first) / scale


def integral_error(pred: Tensor, target: Tensor, spatial_dims: int | None = None) -> Tensor:
    """``|mean_x ŷ − mean_x y|`` per sample and channel: the error of the predicted domain average (PDEBench's
    cRMSE is the RMS of this over samples)."""
    axes = spatial_axes(pred, spatial_dims)
    return (pred.mean(axes) - target.mean(axes)).abs()


# ---- derivatives and divergence ---------------------------------------------------------------------
def derivative(f: Tensor, dim: int, spacing: float, periodic: bool) -> Tensor:
    """``∂f/∂x`` along ``dim`` with grid ``spacing``: spectral (``ifft(i k f̂)``, Nyquist mode dropped) when
    ``periodic``, else second-order finite differences (``torch.gradient`` with ``edge_order=2``)."""
    n = f.shape[dim]
    if periodic:
        k = 2 * math.pi * torch.fft.fftfreq(n, d=spacing, dtype=torch.float64, device=f.device)
        if n % 2 == 0:
            k[n // 2] = 0.0
        k = k.view(n, *([1] * (f.ndim - 1 - dim % f.ndim))).to(f.dtype)
        return torch.fft.ifft(1j * k * torch.fft.fft(f, dim=dim), dim=dim).real
    if n < 3:
        raise ValueError(f"finite differences need at least 3 points along axis {dim}, got {n}")
    return torch.gradient(f, spacing=float(spacing), dim=dim, edge_order=2)[0]


def divergence(velocity: Tensor, spacing: Sequence[float], periodic: Sequence[bool]) -> Tensor:
    """``∇·u = Σ_i ∂u_i/∂x_i`` of ``velocity [..., D, *S]`` (component ``i`` along spatial axis ``i``, ``D`` axes
    with ``spacing[i]``; spectral along periodic axes, finite differences elsewhere). Returns ``[..., *S]``."""
    d = len(spacing)
    if len(periodic) != d or velocity.ndim < d + 1 or velocity.shape[-(d + 1)] != d:
        raise ValueError(f"divergence needs velocity [..., {d}, *S] with {d} spacings and periodic flags; got "
                         f"shape {tuple(velocity.shape)}, {len(spacing)} spacings, {len(periodic)} flags")
    comps = velocity.unbind(-(d + 1))
    return sum(derivative(c, c.ndim - d + i, spacing[i], bool(periodic[i])) for i, c in enumerate(comps))


def divergence_rms(velocity: Tensor, spacing: Sequence[float], periodic: Sequence[bool]) -> Tensor:
    """``sqrt(mean_x (∇·u)²)`` per sample (physical units: 1 / time); 0 for an incompressible field."""
    div = divergence(velocity, spacing, periodic)
    return div.square().mean(tuple(range(div.ndim - len(spacing), div.ndim))).sqrt()


class ConservationDrift(SampleMean):
    """Mean over samples of ``|conservation_drift|`` per step and channel: update with trajectories
    ``[B, T, C, *S]`` (``spatial_dims`` required); ``compute`` gives ``[T, C]``."""

    def __init__(self, spatial_dims: int, **kwargs):
        super().__init__(spatial_dims, **kwargs)

    def values(self, traj: Tensor) -> Tensor:
        return conservation_drift(traj, self.spatial_dims).abs()


class DivergenceRMS(SampleMean):
    """Mean over samples of ``sqrt(mean_x (∇·u)²)``: update with ``velocity [B, (T,) D, *S]``."""

    def __init__(self, spacing: Sequence[float], periodic: Sequence[bool], **kwargs):
        super().__init__(len(spacing), **kwargs)
        self.spacing, self.periodic = [float(s) for s in spacing], [bool(p) for p in periodic]

    def values(self, velocity: Tensor) -> Tensor:
        return divergence_rms(velocity, self.spacing, self.periodic)


# ---- which metrics apply ----------------------------------------------------------------------------
POINTWISE = ("rel_l1", "rel_l2", "nrmse", "vrmse", "rmse", "mae", "linf", "pearson")
SPECTRAL = ("energy_spectrum", "spectral_bands")
METRICS = POINTWISE + SPECTRAL + ("conservation", "energy_drift", "divergence", "boundary_rmse")


def velocity_components(variables: Sequence[str], n_axes: int) -> list[str] | None:
    """The velocity variables for ``n_axes`` spatial axes in axis order, or None if no family is complete."""
    for family in VELOCITY_GROUPS:
        if all(v in variables for v in family[:n_axes]):
            return list(family[:n_axes])
    return None


def _is_periodic(bc: Any) -> bool:
    sides = [bc] if isinstance(bc, str) else list(bc)
    return all(s == "periodic" for s in sides)


def _is_known(bc: Any) -> bool:
    sides = [bc] if isinstance(bc, str) else list(bc)
    return all(s not in (None, "unspecified") for s in sides)


@dataclass
class MetricPlan:
    """What :func:`plan_metrics` decided: ``applies`` (metric → its options), ``skipped`` (metric → why not)
    and ``notes`` (metric → caveat of an applicable one)."""

    applies: dict[str, dict[str, Any]] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    notes: dict[str, str] = field(default_factory=dict)

    def require(self, name: str) -> dict[str, Any]:
        """The options of ``name``, or one clear error saying why it does not apply."""
        if name in self.applies:
            return self.applies[name]
        if name in self.skipped:
            raise SciformerError(f"metric {name!r} does not apply: {self.skipped[name]}")
        raise SciformerError(f"unknown metric {name!r}; known: {', '.join(METRICS)}")

    def describe(self) -> str:
        lines = [f"  {m}: applies" + (f" (note: {self.notes[m]})" if m in self.notes else "") for m in self.applies]
        return "\n".join(lines + [f"  {m}: skipped: {why}" for m, why in self.skipped.items()])


def _get(meta: Any, key: str, default: Any = None) -> Any:
    return meta.get(key, default) if isinstance(meta, Mapping) else getattr(meta, key, default)


def _uniform_spacing(name: str, c: Any) -> float | str:
    """The spacing of a coordinate, or why there is none."""
    c = np.asarray(c, dtype=np.float64)
    if c.ndim != 1 or len(c) < 2:
        return f"axis {name!r} has fewer than 2 points"
    d = np.diff(c)
    if not np.allclose(d, d[0], rtol=1e-6, atol=0):
        return f"axis {name!r} is not uniformly spaced"
    return float(d[0])


def plan_metrics(meta: Any, variables: Sequence[str] | None = None) -> MetricPlan:
    """Decide which metrics apply from a store's metadata.

    ``meta``: a :class:`~sciformer.data.store.FieldStore` (or any reader with the same attributes) or a mapping
    with ``variables``, ``roles`` {name: role}, ``axes``, ``boundary_conditions`` {axis: bc or [lo, hi]},
    ``coords`` {axis: values} and ``steady``. ``variables``: the scored (predicted) ones; default: those with a
    time role (state/solution). Options name the variables (and axes, spacings) each metric uses.
    """
    roles = dict(_get(meta, "roles", {}) or {})
    axes = list(_get(meta, "axes", []) or [])
    bcs = dict(_get(meta, "boundary_conditions", {}) or {})
    coords = dict(_get(meta, "coords", {}) or {})
    steady = bool(_get(meta, "steady", False))
    all_vars = list(_get(meta, "variables", list(roles)) or [])
    scored = list(variables) if variables is not None else [v for v in all_vars if roles.get(v) in TIME_ROLES]
    unknown = [v for v in scored if all_vars and v not in all_vars]
    if unknown:
        raise SciformerError(f"variables {unknown} are not in the store (it has {all_vars})")
    if not axes:
        raise SciformerError("the store metadata name no spatial axes ('axes'); is this a gridded-field store?")
    plan = MetricPlan()
    if not scored:
        for m in METRICS:
            plan.skipped[m] = "no predicted variables (none has role state or solution)"
        return plan
    periodic = {a: _is_periodic(bcs.get(a, "unspecified")) for a in axes}
    for m in POINTWISE:
        plan.applies[m] = {"variables": scored}
    for m in SPECTRAL:
        plan.applies[m] = {"variables": scored}
        if not all(periodic.values()):
            plan.notes[m] = (f"axes {[a for a in axes if not periodic[a]]} are not periodic: the FFT sees the jump "
                             "at the boundary as high-wavenumber power")
    if steady:
        why = "a steady store has no time axis for a quantity to drift along"
        plan.skipped["conservation"] = plan.skipped["energy_drift"] = why
    else:
        states = [v for v in scored if roles.get(v, "state") in TIME_ROLES]
        plan.applies["conservation"] = {"variables": states}
        plan.notes["conservation"] = ("zero drift is expected only for conserved quantities (e.g. mass with periodic "
                                      "or no-flux boundaries, without sources)")
    velocity = velocity_components(scored, len(axes))
    if velocity is None:
        partial = [v for fam in VELOCITY_GROUPS for v in fam if v in scored]
        why = (f"no velocity: divergence needs one velocity component per spatial axis {axes} "
               f"(named {' / '.join(', '.join(f[:len(axes)]) for f in VELOCITY_GROUPS)}); the scored variables are "
               f"{scored}" + (f" (only {partial} found)" if partial else ""))
        plan.skipped["divergence"] = why
        if not steady:
            plan.skipped["energy_drift"] = why.replace("divergence", "kinetic energy")
    else:
        if not steady:
            plan.applies["energy_drift"] = {"velocity": velocity}
        spacing = [_uniform_spacing(a, coords[a]) if a in coords else f"axis {a!r} has no coordinate" for a in axes]
        bad = [s for s in spacing if isinstance(s, str)]
        if bad:
            plan.skipped["divergence"] = f"no uniform grid spacing: {'; '.join(bad)}"
        else:
            plan.applies["divergence"] = {
                "velocity": velocity, "spacing": spacing, "periodic": [periodic[a] for a in axes],
                "method": {a: "spectral" if periodic[a] else "finite differences" for a in axes}}
            unknown_bc = [a for a in axes if not _is_known(bcs.get(a, "unspecified"))]
            if unknown_bc:
                plan.notes["divergence"] = f"boundary conditions of {unknown_bc} unspecified: finite differences used"
    walls = [i for i, a in enumerate(axes) if not periodic[a] and _is_known(bcs.get(a, "unspecified"))]
    if walls:
        plan.applies["boundary_rmse"] = {"variables": scored, "axes": walls, "axis_names": [axes[i] for i in walls]}
    elif all(periodic.values()):
        plan.skipped["boundary_rmse"] = f"every axis {axes} is periodic: the domain has no boundary"
    else:
        plan.skipped["boundary_rmse"] = (f"boundary conditions of {[a for a in axes if not periodic[a]]} are "
                                         "unspecified; set them in the store's boundary_conditions attribute")
    return plan
