"""Supernet checkpoints: atomic writes, validated reads, and ``load_supernet`` for later stages.

A checkpoint is one ``torch.save`` file holding plain data and tensors only, so it loads with
``weights_only=True`` (no arbitrary unpickling). Keys:

- ``format`` ("edgekit-supernet"), ``version``, ``edgekit_version``, ``torch_version``,
  ``saved_at``
- ``space``, ``num_classes``, ``in_channels``: enough to rebuild the space and its supernet
- ``settings``: the training hyper-parameters (``TrainSettings`` as a dict)
- ``data``: name, source, input shape and train size of the dataset it was trained on
- ``epoch`` (completed epochs), ``step_in_epoch`` (steps done in the epoch in progress, 0 at an
  epoch boundary), ``global_step``, ``complete`` (all requested epochs done)
- ``history``: one dict of metrics per completed epoch
- ``supernet``, ``optimizer``, ``scheduler``: state dicts; ``rng``: python / numpy / torch states
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit.errors import CheckpointError, ConfigError, OutdatedCheckpointError

if TYPE_CHECKING:
    import torch.nn as nn

    from edgekit.spaces import SearchSpace

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "edgekit-supernet"
CHECKPOINT_VERSION = 1

# Keys of a checkpoint that are large state rather than metadata.
_STATE_KEYS = ("supernet", "optimizer", "scheduler", "rng", "partial")


def save_checkpoint(payload: dict[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``payload`` to ``path`` atomically: a temporary file in the same folder, fsync'd,
    then renamed over ``path``. A crash at any moment leaves either the old or the new file."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    # Persist the rename itself; not every platform or file system supports this.
    with contextlib.suppress(OSError):
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    return path


def read_checkpoint(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Load and validate a checkpoint file; raise CheckpointError when it is missing, corrupt or
    not an edgekit supernet checkpoint."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{str(path)!r} is not a readable edgekit checkpoint ({_reason(e)})"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an edgekit supernet checkpoint")
    version = payload.get("version")
    if version != CHECKPOINT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint version {version!r}; "
            f"this edgekit reads version {CHECKPOINT_VERSION}"
        )
    missing = [
        key for key in ("space", "num_classes", "in_channels", "supernet") if key not in payload
    ]
    if missing:
        raise CheckpointError(f"{str(path)!r} is incomplete: missing {missing}")
    return payload


def _reason(error: Exception) -> str:
    """One short line out of torch.load's multi-paragraph messages."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    picked = next((line for line in lines if "Unpickler error" in line), None)
    picked = picked or (lines[0] if lines else type(error).__name__)
    return re.sub(r"\x1b\[[0-9;]*m", "", picked)[:160]


def checkpoint_meta(payload: dict[str, Any]) -> dict[str, Any]:
    """The metadata of a checkpoint: everything except the state dicts and RNG states."""
    return {key: value for key, value in payload.items() if key not in _STATE_KEYS}


def check_space(payload: dict[str, Any], space: SearchSpace, path: str | os.PathLike[str]) -> None:
    """Raise CheckpointError unless the checkpoint is for ``space`` (name, classes, channels)."""
    expected = {
        "space": space.name,
        "num_classes": space.num_classes,
        "in_channels": space.in_channels,
    }
    for key, value in expected.items():
        if payload.get(key) != value:
            raise CheckpointError(
                f"checkpoint {str(path)!r} has {key}={payload.get(key)!r}, expected {value!r}"
            )


def load_state(supernet: nn.Module, state: dict[str, Any], path: str | os.PathLike[str]) -> None:
    """``load_state_dict`` (strict) that reports a mismatch as one-line CheckpointError."""
    missing = [name for name in supernet.state_dict() if name not in state]
    if missing:
        # Typically a checkpoint saved before the space gained a knob with weights of its own.
        raise OutdatedCheckpointError(
            f"checkpoint {str(path)!r} lacks {len(missing)} weight(s) of the current supernet "
            f"(e.g. {missing[0]!r}): it was trained for an older version of the space; "
            "train the supernet again (move the file away, or give another output path)"
        )
    try:
        supernet.load_state_dict(state, strict=True)
    except (RuntimeError, KeyError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(
            f"checkpoint {str(path)!r} does not match the current supernet ({first[:160]})"
        ) from e


def load_supernet(path: str | os.PathLike[str]) -> tuple[SearchSpace, nn.Module, dict[str, Any]]:
    """Rebuild the space and its trained supernet from a checkpoint.

    Returns ``(space, supernet, meta)``: the supernet is in eval mode on the CPU, and ``meta``
    is the checkpoint without its state dicts (``space``, ``num_classes``, ``in_channels``,
    ``settings``, ``data``, ``epoch``, ``complete``, ``history`` ...).
    """
    from edgekit.spaces import get_space

    payload = read_checkpoint(path)
    try:
        space = get_space(
            payload["space"],
            num_classes=int(payload["num_classes"]),
            in_channels=int(payload["in_channels"]),
        )
    except ConfigError as e:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be used: {e}") from e
    supernet = space.build_supernet()
    load_state(supernet, payload["supernet"], path)
    supernet.eval()
    return space, supernet, checkpoint_meta(payload)
