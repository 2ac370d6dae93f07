"""Training one gater configuration of the paper on MNIST: epochs, evaluation, checkpoints.

A run folder holds `config.json` (the settings, with the gater's resolved `GaterConfig`),
`log.csv` (one row per epoch: training criterion, valid and test error at the tuned test-time
threshold, gate activity), `last.pt` (everything needed to resume: parameters, optimiser,
estimator state, the L1 weight, the log, the best model so far and the resolved gater settings,
checked on resume), `best.pt` (the parameters with the lowest validation error and their
threshold) and `epoch-XXX.pt` parameter snapshots at `snapshot_epochs`. Every file is written
atomically, `last.pt` last of an epoch's files, so a crash leaves the previous epoch's files;
`train_gater` on an existing folder resumes from `last.pt`. Noise is a pure function of
`(seed, step)` and minibatch order of `(seed, epoch)`, so a resumed run continues exactly as an
uninterrupted one. Nothing is written before the settings, the data and any `last.pt` to resume
have been checked and read, so a run that fails to start leaves the folder as it was.

The `.pt` files hold only tensors and plain containers (the configuration as a dict, the
estimator state as a dict of tensors), and are read with `torch.load(weights_only=True)`
(`safe_load`): a file holding anything else is refused, not run. `last.pt` files written before
this format hold the SBN's estimator state as a `RatioState`, a frozen dataclass of tensors that
is allowed by name when reading them (and converted: the next epoch saves the new format).
"""

from __future__ import annotations

import io
import json
import math
import time
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, get_args, get_type_hints

import numpy as np
import pandas as pd
import torch

from estimator_lab.atomic import atomic_write_bytes, atomic_write_text
from estimator_lab.data import mnist
from estimator_lab.estimators.baselines import RatioState, ReinforceOptimal
from estimator_lab.graphs import ConditionalConfig, ConditionalNetwork
from estimator_lab.noise import uniform_noise
from estimator_lab.serialization import safe_load
from estimator_lab.train.gaters import (
    NOISE_STREAMS,
    PAPER_GATERS,
    GaterConfig,
    activity_threshold,
    deterministic_gates,
    max_norm_,
    next_l1_weight,
    set_row_norms_,
    sparsity_penalty,
    training_gates,
)

LOG_COLUMNS = (
    "epoch", "train_loss", "train_objective", "train_activity", "l1_weight", "threshold",
    "valid_error", "test_error", "valid_activity", "epoch_seconds",
)
"""Columns of `log.csv`; errors in percent, activity as the fraction of non-zero gates."""


OVERRIDABLE = ("target", "kl_weight", "l1_initial", "l1_rate", "noise_std", "beta",
               "learning_rate", "gater_lr", "momentum", "max_norm", "init_norm")
"""The real-valued `GaterConfig` fields a run may override (`TrainConfig.overrides`)."""

OPTIONAL = tuple(name for name, hint in get_type_hints(GaterConfig).items()
                 if name in OVERRIDABLE and type(None) in get_args(hint))
"""The overridable fields typed `... | None` in `GaterConfig` (`beta`, `gater_lr`, `max_norm`,
`init_norm`): a run may set them to `None`."""

GATER_DEFAULTS = {f.name: f.default for f in fields(GaterConfig) if f.default is not MISSING}
"""`GaterConfig`'s default settings, for run folders saved before a setting existed."""

LEGACY_STATE_TYPES = (RatioState,)
"""The classes a `last.pt` of the earlier format holds (the SBN's estimator state), allowed by
name when reading one; the current format holds none."""

STATE_KEYS = ("config", "net", "optimiser", "estimator_state", "l1_weight", "rows", "best")
"""The entries every `last.pt` holds (runs saved before `gater_settings` existed lack it)."""

MAX_SEED = 2**64 - 1
"""The largest seed (`torch.Generator.manual_seed` takes 64 bits)."""


@dataclass(frozen=True)
class TrainConfig:
    """Settings of one training run.

    Attributes:
        gater: a key of `PAPER_GATERS`.
        seed: seeds the initial parameters, the minibatch order and the noise.
        max_epochs: passes over the training set at most.
        patience: early stopping: stop after this many epochs without a better validation error.
        batch_size: minibatch size (the paper's 32).
        train_size: use the first `train_size` training images (`None`: all 50,000).
        eval_size: use the first `eval_size` validation and test images (`None`: all 10,000).
        snapshot_epochs: epochs whose parameters are saved as `epoch-XXX.pt` (0 = before
            training); the last epoch is always saved as `final.pt`.
        device: `"cpu"`, `"cuda"`, ...
        data_path: an explicit MNIST source, else the verified cache.
        overrides: `GaterConfig` fields replaced for this run (e.g. `{"kl_weight": 0.01}` for
            a cross-validation sweep, `{"max_norm": None}` to drop an `OPTIONAL` one); empty
            for the configuration as listed.
    """

    gater: str
    seed: int = 0
    max_epochs: int = 200
    patience: int = 30
    batch_size: int = 32
    train_size: int | None = None
    eval_size: int | None = None
    snapshot_epochs: tuple[int, ...] = (0, 1, 10)
    device: str = "cpu"
    data_path: str | None = None
    overrides: dict[str, float | None] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.gater not in PAPER_GATERS:
            raise KeyError(f"unknown gater {self.gater!r}; choose one of {', '.join(PAPER_GATERS)}")
        if not _is_int(self.seed) or not 0 <= self.seed <= MAX_SEED:
            raise ValueError(f"seed must be an integer in [0, 2**64 - 1], got {self.seed!r}")
        counts = {"max_epochs": self.max_epochs, "patience": self.patience,
                  "batch_size": self.batch_size, "train_size": self.train_size,
                  "eval_size": self.eval_size}
        if not all(_is_int(v) for v in counts.values() if v is not None) or not all(
                _is_int(e) and e >= 0 for e in self.snapshot_epochs):
            raise ValueError(f"{', '.join(counts)} and snapshot_epochs must be integers: {self}")
        unknown = set(self.overrides) - set(OVERRIDABLE)
        if unknown:
            raise ValueError(f"cannot override {sorted(unknown)}; choose from {OVERRIDABLE}")
        required = sorted(k for k, v in self.overrides.items() if v is None and k not in OPTIONAL)
        if required:
            raise ValueError(f"{required} cannot be none; only {OPTIONAL} can")
        if not all(isinstance(v, int | float) and not isinstance(v, bool)
                   for v in self.overrides.values() if v is not None):
            raise ValueError(f"overrides must be numbers or none, got {self.overrides}")
        _ = self.gater_config  # validates the overridden settings
        if self.max_epochs < 1 or self.patience < 1 or self.batch_size < 1:
            raise ValueError(f"max_epochs, patience and batch_size must be >= 1: {self}")
        for size in (self.train_size, self.eval_size):
            if size is not None and size < self.batch_size:
                raise ValueError(f"subset sizes must be >= batch_size: {self}")

    @property
    def gater_config(self) -> GaterConfig:
        """The listed configuration with this run's overrides applied."""
        return replace(PAPER_GATERS[self.gater], **self.overrides)

    def resumable_from(self, other: TrainConfig) -> bool:
        """Whether a run made with `other` can be continued under these settings (only the
        stopping rule and the device may change)."""
        free = {"max_epochs", "patience", "device", "data_path"}
        return all(
            getattr(self, f.name) == getattr(other, f.name)
            for f in fields(self) if f.name not in free
        )


@dataclass(frozen=True)
class TrainResult:
    """The outcome of a run: the log and the best epoch's figures."""

    log: pd.DataFrame
    best_epoch: int
    valid_error: float
    test_error: float
    threshold: float
    stopped_early: bool


def build_network(config: TrainConfig) -> ConditionalNetwork:
    """The paper network for the configuration's width, seeded initialisation (every unit's
    incoming weights rescaled to the configuration's `init_norm` when it has one)."""
    gater = config.gater_config
    sizes = ConditionalConfig(num_gates=gater.num_gates)
    net = ConditionalNetwork(sizes, torch.Generator().manual_seed(config.seed))
    if gater.init_norm is not None:
        set_row_norms_(incoming_weights(net), gater.init_norm)
    return net


def gater_parameters(net: ConditionalNetwork) -> list[torch.nn.Parameter]:
    """The gater path's parameters (`gater_hidden`, `gater_out`)."""
    return [*net.gater_hidden.parameters(), *net.gater_out.parameters()]


def build_optimiser(net: ConditionalNetwork, gater: GaterConfig) -> torch.optim.SGD:
    """SGD with the gater's own step size where the configuration has one (SBN)."""
    gater_ids = {id(p) for p in gater_parameters(net)}
    main = [p for p in net.parameters() if id(p) not in gater_ids]
    groups = [
        {"params": gater_parameters(net), "lr": gater.gater_lr or gater.learning_rate},
        {"params": main, "lr": gater.learning_rate},
    ]
    return torch.optim.SGD(groups, lr=gater.learning_rate, momentum=gater.momentum)


def incoming_weights(net: ConditionalNetwork) -> list[torch.Tensor]:
    """The weight matrices whose rows (a unit's incoming weights) max-norm bounds."""
    return [net.gater_hidden.weight, net.gater_out.weight, net.expert.weight, net.output.weight]


@torch.no_grad()
def evaluate(
    net: ConditionalNetwork,
    gater: GaterConfig,
    images: torch.Tensor,
    labels: torch.Tensor,
    threshold: float,
    chunk: int = 2000,
) -> tuple[float, float]:
    """Error (%) and fraction of non-zero gates with the deterministic test-time gates.

    Args:
        images: a `N x 784` tensor; labels: `N` class labels.
        threshold: the logit threshold of the test-time gates.
    """
    wrong, active, total = 0, 0.0, 0
    for start in range(0, images.shape[0], chunk):
        prepared = net.prepare((images[start:start + chunk], labels[start:start + chunk]))
        gates = deterministic_gates(gater, prepared.logits, threshold)
        scores = net.output_logits(prepared, gates)
        wrong += (scores.argmax(-1) != prepared.features["labels"]).sum().item()
        active += (gates != 0).sum().item()
        total += prepared.logits.shape[0]
    return 100.0 * wrong / total, active / (total * gates.shape[-1])


@torch.no_grad()
def tune_threshold(net: ConditionalNetwork, gater: GaterConfig, images: torch.Tensor) -> float:
    """The test-time threshold: the `1 - target` quantile of the gater logits on `images`
    (`nan` for configurations without thresholding)."""
    if not gater.thresholded:
        return math.nan
    logits = torch.cat([net.logits((x, None)) for x in images.split(2000)])
    return activity_threshold(logits, gater.target)


def _epoch_order(seed: int, epoch: int, n: int) -> torch.Tensor:
    state = np.random.SeedSequence([seed, epoch, 0x7A1]).generate_state(1)[0]
    return torch.randperm(n, generator=torch.Generator().manual_seed(int(state)))


def _save(path: Path, obj: Any) -> None:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def _load_data(config: TrainConfig, device: torch.device):
    def split(name: str, size: int | None):
        x, y = mnist(name, path=config.data_path).tensors()
        return x[:size].to(device), y[:size].to(device)

    return (split("train", config.train_size), split("valid", config.eval_size),
            split("test", config.eval_size))


class TrainingRun:
    """The mutable state of a run between epochs (what `last.pt` holds).

    `train_epoch((images, labels), epoch)` makes one pass over `N x 784` images in minibatches
    of `config.batch_size` and returns the epoch's mean training figures; `train_gater` drives
    it, and the epoch-time benchmark (`analyses/paper_table/epoch_time.py`) times it.
    """

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        self.config = config
        self.gater = config.gater_config
        self.net = build_network(config).to(device)
        self.optimiser = build_optimiser(self.net, self.gater)
        self.estimator = ReinforceOptimal() if self.gater.kind == "sbn" else None
        self.estimator_state = self.estimator.init(self.net) if self.estimator else None
        self.l1_weight = self.gater.l1_initial
        self.rows: list[dict] = []
        self.best: dict | None = None  # epoch, valid_error, test_error, threshold, state

    def state_dict(self) -> dict:
        return {
            "config": asdict(self.config), "gater_settings": asdict(self.gater),
            "net": self.net.state_dict(),
            "optimiser": self.optimiser.state_dict(),
            "estimator_state": (None if self.estimator_state is None
                                else asdict(self.estimator_state)),
            "l1_weight": self.l1_weight, "rows": self.rows, "best": self.best,
        }

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.optimiser.load_state_dict(state["optimiser"])
        if self.estimator_state is not None:
            self.estimator_state = replace(self.estimator_state, **state["estimator_state"])
        self.l1_weight = state["l1_weight"]
        self.rows = state["rows"]
        self.best = state["best"]

    @property
    def epoch(self) -> int:
        return self.rows[-1]["epoch"] if self.rows else -1

    def train_epoch(self, data: tuple[torch.Tensor, torch.Tensor], epoch: int) -> dict:
        images, labels = data
        config, gater, net = self.config, self.gater, self.net
        steps_per_epoch = images.shape[0] // config.batch_size
        order = _epoch_order(config.seed, epoch, images.shape[0]).to(images.device)
        weights = incoming_weights(net)
        sums = {name: torch.zeros((), dtype=torch.float64, device=images.device)
                for name in ("train_loss", "train_objective", "train_activity")}
        for step in range(steps_per_epoch):
            index = order[step * config.batch_size:(step + 1) * config.batch_size]
            global_step = (epoch - 1) * steps_per_epoch + step
            prepared = net.prepare((images[index], labels[index]))
            noise = uniform_noise(
                config.seed, range(global_step, global_step + 1),
                (NOISE_STREAMS, *prepared.logits.shape), device=images.device,
            )[0]
            gates = training_gates(gater, prepared.logits, noise)
            losses = net.loss(prepared, gates)
            if self.estimator is None:
                data_term = losses.mean()
            else:  # the SBN gater learns from REINFORCE with the optimal baseline (Eq. 10)
                data_term = self.estimator.surrogate(net, prepared, noise[0], self.estimator_state)
            objective = data_term + sparsity_penalty(gater, prepared.logits, gates, self.l1_weight)
            self.optimiser.zero_grad(set_to_none=True)
            objective.backward()
            if self.estimator is not None:
                self.estimator_state = self.estimator.update(  # runs under no_grad
                    self.estimator_state, net, prepared, noise[0]
                )
            self.optimiser.step()
            if gater.max_norm is not None:
                max_norm_(weights, gater.max_norm)
            activity = (gates != 0).to(torch.float64).mean()
            if gater.sparsity == "l1":  # the only per-step read back to the host
                self.l1_weight = next_l1_weight(gater, self.l1_weight, activity.item())
            sums["train_loss"] += losses.detach().mean()
            sums["train_objective"] += objective.detach()
            sums["train_activity"] += activity
        return {name: float(value) / steps_per_epoch for name, value in sums.items()}


def train_gater(config: TrainConfig, out: str | Path, *, progress: bool = True) -> TrainResult:
    """Trains (or resumes) one configuration, writing the run folder `out` epoch by epoch.

    Args:
        config: the run's settings.
        out: the run folder; an existing run made with compatible settings is resumed.
        progress: print one line per epoch.

    Returns:
        the run's `TrainResult` (the test error is the one at the best validation epoch).

    Raises:
        ValueError: if `out` holds a run made with incompatible settings.
    """
    from estimator_lab.device import resolve_device

    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out} is a file, not a run folder")
    device = resolve_device(config.device)
    run = TrainingRun(config, device)
    if (out / "last.pt").exists():
        state = _load_last(out / "last.pt", device)
        saved = _saved_config(state)
        # runs saved before the resolved settings were stored are taken as made with them;
        # settings added since are taken at their defaults
        settings = {**GATER_DEFAULTS, **state.get("gater_settings", asdict(config.gater_config))}
        if not config.resumable_from(saved) or settings != asdict(config.gater_config):
            raise ValueError(f"{out} holds a run with other settings ({saved}, {settings}); "
                             "use another folder")
        run.load_state_dict(state)
    train, valid, test = _load_data(config, device)
    _remove_stale_temporaries(out)

    while not _finished(run):
        epoch = run.epoch + 1
        start = time.perf_counter()
        figures = (run.train_epoch(train, epoch) if epoch > 0 else
                   dict.fromkeys(("train_loss", "train_objective", "train_activity"), math.nan))
        threshold = tune_threshold(run.net, run.gater, valid[0])
        valid_error, valid_activity = evaluate(run.net, run.gater, *valid, threshold)
        test_error, _ = evaluate(run.net, run.gater, *test, threshold)
        row = {"epoch": epoch, **figures, "l1_weight": run.l1_weight, "threshold": threshold,
               "valid_error": valid_error, "test_error": test_error,
               "valid_activity": valid_activity,
               "epoch_seconds": time.perf_counter() - start}
        run.rows.append(row)
        if run.best is None or valid_error < run.best["valid_error"]:
            run.best = {"epoch": epoch, "valid_error": valid_error, "test_error": test_error,
                        "threshold": threshold,
                        "state": {k: v.detach().clone() for k, v in run.net.state_dict().items()}}
            _save(out / "best.pt", {k: run.best[k] for k in ("epoch", "threshold", "state")})
        if epoch in config.snapshot_epochs:
            _save(out / f"epoch-{epoch:03d}.pt", run.net.state_dict())
        atomic_write_text(out / "log.csv", pd.DataFrame(run.rows, columns=LOG_COLUMNS)
                          .to_csv(index=False))
        atomic_write_text(out / "config.json", json.dumps(
            {**asdict(config), "gater_settings": asdict(config.gater_config)}, indent=2,
            allow_nan=False) + "\n")
        _save(out / "last.pt", run.state_dict())
        if progress:
            print(f"{config.gater} epoch {epoch}: train loss {row['train_loss']:.4g}, "
                  f"activity {row['train_activity']:.3f}, valid {valid_error:.2f} %, "
                  f"test {test_error:.2f} % ({row['epoch_seconds']:.1f} s)", flush=True)
    _save(out / "final.pt", run.net.state_dict())
    return _result(run)


def _finished(run: TrainingRun) -> bool:
    if run.epoch >= run.config.max_epochs:
        return True
    return run.best is not None and run.epoch - run.best["epoch"] >= run.config.patience


def _result(run: TrainingRun) -> TrainResult:
    best = run.best
    return TrainResult(
        log=pd.DataFrame(run.rows, columns=LOG_COLUMNS), best_epoch=best["epoch"],
        valid_error=best["valid_error"], test_error=best["test_error"],
        threshold=best["threshold"], stopped_early=run.epoch < run.config.max_epochs,
    )


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _remove_stale_temporaries(out: Path) -> None:
    """Deletes the temporary files (`.NAME.*.tmp`) that a run killed mid-write left in `out`."""
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)


def _load_last(path: Path, device: torch.device | str) -> dict:
    """The state saved in a `last.pt` (of this format or the earlier one), read safely.

    Raises:
        ValueError: if the file is corrupt, holds anything but tensors, plain containers and
            `LEGACY_STATE_TYPES`, or lacks an entry of `STATE_KEYS`.
    """
    state = safe_load(path, what="run file", map_location=device,
                      allowed=LEGACY_STATE_TYPES)
    missing = [k for k in STATE_KEYS if k not in state] if isinstance(state, dict) else STATE_KEYS
    if missing:
        raise ValueError(f"{path} is not a run's last.pt (it lacks {', '.join(missing)})")
    if isinstance(state["estimator_state"], LEGACY_STATE_TYPES):
        state["estimator_state"] = asdict(state["estimator_state"])
    return state


def _saved_config(state: dict) -> TrainConfig:
    """The `TrainConfig` stored in a `last.pt` state (runs older than `overrides` have none)."""
    saved = state["config"]
    try:
        return TrainConfig(**{**saved, "snapshot_epochs": tuple(saved["snapshot_epochs"])})
    except (TypeError, KeyError) as error:
        raise ValueError(f"the run's saved settings are not a TrainConfig: {error}") from None


def load_run(out: str | Path) -> TrainResult:
    """The `TrainResult` of a run folder (finished or not) from its `last.pt`."""
    state = _load_last(Path(out) / "last.pt", "cpu")
    run = TrainingRun(_saved_config(state), torch.device("cpu"))
    run.load_state_dict(state)
    return _result(run)
