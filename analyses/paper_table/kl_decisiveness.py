"""What the paper's minibatch KL criterion (Eq. 14) charges a gate for being decisive.

Question: Eq. 14 is taken on `p_i`, the mean of `sigmoid(a_i)` over a minibatch of 32. How
much more does it cost, in expectation over minibatches, for a gate that is decisive (on for
10 % of the inputs, off for the rest) than for an indecisive one (`sigmoid(a) = 0.1` for every
input), when both have the target mean activity `s = 0.1` over the data?

Exact, in float64. A unit whose sigmoid is `1 - low` on a fraction `q = (s - low) / (1 - 2 low)`
of the inputs and `low` on the others has mean `s`. A minibatch of `B` independent inputs holds
`k ~ Binomial(B, q)` on-inputs, so `p = (k (1 - low) + (B - k) low) / B` and the expected
criterion per unit (weight 1) is `sum_k P(k) CE(s, p)`, `CE(s, p) = -(s log p + (1 - s)
log(1 - p))`, evaluated by the training code's `sparsity_penalty`. `CE(s, .)` is convex, so by
Jensen every unit with mean `s` pays at least `CE(s, s) = H(s)`, which the indecisive unit
(`low = s`, `q = 0`) pays exactly; the excess over `H(s)` is what decisiveness costs.
Multiplied by the KL weight and the 2000 gates it is in the units of the training objective,
beside the mean cross-entropy. Writes `reports/kl_decisiveness/`
(results.csv, manifest.json, report.md).

    python analyses/paper_table/kl_decisiveness.py [--out reports/kl_decisiveness]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy.stats import binom

from estimator_lab.reporting import markdown_table, run_manifest, staged_directory
from estimator_lab.train.gaters import GaterConfig, sparsity_penalty

TARGET = 0.1
BATCH_SIZE = 32
NUM_GATES = 2000
LOWS = (0.001, 0.01, 0.03, 0.05, 0.1)
KL_WEIGHTS = (0.1, 0.03, 0.01, 0.001)


def on_fraction(low: float, target: float = TARGET) -> float:
    """The share of inputs on which the unit is on, so that its mean sigmoid is `target`."""
    return (target - low) / (1 - 2 * low)


def eq14_per_unit(target: float, batch_means: np.ndarray) -> np.ndarray:
    """Eq. 14 at weight 1 for one unit, `CE(s, p)`, at each minibatch mean `p`: the training
    code's own `sparsity_penalty`, on a one-example batch whose sigmoid is `p`."""
    config = GaterConfig("eq14", "sbn", "Eq. 14", (0.0, 0.0, 0.0), sparsity="kl",
                         target=target, kl_weight=1.0)
    logits = torch.logit(torch.as_tensor(batch_means, dtype=torch.float64)).reshape(-1, 1, 1)
    return np.array([sparsity_penalty(config, a, a, l1_weight=0.0).item() for a in logits])


def expected_kl_excess(low: float, target: float = TARGET, batch_size: int = BATCH_SIZE) -> float:
    """Expected Eq. 14 per unit over minibatches, minus its minimum `H(s)` (see the module).

    Args:
        low: the unit's sigmoid when off (`1 - low` when on), in `(0, target]`; `target`
            is the indecisive unit (excess 0).
        target: the sparsity target `s`.
        batch_size: the minibatch size `B`.
    """
    if not 0 < low <= target < 0.5 or batch_size < 1:
        raise ValueError(f"need 0 < low <= target < 0.5 and batch_size >= 1, got "
                         f"low={low}, target={target}, batch_size={batch_size}")
    k = np.arange(batch_size + 1)
    p = (k * (1 - low) + (batch_size - k) * low) / batch_size
    expected = binom.pmf(k, batch_size, on_fraction(low, target)) @ eq14_per_unit(target, p)
    return float(expected - eq14_per_unit(target, np.array([target]))[0])


def excess_table(lows=LOWS, kl_weights=KL_WEIGHTS) -> pd.DataFrame:
    """One row per `low`: the excess per unit and, per KL weight, over `NUM_GATES` units."""
    rows = []
    for low in lows:
        excess = expected_kl_excess(low)
        rows.append({"low": low, "on_fraction": on_fraction(low),
                     "excess_per_unit": excess,
                     **{f"excess_{NUM_GATES}_gates_kl{w:g}": w * NUM_GATES * excess
                        for w in kl_weights}})
    return pd.DataFrame(rows)


def render(results: pd.DataFrame) -> str:
    """The Markdown report."""
    return f"""# The cost of decisive gates under the minibatch KL criterion (Eq. 14)

Exact expectation over minibatches of {BATCH_SIZE} (float64). A unit with sigmoid `1 - low` on
a fraction `on_fraction` of the inputs and `low` on the rest has mean activity
{TARGET} over the data, as the criterion asks; `excess_per_unit` is its expected Eq. 14 (weight
1) minus that of a unit at `sigmoid(a) = {TARGET}` for every input, which is the minimum.
`excess_{NUM_GATES}_gates_klW` is that excess times `W` and {NUM_GATES} gates, in the units of
the training objective (the mean cross-entropy is added to it). `low = {TARGET}` is the
indecisive unit itself.

{markdown_table(results, digits=4)}

```
python analyses/paper_table/kl_decisiveness.py
```
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="reports/kl_decisiveness")
    args = parser.parse_args()
    started = time.perf_counter()
    results = excess_table()
    manifest = run_manifest(seed=None, device="cpu (exact, float64)",
                            wall_time_s=time.perf_counter() - started, target=TARGET,
                            batch_size=BATCH_SIZE, num_gates=NUM_GATES)
    with staged_directory(args.out) as stage:
        results.to_csv(stage / "results.csv", index=False)
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
        (stage / "report.md").write_text(render(results))
    print(f"report written to {Path(args.out) / 'report.md'}")


if __name__ == "__main__":
    main()
