"""``export_model``: a trained subnet -> a verified int8 TFLite Micro deployment bundle.

Steps: BatchNorm recalibration of the subnet on the training split (on a snapshot; the supernet
is left as it was), extraction, the native TensorFlow graph (fp32 parity with PyTorch checked),
post-training full-integer quantization calibrated on training images, the op check, the
TFLite Micro arena (measured with the real interpreter, and estimated by the memory model),
int8 inference of the whole test split in TFLite Micro and in LiteRT's reference kernels, and,
when post-training quantization loses more than ``qat_threshold`` accuracy,
quantization-aware fine-tuning and a second conversion (the better int8 model is kept).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgekit import __version__
from edgekit.errors import ConfigError, DatasetError, EdgekitError
from edgekit.export.bundle import BUNDLE_FORMAT, BUNDLE_VERSION, write_bundle
from edgekit.export.errors import ExportError

if TYPE_CHECKING:
    import numpy as np
    import torch.nn as nn

    from edgekit.data.splits import Split, Splits
    from edgekit.estimate import TflmMeasurement
    from edgekit.export.convert import OpRecord
    from edgekit.export.sparse import SparseExportResult, SparseSettings
    from edgekit.export.verify import Agreement, TensorSpec
    from edgekit.profiles import DeviceProfile
    from edgekit.spaces import ArchConfig, SearchSpace

logger = logging.getLogger(__name__)

ProgressCallback = Callable[[int, int, str], None]
QAT_MODES = ("auto", "always", "never")
# fp32 parity: TensorFlow graph vs PyTorch logits, relative to the logits' magnitude.
PARITY_TOLERANCE = 1e-4
_DROP_TRAIN_IMAGES = 1000
_PARITY_IMAGES = 16


@dataclass(frozen=True)
class Int8Model:
    """One int8 conversion of a set of weights and how it ran."""

    method: str  # "ptq" (post-training quantization) or "qat" (after QAT fine-tuning)
    model: bytes = field(repr=False)
    ops: tuple[OpRecord, ...]
    fp32_accuracy: float  # the PyTorch weights it was converted from, on the test split
    fp32_parity_max_abs_diff: float  # TensorFlow graph vs PyTorch, float logits
    tflm_accuracy: float
    litert_accuracy: float
    agreement: Agreement  # on the test images
    val_fp32_accuracy: float | None  # on the validation images (for decisions), if given
    val_tflm_accuracy: float | None
    arena: TflmMeasurement
    convert_seconds: float
    verify_seconds: float
    estimated_host_bytes: int | None = None  # the memory model's arena for this interpreter


@dataclass
class ExportResult:
    """What ``export_model`` produced: the bundle files, the manifest and the key figures.

    Accuracies are fractions in [0, 1] on the test split: ``fp32_accuracy`` of the recalibrated
    PyTorch subnet, ``int8_accuracy`` of the bundled model in TFLite Micro. ``ptq_int8_accuracy``
    is post-training quantization alone, ``qat_int8_accuracy`` after QAT fine-tuning and
    ``qat_fp32_accuracy`` the fine-tuned weights in fp32 (both ``None`` when QAT did not run).
    ``agreement`` compares TFLite Micro with LiteRT's reference kernels.
    """

    out_dir: Path
    files: dict[str, Path]
    manifest: dict[str, Any]
    space: str
    config: ArchConfig
    fp32_accuracy: float
    int8_accuracy: float
    ptq_int8_accuracy: float
    qat_int8_accuracy: float | None
    qat_fp32_accuracy: float | None
    quantization: str
    agreement: Agreement
    fp32_parity_max_abs_diff: float
    arena_measured_bytes: int
    arena_estimated_bytes: int | None
    flash_bytes: int
    op_counts: dict[str, int]
    timings: dict[str, float]

    @property
    def accuracy_drop(self) -> float:
        """fp32 minus int8 accuracy (a fraction; x100 for points)."""
        return self.fp32_accuracy - self.int8_accuracy

    @property
    def model_path(self) -> Path:
        return self.files["model"]


# --- helpers --------------------------------------------------------------------------------
def model_inputs(space: SearchSpace, cfg: ArchConfig, images: np.ndarray) -> np.ndarray:
    """Dataset images resized to ``cfg``'s input exactly as training resizes them, NHWC."""
    import numpy as np
    import torch

    from edgekit.training import prepare_input, to_nchw

    with torch.no_grad():
        resized = prepare_input(space, to_nchw(images), cfg)
    return np.ascontiguousarray(resized.numpy().transpose(0, 2, 3, 1))


def _torch_logits(module: nn.Module, images_nhwc: np.ndarray, batch: int = 256) -> np.ndarray:
    import numpy as np
    import torch

    outputs = []
    with torch.no_grad():
        for start in range(0, len(images_nhwc), batch):
            chunk = images_nhwc[start : start + batch].transpose(0, 3, 1, 2)
            outputs.append(module(torch.from_numpy(np.ascontiguousarray(chunk))).numpy())
    return np.concatenate(outputs) if outputs else np.zeros((0, 0), np.float32)


def sample_index(split: Split, count: int, seed: int) -> np.ndarray:
    """Indices of ``count`` images of ``split`` (a seeded random subset, in split order)."""
    import numpy as np

    return np.sort(np.random.default_rng(seed).permutation(len(split))[:count])


def sample_images(split: Split, count: int, seed: int) -> np.ndarray:
    """``count`` images of ``split`` (a seeded random subset, in split order)."""
    return split.x[sample_index(split, count, seed)]


def source_record(
    space: SearchSpace, cfg: ArchConfig, checkpoint_path: str | Path | None
) -> dict[str, Any]:
    """The manifest's ``source``: the architecture and the checkpoint (path and hash)."""
    return {
        "space": space.name,
        "genome": space.encode(cfg),
        "config": cfg.to_dict(),
        "checkpoint": None if checkpoint_path is None else str(checkpoint_path),
        "checkpoint_sha256": None if checkpoint_path is None else sha256_file(checkpoint_path),
    }


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _check_inputs(space: SearchSpace, cfg: ArchConfig, splits: Splits, qat: str) -> None:
    space.validate(cfg)
    if qat not in QAT_MODES:
        raise ConfigError(f"qat={qat!r}: expected one of {QAT_MODES}")
    if splits.num_classes != space.num_classes:
        raise DatasetError(
            f"dataset {splits.name!r} has {splits.num_classes} classes, the {space.name} "
            f"supernet {space.num_classes}"
        )
    if splits.input_shape[2] != space.in_channels:
        raise DatasetError(
            f"dataset {splits.name!r} has {splits.input_shape[2]} channel(s), the "
            f"{space.name} supernet {space.in_channels}"
        )
    if len(splits.train) == 0 or len(splits.test) == 0:
        raise DatasetError(f"dataset {splits.name!r} needs training and test images to export")


def extract_subnet(
    space: SearchSpace,
    supernet: nn.Module,
    cfg: ArchConfig,
    recalibrate_with: Split | None,
    seed: int = 0,
) -> nn.Module:
    """``space.extract`` in eval mode, after BatchNorm recalibration of ``cfg`` on
    ``recalibrate_with`` (when given); the supernet's own statistics are restored."""
    from edgekit.training import preserved_buffers, recalibrate_bn

    with preserved_buffers(supernet):
        if recalibrate_with is not None:
            recalibrate_bn(space, supernet, cfg, recalibrate_with, seed=seed)
        supernet.set_active(cfg)
        supernet.eval()
        module = space.extract(supernet, cfg)
    return module.eval()


# --- one conversion -------------------------------------------------------------------------
def quantize_and_verify(
    space: SearchSpace,
    module: nn.Module,
    cfg: ArchConfig,
    representative: np.ndarray,
    test_images: np.ndarray,
    test_labels: np.ndarray,
    *,
    val_images: np.ndarray | None = None,
    val_labels: np.ndarray | None = None,
    method: str = "ptq",
) -> Int8Model:
    """Build, convert and verify one set of weights: fp32 parity, int8 conversion, op check,
    measured TFLite Micro arena, and int8 inference of ``test_images`` (NHWC at the model's
    input size) in TFLite Micro and LiteRT's reference kernels. ``val_images`` (optional) also
    run in PyTorch and TFLite Micro, for decisions that must not look at the test split."""
    import numpy as np

    from edgekit.estimate import TflmRuntimeError, measure_tflm
    from edgekit.export.convert import check_ops, compact_model, convert_int8
    from edgekit.export.graph import build_tf_graph
    from edgekit.export.verify import (
        accuracy,
        agreement,
        io_specs,
        run_arena_size,
        run_litert_reference,
        run_tflm,
    )

    started = time.perf_counter()
    module.eval()
    graph = build_tf_graph(space, module, cfg)
    torch_logits = _torch_logits(module, test_images)
    val_logits = None if val_images is None else _torch_logits(module, val_images)
    parity_images = test_images[:_PARITY_IMAGES]
    difference = np.abs(graph.predict(parity_images) - torch_logits[:_PARITY_IMAGES])
    parity = float(difference.max()) if difference.size else 0.0
    scale = max(1.0, float(np.abs(torch_logits[:_PARITY_IMAGES]).max(initial=0.0)))
    if parity > PARITY_TOLERANCE * scale:
        raise ExportError(
            f"fp32 parity check failed: TensorFlow and PyTorch logits differ by {parity:.3g} "
            f"(allowed {PARITY_TOLERANCE * scale:.3g}); the {space.name} builder does not match "
            "the extracted network"
        )
    model = convert_int8(graph, representative)
    ops = tuple(check_ops(model, graph.layers))
    model = compact_model(model)  # what goes to the board, and what is verified
    convert_seconds = time.perf_counter() - started

    started = time.perf_counter()
    try:
        estimated_host_bytes = _host_arena_estimate(model)
        arena = measure_tflm(model, expected=estimated_host_bytes)
    except TflmRuntimeError as e:
        raise ExportError(f"TFLite Micro cannot run the exported model: {e}") from e
    input_spec, _ = io_specs(model)
    inputs = input_spec.quantization.quantize(test_images)
    arena_size = run_arena_size(arena.arena_bytes)
    tflm = run_tflm(model, inputs, arena_size)
    litert = run_litert_reference(model, inputs)
    val_tflm = None
    if val_images is not None:
        val_tflm = run_tflm(model, input_spec.quantization.quantize(val_images), arena_size)
    verify_seconds = time.perf_counter() - started
    runtimes = agreement(tflm, litert)
    # FULLY_CONNECTED / BATCH_MATMUL round differently by one step between the runtimes;
    # through attention that flips ~1% of a ViT's predictions, so warn only well beyond.
    if runtimes.top1_agreement < 0.97:
        logger.warning(
            "TFLite Micro and LiteRT's reference kernels disagree on %.1f%% of the images "
            "(max |diff| %d int8 steps): a kernel differs between the runtimes",
            100 * (1 - runtimes.top1_agreement), runtimes.max_abs_diff,
        )  # fmt: skip
    return Int8Model(
        method=method,
        model=model,
        ops=ops,
        fp32_accuracy=accuracy(torch_logits, test_labels),
        fp32_parity_max_abs_diff=parity,
        tflm_accuracy=accuracy(tflm, test_labels),
        litert_accuracy=accuracy(litert, test_labels),
        agreement=runtimes,
        val_fp32_accuracy=None if val_logits is None else accuracy(val_logits, val_labels),
        val_tflm_accuracy=None if val_tflm is None else accuracy(val_tflm, val_labels),
        arena=arena,
        convert_seconds=convert_seconds,
        verify_seconds=verify_seconds,
        estimated_host_bytes=estimated_host_bytes,
    )


# --- memory model ---------------------------------------------------------------------------
def _host_arena_estimate(model: bytes) -> int | None:
    """The memory model's arena for the host interpreter: where the measurement starts."""
    from edgekit.estimate import analyze_tflite

    try:
        return analyze_tflite(model).arena_bytes
    except EdgekitError:
        return None


def _memory_estimates(chosen: Int8Model, board: DeviceProfile | None) -> dict[str, Any]:
    """Arena estimated by the memory model for the host interpreter (comparable with the
    measurement; computed when the model was verified) and for the board's firmware build;
    ``None`` where the model cannot say."""
    from edgekit.estimate import analyze_tflite, fits

    model = chosen.model
    out: dict[str, Any] = {
        "estimated_host_bytes": chosen.estimated_host_bytes, "estimated_firmware_bytes": None,
    }  # fmt: skip
    try:
        pointer, alignment = (
            (4, 16) if board is None else (board.pointer_bytes, board.alignment_bytes)
        )
        firmware = analyze_tflite(model, pointer_bytes=pointer, alignment=alignment)
        out["estimated_firmware_bytes"] = firmware.arena_bytes
        out["flash"] = {
            "total_bytes": firmware.flash.total_bytes,
            "weight_bytes": firmware.flash.weight_bytes,
            "bias_bytes": firmware.flash.bias_bytes,
            "quantization_bytes": firmware.flash.quantization_bytes,
            "overhead_bytes": firmware.flash.overhead_bytes,
        }
        if board is not None:
            fit = fits(firmware, board)
            out["board_fit"] = {
                "fits": fit.fits,
                "arena_bytes": fit.arena_bytes,
                "sram_budget_bytes": fit.sram_budget_bytes,
                "flash_bytes": fit.flash_bytes,
                "flash_budget_bytes": fit.flash_budget_bytes,
                "summary": fit.summary(),
            }
            if not fit.fits:
                logger.warning("%s", fit.summary())
    except EdgekitError as e:
        logger.warning("memory model could not analyse the exported model: %s", e)
    return out


# --- manifest and report --------------------------------------------------------------------
def _op_counts(ops: tuple[OpRecord, ...]) -> dict[str, int]:
    return dict(sorted(Counter(op.op for op in ops).items()))


def _manifest(
    *,
    space: SearchSpace,
    cfg: ArchConfig,
    splits: Splits,
    chosen: Int8Model,
    ptq: Int8Model,
    qat: Int8Model | None,
    io: tuple[TensorSpec, TensorSpec],
    memory: dict[str, Any],
    board: DeviceProfile | None,
    checkpoint_path: str | Path | None,
    representative_images: int,
    test_images: int,
    val_images: int,
    timings: dict[str, float],
) -> dict[str, Any]:
    input_spec, output_spec = io
    height, width, channels = space.input_shape(cfg)
    return {
        "format": BUNDLE_FORMAT,
        "version": BUNDLE_VERSION,
        "edgekit_version": __version__,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "model": {
            "file": "model.tflite",
            "c_source": "model_data.cc",
            "c_header": "model_data.h",
            "c_symbol": "g_model_data",
            "sha256": hashlib.sha256(chosen.model).hexdigest(),
            "flash_bytes": len(chosen.model),
        },
        "input": {
            **input_spec.to_dict(),
            "layout": "NHWC",
            "preprocessing": (
                f"resize to {height}x{width} (bilinear), {channels} channel(s), float in [0, 1], "
                "then q = round(x / scale) + zero_point"
            ),
        },
        "output": {**output_spec.to_dict(), "meaning": "class logits; arg-max is the label"},
        "labels": list(splits.classes),
        "ops": [op.op for op in chosen.ops],
        # The model ships without tensor names: which layer each op comes from.
        "op_layers": [op.layer for op in chosen.ops],
        "op_counts": _op_counts(chosen.ops),
        "arena": {
            "measured_host_bytes": chosen.arena.arena_bytes,
            "measured_host_head_bytes": chosen.arena.head_bytes,
            "measured_host_tail_bytes": chosen.arena.tail_bytes,
            **{k: v for k, v in memory.items() if k.startswith("estimated")},
        },
        "flash": memory.get("flash", {"total_bytes": len(chosen.model)}),
        "board": (
            None
            if board is None
            else {"name": board.name, "core": board.core, **memory.get("board_fit", {})}
        ),
        "source": source_record(space, cfg, checkpoint_path),
        "quantization": {
            "method": chosen.method,
            "weights": "int8, symmetric, per output channel",
            "activations": "int8, asymmetric, per tensor",
            "representative_images": representative_images,
            "representative_split": "train",
        },
        "verification": {
            "dataset": splits.name,
            "test_images": test_images,
            "fp32_accuracy": ptq.fp32_accuracy,
            "int8_accuracy": chosen.tflm_accuracy,
            "int8_accuracy_ptq": ptq.tflm_accuracy,
            "int8_accuracy_qat": None if qat is None else qat.tflm_accuracy,
            "fp32_accuracy_qat_weights": None if qat is None else qat.fp32_accuracy,
            "litert_reference_accuracy": chosen.litert_accuracy,
            "fp32_parity_max_abs_diff": chosen.fp32_parity_max_abs_diff,
            "tflm_vs_litert": chosen.agreement.to_dict(),
            # What the QAT decision and the PTQ / QAT choice looked at.
            "validation": {
                "images": val_images,
                "fp32_accuracy": ptq.val_fp32_accuracy,
                "int8_accuracy_ptq": ptq.val_tflm_accuracy,
                "int8_accuracy_qat": None if qat is None else qat.val_tflm_accuracy,
            },
        },
        "timings_s": {k: round(v, 3) for k, v in timings.items()},
    }


def _report(manifest: dict[str, Any]) -> str:
    from edgekit.units import format_size

    source, check = manifest["source"], manifest["verification"]
    arena, model = manifest["arena"], manifest["model"]
    agree = check["tflm_vs_litert"]
    drop = 100 * (check["fp32_accuracy"] - check["int8_accuracy"])
    qat = check["int8_accuracy_qat"]
    lines = [
        f"# {source['space']} `{source['genome']}`",
        "",
        f"- int8 model: {format_size(model['flash_bytes'])} ({model['flash_bytes']} B), "
        f"{len(manifest['ops'])} ops: "
        + ", ".join(f"{op} x{n}" for op, n in manifest["op_counts"].items()),
        f"- input {manifest['input']['shape']} int8 (scale {manifest['input']['scale']:.6g}, "
        f"zero point {manifest['input']['zero_point']}); output {manifest['output']['shape']}",
        f"- tensor arena: {arena['measured_host_bytes']} B measured (TFLite Micro, x86-64 host)"
        + (
            f"; {arena['estimated_firmware_bytes']} B estimated for a 32-bit build"
            if arena.get("estimated_firmware_bytes")
            else ""
        ),
        f"- accuracy on {check['test_images']} {check['dataset']} test images: fp32 "
        f"{check['fp32_accuracy']:.2%}, int8 {check['int8_accuracy']:.2%} "
        f"({drop:+.2f} points drop, {manifest['quantization']['method'].upper()})"
        + (f"; post-training only {check['int8_accuracy_ptq']:.2%}" if qat is not None else ""),
        f"- TFLite Micro vs LiteRT reference kernels: top-1 agreement "
        f"{agree['top1_agreement']:.2%}, max |diff| {agree['max_abs_diff']} int8 steps "
        f"(mean {agree['mean_abs_diff']:.3f})",
        f"- fp32 parity (TensorFlow graph vs PyTorch): max |diff| "
        f"{check['fp32_parity_max_abs_diff']:.2e}",
    ]
    if manifest["board"] is not None and "summary" in manifest["board"]:
        lines.append(f"- board {manifest['board']['summary']}")
    lines.append(
        f"- source checkpoint: {source['checkpoint'] or '(in memory)'}"
        + (
            f" (sha256 {source['checkpoint_sha256'][:16]}...)"
            if source["checkpoint_sha256"]
            else ""
        )
    )
    return "\n".join(lines) + "\n"


def _decision_accuracy(model: Int8Model) -> float:
    """int8 accuracy to decide with: validation, or test when there is no validation split."""
    return model.tflm_accuracy if model.val_tflm_accuracy is None else model.val_tflm_accuracy


def _training_images_drop(
    space: SearchSpace, cfg: ArchConfig, module: nn.Module, ptq: Int8Model, train: Split, seed: int
) -> float:
    """fp32 minus int8 accuracy of ``ptq`` on up to ``_DROP_TRAIN_IMAGES`` training images.

    Quantization loss is a difference between two models on the same images, so training
    images measure it as well as held-out ones; a small validation split alone misses it (one
    of digits' 180 validation images is 0.56 points).
    """
    from edgekit.export.verify import accuracy, io_specs, run_arena_size, run_tflm

    index = sample_index(train, _DROP_TRAIN_IMAGES, seed + 1)
    images, labels = model_inputs(space, cfg, train.x[index]), train.y[index]
    inputs = io_specs(ptq.model)[0].quantization.quantize(images)
    int8 = run_tflm(ptq.model, inputs, run_arena_size(ptq.arena.arena_bytes))
    drop = accuracy(_torch_logits(module, images), labels) - accuracy(int8, labels)
    logger.info("PTQ loses %.2f points on %d training images", 100 * drop, len(index))
    return drop


def _decision_drop(model: Int8Model) -> float:
    fp32 = model.fp32_accuracy if model.val_fp32_accuracy is None else model.val_fp32_accuracy
    return fp32 - _decision_accuracy(model)


# --- the pipeline ---------------------------------------------------------------------------
def export_model(
    space: SearchSpace,
    supernet: nn.Module,
    cfg: ArchConfig,
    splits: Splits,
    out_dir: str | Path,
    *,
    board: DeviceProfile | None = None,
    checkpoint_path: str | Path | None = None,
    qat: str = "auto",
    qat_threshold: float = 0.005,
    qat_epochs: int = 3,
    recalibrate: bool = True,
    representative_images: int = 200,
    max_test_images: int | None = None,
    sparse: bool | SparseSettings = False,
    seed: int = 0,
    progress: ProgressCallback | None = None,
) -> ExportResult | SparseExportResult:
    """Export subnet ``cfg`` of a trained ``supernet`` as a verified int8 bundle in ``out_dir``.

    ``qat``: ``"auto"`` fine-tunes with fake quantization when post-training quantization
    loses more than ``qat_threshold`` (a fraction: 0.005 = half a point, a margin below the
    1-point target) of accuracy on the validation split or on 1,000 training images,
    ``"always"`` / ``"never"`` force it (``"never"`` also skips the int8 run of the validation
    split, which only serves that decision); the QAT model is bundled when its validation
    accuracy is higher (the test split only reports). The representative set is
    ``representative_images`` training images; reported accuracies use the test split (its
    first ``max_test_images``).
    ``sparse`` (``True`` or a :class:`~edgekit.export.sparse.SparseSettings`) instead prunes
    and fine-tunes the subnet for XNNPACK sparse inference and writes a float32 LiteRT bundle
    (:func:`edgekit.export.sparse.export_sparse`; ``True``: 80% zeros in 4x1 blocks); it
    returns a
    :class:`~edgekit.export.sparse.SparseExportResult`.
    """
    from edgekit.export.verify import io_specs

    _check_inputs(space, cfg, splits, qat)
    if sparse:
        from edgekit.export.sparse import export_sparse

        return export_sparse(
            space, supernet, cfg, splits, out_dir, settings=None if sparse is True else sparse,
            board=board, checkpoint_path=checkpoint_path, recalibrate=recalibrate,
            max_test_images=max_test_images, seed=seed, progress=progress,
        )  # fmt: skip
    started = time.perf_counter()
    stages = ("extracting subnet", "post-training quantization", "quantization-aware fine-tuning",
              "memory model and bundle")  # fmt: skip

    def stage(status: str) -> None:
        if progress is not None:
            progress(stages.index(status), len(stages), status)

    stage("extracting subnet")
    module = extract_subnet(space, supernet, cfg, splits.train if recalibrate else None, seed)
    test = splits.test
    count = len(test) if max_test_images is None else min(len(test), max_test_images)
    test_images = model_inputs(space, cfg, test.x[:count])
    test_labels = test.y[:count]
    evaluation: dict[str, Any] = {}
    if len(splits.val) and qat != "never":  # validation only serves the QAT decisions
        evaluation = {
            "val_images": model_inputs(space, cfg, splits.val.x),
            "val_labels": splits.val.y,
        }
    representative = model_inputs(
        space, cfg, sample_images(splits.train, representative_images, seed)
    )

    stage("post-training quantization")
    ptq = quantize_and_verify(
        space, module, cfg, representative, test_images, test_labels, **evaluation
    )
    logger.info(
        "PTQ: fp32 %.2f%%, int8 %.2f%% in TFLite Micro", 100 * ptq.fp32_accuracy,
        100 * ptq.tflm_accuracy,
    )  # fmt: skip
    chosen, qat_model, qat_seconds = ptq, None, 0.0
    # The training-image check costs 1,000 interpreter runs: only when the decision needs it.
    if qat == "always" or (
        qat == "auto"
        and (
            _decision_drop(ptq) > qat_threshold
            or _training_images_drop(space, cfg, module, ptq, splits.train, seed) > qat_threshold
        )
    ):
        stage("quantization-aware fine-tuning")
        from edgekit.export.qat import finetune_qat

        qat_started = time.perf_counter()
        tuned = finetune_qat(space, module, cfg, splits, epochs=qat_epochs, seed=seed)
        qat_model = quantize_and_verify(
            space, tuned, cfg, representative, test_images, test_labels, method="qat",
            **evaluation,
        )  # fmt: skip
        qat_seconds = time.perf_counter() - qat_started
        logger.info("QAT: int8 %.2f%% in TFLite Micro", 100 * qat_model.tflm_accuracy)
        if _decision_accuracy(qat_model) > _decision_accuracy(ptq):
            chosen = qat_model

    stage("memory model and bundle")
    memory = _memory_estimates(chosen, board)
    timings = {
        "convert": ptq.convert_seconds,
        "verify": ptq.verify_seconds,
        "qat": qat_seconds,
        "total": time.perf_counter() - started,
    }
    manifest = _manifest(
        space=space, cfg=cfg, splits=splits, chosen=chosen, ptq=ptq, qat=qat_model,
        io=io_specs(chosen.model), memory=memory, board=board, checkpoint_path=checkpoint_path,
        representative_images=len(representative), test_images=count,
        val_images=len(evaluation.get("val_labels", ())), timings=timings,
    )  # fmt: skip
    files = write_bundle(
        out_dir, chosen.model, manifest, _report(manifest),
        arena_bytes=-(-chosen.arena.arena_bytes // 16) * 16,
    )  # fmt: skip
    if progress is not None:
        progress(len(stages), len(stages), "done")
    return ExportResult(
        out_dir=Path(out_dir),
        files=files,
        manifest=manifest,
        space=space.name,
        config=cfg,
        fp32_accuracy=ptq.fp32_accuracy,
        int8_accuracy=chosen.tflm_accuracy,
        ptq_int8_accuracy=ptq.tflm_accuracy,
        qat_int8_accuracy=None if qat_model is None else qat_model.tflm_accuracy,
        qat_fp32_accuracy=None if qat_model is None else qat_model.fp32_accuracy,
        quantization=chosen.method,
        agreement=chosen.agreement,
        fp32_parity_max_abs_diff=chosen.fp32_parity_max_abs_diff,
        arena_measured_bytes=chosen.arena.arena_bytes,
        arena_estimated_bytes=memory.get("estimated_host_bytes"),
        flash_bytes=len(chosen.model),
        op_counts=_op_counts(chosen.ops),
        timings=timings,
    )
