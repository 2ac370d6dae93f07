"""The paper's network on MNIST (Bengio, Léonard and Courville 2013, section 5) with its minibatch.

`paper_problem` is the problem of the variance study (`estimator-lab variance --graph paper`),
the MNIST variance study and the full-network validation: the conditional network at its seeded
initialisation, or at parameters loaded from a file, on a seeded minibatch of validation images.
With 2000 gates there is no exact gradient; its reference is the mean of `PAPER_REFERENCE` draws.
"""

from __future__ import annotations

import torch

from estimator_lab.data import mnist
from estimator_lab.graphs.conditional import ConditionalNetwork
from estimator_lab.serialization import safe_load_dict

PAPER_BATCH_SIZE = 32
"""Validation images in the paper network's minibatch."""

PAPER_REFERENCE = "local-expectation"
"""The estimator whose mean draw is the paper network's reference gradient: unbiased and
low-variance, and its 2000 gate flips cost one extra `B x 2000 x 10` product."""


def paper_problem(
    *,
    seed: int = 0,
    batch_size: int = PAPER_BATCH_SIZE,
    parameters_file: str | None = None,
    data_path: str | None = None,
    device: torch.device | str = "cpu",
) -> tuple[ConditionalNetwork, tuple[torch.Tensor, torch.Tensor]]:
    """The paper network (seeded or loaded) and its seeded validation minibatch.

    `seed` seeds the initialisation and, through a generator of its own, the choice of the
    `batch_size` images (a random permutation of the 10,000 validation images, cut short).

    Args:
        seed: seeds the parameters and the minibatch.
        batch_size: validation images in the minibatch.
        parameters_file: a state dict (or a training checkpoint with one under `"model"`) to
            load instead of the seeded initialisation (`load_parameters`).
        data_path: an explicit MNIST source (default: the verified cache, `data.mnist`).
        device: where the network and the batch go.

    Returns:
        the 2,706,010-parameter `ConditionalNetwork` (float32) and its batch: `x`, a
        `batch_size x 784` float32 tensor of pixel intensities in `[0, 1]`, and `y`,
        `batch_size` int64 labels.

    Raises:
        MNISTError: when the validation split cannot be read or fetched.
        ValueError: for a parameters file that is not a state dict of the network.

    Example:
        graph, (x, y) = paper_problem(seed=0)   # x: 32 x 784 float32, y: 32 int64
    """
    graph = ConditionalNetwork(generator=torch.Generator().manual_seed(seed))
    if parameters_file is not None:
        load_parameters(graph, parameters_file)
    images, labels = mnist("valid", path=data_path).tensors()
    index = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed))
    index = index[:batch_size]
    return graph.to(device), (images[index].to(device), labels[index].to(device))


def load_parameters(graph: torch.nn.Module, path: str) -> None:
    """Loads a state dict (or a training checkpoint's `"model"`) into the paper network.

    Raises:
        ValueError: one line, for a missing, corrupt or non-state-dict file, or one whose
            names or shapes do not fit the network.
    """
    state = safe_load_dict(path, "parameters file")
    state = state.get("model", state)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor)
                                              for v in state.values()):
        raise ValueError(f"parameters file {path} is not a state dict of tensors")
    try:
        graph.load_state_dict(state)
    except RuntimeError as error:
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0] if lines else ""
        raise ValueError(f"parameters file {path} does not fit the paper network: "
                         f"{detail[:300]}") from None
