"""What a Monte Carlo run draws and keeps: one frozen plan passed through the engine.

`run_draws`, `iter_draw_chunks`, `fast_moments` and the studies' grouped measurements all read
the same settings (how many draws from which noise stream, in what chunks, which tensors, which
summaries): `DrawPlan` holds them once, checked once.
"""

from __future__ import annotations

from dataclasses import dataclass

PATHS = ("auto", "fast", "generic")
NAN_POLICIES = ("raise", "skip")


@dataclass(frozen=True)
class DrawPlan:
    """The draws of a run and the moments kept of them.

    Attributes:
        num_draws: draws per estimator.
        seed: the noise seed; draw `k` of every estimator uses `uniform_noise(seed, [k], ...)`.
        first_draw: index of the first draw (a share of a larger run); the draws are
            `first_draw .. first_draw + num_draws - 1` (`draw_range`).
        chunk_size: draws differentiated and held in memory at once.
        parameters: names of the parameters to track (None: all).
        include_logits: also track the gradient with respect to the gate logits.
        group_size: also keep batch-means summaries of groups of this many consecutive draws.
        paired_with: the name of a reference estimator; every other estimator also gets the
            moments of its paired differences with it (same noise).
        higher_moments: also accumulate `M3` and `M4`.
        nan_policy: `"raise"` or `"skip"` for draws with a NaN or infinite entry.
        method: `"vmap"` or `"loop"`, how the generic path differentiates (`gradient_draws`).
        path: `"auto"` (the fast path where it applies, `fast_path_reason`), `"fast"` (it or
            an error) or `"generic"`.

    Example:
        >>> plan = DrawPlan(num_draws=100, seed=0, first_draw=200)
        >>> plan.draw_range
        range(200, 300)
    """

    num_draws: int
    seed: int
    first_draw: int = 0
    chunk_size: int = 32
    parameters: tuple[str, ...] | None = None
    include_logits: bool = True
    group_size: int | None = None
    paired_with: str | None = None
    higher_moments: bool = False
    nan_policy: str = "raise"
    method: str = "vmap"
    path: str = "auto"

    def __post_init__(self) -> None:
        if self.num_draws < 1 or self.chunk_size < 1 or self.first_draw < 0:
            raise ValueError(f"num_draws and chunk_size must be >= 1 and first_draw >= 0, got "
                             f"{self.num_draws}, {self.chunk_size}, {self.first_draw}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.nan_policy not in NAN_POLICIES:
            raise ValueError(f"nan_policy must be 'raise' or 'skip', got {self.nan_policy!r}")
        if self.method not in ("vmap", "loop"):
            raise ValueError(f"method must be 'vmap' or 'loop', got {self.method!r}")
        if self.path not in PATHS:
            raise ValueError(f"path must be one of {PATHS}, got {self.path!r}")
        if self.group_size is not None and self.group_size < 2:
            raise ValueError(f"group_size must be >= 2, got {self.group_size}")
        if self.parameters is not None and not isinstance(self.parameters, tuple):
            object.__setattr__(self, "parameters", tuple(self.parameters))

    @property
    def draw_range(self) -> range:
        """The global indices of the plan's draws."""
        return range(self.first_draw, self.first_draw + self.num_draws)

    def chunks(self, start: int | None = None) -> list[range]:
        """The chunks of draw indices from `start` (default: the first draw) to the end."""
        stop = self.first_draw + self.num_draws
        begin = self.first_draw if start is None else start
        return [range(i, min(i + self.chunk_size, stop)) for i in range(begin, stop,
                                                                        self.chunk_size)]

