"""Checkpoints of a Monte Carlo run: written atomically, resumed only by the same run.

A checkpoint holds the next draw index and every accumulator's state. It is written to a
temporary file in the same folder, flushed to disk and renamed over the old one, so a run
killed at any instant (SIGKILL included) leaves either the previous checkpoint or the new one
(and at most a hidden temporary file, which the next save removes).
A fingerprint of the run (seed, estimators, tracked tensors, number of draws, and hashes of the
graph's parameters and the batch) must match for a resume; a different run refuses it.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Callable
from pathlib import Path

import torch

from estimator_lab.atomic import atomic_write_bytes
from estimator_lab.montecarlo.accumulators import MomentAccumulator
from estimator_lab.serialization import safe_load_dict

FORMAT_VERSION = 1


class CheckpointMismatch(ValueError):
    """A checkpoint from a different run (the message names what differs)."""


def tensor_digest(tensors) -> str:
    """sha256 of the bytes of a sequence of tensors (their values, shapes and dtypes)."""
    digest = hashlib.sha256()
    for tensor in tensors:
        t = tensor.detach().cpu().contiguous()
        digest.update(str((tuple(t.shape), t.dtype)).encode())
        digest.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _remove_stale_temporaries(path: Path) -> None:
    """Deletes temporary files a killed writer of `path` left behind (`.NAME.*.tmp`)."""
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        stale.unlink(missing_ok=True)


def save_checkpoint(
    path: str | Path, fingerprint: dict, next_draw: int, accumulators: dict[str, MomentAccumulator]
) -> None:
    """Writes the run's state atomically (and clears temporaries of a killed earlier write)."""
    _remove_stale_temporaries(Path(path))
    buffer = io.BytesIO()
    torch.save({
        "version": FORMAT_VERSION,
        "fingerprint": fingerprint,
        "next_draw": next_draw,
        "accumulators": {name: acc.state_dict() for name, acc in accumulators.items()},
    }, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(
    path: str | Path, fingerprint: dict, device=None,
    restore: Callable[[dict, object], object] = MomentAccumulator.from_state_dict,
) -> tuple[int, dict[str, MomentAccumulator]] | None:
    """The `(next_draw, accumulators)` of a checkpoint of this run, or None if there is none.

    Args:
        path: the checkpoint file.
        fingerprint: the run's fingerprint, which the checkpoint's must equal.
        device: where the accumulators' tensors go.
        restore: `(state, device) -> accumulator` (`fastpath.restore_accumulator` reads both
            paths' accumulators).

    Raises:
        CheckpointMismatch: if the checkpoint belongs to another run or format, or is corrupt
            (a `ValueError` with a one-line message).
    """
    path = Path(path)
    if not path.exists():
        return None
    state = safe_load_dict(path, "checkpoint")
    if state.get("version") != FORMAT_VERSION:
        raise CheckpointMismatch(f"{path}: checkpoint format {state.get('version')}, "
                                 f"expected {FORMAT_VERSION}")
    theirs = state.get("fingerprint")
    if not isinstance(theirs, dict):
        raise CheckpointMismatch(f"{path}: checkpoint has no fingerprint (corrupt)")
    different = sorted(k for k in fingerprint.keys() | theirs.keys()
                       if fingerprint.get(k) != theirs.get(k))
    if different:
        raise CheckpointMismatch(
            f"{path} belongs to another run (differs in {', '.join(different)}); "
            "delete it or choose another checkpoint path"
        )
    try:
        accumulators = {name: restore(s, device) for name, s in state["accumulators"].items()}
        return int(state["next_draw"]), accumulators
    except (KeyError, TypeError, AttributeError, ValueError) as error:
        raise CheckpointMismatch(f"{path}: checkpoint is incomplete or corrupt ({error!r})"
                                 ) from None
