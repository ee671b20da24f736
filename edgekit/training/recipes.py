"""Default training settings per space, tuned on the bundled digits data (2 CPU cores).

``benchmarks/supernet.py`` measures them; ``edgekit train-supernet`` uses them for every option
the user leaves out.
"""

from __future__ import annotations

from typing import Any

# Settings for spaces without a tuned recipe.
_GENERIC: dict[str, Any] = {"epochs": 20, "batch_size": 64, "lr": 2e-3}

RECIPES: dict[str, dict[str, Any]] = {
    "tiny-cnn": {"epochs": 20, "batch_size": 64, "lr": 3e-3},
    "tiny-vit": {"epochs": 30, "batch_size": 64, "lr": 2e-3},
}


def recipe(space_name: str) -> dict[str, Any]:
    """``train_supernet`` keyword arguments for ``space_name`` (a fresh dict)."""
    return dict(RECIPES.get(space_name, _GENERIC))
