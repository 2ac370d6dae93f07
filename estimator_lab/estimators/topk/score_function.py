"""Score-function estimators for top-k gates: `reinforce` and `rloo`.

For a top-k gate with Plackett-Luce law `P(S | theta)` (`topk_log_prob`) and k-hot sample `m`,
`E[L] = sum_S P(S) L(S)` has gradient `E[L(S) d log P(S) / d theta]`, so
`L(S) d log P(S)/d theta` is an unbiased draw; `d log P(S)/d theta` is autograd through the sum
over the `k!` orderings of `S`.
"""

from __future__ import annotations

from estimator_lab.estimators.reinforce import ScoreFunction
from estimator_lab.estimators.rloo import LeaveOneOut
from estimator_lab.estimators.topk.registry import TopKEstimator, register_topk_estimator


@register_topk_estimator("reinforce")
class TopKReinforce(ScoreFunction, TopKEstimator):
    """The unbiased score-function estimator `g_theta = L(S) d log P(S | theta) / d theta`.

    The surrogate `mean_b [L_b(m) + stopgrad(L_b(m)) sum_i log P(S_bi | theta_bi)]` gives the
    logits the score draw and every parameter the loss reads directly its pathwise gradient at
    the sampled masks. `k = 1` is categorical REINFORCE (`d log P / d theta = D - p`).

    Example:
        >>> import torch
        >>> from estimator_lab.graphs.topk import TopKToy
        >>> toy = TopKToy(torch.zeros(1, 3), num_chosen=2, target=0.0)  # S = {1, 2}: L = 9/16
        >>> prepared = toy.prepare(toy.example_batch())
        >>> s = TopKReinforce().surrogate(toy, prepared, torch.tensor([[[0.1, 0.5, 0.9]]]), None)
        >>> torch.autograd.grad(s, toy.theta)[0] * 16 / 9  # d log P/d theta_0 = -1/3 - 1/2
        tensor([[-0.8333,  0.4167,  0.4167]], dtype=torch.float64)

    References:
        Williams (1992), "Simple statistical gradient-following algorithms for connectionist
        reinforcement learning"; Kool, van Hoof, Welling (2019), "Stochastic beams and where to
        find them: the Gumbel-top-k trick" (the law of Gumbel-top-k samples).
    """


@register_topk_estimator("rloo")
class TopKRloo(LeaveOneOut, TopKEstimator):
    """`g = (1/S) sum_s (L(m_s) - mean_{s' != s} L(m_s')) d log P(S_s) / d theta`, `S >= 2`.

    One draw reads `S x B x N x K` noise: `S` independent Gumbel-top-k samples of the batch.
    The leave-one-out mean is independent of sample `s`, so every term is unbiased; one draw
    costs `S` loss evaluations.

    Args:
        num_samples: `S >= 2`.

    References:
        Kool, van Hoof, Welling (2019), "Buy 4 REINFORCE samples, get a baseline for free!".
    """
