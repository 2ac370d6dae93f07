"""Binary Concrete (`gumbel`) and straight-through Gumbel (`st-gumbel`).

Exact references: `exact_gradient` (enumeration) for the Bernoulli gradient and
`exact_moments` (Gauss-Legendre quadrature over the two uniforms of a 2-gate example, cut at
`p`, where `st-gumbel`'s hard gate jumps, and graded on the scale `tau` around it) for the mean
and variance of the draws, with its own error estimate (a rule with half the nodes); on one
gate the quadrature is checked against `scipy.integrate.quad` in `y = (a + l) / tau`.
Expectations over one logistic variable `x = a + l` use Gauss-Legendre quadrature in `x`.
Everything runs in float64.

Note [Randomized statistical tests]: seeds are fixed. The bias test runs Holm-corrected z-tests
at family-wise level `ALPHA = 1e-3` (the false-failure rate of the unbiased negative control,
`reinforce`); for the biased estimators it first checks from the exact moments that the most
biased coordinate alone has power `1 - MISS` (`MISS = 1e-4`) at `N` draws, which bounds the
false-failure rate of "flagged". The Monte Carlo check of `E|s - b|` is a z-test at `|z| < 5`
per temperature (5 tests, false-failure below 3e-6).
"""

import math
from functools import partial

import numpy as np
import pytest
import torch
from scipy import stats as scipy_stats
from scipy.integrate import quad
from scipy.special import expit

from estimator_lab.estimators import get_estimator
from estimator_lab.estimators.base import GradientEstimator, bernoulli_gates
from estimator_lab.estimators.gumbel import concrete_gates, logistic_noise
from estimator_lab.exact import exact_gradient, exact_moments
from estimator_lab.graphs.toy import ToyGraph
from estimator_lab.montecarlo import GATE_LOGITS, Moments, run_draws, uniform_noise
from estimator_lab.stats import rounding_scale, zero_mean_test
from estimator_lab.testing import conditional_problem

ALPHA = 1e-3
MISS = 1e-4
NUM_DRAWS = 2000
TEMPERATURES = [2.0, 1.0, 0.5, 0.1, 0.01]


two_gate_problem = partial(conditional_problem, 2, 2, output_scale=8.0, inputs="uniform")
"""A float64 conditional net with 2 gates on 2 uniform examples (2 uniforms per example:
quadrature is exact)."""


def flat(tensors: dict[str, torch.Tensor], names: list[str]) -> torch.Tensor:
    return torch.cat([tensors[n].flatten() for n in names])


def converged_moments(graph, batch, estimator, tolerance: float):
    """`exact_moments` by quadrature (12 nodes per cell), its mean's error estimate (against 6
    nodes) checked to be below `tolerance`."""
    moments = exact_moments(graph, estimator, batch, quadrature_points=12, chunk_size=8192)
    assert moments.method in ("quadrature", "approximate quadrature")
    for name in moments.mean:
        assert float(moments.mean_error[name].max()) <= tolerance, name
    return moments


@pytest.mark.parametrize("name", ["gumbel", "st-gumbel"])
def test_temperature_must_be_positive(name):
    for bad in (0.0, -1.0, float("nan")):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            get_estimator(name, temperature=bad)


def test_logistic_noise_is_mirrored_so_the_hard_sample_is_the_bernoulli_gate():
    """`a + l > 0` iff `u < sigmoid(a)`, and `l` has the logistic CDF (`P(l <= x) =
    sigmoid(x)` at the noise's own quantiles: `l(u) = logit(1 - u)`)."""
    a = torch.tensor([-2.0, 0.0, 0.3, 3.0], dtype=torch.float64)
    u = uniform_noise(1, range(1), (10_000, 4), dtype=torch.float64)[0]
    noise = logistic_noise(u)
    assert torch.equal((a + noise > 0).double(), bernoulli_gates(a, u))
    torch.testing.assert_close(torch.sigmoid(noise), 1 - u, rtol=1e-12, atol=1e-15)
    assert torch.isfinite(logistic_noise(torch.tensor([0.0, 1 - 2**-53]))).all()


def test_gumbel_surrogate_evaluates_the_loss_at_the_concrete_gates():
    """The estimator's forward pass is the loss at `concrete_gates`; `st-gumbel`'s is at `b`."""
    toy = ToyGraph([-1.0, 0.0, 2.0], target=0.45)
    prepared = toy.prepare(toy.example_batch(5))
    noise = uniform_noise(0, range(1), (5, 3), dtype=torch.float64)[0]
    soft = concrete_gates(prepared.logits, noise, 0.5)
    value = get_estimator("gumbel", temperature=0.5).surrogate(toy, prepared, noise, None)
    torch.testing.assert_close(value, toy.loss(prepared, soft).mean(), rtol=1e-15, atol=0)
    hard = get_estimator("st-gumbel", temperature=0.5).surrogate(toy, prepared, noise, None)
    hard_gates = bernoulli_gates(prepared.logits, noise)
    torch.testing.assert_close(hard, toy.loss(prepared, hard_gates).mean(), rtol=1e-15, atol=0)


def mean_relaxation_gap(a: float, tau: float, points: int = 16) -> float:
    """`E|s - b| = integral sigmoid(-|x| / tau) f(x - a) dx`, `f` the logistic density, by
    Gauss-Legendre on `[-40 tau, 40 tau]` (beyond it the integrand is below `e^{-40}`) cut at
    0 into 80 pieces of width `tau` (float64)."""
    nodes, weights = np.polynomial.legendre.leggauss(points)
    edges = np.linspace(-40 * tau, 40 * tau, 81)
    lo, width = edges[:-1, None], np.diff(edges)[:, None]
    x = torch.as_tensor(lo + width * (nodes + 1) / 2).flatten()
    w = torch.as_tensor(width * weights / 2).flatten()
    density = torch.sigmoid(x - a) * torch.sigmoid(a - x)
    return float((w * torch.sigmoid(-x.abs() / tau) * density).sum())


def toy_draw_moments(a: float, t: float, tau: float, straight: bool):
    """Mean and variance of the one-gate toy's gate-logit draw, and their error bounds, by
    `scipy.integrate.quad` (adaptive Gauss-Kronrod), independently of `exact_moments`.

    With `L = (h - t)^2` the draw is `2 (h - t) s (1 - s) / tau`, `s = sigmoid(y)`, with
    `h = s` (`gumbel`) or the hard gate `1[y > 0]` (`st-gumbel`), in `y = (a + l) / tau`,
    where the kernel `s (1 - s)` has unit width whatever `tau`; `y` has density
    `tau f(tau y - a)`, `f` the logistic density. Integrated on `(-inf, 0]` and `[0, inf)`
    (the jump of `h`)."""
    def density(y):
        return tau * expit(tau * y - a) * expit(a - tau * y)

    def draw(y):
        s = expit(y)
        return 2 * ((float(y > 0) if straight else s) - t) * s * (1 - s) / tau

    values, errors = [], []
    for power in (1, 2):
        pieces = [quad(lambda y, k=power: draw(y) ** k * density(y), lo, hi, epsabs=0,
                       epsrel=1e-13, limit=200) for lo, hi in ((-np.inf, 0.0), (0.0, np.inf))]
        values.append(sum(v for v, _ in pieces))
        errors.append(sum(e for _, e in pieces))
    mean, second = values
    return mean, second - mean**2, errors[0], errors[1] + 2 * abs(mean) * errors[0]


@pytest.mark.parametrize("tau", [1.0, 0.1, 0.01, 0.001])
@pytest.mark.parametrize("name", ["gumbel", "st-gumbel"])
def test_quadrature_matches_an_independent_integral_within_its_error_estimate(name, tau):
    """One gate, `a = 0.7`, `t = 0.45`: `exact_moments` is labelled `"quadrature"` (error
    estimate within `1e-8` of the value) and is within its error estimate of the independent
    integral, up to that integral's own error bound and the rounding of the uniforms
    (`64 eps / tau` relative: `u` carries an absolute rounding `eps`, which moves the kernel's
    argument `(a + l) / tau` by about `eps / (p (1 - p) tau)`). Regression: cut only at `p`
    and `1 - p`, the kernel of width `tau p (1 - p)` in `u` fell between a few nodes, and at
    `tau = 0.01` the variance was 0.792772 for `gumbel` (here 0.776672) and 3.67855 for
    `st-gumbel` (here 3.73375), labelled exact."""
    toy = ToyGraph([0.7], target=0.45)
    moments = exact_moments(toy, get_estimator(name, temperature=tau), toy.example_batch())
    mean, variance, mean_bound, variance_bound = toy_draw_moments(0.7, 0.45, tau,
                                                                  name == "st-gumbel")
    assert moments.method == "quadrature"
    rounding = 64 * torch.finfo(torch.float64).eps / tau
    for value, error, reference, bound in (
        (moments.mean["theta"], moments.mean_error["theta"], mean, mean_bound),
        (moments.variance["theta"], moments.variance_error["theta"], variance, variance_bound),
    ):
        assert float(error) <= 1e-8 * abs(float(value))
        assert abs(float(value) - reference) <= float(error) + bound + rounding * abs(reference)


def test_quadrature_without_the_kernel_cuts_is_labelled_approximate():
    """Cut only at `p` and `1 - p` (the default breakpoints), the 24- and 12-node rules
    disagree at `tau = 0.01` and the value is labelled `"approximate quadrature"`, its error
    estimate far above the tolerance (the estimate itself is then only an order of
    magnitude: the rule does not resolve the kernel)."""

    class Uncut(type(get_estimator("gumbel"))):
        quadrature_breakpoints = GradientEstimator.quadrature_breakpoints

    toy = ToyGraph([0.7], target=0.45)
    moments = exact_moments(toy, Uncut(0.01), toy.example_batch())
    assert moments.method == "approximate quadrature"
    assert float(moments.variance_error["theta"]) > 1e-3 * float(moments.variance["theta"])


@pytest.mark.statistical
def test_relaxed_sample_approaches_the_hard_sample_as_the_temperature_falls():
    """Under common random numbers the relaxed gate `s` tends to the hard gate `b = 1[u < p]`.

    Pointwise, `|s - b| <= exp(-|a + l| / tau)` for every draw. In mean, exactly (quadrature),
    `E|s - b|` falls with `tau` and `E|s - b| / tau -> 2 log 2 p (1 - p)` (the integral of
    `sigmoid(-|y|)` is `2 log 2`); the Monte Carlo mean over 100000 uniforms matches it.
    Measured at `a = 0.3` (`2 log 2 p (1 - p) = 0.3389`): `E|s - b|` = 0.3444, 0.2472,
    0.1509, 0.03369, 0.003389 at `tau` = 2, 1, 0.5, 0.1, 0.01.
    """
    a = 0.3
    p = 1 / (1 + math.exp(-a))
    u = uniform_noise(4, range(1), (100_000,), dtype=torch.float64)[0]
    logits = torch.full_like(u, a)
    hard = bernoulli_gates(logits, u)
    exact = [mean_relaxation_gap(a, tau) for tau in TEMPERATURES]
    assert all(x > y for x, y in zip(exact, exact[1:], strict=False))
    assert abs(exact[-1] / (TEMPERATURES[-1] * 2 * math.log(2) * p * (1 - p)) - 1) < 1e-3
    for tau, expected in zip(TEMPERATURES, exact, strict=True):
        gap = (concrete_gates(logits, u, tau) - hard).abs()
        bound = torch.exp(-(a + logistic_noise(u)).abs() / tau)
        # `1 - s` near `s = 1` carries the absolute rounding of `s`, a few float64 eps.
        assert (gap <= bound + 4 * torch.finfo(torch.float64).eps).all(), tau
        z = (gap.mean() - expected) / (gap.var() / gap.numel()).sqrt()
        assert abs(float(z)) < 5, (tau, float(z))


def test_gradient_variance_grows_as_the_temperature_falls():
    """Exact (quadrature) variance of the gate-logit draws on the 2-gate net (first example),
    averaged over coordinates. Measured at `tau` = 2, 1, 0.5, 0.1: `gumbel` 2.3e-4, 2.5e-3,
    1.4e-2, 0.14; `st-gumbel` 9.2e-4, 4.5e-3, 1.9e-2, 0.17 (the relaxed gradient
    `s (1 - s) / tau` has second moment about `f_x(0) / (6 tau)` as `tau -> 0`, `f_x` the density
    of `x = a + l`). Each step down in `tau` multiplies the variance by more than 3. (The
    quadrature is least accurate at `tau = 2`, where the draw behaves like `u^{1/2}` at the
    ends: the mean's error estimate is 1.5e-6 there, labelled approximate, and below 1e-10 at
    the other temperatures.)"""
    graph, batch = two_gate_problem()
    batch = tuple(t[:1] for t in batch)  # one example: two uniforms
    for name in ("gumbel", "st-gumbel"):
        variances = []
        for tau in (2.0, 1.0, 0.5, 0.1):
            moments = converged_moments(graph, batch, get_estimator(name, temperature=tau),
                                        tolerance=1e-4)
            variances.append(float(moments.variance[GATE_LOGITS].mean()))
        ratios = np.array(variances[1:]) / np.array(variances[:-1])
        assert (ratios > 3).all(), (name, variances)


@pytest.mark.parametrize("name", ["gumbel", "st-gumbel"])
def test_exact_mean_differs_from_the_bernoulli_gradient(name):
    """Quadrature against enumeration: relative bias of the gate-logit mean at `tau = 1`,
    measured `gumbel` 0.28 and `st-gumbel` 0.25 (over all coordinates 0.23 and 0.022:
    `st-gumbel`'s pathwise parameters see Bernoulli gates and are unbiased)."""
    graph, batch = two_gate_problem()
    _, exact = exact_gradient(graph, batch, parameters=[])
    moments = converged_moments(graph, batch, get_estimator(name), tolerance=1e-12)
    bias = moments.mean[GATE_LOGITS] - exact[GATE_LOGITS]
    assert bias.norm() > 0.03 * exact[GATE_LOGITS].norm()


@pytest.mark.statistical
@pytest.mark.parametrize(("name", "biased"), [("reinforce", False), ("gumbel", True),
                                              ("st-gumbel", True)])
def test_monte_carlo_flags_the_relaxed_estimators_against_enumeration(name, biased):
    """`N = 2000` draws, every coordinate against the exact Bernoulli gradient (see the module
    note for the error rates); `reinforce` is the negative control."""
    graph, batch = two_gate_problem()
    _, exact = exact_gradient(graph, batch)
    names = list(exact)
    target = flat(exact, names)
    estimator = get_estimator(name)
    if biased:
        moments = converged_moments(graph, batch, estimator, tolerance=1e-12)
        z = ((flat(moments.mean, names) - target).abs() * NUM_DRAWS**0.5
             / flat(moments.variance, names).sqrt())
        needed = scipy_stats.norm.isf(ALPHA / (2 * target.numel())) + scipy_stats.norm.isf(MISS)
        assert float(z.nan_to_num(0).max()) >= needed
    draws = run_draws(graph, {name: estimator}, batch, num_draws=NUM_DRAWS, seed=12,
                      chunk_size=1000)[name]
    mean = torch.cat([draws[n].mean for n in names])
    m2 = torch.cat([draws[n].m2 for n in names])
    result = zero_mean_test(Moments(NUM_DRAWS, mean - target, m2), alpha=ALPHA,
                            rounding=rounding_scale(mean.numpy(), target.numpy()))
    assert (result.pvalue < ALPHA) == biased, (result.pvalue, result.statistic)
