"""Noise streams: the noise of a draw is a pure function of (seed, draw index)."""

from __future__ import annotations

import numpy as np
import torch


def draw_seed(seed: int, draw_index: int) -> int:
    """A 63-bit generator seed for one draw, mixed from `(seed, draw_index)` by `SeedSequence`.

    Nearby seeds and indices give unrelated streams, and no two `(seed, index)` pairs are mapped
    by a simple arithmetic rule onto the same stream.
    """
    if seed < 0 or draw_index < 0:
        raise ValueError(f"seed and draw index must be >= 0, got {seed}, {draw_index}")
    state = np.random.SeedSequence([seed, draw_index]).generate_state(2, dtype=np.uint32)
    return int((int(state[0]) << 31) ^ int(state[1]))


def uniform_noise(
    seed: int,
    draw_indices: range,
    shape: tuple[int, ...],
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Uniform `[0, 1)` noise for a run of draws, independent of how draws are chunked.

    Each draw's noise comes from its own CPU generator seeded by `draw_seed(seed, index)`, so
    draw `k` gets the same noise whatever the chunk size, worker count or estimator
    (common random numbers: estimators that read noise of the same shape share gate samples).

    Args:
        seed: the run's seed.
        draw_indices: the global indices of the draws, e.g. `range(start, stop)`.
        shape: the noise shape of one draw.
        dtype: floating dtype of the result.
        device: where the result goes.

    Returns:
        a `len(draw_indices) x *shape` tensor.

    Example:
        >>> a = uniform_noise(0, range(0, 4), (2, 3))
        >>> b = uniform_noise(0, range(2, 4), (2, 3))
        >>> bool((a[2:] == b).all())
        True
    """
    out = torch.empty((len(draw_indices), *shape), dtype=torch.float64)
    for row, index in enumerate(draw_indices):
        generator = torch.Generator().manual_seed(draw_seed(seed, index))
        torch.rand(shape, generator=generator, dtype=torch.float64, out=out[row])
    return below_one_in(out, dtype).to(device)


def below_one_in(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """CPU float64 values in `[0, 1)` rounded to `dtype` (to nearest), kept below 1.

    Rounding to a shorter float may round values just below 1 up to 1; those become the
    largest `dtype` value below 1.

    Args:
        values: a float64 CPU tensor in `[0, 1)` (float64 is returned as it is).
        dtype: a floating dtype.

    Example:
        >>> below_one_in(torch.tensor([0.5, 1 - 2.0**-30]), torch.float32).tolist()
        [0.5, 0.9999999403953552]
    """
    if dtype == torch.float64:
        return values
    below_one = 1.0 - torch.finfo(dtype).eps / 2
    if dtype == torch.float32:
        # numpy rounds to nearest like `Tensor.to`, on one thread: torch's two-thread
        # elementwise kernels wait milliseconds for a busy core on a shared machine.
        narrow = values.numpy().astype(np.float32)
        np.minimum(narrow, np.float32(below_one), out=narrow)
        return torch.from_numpy(narrow)
    return values.to(dtype=dtype).clamp_(max=below_one)
