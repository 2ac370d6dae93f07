"""The estimator contract: every registered estimator passes; broken ones are rejected, saying why.

Note [Randomized statistical tests]: `check_estimator`'s only random check, `unbiasedness`,
fixes its seed, so these tests are deterministic; for a correct unbiased estimator the
probability over seeds that it fails is at most `alpha = 1e-3` (Holm over every coordinate;
`test_unbiasedness_false_failure_rate` measures it over 100 seeds). For the broken estimators
the default budget (2000 draws) catches biases above 0.17 per-draw standard deviations with
probability 0.999; each rejection below has a much larger margin (Holm p-values far below
`alpha`), so a different seed would reject them too.
"""

import pytest
import torch

from estimator_lab.estimators import available, get_estimator
from estimator_lab.estimators.base import (
    GradientEstimator,
    bernoulli_gates,
    bernoulli_log_prob,
    hard_bernoulli,
    trace_log_prob,
)
from estimator_lab.estimators.baselines import oracle_baseline_values
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.testing import (
    CHECKS,
    CheckResult,
    ContractReport,
    ContractViolation,
    check_estimator,
    parametrize_estimators,
)
from estimator_lab.testing.planted import FlippedSignDisARM, RebarWithoutConditionalNoisePath


def oracle_factory(graph: StochasticGraph, batch) -> GradientEstimator:
    """`reinforce-oracle` with its exact Eq. 10 values for this graph and batch."""
    return get_estimator("reinforce-oracle", values=oracle_baseline_values(graph, batch))


# Estimators whose construction needs the graph and batch: checked through a factory.
FACTORIES = {"reinforce-oracle": oracle_factory}


def failed(report: ContractReport) -> set[str]:
    return {result.name for result in report.failures}


@parametrize_estimators()
@pytest.mark.statistical
def test_registered_estimator_passes_the_contract(estimator):
    report = check_estimator(FACTORIES.get(estimator.name, estimator))
    report.raise_if_failed()
    assert [r.name for r in report] == list(CHECKS)


@pytest.mark.statistical
def test_batch_state_estimator_gets_its_state_from_each_probe_batch():
    """Built without values, `reinforce-oracle` computes its pooled Eq. 10 values in
    `init(graph, prepared)` on each probe's batch: no factory needed, every check passes (the
    unbiasedness check's false-failure rate is its `alpha`, 1e-3)."""
    report = check_estimator(get_estimator("reinforce-oracle"))
    report.raise_if_failed()
    assert [r.name for r in report] == list(CHECKS)


# --- broken estimators --------------------------------------------------------------------


class FlippedReinforce(GradientEstimator):
    """REINFORCE with the sign of the score term flipped: `g = -L(b) (b - p)`."""

    name = "flipped-reinforce"
    is_unbiased = True
    multilayer = True
    discrete_noise = True

    def surrogate(self, graph, prepared, noise, state):
        trace = graph.sample(prepared, noise, hard_bernoulli)
        losses = trace.losses
        return (losses - losses.detach() * trace_log_prob(trace)).mean()


class GateDependentBaseline(GradientEstimator):
    """REINFORCE with the baseline `c_i = L(b) b_i`, a function of the sampled gate."""

    name = "gate-dependent-baseline"
    is_unbiased = True
    multilayer = True
    discrete_noise = True

    def surrogate(self, graph, prepared, noise, state):
        trace = graph.sample(prepared, noise, hard_bernoulli)
        losses, gates = trace.losses, trace.all_gates
        baseline = losses.detach().unsqueeze(-1) * gates
        weights = losses.detach().unsqueeze(-1) - baseline
        log_prob = bernoulli_log_prob(trace.all_logits, gates)
        return (losses + (weights * log_prob).sum(-1)).mean()


class VectorSurrogate(GradientEstimator):
    """Returns the `B` per-example surrogates instead of their mean."""

    name = "vector-surrogate"
    is_unbiased = True
    multilayer = True

    def surrogate(self, graph, prepared, noise, state):
        trace = graph.sample(prepared, noise, hard_bernoulli)
        return trace.losses + trace.losses.detach() * trace_log_prob(trace)


class NanSurrogate(GradientEstimator):
    """REINFORCE plus `0 * log(-u)`: an unguarded log of the noise turns the draw into NaN."""

    name = "nan-surrogate"
    is_unbiased = True
    multilayer = True

    def surrogate(self, graph, prepared, noise, state):
        trace = graph.sample(prepared, noise, hard_bernoulli)
        score = trace.losses.detach() * trace_log_prob(trace)
        return (trace.losses + score).mean() + 0 * torch.log(-noise).sum()


class GlobalRngReader(GradientEstimator):
    """REINFORCE that ignores its noise and calls `torch.rand` (the loop hides it from vmap)."""

    name = "global-rng-reader"
    is_unbiased = True
    multilayer = True
    supports_vmap = False

    def surrogate(self, graph, prepared, noise, state):
        trace = graph.sample(prepared, torch.rand(noise.shape, dtype=noise.dtype), hard_bernoulli)
        return (trace.losses + trace.losses.detach() * trace_log_prob(trace)).mean()


class StateWriter(GradientEstimator):
    """Counts its draws by writing into the state inside `surrogate` (looped: under vmap,
    `torch.func` refuses the write as well)."""

    name = "state-writer"
    is_unbiased = True
    multilayer = True
    supports_vmap = False

    def init(self, graph):
        return {"draws": torch.zeros((), dtype=torch.float64)}

    def surrogate(self, graph, prepared, noise, state):
        state["draws"].add_(1)
        trace = graph.sample(prepared, noise, hard_bernoulli)
        return (trace.losses + trace.losses.detach() * trace_log_prob(trace)).mean()


class GradientLeaker(GradientEstimator):
    """A baseline taken from the state without detaching, so its gradient lands in the state."""

    name = "gradient-leaker"
    is_unbiased = True
    multilayer = True
    supports_vmap = False

    def init(self, graph):
        return {"baseline": torch.zeros((), dtype=next(graph.parameters()).dtype)}

    def surrogate(self, graph, prepared, noise, state):
        baseline = state["baseline"].requires_grad_()
        trace = graph.sample(prepared, noise, hard_bernoulli)
        weights = trace.losses.detach() - baseline
        return (trace.losses + weights * trace_log_prob(trace)).mean()


class IgnoresUpperLayers(GradientEstimator):
    """Claims `multilayer` but scores only the first layer's gates (upper layers get nothing)."""

    name = "ignores-upper-layers"
    is_unbiased = True
    multilayer = True
    discrete_noise = True

    def surrogate(self, graph, prepared, noise, state):
        trace = graph.sample(prepared, noise, hard_bernoulli)
        score = bernoulli_log_prob(trace.logits[0], trace.gates[0]).sum(-1)
        return (trace.losses + trace.losses.detach() * score).mean()


class SilentSingleLayer(GradientEstimator):
    """Single-layer REINFORCE that never calls `require_single_layer`: nonsense on an SBN."""

    name = "silent-single-layer"
    is_unbiased = True
    discrete_noise = True

    def noise_shape(self, graph, prepared):
        return (prepared.batch_size, graph.layer_sizes[0])

    def surrogate(self, graph, prepared, noise, state):
        gates = bernoulli_gates(prepared.logits.detach(), noise)
        losses = graph.loss(prepared, gates)
        score = bernoulli_log_prob(prepared.logits, gates).sum(-1)
        return (losses + losses.detach() * score).mean()


class Bfloat16Score(GradientEstimator):
    """REINFORCE whose float32 path rounds the score term through bfloat16 ("for speed")."""

    name = "bfloat16-score"
    is_unbiased = True
    multilayer = True
    discrete_noise = True

    def surrogate(self, graph, prepared, noise, state):
        trace = graph.sample(prepared, noise, hard_bernoulli)
        score = trace_log_prob(trace)
        if score.dtype == torch.float32:
            score = score.to(torch.bfloat16).to(torch.float32)
        return (trace.losses + trace.losses.detach() * score).mean()


class BadFlags(GradientEstimator):
    """Flags of the wrong types: a string for a bool, no distribution, zero evaluations."""

    name = "bad-flags"
    is_unbiased = "yes"
    distribution = ""

    def evaluations(self, graph=None):
        return 0

    def surrogate(self, graph, prepared, noise, state):
        raise NotImplementedError


def test_flipped_sign_reinforce_is_rejected_as_biased():
    report = check_estimator(FlippedReinforce())
    assert failed(report) == {"unbiasedness"}
    message = report["unbiasedness"].message
    assert message.startswith("claims is_unbiased=True but its mean draw differs from the exact")
    assert "on graph 'conditional-4'" in message and "gate_logits" in message
    assert report["unbiasedness"].details["holm_pvalue"] < 1e-20


def test_gate_dependent_baseline_is_rejected_as_biased():
    report = check_estimator(GateDependentBaseline(), checks=["shapes", "unbiasedness"])
    assert failed(report) == {"unbiasedness"}
    assert "differs from the exact gradient" in report["unbiasedness"].message
    assert report["unbiasedness"].details["holm_pvalue"] < 1e-20


@pytest.mark.parametrize(
    ("estimator", "reason"),
    [
        (VectorSurrogate(), "conditional B=1 G=1, conditional B=1 G=5: surrogate has shape (1,), "
                            "expected a 0-dim tensor"),
        (NanSurrogate(), "surrogate is nan, not finite"),
    ],
    ids=["vector", "nan"],
)
def test_malformed_surrogate_is_rejected_by_the_shape_check(estimator, reason):
    report = check_estimator(estimator, checks=["flags", "shapes"])
    assert failed(report) == {"shapes"}
    assert reason in report["shapes"].message


def test_global_rng_reader_is_rejected():
    report = check_estimator(GlobalRngReader(), checks=["shapes", "determinism", "no_leaks"])
    assert failed(report) == {"determinism", "no_leaks"}
    assert "the same noise gave different draws" in report["determinism"].message
    assert "reads the global RNG" in report["no_leaks"].message


def test_global_rng_reader_claiming_vmap_is_rejected_by_vmap_itself():
    class VmappedGlobalRngReader(GlobalRngReader):
        supports_vmap = True

    message = check_estimator(VmappedGlobalRngReader(), checks=["shapes"])["shapes"].message
    assert "drawing (vmap) raised RuntimeError" in message and "random" in message


def test_state_writer_is_rejected():
    report = check_estimator(StateWriter(), checks=["shapes", "determinism", "no_leaks"])
    assert failed(report) == {"no_leaks"}
    assert "state['draws'] changed during surrogate" in report["no_leaks"].message


def test_gradient_leak_into_state_is_rejected():
    report = check_estimator(GradientLeaker(), checks=["no_leaks"])
    message = report["no_leaks"].message
    assert not report.passed
    assert "state['baseline'] requires grad during surrogate" in message


def test_multilayer_claim_that_ignores_upper_layers_is_rejected():
    report = check_estimator(IgnoresUpperLayers())
    assert failed(report) == {"unbiasedness"}
    graphs = report["unbiasedness"].details["graphs"]
    assert graphs["conditional-4"]["flagged"] == 0  # correct on one layer
    assert graphs["sbn-3-2"]["flagged"] > 0
    assert "on graph 'sbn-3-2'" in report["unbiasedness"].message
    assert "layers.1.weight" in report["unbiasedness"].message


def test_single_layer_estimator_that_runs_on_a_multilayer_graph_is_rejected():
    report = check_estimator(SilentSingleLayer(), checks=["shapes"])
    assert "returned a value instead of raising ValueError" in report["shapes"].message


def test_float32_path_that_differs_is_rejected():
    report = check_estimator(Bfloat16Score(), checks=["shapes", "dtypes"])
    assert failed(report) == {"dtypes"}
    assert "float32 and torch.float64 draws" in report["dtypes"].message


def test_bad_flags_are_rejected():
    report = check_estimator(BadFlags(), checks=["flags"])
    message = report["flags"].message
    assert "is_unbiased must be a bool, got 'yes'" in message
    assert "distribution must be a non-empty str" in message
    assert "evaluations(graph) must be a positive int on conditional-5, got 0" in message


@pytest.mark.parametrize(
    "estimator", [FlippedSignDisARM(), RebarWithoutConditionalNoisePath()],
    ids=["flipped-sign-disarm", "rebar-without-conditional-noise-path"],
)
@pytest.mark.statistical
def test_planted_bugs_are_rejected_by_the_unbiasedness_check(estimator):
    report = check_estimator(estimator, checks=["unbiasedness"])
    assert failed(report) == {"unbiasedness"}
    assert report["unbiasedness"].details["holm_pvalue"] < 1e-10
    with pytest.raises(ContractViolation, match="differs from the exact gradient"):
        report.raise_if_failed()


# --- the report ---------------------------------------------------------------------------


def test_biased_estimator_gets_its_bias_measured_but_passes():
    report = check_estimator(get_estimator("st"), checks=["unbiasedness"])
    result = report["unbiasedness"]
    assert result.passed
    assert result.message.startswith("claims is_unbiased=False (information only)")
    assert "bias detected" in result.message
    assert result.details["graphs"]["conditional-4"]["relative_bias"] > 0.1


def test_other_distributions_are_reported_as_not_checked():
    class Renamed(FlippedReinforce):
        distribution = "sts"

    result = check_estimator(Renamed(), checks=["unbiasedness"])["unbiasedness"]
    assert result.passed and not result.details["checked"]
    assert result.message.startswith("not checked: no exact reference for distribution 'sts'")


def test_report_summary_and_violation_list_every_failure():
    report = ContractReport("demo", (
        CheckResult("flags", True, "fine"),
        CheckResult("shapes", False, "wrong shape"),
        CheckResult("no_leaks", False, "reads the global RNG"),
    ))
    assert report.summary().splitlines() == [
        "PASS flags: fine", "FAIL shapes: wrong shape", "FAIL no_leaks: reads the global RNG",
    ]
    with pytest.raises(ContractViolation) as raised:
        report.raise_if_failed()
    assert "2 of 3 checks failed" in str(raised.value)
    assert "- shapes: wrong shape\n- no_leaks: reads the global RNG" in str(raised.value)
    assert isinstance(raised.value, AssertionError)
    with pytest.raises(KeyError, match="no check 'dtypes'"):
        report["dtypes"]


def test_bad_arguments_are_refused():
    reinforce = get_estimator("reinforce")
    with pytest.raises(ValueError, match="unknown checks"):
        check_estimator(reinforce, checks=["speed"])
    with pytest.raises(ValueError, match="floating"):
        check_estimator(reinforce, dtypes=(torch.int64,))
    with pytest.raises(ValueError, match="alpha"):
        check_estimator(reinforce, alpha=0.0)
    with pytest.raises(TypeError, match="GradientEstimator instance or a factory"):
        check_estimator("reinforce")


def test_parametrize_estimators_covers_the_registry():
    marker = parametrize_estimators()
    assert marker.args[0] == "estimator"
    assert [e.name for e in marker.args[1]] == available()
    assert marker.kwargs["ids"] == available()


def test_device_comparison_runs_on_a_second_cpu_device():
    """The comparison machinery of the devices check, without CUDA ("cpu:0" vs "cpu")."""
    report = check_estimator(get_estimator("rloo"), checks=["devices"], devices=["cpu", "cpu:0"])
    report.raise_if_failed()
    assert report["devices"].details["agreement"]["conditional-5 torch.float64 on cpu:0"] == 0


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_draws_match_the_cpu():
    report = check_estimator(get_estimator("rloo"), checks=["devices"], devices=["cpu", "cuda"])
    report.raise_if_failed()
    assert "cuda match the CPU draws" in report["devices"].message


@pytest.mark.slow
@pytest.mark.statistical
def test_unbiasedness_false_failure_rate():
    """REINFORCE (unbiased) over 100 noise seeds: how often is it flagged?

    Holm's family-wise level bounds the rate by `alpha`, so at the default `alpha = 1e-3` the
    count of rejections is Binomial(100, q) with q <= 1e-3; we fail at 3 or more
    (P <= 1.6e-4). The Holm p-values also give the count at level 0.05 (Binomial(100, <= 0.05);
    we fail above 12, P(Binomial(100, 0.05) > 12) = 0.2%), a sharper check of calibration.
    """
    estimator = get_estimator("reinforce")
    pvalues = [
        check_estimator(estimator, checks=["unbiasedness"], seed=seed)["unbiasedness"]
        .details["holm_pvalue"]
        for seed in range(100)
    ]
    at_default = sum(p < 1e-3 for p in pvalues)
    at_005 = sum(p < 0.05 for p in pvalues)
    print(f"rejections over 100 seeds: {at_default} at alpha=1e-3, {at_005} at 0.05")
    assert at_default <= 2
    assert at_005 <= 12
