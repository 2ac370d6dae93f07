"""Drawing on a probe graph: seeded noise, per-draw gradients, and how two sets of draws compare.

The noise of draw `k` is `uniform_noise(seed, k)`, so every check and every dtype or device sees
the same noise; the draws go through the engine's `gradient_draws`, `vmap` when the estimator
supports it.
"""

from __future__ import annotations

import torch

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.montecarlo.engine import gradient_draws
from estimator_lab.noise import uniform_noise

FLOAT64_TOLERANCE = 1e-9  # largest difference / largest draw for float64 rounding differences
FLOAT32_TOLERANCE = 1e-4  # the same between float32 and float64 draws (float32 eps is 1.2e-7)
DRAWS_PER_SHAPE_CHECK = 3


def draw_method(estimator: GradientEstimator) -> str:
    """`"vmap"` for an estimator that supports it, else `"loop"`."""
    return "vmap" if estimator.supports_vmap else "loop"


def probe_noise(estimator, graph, batch, num_draws, seed, dtype, start: int = 0) -> torch.Tensor:
    """The noise of draws `start .. start + num_draws - 1`, a `num_draws x *noise_shape` tensor
    in `dtype` on the graph's device."""
    with torch.no_grad():
        prepared = graph.prepare(batch)
    shape = tuple(estimator.noise_shape(graph, prepared))
    device = prepared.logits.device
    return uniform_noise(seed, range(start, start + num_draws), shape, dtype=dtype, device=device)


def probe_draws(estimator, graph, batch, noise, state, method=None) -> dict[str, torch.Tensor]:
    """Per-draw gradients (`gradient_draws`): `K x param.shape` per name, gate logits first."""
    return gradient_draws(
        graph, estimator, batch, noise, state=state, method=method or draw_method(estimator)
    )


def relative_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]):
    """`max |a - b| / max |b|` per tensor, the worst tensor name and its value."""
    worst, worst_name = 0.0, None
    for name in b:
        x, y = a[name].double().cpu(), b[name].double().cpu()
        scale = y.abs().max().clamp_min(torch.finfo(torch.float64).tiny)
        value = float((x - y).abs().max() / scale) if y.numel() else 0.0
        if not value <= worst:  # NaN counts as the worst
            worst, worst_name = value, name
    return worst, worst_name


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Bitwise-equal values (NaN equal to NaN)."""
    return a.shape == b.shape and bool(((a == b) | (a.isnan() & b.isnan())).all())
