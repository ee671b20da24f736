"""Gradient-boosted-tree accuracy predictor over architecture vectors.

After "Accuracy Prediction with Non-neural Model for Neural Architecture Search" (Luo et al.,
2020): a GBDT (LightGBM) regressor trained on the candidates evaluated so far predicts the
inherited accuracy of new ones from their integer gene vector plus a few cheap derived features
(log MACs, log parameters, the footprint), so each generation spends supernet evaluations only on
the offspring ranked best. Training is deterministic (one thread, fixed seed).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

MIN_TRAINING_TRIALS = 8


def features(vector: Sequence[int], macs: int, params: int, arena: int, flash: int,
             latency_ms: float) -> list[float]:  # fmt: skip
    """The predictor's input for one candidate."""
    return [
        *map(float, vector),
        math.log1p(macs),
        math.log1p(params),
        math.log1p(arena),
        math.log1p(flash),
        math.log1p(latency_ms),
    ]


class AccuracyPredictor:
    """LightGBM regressor of accuracy from :func:`features`; ``fit`` then ``predict``."""

    def __init__(self, seed: int = 0) -> None:
        self.seed = seed
        self._model: Any = None

    @property
    def ready(self) -> bool:
        return self._model is not None

    def fit(self, x: Sequence[Sequence[float]], y: Sequence[float]) -> AccuracyPredictor:
        import lightgbm

        targets = np.asarray(y, dtype=np.float64)
        keep = np.isfinite(targets)
        if keep.sum() < MIN_TRAINING_TRIALS:
            self._model = None
            return self
        model = lightgbm.LGBMRegressor(
            n_estimators=150,
            learning_rate=0.05,
            num_leaves=8,
            min_child_samples=2,
            min_data_in_bin=1,
            subsample=1.0,
            colsample_bytree=0.8,
            reg_lambda=1.0,
            random_state=self.seed,
            n_jobs=1,
            deterministic=True,
            force_col_wise=True,
            verbose=-1,
        )
        model.fit(np.asarray(x, dtype=np.float64)[keep], targets[keep])
        self._model = model
        return self

    def predict(self, x: Sequence[Sequence[float]]) -> np.ndarray:
        if self._model is None:
            raise RuntimeError("predictor is not trained")
        return self._model.predict(np.asarray(x, dtype=np.float64))


def kendall_tau(predicted: Sequence[float], actual: Sequence[float]) -> float | None:
    """Rank correlation of predictions with measured accuracies (None for fewer than 3)."""
    if len(predicted) < 3:
        return None
    from scipy.stats import kendalltau

    tau = kendalltau(predicted, actual).statistic
    return None if tau is None or not math.isfinite(tau) else float(tau)


__all__ = ["MIN_TRAINING_TRIALS", "AccuracyPredictor", "features", "kendall_tau"]
