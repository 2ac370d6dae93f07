"""One fixed colour per estimator across every figure, the command's order, legends beside."""

from __future__ import annotations

import seaborn as sns
from matplotlib.axes import Axes

ESTIMATOR_ORDER = (
    "reinforce", "reinforce-ema", "reinforce-optimal", "reinforce-oracle", "rloo", "arm",
    "disarm", "muprop", "local-expectation", "st", "st-sigmoid", "sts", "noisy-rectifier",
    "gumbel", "st-gumbel", "reinmax", "rebar", "relax",
)
LEGEND_ROW_INCHES = 0.2  # one legend entry at fontsize "small", spacing included


def estimator_order(names) -> list[str]:
    """`names` sorted by the catalogue order, unknown (plugin) names last, alphabetically."""
    rank = {name: i for i, name in enumerate(ESTIMATOR_ORDER)}
    return sorted(set(names), key=lambda n: (rank.get(n, len(rank)), n))


def appearance_order(names, order=None) -> list:
    """The figures' order of estimators: `order` if given, else `names` in order of first
    appearance, i.e. as the command listed them (tables keep that order).

    Raises:
        ValueError: `order` misses some of `names`.

    Example:
        >>> appearance_order(["st", "reinforce", "st"])
        ['st', 'reinforce']
    """
    seen = list(dict.fromkeys(names))
    if order is None:
        return seen
    missing = [n for n in seen if n not in order]
    if missing:
        raise ValueError(f"order lacks {', '.join(map(repr, missing))}")
    return [n for n in order if n in seen]


def estimator_palette(names) -> dict[str, tuple[float, float, float]]:
    """A colour per estimator, fixed by its place in the catalogue (plugins after it)."""
    colours = sns.color_palette("tab10") + sns.color_palette("Dark2")  # 18 distinct hues
    rank = {name: i for i, name in enumerate(ESTIMATOR_ORDER)}
    plugins = sorted(n for n in set(names) if n not in rank)
    slots = rank | {name: len(rank) + i for i, name in enumerate(plugins)}
    return {name: colours[slots[name] % len(colours)] for name in set(names)}


def legend_height(entries: int, title: bool = False) -> float:
    """The height in inches a figure needs for a legend of `entries` rows beside its axes."""
    return LEGEND_ROW_INCHES * (entries + title) + 0.6


def legend_beside(ax: Axes, title: str | None = None) -> None:
    """Draws the legend of `ax` outside it, its upper left corner just right of the axes, so
    it covers nothing, and lays the figure out again (`tight_layout` makes room for it).

    Args:
        ax: axes with labelled artists.
        title: the legend's title.
    """
    ax.legend(title=title, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0.0,
              fontsize="small", title_fontsize="small")
    ax.figure.tight_layout()
