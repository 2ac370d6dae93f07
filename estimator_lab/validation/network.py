"""The full paper network: the target's variance and bias against the local-expectation
reference, with straight-through and REINFORCE alongside.

On the paper's conditional network (2,706,010 parameters) at its seeded initialisation and a
seeded minibatch of 32 MNIST validation images (`graphs.paper.paper_problem`), every
estimator draws with the same noise as `local-expectation`, the unbiased low-variance reference
(`run_draws(..., paired_with=...)`). The target's bias is tested on the paired differences of
the gate-logit draws (Holm at level `alpha`), and its total variance per parameter group is
compared with the reference's, work-normalised.
"""

from __future__ import annotations

import pandas as pd
import torch

from estimator_lab.estimators.prepare import prepare_estimator
from estimator_lab.graphs.paper import PAPER_REFERENCE as REFERENCE
from estimator_lab.graphs.paper import paper_problem
from estimator_lab.montecarlo import GATE_LOGITS, run_draws
from estimator_lab.stats import summary_frame, zero_mean_test
from estimator_lab.validation.budget import NETWORK_GROUPS, Budget
from estimator_lab.validation.small_graphs import format_p
from estimator_lab.validation.target import Target
from estimator_lab.validation.verdict import Verdict

COMPARED = ("st", "reinforce")
CHUNK_SIZE = 16
COLUMNS = ["estimator", "parameter", "total_variance", "work_variance", "relative_bias",
           "cosine", "variance_over_reference"]


def network_check(target: Target, budget: Budget, *, seed: int, device: torch.device,
                  progress: bool = False) -> tuple[Verdict, pd.DataFrame]:
    """Variance and paired bias of the target on the full network.

    Returns:
        the verdict and the summary rows (`COLUMNS`) of every estimator and parameter group.
    """
    from estimator_lab.data import MNISTError

    draws = budget.network_draws
    if draws == 0:
        return Verdict("full network", "skip", "not run (budget has network_draws=0)"), None
    try:
        graph, batch = paper_problem(seed=seed, device=device)
    except MNISTError as error:
        return Verdict("full network", "skip", f"MNIST unavailable: {error}"), None
    prepared = {target.label: target.build(graph, batch, warmup_steps=budget.warmup_steps,
                                           seed=seed)}
    for name in (REFERENCE, *COMPARED):
        if name != target.label:
            prepared[name] = prepare_estimator(name, graph, batch, seed=seed,
                                               warmup_steps=budget.warmup_steps)
    estimators = {name: e for name, (e, _) in prepared.items()}
    method = "vmap" if all(e.supports_vmap for e in estimators.values()) else "loop"
    runs = run_draws(graph, estimators, batch, num_draws=draws, seed=seed,
                     chunk_size=CHUNK_SIZE, states={n: s for n, (_, s) in prepared.items()},
                     group_size=draws // NETWORK_GROUPS, paired_with=REFERENCE, method=method,
                     progress=progress)
    shapes = {GATE_LOGITS: (batch[0].shape[0], graph.num_gates)} | {
        n: p.shape for n, p in graph.named_parameters()}
    reference = {n: runs[REFERENCE][n].mean.view(shape) for n, shape in shapes.items()}
    differences = {n: runs[f"{n} - {REFERENCE}"] for n in estimators if n != REFERENCE}
    summary = summary_frame({n: runs[n] for n in estimators}, references=reference,
                            evaluations={n: e.evaluations(graph) for n, e in estimators.items()},
                            differences=differences)
    summary["variance_over_reference"] = (
        summary["total_variance"] / summary["parameter"].map(
            summary[summary["estimator"] == REFERENCE].set_index("parameter")["total_variance"]))
    logits = summary[summary["parameter"] == GATE_LOGITS].set_index("estimator")
    verdict = _verdict(target, estimators[target.label], runs, logits, budget.alpha)
    return verdict, summary[COLUMNS]


def _verdict(target, estimator, runs, logits, alpha) -> Verdict:
    """`logits`: the gate-logit summary rows, indexed by estimator."""
    label = target.label
    ratio = logits["variance_over_reference"]
    work = logits["work_variance"]
    comparison = ", ".join(f"{ratio[label] / ratio[n]:.3g}x {n}'s" for n in COMPARED
                           if n != label)
    variance = (f"gate-logit variance {ratio[label]:.3g}x {REFERENCE}'s (work-normalised "
                f"{work[label] / work[REFERENCE]:.3g}x), {comparison}")
    if label == REFERENCE:
        return Verdict("full network", "info", variance, {"variance_over_reference": 1.0})
    test = zero_mean_test(runs[f"{label} - {REFERENCE}"][GATE_LOGITS], alpha=alpha)
    details = {"holm_pvalue": test.pvalue, "max_abs_z": test.statistic,
               "flagged": int(test.rejected.sum()), "coordinates": int(test.estimate.size),
               "draws": test.count, "variance_over_reference": float(ratio[label]),
               "work_variance_over_reference": float(work[label] / work[REFERENCE])}
    bias = (f"gate-logit mean differs from {REFERENCE}'s (paired, Holm p={format_p(test.pvalue)}, "
            f"{details['flagged']} of {details['coordinates']} coordinates flagged, worst "
            f"|z|={test.statistic:.1f})")
    if not test.rejected.any():
        return Verdict("full network", "pass" if estimator.is_unbiased else "info",
                       f"no bias against {REFERENCE} (paired, {test.count:,} draws, Holm "
                       f"p={format_p(test.pvalue)}); {variance}", details)
    if estimator.distribution != "bernoulli":
        return Verdict("full network", "info",
                       f"{bias}, as expected for distribution {estimator.distribution!r}; "
                       f"{variance}", details)
    if estimator.is_unbiased:
        return Verdict("full network", "fail", f"biased (claims is_unbiased=True): {bias}; "
                       f"{variance}", details)
    return Verdict("full network", "biased", f"biased, as declared: {bias}; {variance}",
                   details)
