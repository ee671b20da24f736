"""Vectorised float conversion, channel conversion and bilinear resizing of NHWC batches."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

# ITU-R 601-2 luma, the weights Pillow uses for RGB -> "L".
LUMA_WEIGHTS = np.array([0.299, 0.587, 0.114], dtype=np.float32)

# Bounds the float32 temporaries to a few hundred MB whatever the dataset size.
_CHUNK_IMAGES = 1024


@lru_cache(maxsize=32)
def bilinear_weights(in_size: int, out_size: int) -> np.ndarray:
    """(out_size, in_size) interpolation matrix equal to Pillow's BILINEAR filter.

    Like Pillow, the triangle filter widens by the scale factor when shrinking, so downsampling
    averages over the covered pixels instead of aliasing.
    """
    scale = in_size / out_size
    support = max(scale, 1.0)
    centers = (np.arange(out_size) + 0.5) * scale
    pixel_centers = np.arange(in_size) + 0.5
    weights = np.maximum(0.0, 1.0 - np.abs(pixel_centers[None, :] - centers[:, None]) / support)
    weights /= weights.sum(axis=1, keepdims=True)
    return weights.astype(np.float32)


def resize(images: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of a float32 NHWC batch to ``size`` = (height, width)."""
    height, width = images.shape[1:3]
    if (height, width) == size:
        return images
    count, _, _, channels = images.shape
    rows = bilinear_weights(height, size[0])
    # Column weights acting on interleaved channels let both steps run on NHWC memory as GEMMs,
    # with no transposes; the zeros this adds cost less than the copies they save.
    cols = np.kron(bilinear_weights(width, size[1]), np.eye(channels, dtype=np.float32))
    resized = np.matmul(rows, images.reshape(count, height, width * channels))
    resized = resized.reshape(count * size[0], width * channels) @ cols.T
    # Non-negative weights summing to one keep values in range, up to float rounding.
    np.clip(resized, 0.0, 1.0, out=resized)
    return resized.reshape(count, *size, channels)


def convert_channels(images: np.ndarray, channels: int) -> np.ndarray:
    """1 -> 3 replicates the grey channel, 3 -> 1 takes the luma; same count is a no-op."""
    have = images.shape[-1]
    if have == channels:
        return images
    if have == 1 and channels == 3:
        return np.repeat(images, 3, axis=-1)
    if have == 3 and channels == 1:
        return (images @ LUMA_WEIGHTS)[..., None]
    raise ValueError(f"cannot convert {have} channels to {channels}")


def prepare_images(
    raw: np.ndarray, scale: float, size: tuple[int, int] | None, channels: int | None
) -> np.ndarray:
    """Raw NHWC images (integers 0..scale or floats) -> float32 in [0, 1], resized and converted.

    Works chunk by chunk into one preallocated array so a 60k-image dataset never needs a second
    full-size float copy.
    """
    count, height, width, have = raw.shape
    out_size = size or (height, width)
    out_channels = channels or have
    out = np.empty((count, *out_size, out_channels), dtype=np.float32)
    for start in range(0, count, _CHUNK_IMAGES):
        target = out[start : start + _CHUNK_IMAGES]
        if out_size == (height, width) and out_channels == have:
            np.multiply(
                raw[start : start + _CHUNK_IMAGES],
                np.float32(1.0 / scale),
                out=target,
                casting="unsafe",
            )
            continue
        chunk = raw[start : start + _CHUNK_IMAGES].astype(np.float32)
        chunk *= np.float32(1.0 / scale)
        # Shrink the channel count before resizing and grow it after: less work either way.
        if out_channels < have:
            chunk = convert_channels(chunk, out_channels)
        target[...] = convert_channels(resize(chunk, out_size), out_channels)
    return out
