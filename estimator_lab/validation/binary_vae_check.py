"""An optional longer check: the binary VAE benchmark of the DisARM line, target vs DisARM, RLOO.

The linear Bernoulli VAE with 200 latent bits (`graphs.binary_vae`) on dynamically binarised
MNIST: from the same seeded initialisation, each estimator trains with Adam (lr 1e-3, batch
50, `train_adam`) for the same number of loss evaluations per example (an estimator costing
`c` evaluations per draw takes `evaluations // c` steps), then the 100-sample bound is measured
on 1,000 fixed test images. Before training, at the shared initial parameters, the target's
encoder-gradient variance is compared with DisARM's under common random numbers: the paired
ratio of total variances with its 95% interval over batch-means groups.

The verdict is `info` (a comparison, no claim at stake: a biased estimator may train well) with
the test bounds and the variance ratio; `fail` when the target's training makes the bound
non-finite; `skip` when the budget asks for no evaluations, MNIST is not available, or the
target does not support a single-layer Bernoulli graph (`distribution != "bernoulli"`).
`analyses/binary_vae` is the full benchmark (every estimator, curves, paired variances through
training); this check is its short form for one target.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd
import torch

from estimator_lab.estimators.prepare import prepare_estimator
from estimator_lab.graphs.binary_vae import BinaryVAE, BinaryVAEConfig
from estimator_lab.montecarlo import run_draws
from estimator_lab.stats.intervals import group_mean, paired_ratio
from estimator_lab.train.binary_vae import dynamic_minibatch, evaluate_bounds, train_adam
from estimator_lab.validation.budget import Budget
from estimator_lab.validation.target import Target
from estimator_lab.validation.verdict import Verdict

COMPARED = ("disarm", "rloo")
TEST_EXAMPLES = 1000
TEST_SAMPLES = 100
VARIANCE_DRAWS = 200
VARIANCE_GROUPS = 10
BATCH_SIZE = 50
STREAMS = {"init": 0, "data": 1, "noise": 2, "test": 3, "bound": 4, "variance": 5}
"""Seed offsets (added to `1000 * seed`) of the check's random streams."""


def binary_vae_check(target: Target, budget: Budget, *, seed: int, device: torch.device,
                     progress: bool = False, evaluations: int | None = None,
                     ) -> tuple[Verdict, pd.DataFrame | None]:
    """Trains the binary VAE with the target, DisARM and RLOO (2 samples) at equal budgets.

    Args:
        target: the estimator under validation.
        budget: the battery's budget; its `binary_vae_evaluations` (loss evaluations per
            example per estimator, 0 skips) unless `evaluations` is given.
        seed: seeds the initialisation, minibatches, noise and test subset.
        device: where the models train.
        progress: show a progress bar over the estimators.
        evaluations: overrides the budget's number.

    Returns:
        the verdict and one row per estimator (`estimator`, `evaluations_per_step`, `steps`,
        `test_elbo`, `test_bound`, `train_seconds`), or None when skipped.
    """
    from tqdm.auto import tqdm

    from estimator_lab.data import MNISTError, mnist

    evaluations = budget.binary_vae_evaluations if evaluations is None else evaluations
    if evaluations == 0:
        return Verdict("binary vae", "skip",
                       "not run (budget has binary_vae_evaluations=0)"), None
    probe = target.probe()
    if probe.distribution != "bernoulli":
        return Verdict("binary vae", "skip", f"the target's gates are {probe.distribution!r}, "
                       "not Bernoulli"), None
    try:
        train = mnist("train").tensors()[0].to(device)
        test = mnist("test").tensors()[0]
    except MNISTError as error:
        return Verdict("binary vae", "skip", f"MNIST unavailable: {error}"), None
    base = 1000 * seed
    generator = torch.Generator().manual_seed(base + STREAMS["test"])
    chosen = test[torch.randperm(test.shape[0], generator=generator)[:TEST_EXAMPLES]]
    test_images = (torch.rand(chosen.shape, generator=generator) < chosen).float().to(device)
    batch = (dynamic_minibatch(train, BATCH_SIZE, base + STREAMS["variance"], 0),)

    def model() -> BinaryVAE:
        return BinaryVAE(BinaryVAEConfig(), train.mean(0).cpu(),
                         torch.Generator().manual_seed(base + STREAMS["init"])).to(device)

    names = [target.label, *(n for n in COMPARED if n != target.label)]
    built = {}
    for name in names:
        vae = model()
        built[name] = (target.build(vae, batch, seed=seed)[0] if name == target.label else
                       prepare_estimator(name, vae, batch, seed=seed)[0])
    ratio = None
    if target.label != "disarm":
        pair = {target.label: built[target.label], "disarm": built["disarm"]}
        measured = encoder_variances(model(), pair, batch, num_draws=VARIANCE_DRAWS,
                                     group_size=VARIANCE_DRAWS // VARIANCE_GROUPS,
                                     seed=base + STREAMS["variance"])
        ratio = measured[target.label].ratio_to(measured["disarm"])[:3]
    rows = []
    for name in tqdm(names, desc="binary vae", disable=not progress):
        vae, estimator = model(), built[name]
        cost = estimator.evaluations(vae)
        _, seconds = train_adam(vae, estimator, train, steps=evaluations // cost,
                                batch_size=BATCH_SIZE, data_seed=base + STREAMS["data"],
                                noise_seed=base + STREAMS["noise"])
        elbo, bound = evaluate_bounds(vae, test_images, TEST_SAMPLES, base + STREAMS["bound"])
        rows.append({"estimator": name, "evaluations_per_step": cost,
                     "steps": evaluations // cost, "test_elbo": elbo, "test_bound": bound,
                     "train_seconds": seconds})
    table = pd.DataFrame(rows)
    return _verdict(target.label, table, evaluations, ratio), table


@dataclass(frozen=True)
class EncoderVariance:
    """Encoder-gradient variance of one estimator at frozen parameters.

    Attributes:
        mean_variance: `tr(Sigma) / d` over the encoder's `d` coordinates.
        numel: `d`.
        draws: draws it was measured from.
        groups: batch-means group index -> the total variance `tr(Sigma)` measured in that
            group (group `g` holds the same draw indices for every estimator of one call).
    """

    mean_variance: float
    numel: int
    draws: int
    groups: dict[int, float]

    def interval(self, confidence_level: float = 0.95) -> tuple[float, float]:
        """A t interval of `mean_variance` over the groups."""
        low, high = group_mean(list(self.groups.values())).confidence_interval(confidence_level)
        return low / self.numel, high / self.numel

    def ratio_to(self, other: EncoderVariance, confidence_level: float = 0.95
                 ) -> tuple[float, float, float, int]:
        """`tr(Sigma) / tr(Sigma_other)` with its paired interval over shared groups (common
        random numbers): `(ratio, low, high, groups)`."""
        shared = sorted(self.groups.keys() & other.groups.keys())
        result = paired_ratio([self.groups[g] for g in shared], [other.groups[g] for g in shared])
        return (result.estimate, *result.confidence_interval(confidence_level), result.groups)


def encoder_variances(vae: BinaryVAE, estimators: dict, batch: tuple[torch.Tensor, ...], *,
                      num_draws: int, group_size: int, seed: int, states: dict | None = None,
                      ) -> dict[str, EncoderVariance]:
    """`run_draws` of `estimators` at `vae`'s frozen parameters on `batch`, the encoder's
    tensors pooled (per group their total variances add up): one `EncoderVariance` each."""
    accumulators = run_draws(vae, estimators, batch, num_draws=num_draws, seed=seed,
                             states=states, parameters=list(vae.encoder_parameters()),
                             include_logits=False, group_size=group_size)
    results = {}
    for name, accumulator in accumulators.items():
        tensors = accumulator.names()
        groups: dict[int, float] = {}
        for tensor in tensors:
            for group, value in accumulator.groups.total_variance[tensor].items():
                groups[group] = groups.get(group, 0.0) + float(value)
        numel = sum(accumulator[t].mean.numel() for t in tensors)
        total = sum(float(accumulator[t].variance.sum()) for t in tensors)
        results[name] = EncoderVariance(total / numel, numel, accumulator[tensors[0]].count,
                                        groups)
    return results


def _verdict(label: str, table: pd.DataFrame, evaluations: int,
             ratio: tuple[float, float, float] | None) -> Verdict:
    rows = table.set_index("estimator")
    mine = rows.loc[label]
    details = {"evaluations": evaluations, "results": table.to_dict("records"),
               "variance_ratio_to_disarm": ratio}
    if not (math.isfinite(mine["test_bound"]) and math.isfinite(mine["test_elbo"])):
        return Verdict("binary vae", "fail", f"the test bound became non-finite within "
                       f"{int(mine['steps'])} steps ({mine['test_bound']})", details)
    ranked = rows["test_bound"].sort_values(ascending=False).index.tolist()
    others = ", ".join(f"{n} {rows.loc[n, 'test_bound']:.2f}" for n in ranked if n != label)
    variance = ("" if ratio is None else
                f"; encoder-gradient variance at initialisation {ratio[0]:.3g} x DisARM's "
                f"[{ratio[1]:.3g}, {ratio[2]:.3g}]")
    line = (f"after {evaluations:,} loss evaluations per example ({int(mine['steps'])} steps), "
            f"{TEST_SAMPLES}-sample test bound {mine['test_bound']:.2f} (rank "
            f"{ranked.index(label) + 1} of {len(ranked)}; {others}){variance}")
    return Verdict("binary vae", "info", line, details)
