"""Datasets as deterministic train / val / test splits of float32 NHWC images in [0, 1].

``load_dataset(spec, ...)`` accepts:

- ``"digits"``: scikit-learn's bundled 8x8 digits (offline);
- ``"fashion-mnist"``: the IDX files the Debian package ``dataset-fashion-mnist`` installs in
  /usr/share/datasets/fashion-mnist/;
- a path, whose format is detected from file names: a directory of train/t10k IDX files (gzipped
  or not), a CIFAR-10 python-pickle directory (``cifar-10-batches-py`` or its parent), an image
  folder ``class_name/*.png|jpg|jpeg|bmp`` (optionally under ``train/`` and ``test/``), a
  ``.npz`` file, or a directory holding ``train*.npz`` and ``test*.npz``;
- ``"FORMAT:PATH"`` to force a format, FORMAT being a key of ``DATASET_FORMATS``.

``.npz`` files hold ``x`` (NHW or NHWC, uint8 or float in [0, 1]) and ``y`` with optional
``classes``; or Keras-style ``x_train``/``y_train``/``x_test``/``y_test``; or JPEG bytes:
``jpeg`` (all files concatenated, uint8), ``offsets`` (N + 1 int64), ``y``, optional
``classes``. Nothing is cached on disk; every problem with the data raises
:class:`edgekit.errors.DatasetError` naming the path.
"""

from __future__ import annotations

from edgekit.data.loading import DATASET_FORMATS, load_dataset
from edgekit.data.splits import Split, Splits

__all__ = ["DATASET_FORMATS", "Split", "Splits", "load_dataset"]
