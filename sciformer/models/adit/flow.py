"""Flow matching in ADiT's convention: linear interpolant with data at t = 1, x-prediction, ODE samplers.

x_t = (1 − t)·x₀ + t·x₁ with x₀ ~ N(0, I) centred over the valid tokens; the network predicts x̂₁ and the
velocity is v = (x̂₁ − x_t)/(1 − t). Loss: mean over valid tokens of ((x₁ − x̂₁)/(1 − min(t, 0.9)))².
Samplers integrate dx/dt = v from ``t0`` to 1 with Euler (ADiT's) or Heun steps; an Euler step that ends at
t = 1 returns x̂₁ exactly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch


def centred_noise(shape, mask: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """N(0, I) noise [B, N, L] with zero mean over each system's valid tokens; padded tokens zero."""
    x = torch.randn(shape, generator=generator, device=mask.device if generator is None else "cpu").to(mask.device)
    m = mask[..., None].to(x.dtype)
    mean = (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp_min(1.0)
    return (x - mean) * m


def interpolate(x0: torch.Tensor, x1: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    t = t.view(-1, *([1] * (x1.ndim - 1)))
    return (1 - t) * x0 + t * x1


def loss(x1_hat: torch.Tensor, x1: torch.Tensor, t: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    w = 1.0 / (1.0 - t.clamp(max=0.9))
    err = ((x1 - x1_hat) * w.view(-1, 1, 1)) ** 2  # [B, N, L]
    m = mask[..., None].to(err.dtype)
    return (err * m).sum() / (m.sum() * x1.shape[-1]).clamp_min(1.0)


Predictor = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


@torch.no_grad()
def sample(predict: Predictor, x0: torch.Tensor, steps: int = 100, t0: float = 0.01, method: str = "euler",
           self_condition: bool = True) -> torch.Tensor:
    """Integrate from x0 at ``t0`` to t = 1 over ``steps`` equal intervals. ``predict(x_t, t[B], x_sc)`` → x̂₁."""
    if method not in ("euler", "heun"):
        raise ValueError(f"method must be 'euler' or 'heun', got {method!r}")
    times = torch.linspace(t0, 1.0, steps + 1, device=x0.device)
    x, x_sc = x0, None
    B = x0.shape[0]
    for i in range(steps):
        t, tn = times[i], times[i + 1]
        x1_hat = predict(x, t.expand(B), x_sc)
        x_sc = x1_hat if self_condition else None
        v = (x1_hat - x) / (1 - t)
        x_next = x + (tn - t) * v
        if method == "heun" and float(tn) < 1.0:
            x1_next = predict(x_next, tn.expand(B), x_sc)
            v2 = (x1_next - x_next) / (1 - tn)
            x_next = x + (tn - t) * 0.5 * (v + v2)
        x = x_next
    return x


def guided(model_fn: Callable[..., torch.Tensor], scale: float) -> Callable[..., torch.Tensor]:
    """Classifier-free guidance: uncond + s·(cond − uncond); ``model_fn(x, t, x_sc, null)`` → x̂₁."""
    if scale == 1.0:
        return lambda x, t, sc: model_fn(x, t, sc, False)

    def fn(x, t, sc):
        cond, uncond = model_fn(x, t, sc, False), model_fn(x, t, sc, True)
        return uncond + scale * (cond - uncond)

    return fn
