"""Dataset loading: digits for real, every other format on small files written here."""

from __future__ import annotations

import gzip
import io
import pickle
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from edgekit.data import DATASET_FORMATS, Split, Splits, load_dataset
from edgekit.data.transforms import LUMA_WEIGHTS, resize
from edgekit.errors import DatasetError

# --- writers for tiny datasets -----------------------------------------------------------------


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(n).to_bytes(4, "big") for n in array.shape
    )
    data = header + array.astype(np.uint8).tobytes()
    path.write_bytes(gzip.compress(data) if gz else data)
    return path


def write_idx_dir(directory: Path, gz: bool, train: int = 40, test: int = 20) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    suffix = ".gz" if gz else ""
    for split, count in (("train", train), ("t10k", test)):
        images = rng.integers(0, 256, (count, 6, 5), dtype=np.uint8)
        labels = np.arange(count) % 4
        write_idx(directory / f"{split}-images-idx3-ubyte{suffix}", images, gz)
        write_idx(directory / f"{split}-labels-idx1-ubyte{suffix}", labels, gz)
    return directory


def cifar_pickle(content: object, numpy1_names: bool = False) -> bytes:
    data = pickle.dumps(content, protocol=2)
    # The official batches were pickled by numpy 1.x, which named numpy.core, not numpy._core.
    return data.replace(b"numpy._core.", b"numpy.core.") if numpy1_names else data


def write_cifar(directory: Path, batches: int = 2, per_batch: int = 20) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    names = [b"plane", b"car", b"bird"]
    (directory / "batches.meta").write_bytes(cifar_pickle({b"label_names": names}))
    for index in range(batches + 1):
        labels = [i % 3 for i in range(per_batch)]
        # Channel planes R, G, B hold 10 + label, 100, 200: checks the CHW -> HWC reshape.
        planes = [np.full(1024, 10, np.uint8), np.full(1024, 100), np.full(1024, 200)]
        data = np.stack([np.concatenate(planes) for _ in labels]).astype(np.uint8)
        data[:, :1024] += np.array(labels, np.uint8)[:, None]
        name = f"data_batch_{index + 1}" if index < batches else "test_batch"
        batch = {b"data": data, b"labels": labels, b"batch_label": name.encode()}
        (directory / name).write_bytes(cifar_pickle(batch, numpy1_names=True))
    return directory


def write_image(path: Path, size: tuple[int, int] = (6, 5), mode: str = "RGB", value: int = 0):
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.full((size[1], size[0], 3) if mode == "RGB" else (size[1], size[0]), value)
    Image.fromarray(array.astype(np.uint8), mode).save(path)


def write_folder(root: Path, classes=("cat", "dog"), per_class: int = 10) -> Path:
    for label, name in enumerate(classes):
        for i in range(per_class):
            suffix = (".png", ".jpg", ".bmp", ".JPEG")[i % 4]
            write_image(root / name / f"{i}{suffix}", mode="L", value=50 + 100 * label)
    return root


def jpeg_arrays(count: int, size: tuple[int, int] = (8, 8), classes: int = 2) -> dict:
    blobs = []
    for i in range(count):
        buffer = io.BytesIO()
        Image.new("RGB", size, (40 * (i % classes), 128, 200)).save(buffer, "JPEG", quality=90)
        blobs.append(np.frombuffer(buffer.getvalue(), np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    labels = (np.arange(count) % classes).astype(np.uint8)
    return {"jpeg": np.concatenate(blobs), "offsets": offsets, "y": labels}


def indexed_npz(path: Path, count: int = 100, classes: int = 4) -> Path:
    """Image i carries i in its two pixels (base 256): splits can be traced back to rows."""
    index = np.arange(count)
    x = np.stack([index // 256, index % 256], axis=1).reshape(count, 1, 2, 1).astype(np.uint8)
    np.savez(path, x=x, y=index % classes)
    return path


def row_ids(split: Split) -> np.ndarray:
    pixels = np.rint(split.x[:, 0, :, 0] * 255).astype(np.int64)
    return pixels[:, 0] * 256 + pixels[:, 1]


# --- digits, for real --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def digits() -> Splits:
    return load_dataset("digits")


def test_digits_shapes_and_metadata(digits):
    assert digits.name == "digits" and digits.source == "sklearn"
    assert digits.classes == tuple("0123456789") and digits.num_classes == 10
    assert digits.input_shape == (8, 8, 1)
    assert len(digits.train) + len(digits.val) + len(digits.test) == 1797
    assert (len(digits.val), len(digits.test)) == (round(1797 * 0.1), round(1797 * 0.2))
    for split in (digits.train, digits.val, digits.test):
        assert split.x.dtype == np.float32 and split.y.dtype == np.int64
        assert split.x.shape[1:] == (8, 8, 1) and split.y.shape == (len(split),)
        assert split.x.min() == 0.0 and split.x.max() == 1.0
    # 0..16 grey levels become multiples of 1/16.
    assert np.allclose(digits.train.x * 16, np.round(digits.train.x * 16))
    summary = digits.describe()
    assert summary["counts"] == {"train": 1258, "val": 180, "test": 359}
    assert summary["input_shape"] == [8, 8, 1] and summary["classes"] == list("0123456789")
    assert sum(summary["class_counts"]["test"]) == 359


def test_digits_same_seed_same_arrays_other_seed_differs(digits):
    again = load_dataset("digits", seed=0)
    other = load_dataset("digits", seed=1)
    for name in ("train", "val", "test"):
        assert np.array_equal(getattr(digits, name).x, getattr(again, name).x)
        assert np.array_equal(getattr(digits, name).y, getattr(again, name).y)
    assert not np.array_equal(digits.test.y, other.test.y)


def test_digits_splits_are_stratified(digits):
    overall = np.bincount(np.concatenate([digits.train.y, digits.val.y, digits.test.y]))
    for split in (digits.train, digits.val, digits.test):
        expected = overall * len(split) / overall.sum()
        assert np.all(np.abs(np.bincount(split.y, minlength=10) - expected) <= 1.5)


def test_digits_resize_and_channels(digits):
    rgb = load_dataset("digits", image_size=16, channels=3)
    assert rgb.input_shape == (16, 16, 3)
    assert np.array_equal(rgb.test.y, digits.test.y)
    assert np.array_equal(rgb.train.x[..., 0], rgb.train.x[..., 2])
    assert rgb.train.x.min() >= 0.0 and rgb.train.x.max() <= 1.0
    assert load_dataset("digits", image_size=(12, 10)).input_shape == (12, 10, 1)


def test_digits_max_per_split_is_stratified_and_deterministic():
    small = load_dataset("digits", max_per_split=50, seed=3)
    assert [len(s) for s in (small.train, small.val, small.test)] == [50, 50, 50]
    assert np.all(np.bincount(small.train.y, minlength=10) == 5)
    assert np.array_equal(small.val.x, load_dataset("digits", max_per_split=50, seed=3).val.x)


# --- splitting, resizing and channels --------------------------------------------------------


def test_splits_partition_the_data_and_honour_fractions(tmp_path):
    path = indexed_npz(tmp_path / "indexed.npz", count=200)
    splits = load_dataset(path, val_fraction=0.25, test_fraction=0.15, seed=7)
    ids = [row_ids(s) for s in (splits.train, splits.val, splits.test)]
    assert [len(i) for i in ids] == [120, 50, 30]
    assert sorted(np.concatenate(ids).tolist()) == list(range(200))
    for split, split_ids in zip((splits.train, splits.val, splits.test), ids, strict=True):
        assert np.array_equal(split.y, split_ids % 4)


def test_resize_matches_pillow_bilinear():
    rng = np.random.default_rng(0)
    images = rng.random((2, 13, 17, 3), dtype=np.float32)
    for height, width in ((5, 7), (40, 23), (13, 30)):
        ours = resize(images, (height, width))
        for channel in range(3):
            plane = Image.fromarray(images[1, ..., channel], mode="F")
            pillow = np.asarray(plane.resize((width, height), Image.Resampling.BILINEAR))
            assert np.allclose(ours[1, ..., channel], pillow, atol=1e-5)


def test_rgb_to_grey_uses_luma(tmp_path):
    x = np.zeros((12, 2, 2, 3), np.uint8)
    x[..., 0], x[..., 1], x[..., 2] = 255, 128, 0
    np.savez(tmp_path / "rgb.npz", x=x, y=np.arange(12) % 2)
    grey = load_dataset(tmp_path / "rgb.npz", channels=1)
    assert grey.input_shape == (2, 2, 1)
    assert np.allclose(grey.train.x, LUMA_WEIGHTS @ np.array([1.0, 128 / 255, 0.0]), atol=1e-6)


# --- IDX ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("gz", [False, True])
def test_idx_directory_keeps_its_test_split(tmp_path, gz):
    directory = write_idx_dir(tmp_path / "mnist", gz)
    splits = load_dataset(directory, val_fraction=0.25, test_fraction=0.5)
    assert splits.name == "mnist" and splits.source == str(directory)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [30, 10, 20]
    assert splits.input_shape == (6, 5, 1) and splits.classes == ("0", "1", "2", "3")
    raw = gzip.decompress if gz else bytes
    suffix = ".gz" if gz else ""
    test_images = raw((directory / f"t10k-images-idx3-ubyte{suffix}").read_bytes())[16:]
    expected = np.frombuffer(test_images, np.uint8).reshape(20, 6, 5, 1) / 255
    assert np.allclose(splits.test.x, expected)


def test_fashion_mnist_names_and_dotted_idx_file_names(tmp_path):
    directory = write_idx_dir(tmp_path / "data", gz=False)
    for path in directory.iterdir():  # some mirrors spell them train-images.idx3-ubyte
        path.rename(directory / path.name.replace("-idx", ".idx"))
    splits = load_dataset(f"fashion-mnist:{directory}", image_size=8, channels=3)
    assert splits.name == "fashion-mnist" and splits.num_classes == 10
    assert splits.classes[0] == "T-shirt/top" and splits.input_shape == (8, 8, 3)
    assert load_dataset(f"idx:{directory}").classes == ("0", "1", "2", "3")
    # Detected IDX folders are Fashion-MNIST when their name says so.
    assert load_dataset(directory.rename(tmp_path / "Fashion-MNIST")).num_classes == 10


# --- CIFAR-10 ----------------------------------------------------------------------------------


def test_cifar10_batches_and_parent_directory(tmp_path):
    root = write_cifar(tmp_path / "cifar" / "cifar-10-batches-py")
    for spec in (root, tmp_path / "cifar", f"cifar10:{tmp_path / 'cifar'}"):
        splits = load_dataset(spec, val_fraction=0.25, seed=2)
        assert splits.name == "cifar10" and splits.source == str(root)
        assert splits.classes == ("plane", "car", "bird") and splits.input_shape == (32, 32, 3)
        assert [len(s) for s in (splits.train, splits.val, splits.test)] == [30, 10, 20]
    pixels = np.rint(splits.test.x[:, 5, 7] * 255)
    assert np.array_equal(pixels[:, 0], 10 + splits.test.y)
    assert np.all(pixels[:, 1:] == [100, 200])


def test_cifar10_without_meta_uses_standard_names(tmp_path):
    root = write_cifar(tmp_path / "c")
    (root / "batches.meta").unlink()
    assert load_dataset(root, image_size=8).classes[:2] == ("airplane", "automobile")


# --- image folders -----------------------------------------------------------------------------


def test_image_folder_grey_and_mixed_suffixes(tmp_path):
    root = write_folder(tmp_path / "pets")
    (root / "notes.txt").write_text("ignored")
    splits = load_dataset(root, val_fraction=0.2, test_fraction=0.2, image_size=4)
    assert splits.name == "pets" and splits.classes == ("cat", "dog")
    assert splits.input_shape == (4, 4, 1)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [12, 4, 4]
    for split in (splits.train, splits.test):
        # JPEG is lossy: compare loosely with the grey level each class was written with.
        assert np.allclose(split.x.mean(axis=(1, 2, 3)), (50 + 100 * split.y) / 255, atol=0.02)


def test_image_folder_rgb_wins_and_train_test_layout(tmp_path):
    write_folder(tmp_path / "set" / "train", per_class=4)
    write_folder(tmp_path / "set" / "test", per_class=2)
    write_image(tmp_path / "set" / "train" / "dog" / "colour.png", mode="RGB", value=9)
    splits = load_dataset(tmp_path / "set", val_fraction=0.25)
    assert splits.input_shape == (5, 6, 3)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [7, 2, 4]


def test_image_folder_mixed_sizes_need_image_size(tmp_path):
    root = write_folder(tmp_path / "f", per_class=3)
    write_image(root / "cat" / "big.png", size=(9, 9), mode="L")
    with pytest.raises(DatasetError, match=r"differ in size.*pass image_size"):
        load_dataset(root)
    assert load_dataset(root, image_size=(3, 7)).input_shape == (3, 7, 1)


# --- npz ---------------------------------------------------------------------------------------


def test_npz_plain_with_classes_and_float_pixels(tmp_path):
    x = np.random.default_rng(0).random((30, 4, 4, 3), dtype=np.float32)
    np.savez(tmp_path / "f.npz", x=x, y=np.arange(30) % 3, classes=np.array(["a", "b", "c"]))
    splits = load_dataset(f"npz:{tmp_path / 'f.npz'}", test_fraction=0.2, val_fraction=0.2)
    assert splits.name == "f" and splits.classes == ("a", "b", "c")
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [18, 6, 6]
    assert any(np.allclose(splits.test.x[0], image) for image in x)


def test_npz_keras_layout_keeps_test_split(tmp_path):
    rng = np.random.default_rng(0)
    np.savez(
        tmp_path / "mnist.npz",
        x_train=rng.integers(0, 256, (40, 7, 7), dtype=np.uint8),
        y_train=np.arange(40) % 10,
        x_test=rng.integers(0, 256, (10, 7, 7), dtype=np.uint8),
        y_test=np.arange(10),
    )
    splits = load_dataset(tmp_path / "mnist.npz")
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [36, 4, 10]
    assert splits.input_shape == (7, 7, 1) and splits.num_classes == 10


def test_npz_jpeg_bytes_file(tmp_path):
    np.savez(tmp_path / "j.npz", **jpeg_arrays(20), classes=np.array([b"red", b"blue"]))
    splits = load_dataset(tmp_path / "j.npz", image_size=4, max_per_split=5)
    assert splits.classes == ("red", "blue") and splits.input_shape == (4, 4, 3)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [5, 2, 4]
    red = np.rint(splits.train.x[:, 1, 1, 0] * 255)
    assert np.allclose(red, 40 * splits.train.y, atol=4)


def test_npz_jpeg_bytes_train_test_directory(tmp_path):
    np.savez(tmp_path / "train_jpeg_bytes.npz", **jpeg_arrays(16), classes=["r", "b"])
    np.savez(tmp_path / "test_jpeg_bytes.npz", **jpeg_arrays(6), classes=["r", "b"])
    splits = load_dataset(tmp_path, channels=1, val_fraction=0.25)
    assert splits.name == tmp_path.name and splits.input_shape == (8, 8, 1)
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [12, 4, 6]


def test_train_and_test_of_different_sizes_need_image_size(tmp_path):
    np.savez(tmp_path / "train.npz", **jpeg_arrays(8, size=(8, 8)))
    np.savez(tmp_path / "test.npz", **jpeg_arrays(4, size=(6, 5)))
    with pytest.raises(DatasetError, match=r"train images are \(8, 8, 3\).*\(5, 6, 3\)"):
        load_dataset(tmp_path)
    assert load_dataset(tmp_path, image_size=7).input_shape == (7, 7, 3)


def test_formats_are_documented():
    assert set(DATASET_FORMATS) == {"digits", "fashion-mnist", "idx", "cifar10", "folder", "npz"}


# --- errors ------------------------------------------------------------------------------------


def _bad_idx_magic(d: Path) -> str:
    write_idx_dir(d, gz=False)
    (d / "train-labels-idx1-ubyte").write_bytes(b"\x08\x03\x00\x00" + bytes(8))
    return str(d / "train-labels-idx1-ubyte")


def _truncated_idx(d: Path) -> str:
    path = write_idx_dir(d, gz=True) / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:-7]))
    return str(path)


def _corrupt_gzip(d: Path) -> str:
    path = write_idx_dir(d, gz=True) / "train-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:30])
    return str(path)


def _idx_count_mismatch(d: Path) -> str:
    write_idx_dir(d, gz=False)
    write_idx(d / "t10k-labels-idx1-ubyte", np.zeros(19))
    return str(d / "t10k-images-idx3-ubyte")


def _missing_idx_file(d: Path) -> str:
    (write_idx_dir(d, gz=False) / "t10k-labels-idx1-ubyte").unlink()
    return "t10k-labels-idx1-ubyte"


def _corrupt_pickle(d: Path) -> str:
    write_cifar(d)
    (d / "data_batch_2").write_bytes(b"\x80\x02}q\x00(garbage")
    return str(d / "data_batch_2")


def _malicious_pickle(d: Path) -> str:
    write_cifar(d)
    (d / "test_batch").write_bytes(b"cos\nsystem\n(S'echo pwned'\ntR.")
    return "refusing to load global os.system"


def _cifar_wrong_shape(d: Path) -> str:
    write_cifar(d)
    batch = {b"data": np.zeros((3, 100), np.uint8), b"labels": [0, 1, 2]}
    (d / "data_batch_1").write_bytes(pickle.dumps(batch))
    return "(N, 3072)"


def _cifar_no_test_batch(d: Path) -> str:
    (write_cifar(d) / "test_batch").unlink()
    return "missing CIFAR-10 test_batch"


def _cifar_label_out_of_range(d: Path) -> str:
    write_cifar(d)
    (d / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b"]}))
    return "labels out of range"


def _empty_class_folder(d: Path) -> str:
    write_folder(d)
    (d / "emu").mkdir()
    return str(d / "emu")


def _undecodable_image(d: Path) -> str:
    write_folder(d)
    (d / "dog" / "broken.png").write_bytes(b"\x89PNG not really")
    return str(d / "dog" / "broken.png")


def _no_class_folders(d: Path) -> str:
    d.mkdir()
    (d / "readme.txt").write_text("hi")
    return "cannot tell the dataset format"


def _npz_length_mismatch(d: Path) -> str:
    d.mkdir()
    np.savez(d / "a.npz", x=np.zeros((5, 2, 2), np.uint8), y=np.zeros(4, int))
    return "5 images but 4 labels"


def _npz_unknown_keys(d: Path) -> str:
    d.mkdir()
    np.savez(d / "a.npz", images=np.zeros((5, 2, 2), np.uint8), labels=np.zeros(5, int))
    return "unrecognised .npz keys"


def _npz_labels_out_of_range(d: Path) -> str:
    d.mkdir()
    np.savez(d / "a.npz", x=np.zeros((4, 2, 2)), y=[0, 1, 2, 3], classes=["a", "b"])
    return "labels out of range: found 0..3, expected 0..1"


def _npz_negative_labels(d: Path) -> str:
    d.mkdir()
    np.savez(d / "a.npz", x=np.zeros((4, 2, 2)), y=[0, -1, 1, 0])
    return "labels out of range"


def _npz_float_pixels_out_of_range(d: Path) -> str:
    d.mkdir()
    np.savez(d / "a.npz", x=np.full((4, 2, 2), 200.0), y=[0, 1, 1, 0])
    return "float pixels must lie in [0, 1]"


def _npz_channels_first(d: Path) -> str:
    d.mkdir()
    np.savez(d / "a.npz", x=np.zeros((4, 3, 8, 8), np.uint8), y=[0, 1, 1, 0])
    return "looks channels-first"


def _npz_not_a_zip(d: Path) -> str:
    d.mkdir()
    (d / "a.npz").write_bytes(b"definitely not numpy")
    return "cannot read .npz"


def _jpeg_bad_offsets(d: Path) -> str:
    d.mkdir()
    arrays = jpeg_arrays(4)
    np.savez(d / "a.npz", **{**arrays, "offsets": arrays["offsets"][:-1]})
    return "expected len(y) + 1"


def _jpeg_corrupt_image(d: Path) -> str:
    d.mkdir()
    arrays = jpeg_arrays(10)
    start, stop = arrays["offsets"][3:5]
    arrays["jpeg"][start + 2 : stop] = 7
    np.savez(d / "a.npz", **arrays)
    return f"{d / 'a.npz'} image 3: cannot decode image"


def _npz_directory_ambiguous(d: Path) -> str:
    d.mkdir()
    for name in ("one", "two"):
        np.savez(d / f"{name}.npz", x=np.zeros((2, 2, 2)), y=[0, 1])
    return "expected one train*.npz and one test*.npz"


@pytest.mark.parametrize(
    "make",
    [
        _bad_idx_magic, _truncated_idx, _corrupt_gzip, _idx_count_mismatch, _missing_idx_file,
        _corrupt_pickle, _malicious_pickle, _cifar_wrong_shape, _cifar_no_test_batch,
        _cifar_label_out_of_range, _empty_class_folder, _undecodable_image, _no_class_folders,
        _npz_length_mismatch, _npz_unknown_keys, _npz_labels_out_of_range, _npz_negative_labels,
        _npz_float_pixels_out_of_range, _npz_channels_first, _npz_not_a_zip, _jpeg_bad_offsets,
        _jpeg_corrupt_image, _npz_directory_ambiguous,
    ],
)  # fmt: skip
def test_malformed_data_raises_one_line_naming_the_path(tmp_path, make):
    expected = make(tmp_path / "data")
    with pytest.raises(DatasetError) as caught:
        load_dataset(tmp_path / "data")
    message = str(caught.value)
    assert expected in message and str(tmp_path / "data") in message and "\n" not in message


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("/no/such/dir", "/no/such/dir: no such file or directory"),
        ("tfrecord:/x/y", "unknown dataset format 'tfrecord'"),
        ("npz", "dataset format 'npz' needs a path"),
        ("cifar10:/no/such/dir", "/no/such/dir: no such file or directory"),
        ("digits:/x", "takes no path"),
        ("npz:", "give a path"),
    ],
)
def test_bad_specs(spec, expected):
    with pytest.raises(DatasetError, match=expected):
        load_dataset(spec)


def test_unknown_file_type_and_wrong_forced_format(tmp_path):
    (tmp_path / "data.csv").write_text("1,2")
    with pytest.raises(DatasetError, match=r"data.csv: unknown dataset format"):
        load_dataset(tmp_path / "data.csv")
    write_folder(tmp_path / "f")
    with pytest.raises(DatasetError, match=r"/f: missing IDX file train-images-idx3-ubyte"):
        load_dataset(f"idx:{tmp_path / 'f'}")


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        ({"channels": 2}, "channels must be 1 or 3"),
        ({"image_size": 0}, "image_size must be"),
        ({"image_size": (8, 8, 3)}, "image_size must be"),
        ({"val_fraction": 1.0}, "val_fraction must lie in"),
        ({"val_fraction": 0.5, "test_fraction": 0.5}, "must stay below 1"),
        ({"max_per_split": 0}, "max_per_split must be"),
    ],
)
def test_bad_options(option, expected):
    with pytest.raises(DatasetError, match=expected):
        load_dataset("digits", **option)


def test_empty_validation_split_keeps_its_shape():
    splits = load_dataset("digits", val_fraction=0.0, image_size=10)
    assert len(splits.val) == 0 and splits.val.x.shape == (0, 10, 10, 1)
