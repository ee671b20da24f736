"""``load_dataset``: any supported format -> deterministic, resized train/val/test splits."""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path
from types import MappingProxyType

import numpy as np

from edgekit.data import formats
from edgekit.data.sources import RawDataset
from edgekit.data.splits import Split, Splits, cap_indices, split_indices
from edgekit.data.transforms import prepare_images
from edgekit.errors import DatasetError

logger = logging.getLogger(__name__)

DATASET_FORMATS = MappingProxyType({
    "digits": "scikit-learn's bundled 8x8 digits (1,797 images, 10 classes); takes no path",
    "fashion-mnist": (
        f"Fashion-MNIST IDX files; default directory {formats.FASHION_MNIST_DIR} "
        "(Debian package dataset-fashion-mnist)"
    ),
    "idx": "directory with train-/t10k- images/labels IDX files, gzipped or not",
    "cifar10": "CIFAR-10 python pickle batches: cifar-10-batches-py or its parent directory",
    "folder": "image folder class_name/*.png|jpg|jpeg|bmp, or train/ and test/ laid out so",
    "npz": (
        ".npz with x and y (optional classes), x_train/y_train/x_test/y_test, or JPEG bytes "
        "jpeg/offsets/y; or a directory holding train*.npz and test*.npz"
    ),
})  # fmt: skip


def _resolve(spec: str | Path) -> tuple[str, Path | None]:
    """(format, path) from a spec: a name, a path, or ``format:path``."""
    if isinstance(spec, Path):
        path = spec.expanduser()
    else:
        text = spec.strip()
        head, colon, rest = text.partition(":")
        if text == "digits":
            return "digits", None
        if text == "fashion-mnist":
            return "fashion-mnist", formats.FASHION_MNIST_DIR
        if text in DATASET_FORMATS:
            raise DatasetError(f"dataset format {text!r} needs a path: {text}:PATH")
        # One letter before the colon is a Windows drive, not a format.
        if colon and re.fullmatch(r"[a-z][a-z0-9-]+", head) and not Path(text).exists():
            if head not in DATASET_FORMATS:
                known = ", ".join(DATASET_FORMATS)
                raise DatasetError(f"unknown dataset format {head!r} in {text!r}; known: {known}")
            if head == "digits":
                raise DatasetError(f"{text!r}: digits is bundled and takes no path")
            if not rest:
                raise DatasetError(f"{text!r}: give a path after the colon")
            return head, Path(rest).expanduser()
        path = Path(text).expanduser()
    if not path.exists():
        raise DatasetError(
            f"{path}: no such file or directory (and not a dataset name: digits, fashion-mnist)"
        )
    return formats.detect_format(path), path


def _read(fmt: str, path: Path | None, image_size: tuple[int, int] | None) -> RawDataset:
    if fmt == "digits":
        return formats.load_digits()
    assert path is not None
    if not path.exists():
        hint = (
            "; install the Debian package dataset-fashion-mnist or give fashion-mnist:DIR"
            if path == formats.FASHION_MNIST_DIR
            else ""
        )
        raise DatasetError(f"{path}: no such file or directory{hint}")
    if fmt == "fashion-mnist":
        return formats.load_idx(path, fashion=True)
    if fmt == "idx":
        # Auto-detection cannot tell Fashion-MNIST from MNIST but the folder name usually can.
        return formats.load_idx(path, fashion="fashion" in path.resolve().name.lower())
    if fmt == "cifar10":
        return formats.load_cifar10(path)
    if fmt == "folder":
        return formats.load_image_folder(path, image_size)
    return formats.load_npz(path, image_size)


def _image_size(image_size: int | tuple[int, int] | None) -> tuple[int, int] | None:
    if image_size is None:
        return None
    size = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if len(size) != 2 or not all(isinstance(s, int | np.integer) and s > 0 for s in size):
        raise DatasetError(
            f"image_size must be a positive int or (height, width), got {image_size!r}"
        )
    return int(size[0]), int(size[1])


def _check_options(
    channels: int | None, val_fraction: float, test_fraction: float, max_per_split: int | None
) -> None:
    if channels not in (None, 1, 3):
        raise DatasetError(f"channels must be 1 or 3, got {channels!r}")
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0 <= fraction < 1:
            raise DatasetError(f"{name} must lie in [0, 1), got {fraction!r}")
    if val_fraction + test_fraction >= 1:
        raise DatasetError(
            f"val_fraction + test_fraction must stay below 1, got {val_fraction + test_fraction}"
        )
    if max_per_split is not None and max_per_split < 1:
        raise DatasetError(f"max_per_split must be a positive int, got {max_per_split!r}")


def load_dataset(
    spec: str | Path = "digits",
    *,
    image_size: int | tuple[int, int] | None = None,
    channels: int | None = None,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    max_per_split: int | None = None,
) -> Splits:
    """Load a dataset as train / val / test splits, deterministic from ``seed``.

    ``spec`` is ``"digits"`` (bundled), ``"fashion-mnist"`` (the Debian package's directory), a
    path whose format is detected from its file names, or ``"FORMAT:PATH"`` to force one of
    ``DATASET_FORMATS`` (e.g. ``"npz:/data/x.npz"``, ``"fashion-mnist:/data/fmnist"``).

    Formats with their own test split keep it and ignore ``test_fraction``; validation is then
    ``val_fraction`` of the training images. Otherwise test and validation are those fractions
    of all images. Every split is stratified by class; ``max_per_split`` caps each split with a
    stratified subset. Encoded images (folders, JPEG bytes) are decoded only for the images
    kept. ``image_size`` resizes with a vectorised filter equal to Pillow's bilinear one;
    ``channels`` converts 1 <-> 3 (luma / replicate).
    """
    size = _image_size(image_size)
    _check_options(channels, val_fraction, test_fraction, max_per_split)
    started = time.perf_counter()
    fmt, path = _resolve(spec)
    raw = _read(fmt, path, size)
    rng = np.random.default_rng(seed)
    train_pool = (raw.train_images, raw.train_labels)
    if raw.test_images is None or raw.test_labels is None:
        test, val, train = split_indices(raw.train_labels, [test_fraction, val_fraction], rng)
        pools = [(*train_pool, train), (*train_pool, val), (*train_pool, test)]
    else:
        val, train = split_indices(raw.train_labels, [val_fraction], rng)
        test = np.arange(len(raw.test_labels))
        pools = [
            (*train_pool, train),
            (*train_pool, val),
            (raw.test_images, raw.test_labels, test),
        ]
    if len(train) == 0:
        raise DatasetError(f"{raw.source}: no images left for training")
    splits = []
    for images, labels, indices in pools:
        kept = cap_indices(indices, labels, max_per_split, rng)
        x = prepare_images(images.take(kept), images.scale, size, channels)
        splits.append(Split(x, labels[kept]))
    train_shape, test_shape = splits[0].x.shape[1:], splits[2].x.shape[1:]
    if train_shape != test_shape:
        raise DatasetError(
            f"{raw.source}: train images are {train_shape} (HWC) but test images are "
            f"{test_shape}; pass image_size and channels to make them agree"
        )
    result = Splits(*splits, classes=raw.classes, name=raw.name, source=raw.source)
    logger.info(
        "loaded %s from %s in %.1f s: %d/%d/%d images of %s",
        result.name,
        result.source,
        time.perf_counter() - started,
        *(len(s) for s in splits),
        result.input_shape,
    )
    return result
