"""The seven gater configurations of the paper's conditional-computation experiment (section 5).

Each configuration says how the gates `h` are computed from the gater logits `a` while training
(and which gradient reaches `a`), which sparsity criterion is added, the optimiser settings, and
how the deterministic test-time gates are formed. The paper leaves several details open; each
choice below is stated where it is made and tested in `tests/train/test_gaters.py`:

- Noise is a pure function of uniforms `u` (`uniform_noise(seed, step)`), so a resumed run
  replays the same noise. Gaussian noise is `-sigma ndtri(u)`; Beta noise is the Beta quantile
  function of `u`, tabulated once (`BetaNoise`).
- Beta noise for STS (Appendix A.2): `x ~ Beta(alpha, beta)` with `beta = 40.1` and `alpha` set so
  the mode `(alpha - 1) / (alpha + beta - 2)` is the sparsity target `s = 0.1`; the samples are
  scaled by `c = logit(s) / s` so that `sigmoid(c * mode) = s` (`c < 0`: the noise shifts the
  logit down by about `logit(0.1) = -2.2`). It is added to the logit of the stochastic half only,
  `h = sqrt(sigmoid(a)) * 1[u < sqrt(sigmoid(a + c x))]`; at test time the mean replaces it, a
  constant shift of the logit that the tuned threshold absorbs.
- KL sparsity (Eq. 14) for sigmoid gaters, on `p_i`, the minibatch mean of `sigmoid(a_i)`,
  weighted by `kl_weight` (summed over units, added to the mean cross-entropy). The paper
  leaves the weight to cross-validation: 0.1 for STS; 0.03 for straight-through, the lowest
  validation error of 0.01, 0.03, 0.1 and 0.3 in full-length runs at seed 0; 0.01 for the SBN,
  lower validation error than 0.1 in full-length runs at seed 0. On a minibatch of 32, the
  mean of a decisive gate (on for 10 % of the inputs) strays from the target from batch to
  batch and Eq. 14 is convex, so in expectation it charges decisiveness (an excess of 0.018
  per unit for sigmoids at 0.01 / 0.99: 3.6 over 2000 gates at weight 0.1, against a
  cross-entropy below 0.1; `analyses/paper_table/kl_decisiveness.py`). The SBN's gater, whose
  data signal comes only from REINFORCE, grew less decisive as it trained at weight 0.1.
- L1 sparsity (Eq. 15) for rectifier gaters on the minibatch mean of the gate outputs `h`, with
  the weight `lambda` multiplied by `l1_rate` after a step whose fraction of non-zero gates
  exceeds `s + 0.01` and divided by it below `s - 0.01`.
- Test time: gates are deterministic and a unit is on iff `a > threshold`, the threshold being
  the `1 - s` quantile of the validation logits (so 10 % of the (example, unit) pairs are on);
  an on unit's value is the deterministic counterpart (`1` for binary gates, `sqrt(sigmoid(a))`
  for STS, `max(0, a)` for the rectifier, and for the noisy rectifier its mean over the noise,
  `E[max(0, a + z)]`, in the spirit of dropout's test-time averaging; `a` itself would be
  negative for on units when the threshold is below 0). The sigmoid baselines have no sparsity
  and keep `sigmoid(a)`.
- Momentum (STS only, as the paper) is 0.5; the SBN gater's learning rate is 0.001 (its gater
  parameters: `gater_hidden` and `gater_out`). A max-norm bounds the norm of every unit's
  incoming weight vector after each step: 2, which the paper found "works best in most cases",
  and 4 for straight-through and the SBN (below).
- Initialisation (the paper gives none): PyTorch's default `nn.Linear` initialisation (uniform
  in `±1/sqrt(fan_in)`, incoming weight norms near 0.58), except for straight-through and the
  SBN, whose units' incoming weights start at the max-norm bound (`init_norm`). With the
  default, the KL criterion pulls every sigmoid gate to about 0.1 for every input before the
  gater tells inputs apart, and these two gaters stay indecisive. Started at the bound, their
  weights stay near it (after training at bound 4, every unit's incoming norm is 3.75–4.0), so
  the bound caps how far the gate logits spread over inputs; 4 beats 2, 3, 6 and 8 in pilots.
  Both chosen on validation error (`analyses/paper_table/README.md` gives the pilots and the
  full runs).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import torch

from estimator_lab.estimators.noisy_rectifier import rectifier_noise

KINDS = ("noisy-rectifier", "st", "sts", "sbn", "rectifier", "sigmoid-noise", "sigmoid")
SIGMOID_KINDS = ("st", "sts", "sbn", "sigmoid-noise", "sigmoid")
RECTIFIER_KINDS = ("noisy-rectifier", "rectifier")


@dataclass(frozen=True)
class GaterConfig:
    """One configuration of the paper's table.

    Attributes:
        name: the configuration's name (the key of `PAPER_GATERS`).
        kind: one of `KINDS`: how gates are computed and differentiated while training.
        label: the row label of the paper's table.
        num_gates: gater outputs = expert units (2000; 200 for the sigmoid baselines).
        sparsity: `"kl"` (Eq. 14), `"l1"` (Eq. 15, adaptive weight) or `None`.
        target: the sparsity target `s`.
        kl_weight: `lambda` of Eq. 14.
        l1_initial: the initial `lambda` of Eq. 15.
        l1_rate: the factor by which Eq. 15's `lambda` moves after each step.
        noise_std: standard deviation of the Gaussian noise (noisy rectifier, sigmoid + noise).
        beta: the Beta noise's `beta` for STS (`None` for none).
        learning_rate: SGD step size of the main path (and of the gater unless `gater_lr`).
        gater_lr: the gater's step size when it differs (the SBN's 0.001).
        momentum: SGD momentum.
        max_norm: bound on each unit's incoming weight norm (`None` for none).
        init_norm: the norm every unit's incoming weight vector is rescaled to at
            initialisation (`None`: PyTorch's default uniform initialisation, norms near 0.58).
        paper: the paper's (train criterion, valid %, test %) for this row.
    """

    name: str
    kind: str
    label: str
    paper: tuple[float, float, float]
    num_gates: int = 2000
    sparsity: str | None = None
    target: float = 0.1
    kl_weight: float = 0.1
    l1_initial: float = 1e-4
    l1_rate: float = 1.02
    noise_std: float = 1.0
    beta: float | None = None
    learning_rate: float = 0.1
    gater_lr: float | None = None
    momentum: float = 0.0
    max_norm: float | None = 2.0
    init_norm: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown gater kind {self.kind!r}; choose one of {KINDS}")
        if self.sparsity not in (None, "kl", "l1"):
            raise ValueError(f"sparsity must be 'kl', 'l1' or None, got {self.sparsity!r}")
        if self.sparsity == "kl" and self.kind not in SIGMOID_KINDS:
            raise ValueError("the KL criterion (Eq. 14) needs sigmoid gates")
        if self.sparsity == "l1" and self.kind not in RECTIFIER_KINDS:
            raise ValueError("the L1 criterion (Eq. 15) is for rectifier gates")
        real = (self.target, self.kl_weight, self.l1_initial, self.l1_rate, self.noise_std,
                self.beta, self.learning_rate, self.gater_lr, self.momentum, self.max_norm,
                self.init_norm)
        if not all(math.isfinite(v) for v in real if v is not None):
            raise ValueError(f"gater settings must be finite numbers: {self}")
        if not 0 < self.target < 1 or self.learning_rate <= 0 or self.num_gates < 1:
            raise ValueError(f"invalid gater settings: {self}")
        if any((self.l1_rate <= 1, not 0 <= self.momentum < 1,
                min(self.kl_weight, self.l1_initial) < 0, self.noise_std <= 0,
                self.gater_lr is not None and self.gater_lr <= 0,
                self.beta is not None and self.beta <= 1,
                self.max_norm is not None and self.max_norm <= 0,
                self.init_norm is not None and self.init_norm <= 0)):
            raise ValueError(f"invalid gater settings: {self}")

    @property
    def thresholded(self) -> bool:
        """Whether test-time gates are thresholded to the target activity."""
        return self.sparsity is not None


PAPER_GATERS = {
    config.name: config
    for config in (
        GaterConfig("noisy-rectifier", "noisy-rectifier", "Noisy Rectifier",
                    (6.7e-4, 1.52, 1.87), sparsity="l1"),
        GaterConfig("straight-through", "st", "Straight-through", (3.3e-3, 1.42, 1.39),
                    sparsity="kl", kl_weight=0.03, max_norm=4.0, init_norm=4.0),
        GaterConfig("sts", "sts", "Smooth Times Stoch.", (4.4e-3, 1.86, 1.96), sparsity="kl",
                    beta=40.1, momentum=0.5),
        GaterConfig("sbn", "sbn", "Stoch. Binary Neuron", (9.9e-3, 1.78, 1.89), sparsity="kl",
                    kl_weight=0.01, gater_lr=0.001, max_norm=4.0, init_norm=4.0),
        GaterConfig("baseline-rectifier", "rectifier", "Baseline Rectifier",
                    (6.3e-5, 1.66, 1.60), sparsity="l1"),
        GaterConfig("baseline-sigmoid-noise", "sigmoid-noise", "Baseline Sigmoid+Noise",
                    (1.8e-3, 1.88, 1.87), num_gates=200),
        GaterConfig("baseline-sigmoid", "sigmoid", "Baseline Sigmoid", (3.2e-3, 1.97, 1.92),
                    num_gates=200),
    )
}
"""The paper's seven rows (Figure 2, right), in its order, with its figures."""


@dataclass(frozen=True)
class BetaNoise:
    """Scaled Beta noise with its mode at the sparsity target (Appendix A.2).

    `x ~ Beta(alpha, beta)`, `alpha = 1 + s (beta - 1) / (1 - s)` so that the mode is `s`, scaled
    by `scale = logit(s) / s` so that `sigmoid(scale * s) = s`. Samples come from uniforms through
    the Beta quantile function, tabulated at `table_size` points and interpolated linearly.

    Example:
        >>> noise = BetaNoise(beta=40.1, target=0.1)
        >>> round(noise.alpha, 4), round(noise.scale, 3)
        (5.3444, -21.972)
        >>> noise(torch.tensor([0.5])).shape
        torch.Size([1])
    """

    beta: float
    target: float = 0.1
    table_size: int = 1 << 14

    @property
    def alpha(self) -> float:
        """The `alpha` that puts the mode at the target."""
        return 1 + self.target * (self.beta - 1) / (1 - self.target)

    @property
    def scale(self) -> float:
        """`logit(s) / s`: the mode, scaled, is the logit of the target."""
        return math.log(self.target / (1 - self.target)) / self.target

    @property
    def mean(self) -> float:
        """The mean of the scaled noise, `scale * alpha / (alpha + beta)`."""
        return self.scale * self.alpha / (self.alpha + self.beta)

    def __call__(self, uniforms: torch.Tensor) -> torch.Tensor:
        """Scaled Beta samples, shaped like `uniforms` (values in `[0, 1)`)."""
        table = _beta_quantiles(self.alpha, self.beta, self.table_size).to(uniforms)
        position = uniforms * (self.table_size - 1)
        lower = position.floor().long().clamp(max=self.table_size - 2)
        weight = position - lower
        x = table[lower] * (1 - weight) + table[lower + 1] * weight
        return self.scale * x


@lru_cache(maxsize=8)
def _beta_quantiles(alpha: float, beta: float, size: int) -> torch.Tensor:
    from scipy.stats import beta as beta_law

    grid = torch.linspace(0, 1, size, dtype=torch.float64).numpy()
    return torch.from_numpy(beta_law.ppf(grid, alpha, beta))


NOISE_STREAMS = 2
"""Uniform streams per gate and step: the gate's Bernoulli draw and its additive noise."""


def training_gates(config: GaterConfig, logits: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
    """Gate values while training, carrying the configuration's gradient to the logits.

    The SBN's gates are plain Bernoulli draws without a pathwise gradient: its gater learns from
    the REINFORCE surrogate (see `estimator_lab.train.trainer`).

    Args:
        config: the configuration.
        logits: a `B x G` tensor of gater logits `a`.
        noise: a `NOISE_STREAMS x B x G` tensor of uniforms.

    Returns:
        a `B x G` tensor of gate values `h`.
    """
    u, v = noise[0], noise[1]
    kind = config.kind
    if kind == "noisy-rectifier":
        return torch.relu(logits + rectifier_noise(v, "gaussian", config.noise_std))
    if kind == "rectifier":
        return torch.relu(logits)
    if kind == "sigmoid":
        return torch.sigmoid(logits)
    if kind == "sigmoid-noise":
        return torch.sigmoid(logits + rectifier_noise(v, "gaussian", config.noise_std))
    if kind == "st":  # Hinton's straight-through: dL/da := dL/dh (no sigmoid derivative)
        hard = (u < torch.sigmoid(logits)).to(logits.dtype)
        return hard + logits - logits.detach()
    if kind == "sbn":
        return (u < torch.sigmoid(logits)).to(logits.dtype)
    # sts: the smooth half sqrt(sigmoid(a)) carries the gradient; the stochastic half is drawn
    # with the Beta noise on its logit.
    shifted = logits if config.beta is None else logits + BetaNoise(config.beta, config.target)(v)
    on = (u < torch.sigmoid(shifted.detach()).sqrt()).to(logits.dtype)
    return on * torch.sigmoid(logits).sqrt()


def sparsity_penalty(
    config: GaterConfig, logits: torch.Tensor, gates: torch.Tensor, l1_weight: float
) -> torch.Tensor:
    """The sparsity criterion added to the mean cross-entropy (0 without one).

    Args:
        config: the configuration.
        logits: the `B x G` gater logits.
        gates: the `B x G` training gates.
        l1_weight: the current `lambda` of Eq. 15.

    Returns:
        a scalar: `-kl_weight * sum_i (s log p_i + (1 - s) log(1 - p_i))` with `p_i` the batch
        mean of `sigmoid(a_i)` (Eq. 14), or `l1_weight * sum_i |mean_b h_bi|` (Eq. 15).
    """
    if config.sparsity == "kl":
        p = torch.sigmoid(logits).mean(0).clamp(1e-6, 1 - 1e-6)
        s = config.target
        return -config.kl_weight * (s * p.log() + (1 - s) * (1 - p).log()).sum()
    if config.sparsity == "l1":
        return l1_weight * gates.abs().mean(0).sum()
    return logits.new_zeros(())


def next_l1_weight(config: GaterConfig, l1_weight: float, activity: float) -> float:
    """Eq. 15's adaptive `lambda`: up when the non-zero fraction exceeds `s + 0.01`, down below
    `s - 0.01`, unchanged in between (and for configurations without L1)."""
    if config.sparsity != "l1":
        return l1_weight
    if activity > config.target + 0.01:
        return l1_weight * config.l1_rate
    if activity < config.target - 0.01:
        return l1_weight / config.l1_rate
    return l1_weight


def deterministic_gates(
    config: GaterConfig, logits: torch.Tensor, threshold: float
) -> torch.Tensor:
    """Deterministic test-time gates for `B x G` logits (see the module docstring)."""
    if not config.thresholded:
        return torch.sigmoid(logits)
    on = (logits > threshold).to(logits.dtype)
    if config.kind == "noisy-rectifier":
        return on * gaussian_rectifier_mean(logits, config.noise_std)
    if config.kind == "rectifier":
        return on * torch.relu(logits)
    if config.kind == "sts":
        return on * torch.sigmoid(logits).sqrt()
    return on


def gaussian_rectifier_mean(logits: torch.Tensor, sigma: float) -> torch.Tensor:
    """`E[max(0, a + z)]` for `z ~ N(0, sigma^2)`: `sigma phi(a / sigma) + a Phi(a / sigma)`.

    Example:
        >>> gaussian_rectifier_mean(torch.tensor([0.0]), 1.0)  # phi(0) = 0.3989
        tensor([0.3989])
    """
    scaled = logits / sigma
    density = torch.exp(-0.5 * scaled**2) / math.sqrt(2 * math.pi)
    return sigma * density + logits * torch.special.ndtr(scaled)


def activity_threshold(logits: torch.Tensor, target: float) -> float:
    """The `1 - target` quantile of all `N x G` logits: `a > threshold` holds for a `target`
    fraction of the (example, unit) pairs."""
    flat = logits.flatten()
    k = max(1, min(flat.numel(), round((1 - target) * flat.numel())))
    return flat.kthvalue(k).values.item()


@torch.no_grad()
def set_row_norms_(weights: list[torch.Tensor], norm: float) -> None:
    """Rescales, in place, every row (a unit's incoming weights) to the norm `norm`."""
    for weight in weights:
        weight.mul_(norm / weight.norm(dim=1, keepdim=True).clamp_min(1e-12))


@torch.no_grad()
def max_norm_(weights: list[torch.Tensor], max_norm: float) -> None:
    """Rescales, in place, every row (a unit's incoming weights) whose norm exceeds `max_norm`."""
    for weight in weights:
        norms = weight.norm(dim=1, keepdim=True)
        weight.mul_(torch.clamp(max_norm / norms.clamp_min(1e-12), max=1.0))
