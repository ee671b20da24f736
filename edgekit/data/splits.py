"""Split containers and the deterministic stratified splitting behind them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from edgekit.errors import DatasetError


@dataclass(frozen=True, eq=False)
class Split:
    """One split: ``x`` float32 NHWC in [0, 1], ``y`` int64 class indices of shape (N,)."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.ndim != 4 or self.x.dtype != np.float32:
            raise DatasetError(
                f"Split.x must be float32 NHWC, got {self.x.dtype} of shape {self.x.shape}"
            )
        if self.y.ndim != 1 or self.y.dtype != np.int64:
            raise DatasetError(
                f"Split.y must be int64 of shape (N,), got {self.y.dtype} of shape {self.y.shape}"
            )
        if len(self.x) != len(self.y):
            raise DatasetError(f"Split has {len(self.x)} images but {len(self.y)} labels")

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True, eq=False)
class Splits:
    """Train / validation / test splits of one dataset, all with the same input shape."""

    train: Split
    val: Split
    test: Split
    classes: tuple[str, ...]
    name: str
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def input_shape(self) -> tuple[int, int, int]:
        height, width, channels = self.train.x.shape[1:]
        return int(height), int(width), int(channels)

    def describe(self) -> dict[str, Any]:
        """JSON-friendly summary: name, source, input shape, classes and counts per split."""
        splits = {"train": self.train, "val": self.val, "test": self.test}
        return {
            "name": self.name,
            "source": self.source,
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "classes": list(self.classes),
            "counts": {key: len(split) for key, split in splits.items()},
            "class_counts": {
                key: np.bincount(split.y, minlength=self.num_classes).tolist()
                for key, split in splits.items()
            },
        }


def stratified_order(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random permutation of ``range(len(labels))`` in which every prefix is stratified.

    Each sample gets its within-class quantile (after shuffling inside the class); sorting by it
    interleaves the classes in proportion to their sizes, so taking the first k indices keeps
    every class within one sample of its share, whatever k is.
    """
    if len(labels) == 0:
        return np.zeros(0, dtype=np.int64)
    shuffled = rng.permutation(len(labels))
    by_class = shuffled[np.argsort(labels[shuffled], kind="stable")]
    sorted_labels = labels[by_class]
    counts = np.bincount(sorted_labels)
    class_start = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.arange(len(labels)) - class_start[sorted_labels]
    quantile = (rank + 0.5) / counts[sorted_labels]
    tie_break = rng.random(len(labels))
    return by_class[np.lexsort((tie_break, quantile))]


def split_indices(
    labels: np.ndarray, fractions: list[float], rng: np.random.Generator
) -> list[np.ndarray]:
    """Stratified split into ``len(fractions) + 1`` parts; the last part takes the remainder.

    Every part comes out in stratified order, so truncating it stays stratified.
    """
    order = stratified_order(labels, rng)
    parts = []
    start = 0
    for fraction in fractions:
        size = round(len(labels) * fraction)
        parts.append(order[start : start + size])
        start += size
    parts.append(order[start:])
    return parts


def cap_indices(
    indices: np.ndarray, labels: np.ndarray, limit: int | None, rng: np.random.Generator
) -> np.ndarray:
    """A stratified, seed-deterministic subset of at most ``limit`` of ``indices``."""
    if limit is None or len(indices) <= limit:
        return indices
    return indices[stratified_order(labels[indices], rng)[:limit]]
