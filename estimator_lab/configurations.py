"""Binary gate configurations and the size limit of every exhaustive sweep.

On the ground floor: graph specs refuse a graph too large to enumerate, the oracle baseline
sweeps configurations, and `exact` builds its sums on them, without any of them importing the
others.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

DEFAULT_MAX_CONFIGURATIONS = 2**22


class EnumerationTooLarge(ValueError):
    """The graph has more gate configurations than the enumeration may visit."""


def check_enumerable(num_gates: int, max_configurations: int = DEFAULT_MAX_CONFIGURATIONS) -> int:
    """The number of configurations, `2^num_gates`, or an `EnumerationTooLarge` error saying so."""
    count = 2**num_gates
    if count > max_configurations:
        raise EnumerationTooLarge(
            f"{num_gates} gates make 2^{num_gates} = {count:,} configurations, more than the "
            f"limit of {max_configurations:,} (raise max_configurations or use fewer gates)"
        )
    return count


def configurations(
    num_gates: int, start: int, stop: int, *, dtype=torch.float64, device=None
) -> torch.Tensor:
    """Gate configurations `start .. stop - 1` as a `(stop - start) x num_gates` 0/1 tensor.

    Configuration `c` sets gate `i` to bit `i` of `c`.

    Example:
        >>> configurations(2, 0, 4, dtype=torch.int64).tolist()
        [[0, 0], [1, 0], [0, 1], [1, 1]]
    """
    codes = torch.arange(start, stop, device=device)
    bits = torch.arange(num_gates, device=device)
    return ((codes.unsqueeze(-1) >> bits) & 1).to(dtype)


def iter_configuration_chunks(
    num_gates: int, chunk_size: int, *, dtype=torch.float64, device=None
) -> Iterator[torch.Tensor]:
    """All `2^num_gates` configurations in chunks of at most `chunk_size` rows."""
    total = 2**num_gates
    for start in range(0, total, chunk_size):
        yield configurations(
            num_gates, start, min(start + chunk_size, total), dtype=dtype, device=device
        )
