"""Reading the options of a graph's spec: numbers, and the enumeration guard, in one line each.

The spec parsers of the categorical and top-k graphs (`parse_cat_toy`, `parse_topk_toy`,
`parse_moe_spec`, `parse_categorical_vae_spec`) receive the `key=value` options of a spec as a
mutable dict, pop the keys they read (so `graphs.specs` reports the rest as unknown) and refuse
bad values with a `ValueError` of one line that names the graph and the key.
"""

from __future__ import annotations

import math


def pop_number(options: dict[str, str], key: str, default, kind=int, *, graph: str,
               minimum=None):
    """Pops `options[key]` as a `kind` (`int` or `float`), or returns `default` when absent.

    Args:
        options: the spec's options (the key is removed).
        key: the option.
        default: the value when the option is absent (not checked).
        kind: `int` or `float`.
        graph: the graph's spec name, for the message.
        minimum: the smallest value accepted, if any.

    Raises:
        ValueError: in one line, when the text is not a `kind` or the value is below `minimum`.

    Example:
        >>> options = {"k": "3", "n": "x"}
        >>> pop_number(options, "k", 2, graph="cat-toy", minimum=2), options
        (3, {'n': 'x'})
        >>> pop_number(options, "n", 2, graph="cat-toy")
        Traceback (most recent call last):
        ...
        ValueError: cat-toy n must be int, got 'x'
    """
    if key not in options:
        return default
    raw = options.pop(key)
    try:
        value = kind(raw)
    except ValueError:
        raise ValueError(f"{graph} {key} must be {kind.__name__}, got {raw!r}") from None
    if minimum is not None and value < minimum:
        raise ValueError(f"{graph} {key} must be >= {minimum}, got {key}={value}")
    return value


def configuration_count(base: int, exponent: int) -> int | None:
    """`base^exponent`, or `None` when it has more than 30 digits (never formed then).

    The enumeration guards compare it with their limit, so a spec like `n=1000000000` is
    refused at once.

    Example:
        >>> configuration_count(6, 2), configuration_count(10, 31)
        (36, None)
    """
    if exponent * math.log10(max(base, 1)) > 30:
        return None
    return base**exponent


def too_many_configurations(gates: str, base: int, base_text: str, exponent: int,
                            max_configurations: int) -> str | None:
    """Why `base^exponent` configurations exceed `max_configurations` (one line), else `None`.

    Args:
        gates: what makes them, e.g. `"3 categorical gates of 4 classes"`.
        base: the values one gate takes.
        base_text: `base` as the message writes it (`"4"`, `"C(4,2)"`).
        exponent: the number of gates.
        max_configurations: the limit.

    Example:
        >>> too_many_configurations("3 categorical gates of 4 classes", 4, "4", 3, 60)
        '3 categorical gates of 4 classes make 4^3 = 64 configurations, more than the limit of 60 (use fewer gates or classes)'
    """  # noqa: E501 (a doctest line)
    count = configuration_count(base, exponent)
    if count is not None and count <= max_configurations:
        return None
    shown = "" if count is None else f" = {count:,}"
    return (f"{gates} make {base_text}^{exponent}{shown} configurations, more than the limit "
            f"of {max_configurations:,} (use fewer gates or classes)")
