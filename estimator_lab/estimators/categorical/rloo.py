"""REINFORCE leave-one-out for categorical gates: `S` samples per draw, each centred by the rest."""

from __future__ import annotations

from estimator_lab.estimators.categorical.base import CategoricalEstimator
from estimator_lab.estimators.categorical.registry import register_categorical_estimator
from estimator_lab.estimators.rloo import LeaveOneOut


@register_categorical_estimator("rloo")
class CategoricalRloo(LeaveOneOut, CategoricalEstimator):
    """`g = (1/S) sum_s (L(D_s) - mean_{s' != s} L(D_s')) (D_s - p)`, `S >= 2` samples.

    One draw reads `S x B x N x K` noise: `S` independent gate samples of the batch. The
    leave-one-out mean is independent of sample `s`, so each term is unbiased. The surrogate
    is `mean_b mean_s [L_sb + stopgrad(L_sb - loo_sb) log P(z_sb)]`; one draw costs `S` loss
    evaluations.

    Args:
        num_samples: `S >= 2`.

    References:
        Kool, van Hoof, Welling (2019), "Buy 4 REINFORCE samples, get a baseline for free!".
    """
