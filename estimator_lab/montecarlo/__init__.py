"""Noise streams, streaming moments and the draw engine."""

from estimator_lab.montecarlo.accumulators import (
    MomentAccumulator,
    Moments,
    merge_moments,
    moments_of,
)
from estimator_lab.montecarlo.engine import GATE_LOGITS, iter_draw_chunks
from estimator_lab.montecarlo.runner import run_draws
from estimator_lab.noise import uniform_noise

__all__ = [
    "GATE_LOGITS",
    "MomentAccumulator",
    "Moments",
    "iter_draw_chunks",
    "merge_moments",
    "moments_of",
    "run_draws",
    "uniform_noise",
]
