"""TensorFlow graphs built natively from a config and an extracted PyTorch subnet.

Each space has a builder (``edgekit.export.<space module>.build``) that lays out the same
network with TensorFlow ops on NHWC tensors: convs with TF "SAME" padding (the spaces compute
exactly that padding, so no PAD ops appear), BatchNorm folded into the conv weights and biases,
every weight a constant. Every op sits in a ``tf.name_scope`` named after the layer of the
extracted module it comes from (``stages.1.0.expand``, ``blocks.0.attn.q`` ...), and the
converter keeps those scopes in the TFLite tensor names, so a problem in the converted model can
be traced back to its layer.
"""

from __future__ import annotations

import functools
import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from edgekit.export.errors import ExportError

if TYPE_CHECKING:
    import numpy as np
    import torch.nn as nn

    from edgekit.spaces import ArchConfig, SearchSpace

# Space name -> module holding its builder ``build(module, cfg) -> TfGraph``.
BUILDERS: dict[str, str] = {
    "tiny-cnn": "edgekit.export.tiny_cnn",
    "tiny-resnet": "edgekit.export.tiny_resnet",
    "tiny-vit": "edgekit.export.tiny_vit",
}


@dataclass(frozen=True)
class TfGraph:
    """A network as a TensorFlow function of one NHWC float image batch of size 1.

    ``forward`` maps a ``(1, H, W, C)`` float32 tensor in [0, 1] to ``(1, num_classes)``
    logits; ``layers`` are the layer names used as name scopes, in execution order.
    ``shared_range_scopes``: a regular expression for name-scope parts (a patch's scope);
    tensors whose names are equal once these parts are removed get one int8 range.
    """

    forward: Callable[[Any], Any]
    input_shape: tuple[int, int, int]
    num_classes: int
    layers: tuple[str, ...]
    shared_range_scopes: str | None = None

    @functools.cached_property
    def concrete_function(self) -> Any:
        """``forward`` traced once for the fixed input signature (1, H, W, C)."""
        import tensorflow as tf

        spec = tf.TensorSpec((1, *self.input_shape), tf.float32, name="input")
        return tf.function(self.forward, input_signature=[spec]).get_concrete_function()

    def predict(self, images: np.ndarray) -> np.ndarray:
        """Float logits of an NHWC batch, one image at a time (the graph has batch 1)."""
        import numpy as np
        import tensorflow as tf

        function = self.concrete_function
        outputs = [function(tf.constant(image[None], tf.float32)) for image in images]
        return np.concatenate([np.asarray(out) for out in outputs])


def build_tf_graph(space: SearchSpace, module: nn.Module, cfg: ArchConfig) -> TfGraph:
    """The TensorFlow graph of ``cfg`` with the weights of ``module`` (``space.extract``'s
    output, in eval mode)."""
    if space.name not in BUILDERS:
        raise ExportError(
            f"no TensorFlow builder for space {space.name!r}; expected one of {sorted(BUILDERS)}"
        )
    space.validate(cfg)
    builder = importlib.import_module(BUILDERS[space.name])
    return builder.build(module, cfg)
