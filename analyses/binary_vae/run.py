"""The binary VAE benchmark of the ARM/DisARM/ARMS papers, at equal numbers of loss evaluations.

A Bernoulli VAE with 200 latent bits (`estimator_lab.graphs.binary_vae`, linear or
one-hidden-layer LeakyReLU encoder/decoder) on dynamically binarised MNIST (each minibatch
re-sampled as `x ~ Bernoulli(pixel)`), trained by Adam (lr 1e-3, batch 50) on the negative ELBO
with each estimator's gradient (the DisARM paper's protocol, Dong, Mnih, Tucker 2020, section
6.1, shortened). Every estimator gets the same budget of loss evaluations per example, so one
that costs `c` evaluations per draw takes `budget / c` steps. At checkpoints (in evaluations) the
run records, per estimator and seed:

- the training ELBO: a fixed subset of training images (binarised once), `K`-sample mean;
- the 100-sample bound `log (1/100) sum_k p(x, b_k) / q(b_k | x)` on a fixed test subset;
- the gradient variance of the encoder parameters at the checkpoint's parameters, frozen:
  `run_draws` on a fixed training minibatch (`binary_vae_check.encoder_variances`), mean
  per-coordinate variance with a 95% batch-means
  interval (its own trajectory, as in the papers' variance curves);
- paired: at the checkpoints of the `disarm` run, every estimator's variance on the same
  parameters and minibatch under common random numbers, with the variance ratio to `disarm`
  and its paired interval (`paired_ratio` over batch-means groups).

The protocol's pieces are the library's: `graphs.binary_vae.train_adam` (Adam with any
estimator), `dynamic_minibatch` and `evaluate_bounds`.

Each (estimator, seed) run is cached under `--cache` with its protocol, so a long benchmark is
run in parts (`--estimators a,b`) and the last call, or `--report-only`, writes the report.

    python analyses/binary_vae/run.py [--quick] [--model linear] [--evaluations 20000]
        [--seeds 0] [--estimators rloo,arm,...] [--cache runs/binary_vae]
        [--out reports/binary_vae/MODEL] [--report-only]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402
import torch  # noqa: E402

from estimator_lab.atomic import atomic_write_bytes, atomic_write_text  # noqa: E402
from estimator_lab.cli import format_duration  # noqa: E402
from estimator_lab.data import mnist  # noqa: E402
from estimator_lab.estimators import get_estimator  # noqa: E402
from estimator_lab.estimators.prepare import warmed_up_state  # noqa: E402
from estimator_lab.graphs.binary_vae import BinaryVAE, BinaryVAEConfig  # noqa: E402
from estimator_lab.plotting.style import estimator_palette, legend_beside  # noqa: E402
from estimator_lab.reporting import markdown_table, run_manifest, staged_directory  # noqa: E402
from estimator_lab.reporting.builder import figure_bytes  # noqa: E402
from estimator_lab.reporting.markdown import format_interval, format_number  # noqa: E402
from estimator_lab.serialization import safe_load_dict  # noqa: E402
from estimator_lab.train.binary_vae import evaluate_bounds, train_adam  # noqa: E402
from estimator_lab.validation.binary_vae_check import encoder_variances  # noqa: E402

ESTIMATORS = {
    "rloo": ("rloo", {"num_samples": 2}),
    "arm": ("arm", {}),
    "disarm": ("disarm", {}),
    "arms": ("arms", {"num_samples": 4}),
    "double-cv": ("double-cv", {"num_samples": 2}),
    "ugc": ("ugc", {}),
    "relax": ("relax", {}),
    "st": ("st", {}),
    "st-gumbel": ("st-gumbel", {}),
}
"""Label -> (registry name, hyper-parameters). `arms` takes 4 samples (with 2 it is DisARM draw
by draw); RELAX, `st-gumbel` keep their registry defaults."""
REFERENCE = "disarm"
MODELS = {"linear": (), "nonlinear": (200,)}
SEED_STREAMS = {"init": 0, "data": 1, "noise": 2, "subsets": 3, "variance": 4, "bound": 5}
"""Offsets added to `1000 * seed`: every random stream of a run has its own seed."""


@dataclass(frozen=True)
class Protocol:
    """One benchmark configuration (frozen; a cached run is reused only under the same one).

    Attributes:
        model: `"linear"` or `"nonlinear"` (one hidden layer of 200 LeakyReLU units).
        evaluations: loss evaluations per example each estimator may spend (its budget).
        checkpoints: fractions of the budget where the run is measured (0 included).
        batch_size: training minibatch (50).
        learning_rate: Adam's step size for every parameter (1e-3).
        num_latents: latent bits (200).
        train_examples: fixed training images for the training ELBO.
        train_samples: samples per image for the training ELBO.
        test_examples: fixed test images for the multi-sample bound.
        test_samples: samples of the bound (100).
        variance_draws: draws per estimator of each variance measurement.
        group_size: draws per batch-means group (the intervals).
        relax_warmup: control-variate updates of RELAX at the paired checkpoints.
    """

    model: str = "linear"
    evaluations: int = 20_000
    checkpoints: tuple[float, ...] = (0.0, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0)
    batch_size: int = 50
    learning_rate: float = 1e-3
    num_latents: int = 200
    train_examples: int = 1000
    train_samples: int = 10
    test_examples: int = 1000
    test_samples: int = 100
    variance_draws: int = 200
    group_size: int = 10
    relax_warmup: int = 100

    def checkpoint_evaluations(self) -> list[int]:
        """The checkpoints in loss evaluations per example."""
        return sorted({round(f * self.evaluations) for f in self.checkpoints})


QUICK = Protocol(evaluations=24, checkpoints=(0.0, 0.5, 1.0), num_latents=200,
                 train_examples=40, train_samples=2, test_examples=40, test_samples=10,
                 variance_draws=8, group_size=4, relax_warmup=2)


@dataclass(frozen=True)
class Data:
    """Training images (probabilities), the fixed evaluation subsets and the variance batch.

    Attributes:
        train: a `N x 784` tensor of pixel intensities in `[0, 1)`.
        train_subset: `train_examples x 784` binary images for the training ELBO.
        test_subset: `test_examples x 784` binary test images.
        variance_batch: a `batch_size x 784` binary training minibatch.
        mean: the mean training image, a `784` tensor.
    """

    train: torch.Tensor
    train_subset: torch.Tensor
    test_subset: torch.Tensor
    variance_batch: torch.Tensor
    mean: torch.Tensor


def load_data(protocol: Protocol, seed: int) -> Data:
    """MNIST (50k train / 10k test), with the subsets drawn and binarised once per seed."""
    train, _ = mnist("train").tensors()
    test, _ = mnist("test").tensors()
    generator = torch.Generator().manual_seed(1000 * seed + SEED_STREAMS["subsets"])

    def binary(images: torch.Tensor, count: int) -> torch.Tensor:
        index = torch.randperm(images.shape[0], generator=generator)[:count]
        chosen = images[index]
        return (torch.rand(chosen.shape, generator=generator) < chosen).float()

    return Data(train, binary(train, protocol.train_examples),
                binary(test, protocol.test_examples), binary(train, protocol.batch_size),
                train.mean(0))


def build_model(protocol: Protocol, data: Data, seed: int) -> BinaryVAE:
    config = BinaryVAEConfig(num_inputs=data.train.shape[1], num_latents=protocol.num_latents,
                             hidden=MODELS[protocol.model])
    generator = torch.Generator().manual_seed(1000 * seed + SEED_STREAMS["init"])
    return BinaryVAE(config, data.mean, generator)


def measure_variance(vae: BinaryVAE, estimators: dict, states: dict, batch: torch.Tensor,
                     protocol: Protocol, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Encoder-parameter gradient variance of each estimator at `vae`'s frozen parameters on
    `batch`, draws under common random numbers (`encoder_variances`).

    Returns:
        one row per estimator (`mean_variance` with its 95% interval `mean_variance_low`/
        `_high`), and one row per other estimator with its `variance_ratio` to `REFERENCE`
        and the paired interval `ratio_low`/`_high` (empty without `REFERENCE`).
    """
    measured = encoder_variances(vae, estimators, (batch,), num_draws=protocol.variance_draws,
                                 group_size=protocol.group_size, states=states,
                                 seed=1000 * seed + SEED_STREAMS["variance"])
    rows, ratios = [], []
    for label, result in measured.items():
        low, high = result.interval(0.95)
        rows.append({"estimator": label, "numel": result.numel, "draws": result.draws,
                     "evaluations_per_draw": estimators[label].evaluations(vae),
                     "mean_variance": result.mean_variance, "mean_variance_low": low,
                     "mean_variance_high": high})
        if label != REFERENCE and REFERENCE in measured:
            ratio, low, high, groups = result.ratio_to(measured[REFERENCE])
            ratios.append({"estimator": label, "variance_ratio": ratio, "ratio_low": low,
                           "ratio_high": high, "groups": groups})
    return pd.DataFrame(rows), pd.DataFrame(ratios)


def run_folder(cache: Path, protocol: Protocol, seed: int) -> Path:
    return cache / f"{protocol.model}-e{protocol.evaluations}" / f"seed{seed}"


def train_one(label: str, protocol: Protocol, data: Data, seed: int, folder: Path) -> dict:
    """Trains one estimator for its share of the budget (`train_adam`); returns (and caches)
    its curves and variance rows; `REFERENCE`'s parameters are saved at every checkpoint
    (paired variances)."""
    name, hyper = ESTIMATORS[label]
    started = time.perf_counter()
    vae = build_model(protocol, data, seed)
    estimator = get_estimator(name, **hyper)
    cost = estimator.evaluations(vae)
    checkpoints = {c // cost: c for c in protocol.checkpoint_evaluations()}
    curves, variances = [], []

    def measure(step: int, state) -> None:
        if step not in checkpoints:
            return
        evaluations = checkpoints[step]
        train_elbo, _ = evaluate_bounds(vae, data.train_subset, protocol.train_samples,
                                        1000 * seed + SEED_STREAMS["bound"])
        test_elbo, test_bound = evaluate_bounds(vae, data.test_subset, protocol.test_samples,
                                                1000 * seed + SEED_STREAMS["bound"])
        curves.append({"estimator": label, "seed": seed, "evaluations": evaluations,
                       "step": step, "train_elbo": train_elbo, "test_elbo": test_elbo,
                       "test_bound": test_bound})
        pooled, _ = measure_variance(vae, {label: estimator}, {label: state},
                                     data.variance_batch, protocol, seed)
        variances.extend(pooled.assign(evaluations=evaluations, step=step,
                                       seed=seed).to_dict("records"))
        if label == REFERENCE:
            atomic_write_bytes(folder / f"{REFERENCE}-{evaluations}.pt",
                               _state_bytes(vae.state_dict()))

    _, train_seconds = train_adam(vae, estimator, data.train, steps=max(checkpoints),
                                  batch_size=protocol.batch_size,
                                  learning_rate=protocol.learning_rate,
                                  data_seed=1000 * seed + SEED_STREAMS["data"],
                                  noise_seed=1000 * seed + SEED_STREAMS["noise"],
                                  callback=measure)
    result = {"label": label, "seed": seed, "protocol": dataclasses.asdict(protocol),
              "estimator": name, "hyper": hyper, "evaluations_per_step": cost,
              "steps": max(checkpoints), "seconds": time.perf_counter() - started,
              "train_seconds": train_seconds, "curves": curves, "variances": variances}
    atomic_write_text(folder / f"{label}.json", json.dumps(result, indent=1) + "\n")
    return result


def _state_bytes(state: dict) -> bytes:
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


def cached(path: Path, protocol: Protocol) -> dict | None:
    """The cached result at `path` if it was made under `protocol`, else None."""
    if not path.is_file():
        return None
    result = json.loads(path.read_text())
    same = result.get("protocol") == json.loads(json.dumps(dataclasses.asdict(protocol)))
    return result if same else None


def paired_variances(protocol: Protocol, data: Data, seed: int, folder: Path) -> dict:
    """Every estimator's variance at the reference run's checkpoints, paired (cached)."""
    path = folder / "paired.json"
    result = cached(path, protocol)
    if result is not None:
        return result
    started = time.perf_counter()
    estimators = {label: get_estimator(name, **hyper)
                  for label, (name, hyper) in ESTIMATORS.items()}
    summaries, ratios = [], []
    for evaluations in protocol.checkpoint_evaluations():
        vae = build_model(protocol, data, seed)
        vae.load_state_dict(safe_load_dict(folder / f"{REFERENCE}-{evaluations}.pt",
                                           "binary VAE checkpoint"))
        batch = (data.variance_batch,)
        states = {label: warmed_up_state(est, vae, batch, seed=seed,
                                         warmup_steps=protocol.relax_warmup
                                         if label == "relax" else 0)
                  for label, est in estimators.items()}
        pooled, ratio = measure_variance(vae, estimators, states, data.variance_batch,
                                         protocol, seed)
        summaries.extend(pooled.assign(evaluations=evaluations, seed=seed).to_dict("records"))
        ratios.extend(ratio.assign(evaluations=evaluations, seed=seed).to_dict("records"))
    result = {"protocol": dataclasses.asdict(protocol), "seconds": time.perf_counter() - started,
              "summary": summaries, "ratios": ratios}
    atomic_write_text(path, json.dumps(result, indent=1) + "\n")
    return result


def curves_figure(curves: pd.DataFrame, variances: pd.DataFrame) -> plt.Figure:
    """Training ELBO, test bound and log10 encoder-gradient variance against loss evaluations,
    one line per estimator (mean over seeds, with the seeds' range when there are several)."""
    palette = estimator_palette(curves["estimator"])
    figure, axes = plt.subplots(1, 3, figsize=(14, 4))
    order = [e for e in ESTIMATORS if e in set(curves["estimator"])]
    panels = [(curves, "train_elbo", "training ELBO (nats)"),
              (curves, "test_bound", "100-sample test bound (nats)"),
              (variances.assign(log10_variance=np.log10(variances["mean_variance"])),
               "log10_variance", "log10 mean variance, encoder")]
    for axis, (frame, column, title) in zip(axes, panels, strict=True):
        shown = frame[frame["evaluations"] > 0] if column != "log10_variance" else frame
        sns.lineplot(shown, x="evaluations", y=column, hue="estimator", hue_order=order,
                     palette=palette, marker="o", errorbar=("pi", 100), ax=axis, legend=False)
        axis.set(title=title, xlabel="loss evaluations per example", ylabel="")
    for label in order:
        axes[-1].plot([], [], color=palette[label], label=label)
    legend_beside(axes[-1], title="estimator")
    return figure


def paired_figure(ratios: pd.DataFrame) -> plt.Figure:
    """Variance ratio to `REFERENCE` with its 95% paired interval at each checkpoint."""
    palette = estimator_palette(ratios["estimator"])
    figure, axis = plt.subplots(figsize=(8, 4))
    order = [e for e in ESTIMATORS if e in set(ratios["estimator"])]
    checkpoints = sorted(ratios["evaluations"].unique())
    width = 0.8 / max(len(order), 1)
    for i, label in enumerate(order):
        rows = ratios[ratios["estimator"] == label].set_index("evaluations").loc[checkpoints]
        x = np.arange(len(checkpoints)) + (i - (len(order) - 1) / 2) * width
        axis.errorbar(x, rows["variance_ratio"], yerr=[rows["variance_ratio"] - rows["ratio_low"],
                      rows["ratio_high"] - rows["variance_ratio"]], fmt="o", ms=3,
                      color=palette[label], label=label)
    axis.axhline(1.0, color="grey", lw=0.8)
    axis.set(yscale="log", xticks=range(len(checkpoints)), xticklabels=checkpoints,
             xlabel=f"loss evaluations per example of the {REFERENCE} run",
             ylabel=f"encoder variance / {REFERENCE}'s")
    legend_beside(axis, title="estimator")
    return figure


PUBLISHED_SOURCES = """\
What the papers report, as found for this study with the `search` tool (the tool returns the
opening of each stored page, so the results sections and tables of the papers could not be
read; **no published number is quoted**, and none is reconstructed from memory):

- Dong, Mnih, Tucker (2020), DisARM, arXiv 2006.10680 (abstract, ar5iv.labs.arxiv.org/html/
  2006.10680): DisARM "consistently outperforms ARM and a strong independent sample baseline
  in terms of both variance and log-likelihood" (the independent-sample baseline of its
  Figure 5 is REINFORCE LOO). Figure 5 (caption, as reproduced on liner.com/review/disarm-an-
  antithetic-gradient-estimator-for-binary-latent-variables): Bernoulli VAE trained on the
  ELBO with DisARM, RELAX, REINFORCE LOO and ARM,
  dynamically binarised MNIST and Omniglot, training ELBO, 100-sample test bound and gradient
  variance, linear and nonlinear models, mean and standard error over 5 runs. The curves'
  values cannot be read from text.
- Protocol details from the DisARM code (Google Research's `disarm` package, the binary "for
  the DisARM experiments on VAE with a single stochastic layer", read with `read_file`): batch
  50, 10^6 steps, 200 latent bits, learned prior logits starting at 0,
  linear model 784-200 / 200-784, nonlinear model with *two* hidden layers of 200 LeakyReLU
  (slope 0.3) units each side (this study's nonlinear model has one, as issue #19 asks), 100
  evaluation samples; its flag defaults are Adam 1e-4 for encoder and decoder and SGD 1e-2 for
  the prior (this study uses Adam 1e-3 everywhere, as issue #19 asks).
- Dimitriev, Zhou (2021), ARMS, arXiv 2105.14141 (abstract): ARMS "outperforms competing
  methods" (DisARM, LOORF) in training generative models.
- Kunes et al. (2022), UGC, arXiv 2208.06124 (abstract): UGC has "uniformly lower variance than
  DisARM" (proved in the paper; `reports/ugc_claim/` checks it exactly on small graphs).
- Titsias, Shi (2022), double control variates, arXiv 2111.05300: not found by the search tool
  beyond its title; no claim quoted.
"""

CLAIMS = (
    ("arm", "above", "DisARM paper: DisARM's variance below ARM's (also a theorem)"),
    ("rloo", "above", "DisARM paper: DisARM's variance below REINFORCE LOO's"),
    ("arms", "below", "ARMS paper: ARMS's variance below DisARM's (ARMS: 4 evaluations)"),
    ("ugc", "below", "UGC paper: UGC's variance uniformly below DisARM's"),
)
"""(estimator, where its variance ratio to DisARM should be against 1, the published claim)."""


ORDERINGS = (("disarm", "arm"), ("disarm", "rloo"), ("arms", "disarm"), ("ugc", "disarm"))
"""(a, b): a is claimed to train better than b: DisARM's abstract (against ARM and REINFORCE
LOO), ARMS's and UGC's abstracts (against DisARM among others)."""


def ordering_lines(means: pd.DataFrame) -> list[str]:
    """For each pair of `ORDERINGS`, at how many checkpoints after the start `a`'s test bound
    and training ELBO are above `b`'s (one line each)."""
    later = means[means["evaluations"] > 0].set_index(["estimator", "evaluations"])
    lines = []
    for a, b in ORDERINGS:
        if a not in later.index or b not in later.index:
            continue
        first, second = later.loc[a], later.loc[b]
        test = int((first["test_bound"] > second["test_bound"]).sum())
        train = int((first["train_elbo"] > second["train_elbo"]).sum())
        gap = first["test_bound"].iloc[-1] - second["test_bound"].iloc[-1]
        lines.append(f"- {a} above {b}: test bound at {test} of {len(first)} checkpoints, "
                     f"training ELBO at {train} of {len(first)}; final test-bound gap "
                     f"{gap:+.2f} nats")
    return lines


def pivot(frame: pd.DataFrame, value: str, low: str | None = None, high: str | None = None,
          digits: int = 4) -> pd.DataFrame:
    """`frame` as estimator rows and checkpoint (evaluations) columns of `value` (with its
    interval when `low` and `high` are given), estimators in `ESTIMATORS` order."""
    cells = frame.assign(cell=[
        format_interval(v, lo, hi, digits) if low else format_number(v, digits)
        for v, lo, hi in zip(frame[value], frame[low] if low else frame[value],
                             frame[high] if high else frame[value], strict=True)])
    table = cells.pivot_table(index="estimator", columns="evaluations", values="cell",
                              aggfunc="first")
    order = [e for e in ESTIMATORS if e in table.index]
    table = table.loc[order]
    table.columns = [f"{c:,}" for c in table.columns]
    return table.reset_index()


def claims_table(ratios: pd.DataFrame, costs: dict[str, int]) -> pd.DataFrame:
    """Each published variance claim against the paired ratios to DisARM at every checkpoint:
    it *holds* where the ratio's interval is on the claimed side of 1 at every checkpoint,
    *fails* where it is on the other side at some, else holds where it is resolved. `costs`:
    loss evaluations per draw by estimator (the per-evaluation ratio is scaled by them)."""
    rows = []
    for label, side, claim in CLAIMS:
        mine = ratios[ratios["estimator"] == label]
        if mine.empty:
            continue
        below = int((mine["ratio_high"] < 1).sum())
        above = int((mine["ratio_low"] > 1).sum())
        agree, disagree = (above, below) if side == "above" else (below, above)
        scale = costs[label] / costs[REFERENCE]
        verdict = ("holds" if agree == len(mine) else
                   f"fails at {disagree} of {len(mine)}" if disagree else
                   f"holds at {agree} of {len(mine)}, the rest not resolved")
        rows.append({"claim": claim, "checkpoints": len(mine),
                     "ratio_to_disarm": f"{mine['variance_ratio'].min():.3g} .. "
                                        f"{mine['variance_ratio'].max():.3g}",
                     "per_evaluation": f"{scale * mine['variance_ratio'].min():.3g} .. "
                                       f"{scale * mine['variance_ratio'].max():.3g}",
                     "on_claimed_side": agree, "on_other_side": disagree,
                     "verdict": verdict})
    return pd.DataFrame(rows)


def report(curves: pd.DataFrame, variances: pd.DataFrame, paired: pd.DataFrame,
           ratios: pd.DataFrame, runs: pd.DataFrame, header: dict, protocol: Protocol) -> str:
    checkpoints = protocol.checkpoint_evaluations()
    means = (curves.groupby(["evaluations", "estimator"], sort=False)
             .agg(steps=("step", "first"), train_elbo=("train_elbo", "mean"),
                  test_bound=("test_bound", "mean")).reset_index())
    spread = variances.assign(log10_variance=np.log10(variances["mean_variance"]),
                              log10_low=np.log10(variances["mean_variance_low"].where(
                                  variances["mean_variance_low"] > 0)),
                              log10_high=np.log10(variances["mean_variance_high"]))
    spread = (spread.groupby(["evaluations", "estimator"], sort=False)
              [["log10_variance", "log10_low", "log10_high"]].mean().reset_index())
    last = means[means["evaluations"] == checkpoints[-1]].sort_values("test_bound",
                                                                       ascending=False)
    seeds = sorted(set(curves["seed"]))
    costs = dict(zip(runs["estimator"], runs["evaluations_per_step"], strict=False))
    lines = [
        f"# Binary VAE benchmark ({protocol.model}, {protocol.num_latents} latent bits)",
        "",
        f"- command: `{header['command']}`",
        f"- git commit: `{header['commit']}`",
        f"- compute: {format_duration(header['compute_seconds'])}, the sum over the cached runs "
        "(each run's training, evaluation and variance measurement) and the paired "
        f"measurement; this report call took {format_duration(header['report_seconds'])} "
        "(the paired measurement included when it ran in this call)",
        f"- seeds: {seeds}; torch threads: {header['threads']}",
        f"- run length: {protocol.evaluations:,} loss evaluations per example per estimator "
        f"(= {protocol.evaluations // 2:,} steps of a 2-evaluation estimator such as DisARM; "
        f"the full protocol is 10^6 steps: this is its first "
        f"{protocol.evaluations / 2 / 1e6:.2%})",
        "",
        "## Protocol",
        "",
        "Dynamically binarised MNIST (50,000 training images, each minibatch re-sampled as "
        f"`x ~ Bernoulli(pixel)`), batch {protocol.batch_size}, Adam lr "
        f"{protocol.learning_rate:g} on every parameter (encoder, decoder, prior logits), "
        "encoder input centred by the mean training image and decoder output bias started at "
        "its logit. Loss: the negative single-sample ELBO; the encoder gets only the "
        "estimator's gradient (`log q`'s direct term, of mean zero, is dropped). Equal "
        "budgets: an estimator costing `c` loss evaluations per draw takes "
        f"`{protocol.evaluations:,} / c` steps (runs table). Measurements at "
        f"{', '.join(f'{c:,}' for c in checkpoints)} evaluations: training ELBO on "
        f"{protocol.train_examples:,} fixed training images ({protocol.train_samples}-sample "
        f"mean), {protocol.test_samples}-sample bound on {protocol.test_examples:,} fixed test "
        "images (a subset of the 10,000, to fit the machine; binarised once), and the variance "
        "of the encoder-parameter gradient (of the batch-mean loss) at the checkpoint's frozen "
        f"parameters on a fixed minibatch of {protocol.batch_size}: mean per-coordinate "
        f"variance from {protocol.variance_draws} draws, 95% t interval over batch-means "
        f"groups of {protocol.group_size}. `arms` uses 4 samples (with 2 it is DisARM draw by "
        "draw); `st` and `st-gumbel` are biased.",
        "",
        "## Runs",
        "",
        markdown_table(runs, digits=4),
        "",
        "## Test bound, training ELBO and log10 gradient variance at fixed budgets",
        "",
        "Columns: loss evaluations per example (an estimator's step count is that over its "
        "evaluations per step). "
        + (f"Means over seeds {seeds}." if len(seeds) > 1 else
           "One seed: how much another initialisation or data order would move each number "
           "is not measured here, so close values are not ranked reliably."),
        "",
        f"{protocol.test_samples}-sample test bound (nats, higher is better):",
        "",
        markdown_table(pivot(means, "test_bound")),
        "",
        "Training ELBO (nats):",
        "",
        markdown_table(pivot(means, "train_elbo")),
        "",
        "log10 mean per-coordinate variance of the encoder gradient on each estimator's own "
        "trajectory, with its 95% interval (the value alone where the interval reaches 0):",
        "",
        markdown_table(pivot(spread, "log10_variance", "log10_low", "log10_high", digits=3)),
        "",
        f"Ordering by test bound at {checkpoints[-1]:,} evaluations: "
        + ", ".join(f"{r.estimator} ({r.test_bound:.2f})" for r in last.itertuples()) + ".",
        "",
        "![curves](curves.png)",
        "",
        f"## Paired variances at the {REFERENCE} run's parameters",
        "",
        f"Every estimator at the same frozen parameters (the {REFERENCE} run's checkpoints) and "
        "minibatch, draws under common random numbers; ratio of the encoder gradient's total "
        f"variance to {REFERENCE}'s with its paired 95% interval (delta method over "
        f"batch-means groups). RELAX's control variate is warmed up {protocol.relax_warmup} "
        "updates at each checkpoint. A ratio is per draw; times evaluations per draw over 2 "
        "it is per loss evaluation.",
        "",
        markdown_table(pivot(ratios, "variance_ratio", "ratio_low", "ratio_high", digits=3))
        if len(ratios) else "Not measured.",
        "",
        "![paired](paired.png)",
        "",
        "## Against the published claims",
        "",
        "Training (equal loss evaluations, so an estimator costing more per draw takes fewer "
        "steps):",
        "",
        *ordering_lines(means),
        "",
        "Variance (paired ratios to DisARM above):",
        "",
        markdown_table(claims_table(ratios, costs)) if len(ratios) else "Not measured.",
        "",
        "Per draw; `per_evaluation` multiplies by the evaluations per draw over DisARM's. A "
        "claim *holds* when the paired 95% interval is on its side of 1 at every checkpoint, "
        "*fails* when it is on the other side at some checkpoint.",
        "",
        PUBLISHED_SOURCES,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="24 evaluations, tiny evaluation sets (CI smoke test, seconds)")
    parser.add_argument("--model", choices=sorted(MODELS), default="linear")
    parser.add_argument("--evaluations", type=int, default=None,
                        help="loss evaluations per example per estimator (default 20,000)")
    parser.add_argument("--seeds", default="0", help="comma-separated seeds (default 0)")
    parser.add_argument("--estimators", default=",".join(ESTIMATORS),
                        help="estimators to train in this call (the report uses every cached "
                             "one)")
    parser.add_argument("--cache", default="runs/binary_vae", help="cache of trained runs")
    parser.add_argument("--out", default=None,
                        help="report folder (default reports/binary_vae/MODEL)")
    parser.add_argument("--report-only", action="store_true",
                        help="train nothing; write the report from the cache")
    args = parser.parse_args(argv)
    out = Path(args.out or f"reports/binary_vae/{args.model}")
    started = time.perf_counter()
    protocol = dataclasses.replace(QUICK if args.quick else Protocol(), model=args.model)
    if args.evaluations is not None:
        protocol = dataclasses.replace(protocol, evaluations=args.evaluations)
    seeds = [int(s) for s in args.seeds.split(",")]
    labels = [s for s in args.estimators.split(",") if s]
    unknown = [s for s in labels if s not in ESTIMATORS]
    if unknown:
        parser.error(f"unknown estimators {unknown}; known: {', '.join(ESTIMATORS)}")
    results, paired_results = [], []
    for seed in seeds:
        data = load_data(protocol, seed)
        folder = run_folder(Path(args.cache), protocol, seed)
        folder.mkdir(parents=True, exist_ok=True)
        for label in ESTIMATORS:
            result = cached(folder / f"{label}.json", protocol)
            if result is None and label in labels and not args.report_only:
                print(f"training {label} (seed {seed}, {protocol.model}, "
                      f"{protocol.evaluations:,} evaluations)", flush=True)
                result = train_one(label, protocol, data, seed, folder)
            if result is not None:
                results.append(result)
        have = {r["label"] for r in results if r["seed"] == seed}
        if have == set(ESTIMATORS):
            paired_results.append(paired_variances(protocol, data, seed, folder))
    complete = {seed for seed in seeds
                if {r["label"] for r in results if r["seed"] == seed} == set(ESTIMATORS)}
    if not complete:
        print("not every estimator is trained yet: no report written")
        return 0
    results = [r for r in results if r["seed"] in complete]
    curves = pd.DataFrame([row for r in results for row in r["curves"]]).drop(
        columns="train_seconds", errors="ignore")  # older caches kept it per checkpoint
    variances = pd.DataFrame([row for r in results for row in r["variances"]])
    paired = pd.DataFrame([row for p in paired_results for row in p["summary"]])
    ratios = pd.DataFrame([row for p in paired_results for row in p["ratios"]])
    runs = pd.DataFrame([{"estimator": r["label"], "seed": r["seed"],
                          "hyper": json.dumps(r["hyper"]) if r["hyper"] else "",
                          "evaluations_per_step": r["evaluations_per_step"],
                          "steps": r["steps"], "train_seconds": r["train_seconds"],
                          "seconds": r["seconds"]} for r in results])
    compute = runs["seconds"].sum() + sum(p["seconds"] for p in paired_results)
    command = "python analyses/binary_vae/run.py" + (" --quick" if args.quick else "") + (
        f" --model {args.model} --evaluations {protocol.evaluations} --seeds {args.seeds}")
    report_seconds = time.perf_counter() - started
    manifest = run_manifest(seed=seeds[0], device="cpu", wall_time_s=report_seconds,
                            study="binary_vae", command=command, seeds=seeds,
                            protocol=dataclasses.asdict(protocol), compute_seconds=compute,
                            threads=torch.get_num_threads())
    header = {"command": command, "commit": manifest["git_revision"],
              "compute_seconds": compute, "report_seconds": report_seconds,
              "threads": torch.get_num_threads()}
    text = report(curves, variances, paired, ratios, runs, header, protocol)
    curves_png = figure_bytes(curves_figure(curves, variances), "png")
    paired_png = figure_bytes(paired_figure(ratios), "png") if len(ratios) else None
    plt.close("all")
    with staged_directory(out) as stage:
        curves.to_csv(stage / "curves.csv", index=False)
        variances.to_csv(stage / "variances.csv", index=False)
        paired.to_csv(stage / "paired_variances.csv", index=False)
        ratios.to_csv(stage / "paired_ratios.csv", index=False)
        runs.to_csv(stage / "runs.csv", index=False)
        (stage / "curves.png").write_bytes(curves_png)
        if paired_png is not None:
            (stage / "paired.png").write_bytes(paired_png)
        (stage / "report.md").write_text(text)
        (stage / "manifest.json").write_text(json.dumps(manifest, indent=2, default=str) + "\n")
    print(f"wrote {out / 'report.md'} (compute {format_duration(compute)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
