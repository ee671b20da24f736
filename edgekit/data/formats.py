"""Readers for each on-disk dataset format, and detection of the format from a path."""

from __future__ import annotations

import gzip
import io
import logging
import math
import pickle
import re
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.data.sources import (
    IMAGE_ERRORS,
    ArraySource,
    EncodedSource,
    ImageSource,
    RawDataset,
    check_count,
    check_labels,
)
from edgekit.errors import DatasetError

logger = logging.getLogger(__name__)

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp")
_GREY_MODES = frozenset({"1", "L", "LA", "I", "I;16", "F"})
_ImageSize = tuple[int, int]


def _text(name: object) -> str:
    """A class name as str, whether stored as str or bytes (Python 2 pickles, 'S' arrays)."""
    return name.decode() if isinstance(name, bytes) else str(name)


# --- scikit-learn digits -------------------------------------------------------------------


def load_digits() -> RawDataset:
    from sklearn.datasets import load_digits as sklearn_load_digits

    bunch = sklearn_load_digits()
    # 0..16 grey levels fit uint8 exactly; scale=16 maps them to [0, 1] later.
    images = bunch.images.astype(np.uint8)[..., None]
    classes = tuple(str(name) for name in bunch.target_names)
    labels = check_labels(bunch.target, len(classes), "sklearn digits")
    return RawDataset("digits", "sklearn", classes, ArraySource(images, scale=16.0), labels)


# --- IDX (MNIST, Fashion-MNIST) -------------------------------------------------------------

_IDX_DTYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: Path) -> np.ndarray:
    """One IDX file (gzipped when its name ends in .gz) as an array of its declared shape."""
    try:
        with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as file:
            data = file.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read IDX file ({e})") from e
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] not in _IDX_DTYPES or data[3] == 0:
        raise DatasetError(
            f"{path}: bad IDX magic {data[:4].hex(' ')}; expected 00 00 <type code> <ndim>"
        )
    ndim = data[3]
    header_bytes = 4 + 4 * ndim
    if len(data) < header_bytes:
        raise DatasetError(f"{path}: IDX header truncated")
    shape = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected_bytes = header_bytes + math.prod(shape) * dtype.itemsize
    if len(data) != expected_bytes:
        raise DatasetError(
            f"{path}: IDX header declares shape {shape} ({expected_bytes} bytes) "
            f"but the file holds {len(data)} bytes"
        )
    array = np.frombuffer(data, dtype, offset=header_bytes).reshape(shape)
    return array.astype(dtype.newbyteorder("="), copy=False)


def _find_idx_file(directory: Path, split: str, kind: str, ndim: int) -> Path:
    # Mirrors spell these "train-images-idx3-ubyte" or "train-images.idx3-ubyte".
    names = (f"{split}-{kind}-idx{ndim}-ubyte", f"{split}-{kind}.idx{ndim}-ubyte")
    for name in names:
        for candidate in (directory / name, directory / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    raise DatasetError(f"{directory}: missing IDX file {names[0]}[.gz]")


def has_idx_files(directory: Path) -> bool:
    return any(directory.glob("*-ubyte")) or any(directory.glob("*-ubyte.gz"))


def load_idx(directory: Path, fashion: bool) -> RawDataset:
    """The four train/t10k images/labels IDX files of an MNIST-style directory."""
    if not directory.is_dir():
        raise DatasetError(f"{directory}: expected a directory holding the four IDX files")
    parts = []
    for split in ("train", "t10k"):
        images_path = _find_idx_file(directory, split, "images", 3)
        labels_path = _find_idx_file(directory, split, "labels", 1)
        images, labels = read_idx(images_path), read_idx(labels_path)
        if images.ndim == 3:
            images = images[..., None]
        if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] not in (1, 3):
            raise DatasetError(
                f"{images_path}: expected uint8 images of shape (N, H, W), "
                f"got {images.dtype} of shape {images.shape}"
            )
        check_count(len(images), len(labels), f"{images_path} and {labels_path.name}")
        parts.append((images, labels, labels_path))
    (train_x, _, _), (test_x, _, _) = parts
    if fashion:
        classes = FASHION_MNIST_CLASSES
    else:
        classes = tuple(str(i) for i in range(max(int(p[1].max(initial=0)) for p in parts) + 1))
    train_y, test_y = (check_labels(y, len(classes), str(path)) for _, y, path in parts)
    return RawDataset(
        "fashion-mnist" if fashion else directory.name,
        str(directory),
        classes,
        ArraySource(train_x),
        train_y,
        ArraySource(test_x),
        test_y,
    )


# --- CIFAR-10 python pickle batches ---------------------------------------------------------


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Refuses every global but numpy array reconstruction: a CIFAR batch is data, not code."""

    _ALLOWED = frozenset({
        ("_codecs", "encode"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy._core.numeric", "_frombuffer"),
    })  # fmt: skip

    def find_class(self, module: str, name: str) -> Any:
        # The original batches were pickled by numpy 1.x, whose private modules moved.
        if module.startswith("numpy.core."):
            module = "numpy._core." + module.removeprefix("numpy.core.")
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load global {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[Any, Any]:
    try:
        with open(path, "rb") as file:
            content = _NumpyOnlyUnpickler(file, encoding="bytes").load()
    # Corrupt pickles fail with nearly any exception type, so all of them mean "corrupt".
    except Exception as e:
        raise DatasetError(f"{path}: corrupt or unsupported pickle ({e})") from e
    if not isinstance(content, dict):
        raise DatasetError(f"{path}: expected a pickled dict, got {type(content).__name__}")
    return content


def _entry(batch: dict[Any, Any], key: str, path: Path) -> Any:
    # Python 2 pickles (the official files) have bytes keys; re-pickled ones often str keys.
    for candidate in (key.encode(), key):
        if candidate in batch:
            return batch[candidate]
    raise DatasetError(f"{path}: CIFAR batch has no {key!r} entry")


def _read_cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    data = np.asarray(_entry(batch, "data", path))
    labels = np.asarray(_entry(batch, "labels", path))
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"{path}: expected uint8 data of shape (N, 3072), got {data.dtype} {data.shape}"
        )
    check_count(len(data), len(labels), str(path))
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def cifar10_root(directory: Path) -> Path | None:
    """The folder holding the batches: ``directory`` itself or its cifar-10-batches-py child."""
    for root in (directory / "cifar-10-batches-py", directory):
        if any((root / name).is_file() for name in ("data_batch_1", "test_batch")):
            return root
    return None


def load_cifar10(directory: Path) -> RawDataset:
    root = cifar10_root(directory) if directory.is_dir() else None
    if root is None:
        raise DatasetError(f"{directory}: no CIFAR-10 batches (data_batch_1..5, test_batch)")
    numbered = (
        (int(match[1]), path)
        for path in root.glob("data_batch_*")
        if (match := re.fullmatch(r"data_batch_(\d+)", path.name))
    )
    train_paths = [path for _, path in sorted(numbered)]
    if not train_paths:
        raise DatasetError(f"{root}: no CIFAR-10 training batches data_batch_1..5")
    if not (root / "test_batch").is_file():
        raise DatasetError(f"{root}: missing CIFAR-10 test_batch")
    meta_path = root / "batches.meta"
    if meta_path.is_file():
        names = _entry(_unpickle(meta_path), "label_names", meta_path)
        classes = tuple(_text(name) for name in names)
    else:
        logger.warning("%s: no batches.meta, using the standard CIFAR-10 class names", root)
        classes = CIFAR10_CLASSES
    train = [_read_cifar_batch(path) for path in train_paths]
    train_x = np.concatenate([x for x, _ in train])
    train_y = check_labels(np.concatenate([y for _, y in train]), len(classes), str(root))
    test_x, test_y = _read_cifar_batch(root / "test_batch")
    test_y = check_labels(test_y, len(classes), str(root / "test_batch"))
    return RawDataset(
        "cifar10",
        str(root),
        classes,
        ArraySource(train_x),
        train_y,
        ArraySource(np.ascontiguousarray(test_x)),
        test_y,
    )


# --- image folders --------------------------------------------------------------------------


def class_dirs(directory: Path) -> list[Path]:
    return sorted(p for p in directory.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_split_folder(directory: Path) -> bool:
    return all((directory / s).is_dir() and class_dirs(directory / s) for s in ("train", "test"))


def _collect_images(
    directory: Path, classes: tuple[str, ...] | None
) -> tuple[list[Path], np.ndarray, tuple[str, ...]]:
    folders = class_dirs(directory)
    if not folders:
        raise DatasetError(
            f"{directory}: no class folders; expected {directory}/<class_name>/*.png|jpg"
        )
    classes = classes or tuple(folder.name for folder in folders)
    paths: list[Path] = []
    labels: list[int] = []
    for folder in folders:
        if folder.name not in classes:
            raise DatasetError(f"{folder}: class {folder.name!r} is not among {classes}")
        files = sorted(
            p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
        )
        if not files:
            raise DatasetError(f"{folder}: class folder has no .png/.jpg/.jpeg/.bmp images")
        paths += files
        labels += [classes.index(folder.name)] * len(files)
    return paths, np.array(labels, dtype=np.int64), classes


def _probe(data: bytes | Path, where: str) -> tuple[str, _ImageSize]:
    """(mode, (width, height)) from an image header, without decoding the pixels."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data) if isinstance(data, bytes) else data) as image:
            return image.mode, image.size
    except IMAGE_ERRORS as e:
        raise DatasetError(f"{where}: cannot decode image ({e})") from e


def _encoded_source(paths: list[Path], mode: str, size: _ImageSize, resize: bool) -> EncodedSource:
    return EncodedSource(
        len(paths), paths.__getitem__, lambda i: str(paths[i]), mode, size, resize
    )


def load_image_folder(directory: Path, image_size: _ImageSize | None) -> RawDataset:
    """``class_name/*.png`` folders, or ``train/`` and ``test/`` each laid out that way."""
    if not directory.is_dir():
        raise DatasetError(f"{directory}: expected a directory of class folders")
    split = _is_split_folder(directory)
    train_root = directory / "train" if split else directory
    train_paths, train_y, classes = _collect_images(train_root, None)
    test_paths, test_y = _collect_images(directory / "test", classes)[:2] if split else ([], None)
    # A header pass over every file: it fixes one colour mode for all images, finds mixed sizes
    # before any decoding, and names any file that is not an image at all.
    grey = True
    first_of_size: dict[_ImageSize, Path] = {}
    for path in train_paths + test_paths:
        mode, (width, height) = _probe(path, str(path))
        grey = grey and mode in _GREY_MODES
        first_of_size.setdefault((height, width), path)
    size = next(iter(first_of_size))
    if len(first_of_size) > 1:
        if image_size is None:
            (size_a, path_a), (size_b, path_b) = list(first_of_size.items())[:2]
            raise DatasetError(
                f"{directory}: images differ in size ({path_a} is {size_a[1]}x{size_a[0]}, "
                f"{path_b} is {size_b[1]}x{size_b[0]}); pass image_size to resize them"
            )
        size = image_size
    mode = "L" if grey else "RGB"
    test_source = _encoded_source(test_paths, mode, size, True) if split else None
    return RawDataset(
        directory.name,
        str(directory),
        classes,
        _encoded_source(train_paths, mode, size, True),
        train_y,
        test_source,
        test_y,
    )


# --- .npz arrays ----------------------------------------------------------------------------

_NpzPart = tuple[ImageSource, np.ndarray]


def _open_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {key: npz[key] for key in npz.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, zlib.error) as e:
        raise DatasetError(f"{path}: cannot read .npz ({e})") from e


def _array_source(images: np.ndarray, where: str) -> ArraySource:
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        channels_first = images.ndim == 4 and images.shape[1] in (1, 3)
        hint = " (looks channels-first; store NHWC)" if channels_first else ""
        raise DatasetError(
            f"{where}: images must be (N, H, W) or (N, H, W, 1|3), got {images.shape}{hint}"
        )
    if images.dtype == np.uint8:
        return ArraySource(images)
    if images.dtype.kind in "iu" and images.size:
        low, high = int(images.min()), int(images.max())
        if low < 0 or high > 255:
            raise DatasetError(f"{where}: integer pixels must lie in 0..255, found {low}..{high}")
        return ArraySource(images.astype(np.uint8))
    if images.dtype.kind == "f":
        images = images.astype(np.float32, copy=False)
        if images.size and not (
            np.isfinite(images).all() and 0 <= images.min() <= images.max() <= 1
        ):
            raise DatasetError(
                f"{where}: float pixels must lie in [0, 1] (divide 0..255 data by 255), "
                f"found {np.nanmin(images)}..{np.nanmax(images)}"
            )
        return ArraySource(images, scale=1.0)
    raise DatasetError(f"{where}: unsupported pixel dtype {images.dtype}")


def _jpeg_source(
    arrays: dict[str, np.ndarray], path: Path, size: _ImageSize | None
) -> ImageSource:
    blob, offsets, labels = arrays["jpeg"], arrays["offsets"], arrays["y"]
    if blob.dtype != np.uint8 or blob.ndim != 1:
        raise DatasetError(f"{path}: 'jpeg' must be 1-D uint8, got {blob.dtype} {blob.shape}")
    if offsets.ndim != 1 or offsets.dtype.kind not in "iu":
        raise DatasetError(f"{path}: 'offsets' must be 1-D integers, got {offsets.dtype}")
    if len(offsets) != len(labels) + 1:
        raise DatasetError(
            f"{path}: 'offsets' has {len(offsets)} entries, expected len(y) + 1 "
            f"= {len(labels) + 1}"
        )
    if len(labels) == 0:
        raise DatasetError(f"{path}: holds no images")
    if offsets[0] < 0 or offsets[-1] > len(blob) or np.any(np.diff(offsets) <= 0):
        raise DatasetError(f"{path}: 'offsets' must increase strictly within 0..len(jpeg)")
    offsets = offsets.astype(np.int64)

    def read(i: int) -> bytes:
        return blob[offsets[i] : offsets[i + 1]].tobytes()

    def describe(i: int) -> str:
        return f"{path} image {i}"

    mode, (width, height) = _probe(read(0), describe(0))
    return EncodedSource(
        len(labels),
        read,
        describe,
        "L" if mode in _GREY_MODES else "RGB",
        (height, width),
        resize=size is not None,
    )


def _npz_parts(path: Path, image_size: _ImageSize | None) -> tuple[list[_NpzPart], Any]:
    """[train] or [train, test] parts of one .npz file, and its class names if it has them."""
    arrays = _open_npz(path)
    keys = set(arrays)
    if {"jpeg", "offsets", "y"} <= keys:
        parts = [(_jpeg_source(arrays, path, image_size), arrays["y"])]
    elif {"x", "y"} <= keys:
        parts = [(_array_source(arrays["x"], f"{path} x"), arrays["y"])]
    elif {"x_train", "y_train", "x_test", "y_test"} <= keys:
        parts = [
            (_array_source(arrays[f"x_{split}"], f"{path} x_{split}"), arrays[f"y_{split}"])
            for split in ("train", "test")
        ]
    else:
        raise DatasetError(
            f"{path}: unrecognised .npz keys {sorted(keys)}; expected x/y, "
            "x_train/y_train/x_test/y_test, or jpeg/offsets/y"
        )
    for images, labels in parts:
        check_count(len(images), len(labels), str(path))
    checked = [(images, check_labels(labels, None, str(path))) for images, labels in parts]
    return checked, arrays.get("classes")


def _npz_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("*.npz"))
    train = [f for f in files if f.name.lower().startswith("train")]
    test = [f for f in files if f.name.lower().startswith("test")]
    if len(train) == 1 and len(test) == 1:
        return [train[0], test[0]]
    if len(files) == 1:
        return files
    found = ", ".join(f.name for f in files) or "none"
    raise DatasetError(
        f"{directory}: expected one train*.npz and one test*.npz, or a single .npz; found {found}"
    )


def load_npz(path: Path, image_size: _ImageSize | None) -> RawDataset:
    """A .npz file, or a directory holding train*.npz and test*.npz."""
    files = _npz_files(path) if path.is_dir() else [path]
    parts: list[_NpzPart] = []
    named: list[tuple[Path, tuple[str, ...]]] = []
    for file in files:
        file_parts, classes = _npz_parts(file, image_size)
        parts += file_parts
        if classes is not None:
            named.append((file, tuple(_text(name) for name in np.atleast_1d(classes))))
    if len(parts) > 2:
        raise DatasetError(f"{path}: a train/test pair of .npz files must each hold one split")
    if any(names != named[0][1] for _, names in named):
        raise DatasetError(f"{named[1][0]}: classes differ from those in {named[0][0]}")
    if named:
        classes = named[0][1]
    else:
        classes = tuple(str(i) for i in range(max(int(y.max(initial=0)) for _, y in parts) + 1))
    for _, labels in parts:
        check_labels(labels, len(classes), str(path))
    (train_x, train_y), *test = parts
    test_x, test_y = test[0] if test else (None, None)
    name = path.stem if path.is_file() else path.name
    return RawDataset(name, str(path), classes, train_x, train_y, test_x, test_y)


# --- detection ------------------------------------------------------------------------------


def detect_format(path: Path) -> str:
    """The format name of an existing path, judged from file names only."""
    if path.is_file():
        if path.suffix.lower() == ".npz":
            return "npz"
        raise DatasetError(
            f"{path}: unknown dataset format; a file must be .npz "
            "(IDX, CIFAR-10 and image folders are given by their directory)"
        )
    if has_idx_files(path):
        return "idx"
    if cifar10_root(path) is not None:
        return "cifar10"
    if any(path.glob("*.npz")):
        return "npz"
    if class_dirs(path):
        return "folder"
    raise DatasetError(
        f"{path}: cannot tell the dataset format: no IDX files, CIFAR-10 batches, "
        ".npz files or class folders"
    )
