"""Raw datasets as loaded from disk: labels up front, images decoded only when taken."""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekit.errors import DatasetError

# Pillow raises all of these for unreadable, truncated or hostile image data.
IMAGE_ERRORS = (OSError, SyntaxError, ValueError, EOFError)


class ImageSource:
    """NHWC images whose pixel values run from 0 to ``scale``, fetched by index."""

    scale: float = 255.0

    def __len__(self) -> int:
        raise NotImplementedError

    @property
    def image_shape(self) -> tuple[int, ...]:
        """(height, width, channels) of every image."""
        raise NotImplementedError

    def take(self, index: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class ArraySource(ImageSource):
    """Images already in memory as one NHWC array."""

    def __init__(self, images: np.ndarray, scale: float = 255.0) -> None:
        self.images = images
        self.scale = scale

    def __len__(self) -> int:
        return len(self.images)

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.images.shape[1:])

    def take(self, index: np.ndarray) -> np.ndarray:
        return self.images[index]


class EncodedSource(ImageSource):
    """Encoded images (PNG, JPEG, ...) decoded with Pillow only for the indices taken.

    Every image is converted to ``mode`` ("L" or "RGB"). The odd image not of ``size``
    (height, width) is resized to it with Pillow's bilinear filter when ``resize`` is true, else
    rejected; resizing the whole batch to the requested size happens later, vectorised.
    """

    def __init__(
        self,
        count: int,
        read: Callable[[int], bytes | Path],
        describe: Callable[[int], str],
        mode: str,
        size: tuple[int, int],
        resize: bool,
    ) -> None:
        self.count = count
        self.read = read
        self.describe = describe
        self.mode = mode
        self.size = size
        self.resize = resize

    def __len__(self) -> int:
        return self.count

    @property
    def image_shape(self) -> tuple[int, ...]:
        return (*self.size, 1 if self.mode == "L" else 3)

    def take(self, index: np.ndarray) -> np.ndarray:
        out = np.empty((len(index), *self.image_shape), dtype=np.uint8)
        for position, item in enumerate(index):
            out[position] = self.decode(int(item)).reshape(self.image_shape)
        return out

    def decode(self, item: int) -> np.ndarray:
        from PIL import Image

        data = self.read(item)
        try:
            with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
                if image.mode != self.mode:
                    image = image.convert(self.mode)
                height, width = self.size
                if image.size != (width, height):
                    if not self.resize:
                        raise DatasetError(
                            f"{self.describe(item)}: image is {image.width}x{image.height} but "
                            f"earlier ones are {width}x{height}; pass image_size to resize them"
                        )
                    image = image.resize((width, height), Image.Resampling.BILINEAR)
                return np.asarray(image)
        except (*IMAGE_ERRORS, Image.DecompressionBombError) as e:
            raise DatasetError(f"{self.describe(item)}: cannot decode image ({e})") from e


@dataclass
class RawDataset:
    """What a format loader returns; ``test_*`` is None for formats without a test split."""

    name: str
    source: str
    classes: tuple[str, ...]
    train_images: ImageSource
    train_labels: np.ndarray
    test_images: ImageSource | None = None
    test_labels: np.ndarray | None = None


def check_labels(labels: np.ndarray, num_classes: int | None, where: str) -> np.ndarray:
    """Labels as int64 class indices, checked against ``num_classes`` when it is known."""
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise DatasetError(f"{where}: labels must be one-dimensional, got shape {labels.shape}")
    if labels.dtype.kind == "f" and labels.size and np.all(np.mod(labels, 1) == 0):
        labels = labels.astype(np.int64)
    if labels.dtype.kind not in "iub":
        raise DatasetError(f"{where}: labels must be integers, got dtype {labels.dtype}")
    labels = labels.astype(np.int64)
    if labels.size:
        low, high = int(labels.min()), int(labels.max())
        limit = num_classes if num_classes is not None else high + 1
        if low < 0 or high >= limit:
            raise DatasetError(
                f"{where}: labels out of range: found {low}..{high}, expected 0..{limit - 1}"
            )
    return labels


def check_count(images: int, labels: int, where: str) -> None:
    if images != labels:
        raise DatasetError(f"{where}: {images} images but {labels} labels")
