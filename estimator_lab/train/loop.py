"""A minimal training loop: any registered estimator trains any graph by SGD.

The same estimator objects serve Monte Carlo analysis and training: at each step the
estimator's surrogate, built from the noise of that step, is differentiated and the optimiser
steps; adaptive estimators then update their explicit state with the same noise.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.graphs.base import StochasticGraph
from estimator_lab.graphs.gates import hard_bernoulli
from estimator_lab.noise import uniform_noise


@dataclass(frozen=True)
class SGDConfig:
    """Plain SGD settings.

    Attributes:
        steps: optimisation steps.
        learning_rate: SGD step size.
        momentum: SGD momentum (0 for none).
        seed: seeds the gate noise of each step (step `t` uses draw index `t`).
    """

    steps: int = 300
    learning_rate: float = 0.1
    momentum: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.steps < 1 or self.learning_rate <= 0 or not 0 <= self.momentum < 1:
            raise ValueError(f"invalid SGD settings: {self}")


@dataclass(frozen=True)
class TrainStep:
    """What one step saw: its index, the mean loss of the sampled gates, and the state after."""

    step: int
    loss: float
    state: Any


def train_steps(
    graph: StochasticGraph,
    estimator: GradientEstimator,
    batches: Callable[[int], tuple[torch.Tensor, ...]],
    config: SGDConfig,
    *,
    state: Any = None,
) -> Iterator[TrainStep]:
    """Trains `graph` in place with `estimator`'s gradient, yielding after every step.

    Args:
        graph: the model, updated in place.
        estimator: any registered or plugin estimator.
        batches: `step -> batch` (e.g. a seeded minibatch sampler), on the graph's device.
        config: the optimiser settings.
        state: the estimator's initial state (default `estimator.init(graph)`).

    Yields:
        a `TrainStep` per step; `loss` is the mean per-example loss, before the step, at the
        hard Bernoulli gates `1[u < sigmoid(a)]` drawn from that step's noise (a noisy
        training criterion; estimators with another gate distribution train on their own).
    """
    state = estimator.init(graph) if state is None else state
    optimiser = torch.optim.SGD(
        graph.parameters(), lr=config.learning_rate, momentum=config.momentum
    )
    for step in range(config.steps):
        batch = batches(step)
        prepared = graph.prepare(batch)
        noise = uniform_noise(
            config.seed, range(step, step + 1), estimator.noise_shape(graph, prepared),
            dtype=prepared.logits.dtype, device=prepared.logits.device,
        )[0]
        optimiser.zero_grad(set_to_none=True)
        estimator.surrogate(graph, prepared, noise, state).backward()
        with torch.no_grad():
            gate_noise = uniform_noise(
                config.seed, range(step, step + 1), (prepared.batch_size, graph.num_gates),
                dtype=prepared.logits.dtype, device=prepared.logits.device,
            )[0]
            loss = graph.sample(prepared, gate_noise, hard_bernoulli).losses
        state = estimator.update(state, graph, graph.prepare(batch), noise)
        optimiser.step()
        yield TrainStep(step, loss.mean().item(), state)
