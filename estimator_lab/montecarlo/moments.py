"""Moments of draws of a vector, and their merge, in float64: the pure functions
`moments_of` and `merge_moments` are the whole algorithm (Chan, Golub and LeVeque's pairwise
update, and Pébay's for the third and fourth central moments). The same merge serves chunks of
draws, runs that resume, and torch.distributed workers.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Moments:
    """Count, mean and sums of powers of deviations (`M2`, optionally `M3`, `M4`) of draws of
    a `d`-vector.

    Attributes:
        count: number of draws `n`.
        mean: a `d` float64 tensor.
        m2: a `d` float64 tensor, `sum_k (x_k - mean)^2`.
        m3: `sum_k (x_k - mean)^3`, or None when higher moments are not tracked.
        m4: `sum_k (x_k - mean)^4`, or None.
    """

    count: int
    mean: torch.Tensor
    m2: torch.Tensor
    m3: torch.Tensor | None = None
    m4: torch.Tensor | None = None

    @property
    def has_higher(self) -> bool:
        """Whether `m3` and `m4` are tracked."""
        return self.m3 is not None and self.m4 is not None

    def to_dict(self) -> dict:
        """Plain dict of ints and CPU tensors (loadable by `torch.load(weights_only=True)`)."""
        return {"count": self.count, "mean": self.mean.cpu(), "m2": self.m2.cpu(),
                "m3": None if self.m3 is None else self.m3.cpu(),
                "m4": None if self.m4 is None else self.m4.cpu()}

    @classmethod
    def from_dict(cls, state: dict, device=None) -> Moments:
        """Inverse of `to_dict`, tensors moved to `device`."""
        def move(t):
            return None if t is None else t.to(device)

        return cls(state["count"], move(state["mean"]), move(state["m2"]), move(state["m3"]),
                   move(state["m4"]))

    @property
    def variance(self) -> torch.Tensor:
        """Unbiased per-coordinate variance `M2 / (n - 1)` (NaN for fewer than two draws)."""
        return self.m2 / (self.count - 1) if self.count > 1 else torch.full_like(self.m2, torch.nan)

    @property
    def standard_error(self) -> torch.Tensor:
        """Per-coordinate standard error of the mean, `sqrt(variance / n)`."""
        return (self.variance / self.count).sqrt()


def moments_of(
    draws: torch.Tensor,
    *,
    shift: torch.Tensor | None = None,
    overwrite: bool = False,
    higher: bool = False,
) -> Moments:
    """Moments of a chunk of draws, from sums shifted by a point near the mean.

    With `y = x - c`, `mean = c + sum(y) / K` and `M2 = sum(y^2) - sum(y)^2 / K`; the sums run
    in the dtype of `draws` (in place when `overwrite`, so no `K x d` temporary is allocated)
    and the combination in float64. A shift near the mean (the running mean, or by default the
    first draw) keeps the subtraction free of cancellation; for float64 draws the result is as
    accurate as the two-pass formula.

    Args:
        draws: a `K x d` float tensor, one draw per row.
        shift: a `d` tensor near the mean (default: the first draw).
        overwrite: allow `draws` to be used as scratch space.
        higher: also compute `M3` and `M4` (from the power sums of `y`, about the chunk mean).
    """
    if draws.dim() != 2 or draws.shape[0] == 0:
        raise ValueError(f"draws must be a non-empty K x d tensor, got shape {tuple(draws.shape)}")
    if shift is not None and shift.shape != draws.shape[1:]:
        raise ValueError(f"shift of shape {tuple(shift.shape)} for draws of {tuple(draws.shape)}")
    if not draws.is_floating_point():
        raise TypeError(f"draws must be floating point, got {draws.dtype}")
    count = draws.shape[0]
    shift = (draws[0] if shift is None else shift).to(draws.dtype).clone()
    y = draws.sub_(shift) if overwrite else draws - shift
    s1 = y.sum(0).to(torch.float64)
    if not higher:
        s2 = y.square_().sum(0).to(torch.float64)
        mean = shift.to(torch.float64) + s1 / count
        return Moments(count, mean, (s2 - s1.square() / count).clamp_min_(0))
    y2 = y.square()
    s2 = y2.sum(0).to(torch.float64)
    s3 = (y2 * y).sum(0).to(torch.float64)
    s4 = y2.square_().sum(0).to(torch.float64)
    d = s1 / count  # the chunk mean of y
    m2 = (s2 - count * d.square()).clamp_min_(0)
    m3 = s3 - 3 * d * s2 + 2 * count * d**3
    m4 = (s4 - 4 * d * s3 + 6 * d.square() * s2 - 3 * count * d**4).clamp_min_(0)
    return Moments(count, shift.to(torch.float64) + d, m2, m3, m4)


def merge_moments(a: Moments, b: Moments) -> Moments:
    """Moments of the union of two disjoint sets of draws (Chan et al. 1979; Pébay 2008).

    With `delta = mean_b - mean_a` and `n = n_a + n_b`:
    `M2 = M2_a + M2_b + delta^2 n_a n_b / n`,
    `M3 = M3_a + M3_b + delta^3 n_a n_b (n_a - n_b) / n^2 + 3 delta (n_a M2_b - n_b M2_a) / n`,
    `M4 = M4_a + M4_b + delta^4 n_a n_b (n_a^2 - n_a n_b + n_b^2) / n^3
          + 6 delta^2 (n_a^2 M2_b + n_b^2 M2_a) / n^2 + 4 delta (n_a M3_b - n_b M3_a) / n`.
    Higher moments survive the merge only when both sides track them.
    """
    if a.count == 0:
        return b
    if b.count == 0:
        return a
    if a.mean.shape != b.mean.shape:
        raise ValueError(f"cannot merge moments of shapes {a.mean.shape} and {b.mean.shape}")
    na, nb = a.count, b.count
    n = na + nb
    delta = b.mean - a.mean
    mean = a.mean + delta * (nb / n)
    m2 = a.m2 + b.m2 + delta.square() * (na * nb / n)
    if not (a.has_higher and b.has_higher):
        return Moments(n, mean, m2)
    m3 = (a.m3 + b.m3 + delta**3 * (na * nb * (na - nb) / n**2)
          + 3 * delta * (na * b.m2 - nb * a.m2) / n)
    m4 = (a.m4 + b.m4 + delta**4 * (na * nb * (na * na - na * nb + nb * nb) / n**3)
          + 6 * delta.square() * (na * na * b.m2 + nb * nb * a.m2) / n**2
          + 4 * delta * (na * b.m3 - nb * a.m3) / n)
    return Moments(n, mean, m2, m3, m4)
