"""A short training run of the paper network: the target against straight-through and REINFORCE.

Each estimator trains the paper's conditional network from the same seeded initialisation on
the same seeded MNIST training minibatches of 32 (`train_steps`, SGD at the paper's rate 0.1),
then the validation loss is measured on 1,000 validation images with seeded Bernoulli gates.
"""

from __future__ import annotations

import math

import pandas as pd
import torch

from estimator_lab.estimators.prepare import prepare_estimator
from estimator_lab.graphs import ConditionalNetwork
from estimator_lab.graphs.gates import hard_bernoulli
from estimator_lab.noise import uniform_noise
from estimator_lab.train.loop import SGDConfig, train_steps
from estimator_lab.validation.budget import Budget
from estimator_lab.validation.target import Target
from estimator_lab.validation.verdict import Verdict

COMPARED = ("st", "reinforce")
BATCH_SIZE = 32
LEARNING_RATE = 0.1
VALIDATION_EXAMPLES = 1000
TAIL = 0.2
"""The final training loss is the mean over the last `TAIL` of the steps."""


def training_check(target: Target, budget: Budget, *, seed: int, device: torch.device,
                   progress: bool = False) -> tuple[Verdict, pd.DataFrame | None]:
    """Trains the paper network with the target, `st` and `reinforce`; compares the losses.

    Returns:
        the verdict and the learning curves (`estimator`, `step`, `loss`), or None if skipped.
    """
    from tqdm.auto import tqdm

    from estimator_lab.data import MNISTError, mnist

    steps = budget.training_steps
    if steps == 0:
        return Verdict("training", "skip", "not run (budget has training_steps=0)"), None
    try:
        images, labels = mnist("train").tensors()
        valid = tuple(t[:VALIDATION_EXAMPLES].to(device) for t in mnist("valid").tensors())
    except MNISTError as error:
        return Verdict("training", "skip", f"MNIST unavailable: {error}"), None

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        generator = torch.Generator().manual_seed(seed * 1_000_003 + step)
        index = torch.randint(images.shape[0], (BATCH_SIZE,), generator=generator)
        return images[index].to(device), labels[index].to(device)

    curves, final = [], {}
    names = [target.label, *(n for n in COMPARED if n != target.label)]
    for name in tqdm(names, desc="training", disable=not progress):
        graph = ConditionalNetwork(generator=torch.Generator().manual_seed(seed)).to(device)
        if name == target.label:
            estimator, state = target.build(graph, batches(0))
        else:
            estimator, state = prepare_estimator(name, graph, batches(0))
        config = SGDConfig(steps=steps, learning_rate=LEARNING_RATE, seed=seed)
        losses = [s.loss for s in train_steps(graph, estimator, batches, config, state=state)]
        curves.append(pd.DataFrame({"estimator": name, "step": range(steps), "loss": losses}))
        final[name] = {"train_loss": sum(losses[-max(1, int(TAIL * steps)):])
                       / max(1, int(TAIL * steps)),
                       "valid_loss": _validation_loss(graph, valid, seed)}
    return _verdict(target.label, final, steps), pd.concat(curves, ignore_index=True)


@torch.no_grad()
def _validation_loss(graph: ConditionalNetwork, batch, seed: int) -> float:
    prepared = graph.prepare(batch)
    noise = uniform_noise(seed, range(1), (prepared.batch_size, graph.num_gates),
                          dtype=prepared.logits.dtype, device=prepared.logits.device)[0]
    return graph.sample(prepared, noise, hard_bernoulli).losses.mean().item()


def _verdict(label: str, final: dict[str, dict[str, float]], steps: int) -> Verdict:
    mine = final[label]
    details = {"steps": steps, "final": final}
    if not all(math.isfinite(v) for v in mine.values()):
        return Verdict("training", "fail", f"the loss became non-finite within {steps} steps "
                       f"(train {mine['train_loss']}, valid {mine['valid_loss']})", details)
    others = [n for n in COMPARED if n != label]
    ranked = sorted(final, key=lambda n: final[n]["valid_loss"])
    line = (f"after {steps} steps, validation loss {mine['valid_loss']:.4g} (rank "
            f"{ranked.index(label) + 1} of {len(ranked)}; "
            + ", ".join(f"{n} {final[n]['valid_loss']:.4g}" for n in others)
            + f"), training loss {mine['train_loss']:.4g} ("
            + ", ".join(f"{n} {final[n]['train_loss']:.4g}" for n in others) + ")")
    return Verdict("training", "info", line, details)
