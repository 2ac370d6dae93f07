"""One fixed colour and order per estimator across every figure."""

from __future__ import annotations

import seaborn as sns

ESTIMATOR_ORDER = (
    "reinforce", "reinforce-ema", "reinforce-optimal", "reinforce-oracle", "rloo", "arm",
    "disarm", "muprop", "local-expectation", "st", "st-sigmoid", "sts", "noisy-rectifier",
    "gumbel", "st-gumbel", "reinmax", "rebar", "relax",
)


def estimator_order(names) -> list[str]:
    """`names` sorted by the catalogue order, unknown (plugin) names last, alphabetically."""
    rank = {name: i for i, name in enumerate(ESTIMATOR_ORDER)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def estimator_palette(names) -> dict[str, tuple[float, float, float]]:
    """A colour per estimator, fixed by its place in the catalogue (plugins after it)."""
    colours = sns.color_palette("tab10") + sns.color_palette("Dark2")  # 18 distinct hues
    rank = {name: i for i, name in enumerate(ESTIMATOR_ORDER)}
    plugins = sorted(n for n in set(names) if n not in rank)
    slots = rank | {name: len(rank) + i for i, name in enumerate(plugins)}
    return {name: colours[slots[name] % len(colours)] for name in set(names)}
