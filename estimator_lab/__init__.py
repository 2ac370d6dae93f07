"""estimator_lab: statistics of gradient estimators through stochastic and hard-threshold neurons.

The package is organised by job: ``graphs`` (models with stochastic gates), ``estimators`` (one
family per module behind one interface), ``montecarlo`` (noise streams, streaming moments, the
draw engine), ``data`` (verified MNIST), ``plotting`` and ``reporting``.
"""

__version__ = "0.1.0"
