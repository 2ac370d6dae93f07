"""The binary VAE benchmark's protocol, shared by `analyses/binary_vae` and the validation
battery's `binary_vae_check`: `dynamic_minibatch` (seeded dynamic binarisation),
`evaluate_bounds` (ELBO and the 100-sample bound of a test set) and `train_adam` (Adam on every
parameter with any estimator's gradient). The model is `estimator_lab.graphs.binary_vae`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import torch

from estimator_lab.estimators.base import GradientEstimator
from estimator_lab.graphs.binary_vae import BinaryVAE
from estimator_lab.noise import uniform_noise


def dynamic_minibatch(images: torch.Tensor, batch_size: int, seed: int, step: int
                      ) -> torch.Tensor:
    """Step `step`'s dynamically binarised minibatch, a pure function of `(seed, step)`.

    Epochs are seeded permutations of the images (`len(images) // batch_size` steps each);
    the minibatch is binarised afresh, `x = 1[u < pixel]`, with `u` the step's draw of the
    `seed` noise stream.

    Args:
        images: a `N x D` tensor of pixel intensities in `[0, 1]`.
        batch_size: `B <= N`.
        seed: the data stream's seed.
        step: the step index.

    Returns:
        a `B x D` float tensor of zeros and ones.
    """
    n = images.shape[0]
    per_epoch = n // batch_size
    epoch, within = divmod(step, per_epoch)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 7919 * epoch))
    chosen = images[order[within * batch_size:(within + 1) * batch_size]]
    noise = uniform_noise(seed, range(step, step + 1), tuple(chosen.shape))[0]
    return (noise < chosen).to(chosen.dtype)


def evaluate_bounds(vae: BinaryVAE, images: torch.Tensor, samples: int, seed: int,
                    chunk: int = 100) -> tuple[float, float]:
    """Mean `samples`-sample ELBO and importance-weighted bound over binary `images`.

    Args:
        vae: the model.
        images: a `N x D` tensor of zeros and ones.
        samples: `K`, gate samples per image.
        seed: the gate noise of chunk `i` is draw `i` of this stream (so two models are
            evaluated on the same uniforms).
        chunk: images per forward pass (memory `K x chunk x D`).

    Returns:
        the mean over images of `BinaryVAE.bounds`' two values.
    """
    elbos, bounds = [], []
    for index, start in enumerate(range(0, images.shape[0], chunk)):
        x = images[start:start + chunk]
        noise = uniform_noise(seed, range(index, index + 1), (samples, x.shape[0], vae.num_gates),
                              dtype=x.dtype)[0]
        elbo, bound = vae.bounds(x, noise)
        elbos.append(elbo)
        bounds.append(bound)
    return float(torch.cat(elbos).mean()), float(torch.cat(bounds).mean())


def train_adam(
    vae: BinaryVAE,
    estimator: GradientEstimator,
    images: torch.Tensor,
    *,
    steps: int,
    batch_size: int = 50,
    learning_rate: float = 1e-3,
    data_seed: int = 0,
    noise_seed: int = 1,
    callback: Callable[[int, Any], None] | None = None,
) -> tuple[Any, float]:
    """Trains `vae` in place with `estimator`'s gradient and Adam on every parameter.

    Step `t` draws `dynamic_minibatch(images, batch_size, data_seed, t)` and the estimator's
    noise from draw `t` of the `noise_seed` stream; adaptive estimators update their state
    with the same noise after the gradient is taken.

    Args:
        vae: the model, updated in place.
        estimator: any registered estimator that supports the graph.
        images: a `N x D` tensor of pixel intensities.
        steps: optimisation steps.
        batch_size: minibatch size (50 in the DisARM protocol).
        learning_rate: Adam's step size (1e-3).
        data_seed: seeds the minibatches.
        noise_seed: seeds the estimator's noise.
        callback: called as `callback(t, state)` before step `t` for `t = 0 .. steps` (the
            last call sees the trained model); its time is not counted.

    Returns:
        the estimator's final state and the seconds spent in the steps.
    """
    optimiser = torch.optim.Adam(vae.parameters(), lr=learning_rate)
    state = estimator.init(vae)
    seconds = 0.0
    for step in range(steps + 1):
        if callback is not None:
            callback(step, state)
        if step == steps:
            break
        started = time.perf_counter()
        prepared = vae.prepare((dynamic_minibatch(images, batch_size, data_seed, step),))
        noise = uniform_noise(noise_seed, range(step, step + 1),
                              estimator.noise_shape(vae, prepared), dtype=images.dtype)[0]
        optimiser.zero_grad(set_to_none=True)
        estimator.surrogate(vae, prepared, noise, state).backward()
        state = estimator.update(state, vae, prepared, noise)
        optimiser.step()
        seconds += time.perf_counter() - started
    return state, seconds
