"""The paper network through training: parameter snapshots at chosen epochs, cached.

The studies that measure estimators "through training" (`optimal_baseline`, `mnist_variance`)
share one seeded training run of the paper's `ConditionalNetwork` on the 50,000 MNIST training
images: plain SGD (`train_steps`) with one estimator's gradient, minibatches of 32 in a seeded
order per epoch, no sparsity penalty. The parameters before training (epoch 0) and after each
chosen epoch are saved as `epoch-XXX.pt` state dicts in a cache folder named by a digest of the
settings, with `log.json` (training loss per epoch, validation error and gate activity at each
snapshot). A second study with the same settings reads the cached files instead of training.
Every file is written atomically, so an interrupted run leaves whole snapshots or none.
"""

from __future__ import annotations

import hashlib
import io
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
from estimator_lab.serialization import safe_load

LOG_NAME = "log.json"


@dataclass(frozen=True)
class CheckpointConfig:
    """Settings of the shared training run.

    Attributes:
        epochs: epochs after which the parameters are saved (0 = the seeded initialisation).
        estimator: the registry name of the training estimator.
        learning_rate: plain SGD step size (no momentum).
        batch_size: minibatch size (the paper's 32).
        seed: seeds the initial parameters, the minibatch order and the gate noise.
        train_size: use the first `train_size` training images (`None`: all 50,000).
        network: the network's sizes (the paper's by default).
        data_path: an explicit MNIST source, else the verified cache.
    """

    epochs: tuple[int, ...] = (0, 1, 3, 8)
    estimator: str = "st"
    learning_rate: float = 0.1
    batch_size: int = 32
    seed: int = 0
    train_size: int | None = None
    network: ConditionalConfig = field(default_factory=ConditionalConfig)
    data_path: str | None = None

    def __post_init__(self) -> None:
        if not self.epochs or min(self.epochs) < 0 or list(self.epochs) != sorted(set(self.epochs)):
            raise ValueError(f"epochs must be distinct, increasing and >= 0, got {self.epochs}")
        if self.train_size is not None and self.train_size < self.batch_size:
            raise ValueError(f"train_size must hold at least one minibatch of "
                             f"{self.batch_size}, got {self.train_size}")

    def digest(self) -> str:
        """A short digest of the settings: the name of the cache folder."""
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Checkpoints:
    """The snapshots of a training run.

    Attributes:
        folder: the cache folder.
        files: epoch -> its `epoch-XXX.pt` state dict.
        log: one dict per snapshot epoch: `epoch`, `train_loss` (mean criterion over that
            epoch's steps at the sampled gates, NaN for epoch 0), `valid_error` (percent, gates
            sampled from seeded noise), `gate_activity` (mean `sigmoid(a)` on the validation
            images), `seconds` (training time so far).
        trained: whether this call trained (False: read from the cache).
    """

    folder: Path
    files: dict[int, Path]
    log: list[dict]
    trained: bool


def checkpoint_folder(config: CheckpointConfig, cache_dir: str | Path | None = None) -> Path:
    """`cache_dir` (default: the MNIST cache folder) / `checkpoints` / `ESTIMATOR-DIGEST`."""
    from estimator_lab.data import default_cache_dir

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "checkpoints" / f"{config.estimator}-{config.digest()}"


def training_checkpoints(
    config: CheckpointConfig, *, cache_dir: str | Path | None = None, progress: bool = False
) -> Checkpoints:
    """The snapshots of `config`'s training run, trained now unless all are cached.

    Args:
        config: the run's settings.
        cache_dir: where the `checkpoints` folder lives (default: the MNIST cache folder).
        progress: show a progress bar over the training steps.

    Returns:
        the `Checkpoints`.
    """
    folder = checkpoint_folder(config, cache_dir)
    files = {epoch: folder / f"epoch-{epoch:03d}.pt" for epoch in config.epochs}
    log_file = folder / LOG_NAME
    if log_file.exists() and all(f.exists() for f in files.values()):
        return Checkpoints(folder, files, json.loads(log_file.read_text())["log"], False)
    log = _train(config, files, progress)
    from estimator_lab.reporting import atomic_write_text

    atomic_write_text(log_file, json.dumps({"config": asdict(config), "log": log}, indent=1,
                                           default=str))
    return Checkpoints(folder, files, log, True)


def load_network(config: CheckpointConfig, file: str | Path) -> ConditionalNetwork:
    """A `ConditionalNetwork` of `config.network`'s sizes with the parameters of `file`."""
    graph = ConditionalNetwork(config.network)
    graph.load_state_dict(safe_load(file, what="parameter snapshot"))
    return graph


def _train(config: CheckpointConfig, files: dict[int, Path], progress: bool) -> list[dict]:
    from tqdm.auto import tqdm

    from estimator_lab.data import mnist
    from estimator_lab.estimators import get_estimator
    from estimator_lab.noise import draw_seed
    from estimator_lab.reporting import atomic_write_bytes
    from estimator_lab.train.loop import SGDConfig, train_steps

    images, labels = mnist("train", path=config.data_path).tensors()
    if config.train_size is not None:
        images, labels = images[: config.train_size], labels[: config.train_size]
    valid = mnist("valid", path=config.data_path).tensors()
    per_epoch = images.shape[0] // config.batch_size
    last = max(config.epochs)
    graph = ConditionalNetwork(config.network, torch.Generator().manual_seed(config.seed))
    orders: dict[int, torch.Tensor] = {}

    def batches(step: int) -> tuple[torch.Tensor, torch.Tensor]:
        epoch, offset = divmod(step, per_epoch)
        if epoch not in orders:
            orders.clear()
            generator = torch.Generator().manual_seed(draw_seed(config.seed, epoch))
            orders[epoch] = torch.randperm(images.shape[0], generator=generator)
        index = orders[epoch][offset * config.batch_size: (offset + 1) * config.batch_size]
        return images[index], labels[index]

    def snapshot(epoch: int, losses: list[float], seconds: float) -> dict:
        buffer = io.BytesIO()
        torch.save(graph.state_dict(), buffer)
        atomic_write_bytes(files[epoch], buffer.getvalue())
        return {"epoch": epoch, "train_loss": sum(losses) / len(losses) if losses else float("nan"),
                **_validation(graph, valid, config.seed), "seconds": round(seconds, 2)}

    log = [snapshot(0, [], 0.0)] if 0 in files else []
    if last == 0:
        return log
    estimator = get_estimator(config.estimator)
    sgd = SGDConfig(steps=per_epoch * last, learning_rate=config.learning_rate,
                    seed=config.seed)
    started, losses = time.perf_counter(), []
    for step in tqdm(train_steps(graph, estimator, batches, sgd), total=sgd.steps,
                     disable=not progress, desc="training", unit="step"):
        losses.append(step.loss)
        epoch, offset = divmod(step.step + 1, per_epoch)
        if offset == 0:
            if epoch in files:
                log.append(snapshot(epoch, losses, time.perf_counter() - started))
            losses = []
    return log


@torch.no_grad()
def _validation(graph: ConditionalNetwork, valid: tuple[torch.Tensor, torch.Tensor],
                seed: int) -> dict:
    """Validation error (percent) at gates sampled from seeded noise, and mean gate activity."""
    from estimator_lab.graphs.gates import bernoulli_gates
    from estimator_lab.noise import uniform_noise

    prepared = graph.prepare(valid)
    noise = uniform_noise(seed, range(1), tuple(prepared.logits.shape))[0]
    gates = bernoulli_gates(prepared.logits, noise)
    scores = graph.output_logits(prepared, gates)
    error = (scores.argmax(-1) != valid[1]).double().mean().item()
    return {"valid_error": round(100 * error, 3),
            "gate_activity": torch.sigmoid(prepared.logits).mean().item()}
