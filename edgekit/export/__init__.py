"""Int8 export to TFLite Micro: a trained subnet -> a verified deployment bundle.

Path (chosen over nobuco, litert-torch and onnx2tf): each space has a builder that lays out the
subnet natively in TensorFlow from its config (NHWC, TF "SAME" padding, BatchNorm folded,
weights copied from ``space.extract``), so the graph has no PAD / TRANSPOSE ops and every op
quantizes to an int8 builtin; fp32 parity with PyTorch is checked on every export. The TFLite
converter then does post-training full-integer quantization; the tensor names are dropped (the
board never reads them) and tensors with equal per-channel zero points share one vector
(``compact_model``), and the result is run in the TFLite Micro interpreter and in LiteRT's
reference kernels.

Heavy imports (TensorFlow, torch, the interpreters) happen inside the functions.
"""

from __future__ import annotations

from edgekit.export.bundle import BUNDLE_FILES, c_array, read_manifest, write_bundle
from edgekit.export.convert import (
    TFLM_INT8_OPS,
    OpRecord,
    check_ops,
    compact_model,
    convert_int8,
)
from edgekit.export.errors import ExportError, UnsupportedOpError
from edgekit.export.from_path import export_from_path
from edgekit.export.graph import TfGraph, build_tf_graph
from edgekit.export.pipeline import (
    ExportResult,
    Int8Model,
    export_model,
    extract_subnet,
    quantize_and_verify,
)
from edgekit.export.sparse import (
    SparseExportResult,
    SparseSettings,
    check_xnnpack_sparse,
    export_sparse,
)
from edgekit.export.verify import (
    Agreement,
    Quantization,
    agreement,
    io_specs,
    run_litert_reference,
    run_tflm,
)

__all__ = [
    "BUNDLE_FILES",
    "TFLM_INT8_OPS",
    "Agreement",
    "ExportError",
    "ExportResult",
    "Int8Model",
    "OpRecord",
    "Quantization",
    "SparseExportResult",
    "SparseSettings",
    "TfGraph",
    "UnsupportedOpError",
    "agreement",
    "build_tf_graph",
    "c_array",
    "check_ops",
    "check_xnnpack_sparse",
    "compact_model",
    "convert_int8",
    "export_from_path",
    "export_model",
    "export_sparse",
    "extract_subnet",
    "io_specs",
    "quantize_and_verify",
    "read_manifest",
    "run_litert_reference",
    "run_tflm",
    "write_bundle",
]
