"""Default training settings per space, tuned on the bundled digits data (2 CPU cores).

``benchmarks/supernet.py`` measures them; ``edgekit train-supernet`` uses them for every option
the user leaves out. Why these values (measured on digits, 1 thread):

- tiny-cnn: SGD beat AdamW for the smallest subnet (AdamW's per-weight step normalisation lets
  the largest subnet's gradients dominate the shared weights); lr 0.1 was worse than 0.05; a
  6x loss weight on the smallest subnet lifted it from ~84% to ~94% at 10 epochs.
- tiny-vit: AdamW at lr 1e-3 (1.5e-3 stalled for 10 epochs); distillation ramped in over the
  first epochs (a near-uniform early teacher slowed learning ~2x); no label smoothing; no pixel
  shifts (a 1-pixel shift of an 8x8 digit stalled learning and left the 4-token smallest subnet
  at ~45%; a mild random affine warp gave the largest 97% but the smallest only 88%); the
  smallest needs many epochs (82% at 30, 93% at 60).
"""

from __future__ import annotations

from typing import Any

# Settings for spaces without a tuned recipe.
_GENERIC: dict[str, Any] = {"epochs": 20, "batch_size": 32, "lr": 1e-3}

_CNN: dict[str, Any] = {
    "epochs": 12,
    "batch_size": 32,
    "lr": 0.05,
    "optimizer": "sgd",
    "weight_decay": 5e-4,
    "num_random": 1,
    "smallest_weight": 6.0,
}

RECIPES: dict[str, dict[str, Any]] = {
    "tiny-cnn": _CNN,
    # Not tuned yet: tiny-cnn's settings (both are CNNs of conv + BatchNorm + ReLU6 units).
    "tiny-resnet": _CNN,
    "tiny-vit": {
        "epochs": 50,
        "batch_size": 32,
        "lr": 1e-3,
        "weight_decay": 0.1,
        "num_random": 1,
        "smallest_weight": 6.0,
        "distill_warmup_epochs": 8,
        "label_smoothing": 0.0,
        "grad_clip": 0.0,
        "shift": 0,
    },
}


def recipe(space_name: str) -> dict[str, Any]:
    """``train_supernet`` keyword arguments for ``space_name`` (a fresh dict)."""
    return dict(RECIPES.get(space_name, _GENERIC))
