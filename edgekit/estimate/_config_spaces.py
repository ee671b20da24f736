"""Per-space synthesis of the converted graph (see :mod:`edgekit.estimate._config_graph`).

Each builder follows its exporter (``edgekit.export.tiny_cnn`` / ``tiny_vit``) statement by
statement: the TensorFlow node names it creates decide the operator order, the TFLite ops and
tensors are what the converter turns them into. A graph is a chain of *pieces* (the patched
stages, a block, the classifier ...) that each read the previous piece's output only; the
whole graph is built by running them on one builder, and the fast path builds each piece on
its own builder and caches it (see :mod:`edgekit.estimate._config_fast`).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from edgekit.estimate._config_graph import (
    ARITH_CONSTANT,
    CAPTURED_CONSTANT,
    GraphBuilder,
    Tensor,
)
from edgekit.spaces._base import is_factorised, projection_rank
from edgekit.spaces.tiny_cnn import (
    CnnLayer,
    PatchPlan,
    PatchStep,
    TinyCnnConfig,
    layer_plan,
    patch_plan,
    patched_layer_count,
    same_padding,
)
from edgekit.spaces.tiny_resnet import STAGE_WIDTHS, TinyResnetConfig
from edgekit.spaces.tiny_resnet import layer_plan as resnet_layer_plan
from edgekit.spaces.tiny_resnet import patch_plan as resnet_patch_plan
from edgekit.spaces.tiny_vit import HEAD_DIM, TinyVitConfig

Value = tuple[str, Tensor]  # (TensorFlow node, TFLite tensor)
INPUT_NAME = "serving_default_input:0"
_OUTPUT_NAME = "PartitionedCall:0"


def start(b: GraphBuilder, shape: tuple[int, ...], role: str = "input") -> Value:
    """The value a graph (or a piece built on its own) starts from."""
    b.input = Tensor(shape, role=role, name=INPUT_NAME)
    return b.node("input"), b.input


# --- tiny-cnn -------------------------------------------------------------------------------
@dataclass
class _ConvConstants:
    """A conv layer's weight tensors (shared by its patches) and its bias's capture node."""

    kernels: list[Tensor]
    kernel_nodes: list[str]
    bias_node: str
    patched: bool


def _cnn_weights(
    b: GraphBuilder, layer: CnnLayer, patched: bool, shared: bool = False
) -> _ConvConstants:
    """``shared``: weights of a patch built on its own, merged by layer across patches."""
    c_in, c_out, k, s = layer.in_shape[2], layer.out_shape[2], layer.kernel, layer.name
    if layer.op == "depthwise_conv2d":
        shapes = [((1, k, k, c_out), c_out, f"{s}/depthwise")]
    elif layer.rank:
        shapes = [
            ((layer.rank, 1, 1, c_in), layer.rank, f"{s}/Conv2D"),
            ((c_out, 1, 1, layer.rank), c_out, f"{s}/Conv2D_1"),
        ]
    else:
        shapes = [((c_out, k, k, c_in), c_out, f"{s}/Conv2D")]
    # Depthwise weights (1, k, k, C) are quantized along their last axis.
    quant_dimension = 3 if layer.op == "depthwise_conv2d" else 0
    # TensorFlow names a captured constant after the op input that first reads it: a patched
    # layer's weights after the first patch's conv.
    first_reader = f"{PATCH_NAME}/" if patched else ""
    kernels, nodes = [], []
    for shape, channels, name in shapes:
        filter_arg = "filter_in" if layer.op == "depthwise_conv2d" else "filter"
        nodes.append(b.capture(f"{first_reader}{name}/{filter_arg}"))
        # Weights shared by patches get converter names.
        merge_key = ("patched weight", name, shape) if shared else None
        kernels.append(b.constant(
            shape, "int8", channels, "weight", ARITH_CONSTANT if patched else name,
            merge_key=merge_key, quant_dimension=quant_dimension,
        ))  # fmt: skip
    return _ConvConstants(kernels, nodes, b.capture(f"{first_reader}{s}/add/y"), patched)


def _cnn_conv(
    b: GraphBuilder,
    scope: str,
    layer: CnnLayer,
    x: Value,
    weights: _ConvConstants,
    out_hw: tuple[int, int],
    folded_pad: bool = False,
) -> Value:
    """conv (one or two) + bias add + ReLU6 of one layer; ``x`` already padded if needed."""
    node, tensor = x
    c_out = layer.out_shape[2]
    # What the options tables hold (flash): the exporter runs patches with VALID convs; a PAD
    # that equals SAME padding folds into a SAME conv.
    padding = "VALID" if weights.patched and not folded_pad else "SAME"
    options = {"padding": padding, "stride": layer.stride}
    if layer.op == "depthwise_conv2d":
        conv_name = "depthwise"
        conv = b.node(f"{scope}/depthwise", node, weights.kernel_nodes[0])
    else:
        conv_name = "Conv2D"
        conv = b.node(f"{scope}/Conv2D", node, weights.kernel_nodes[0])
        if layer.rank:
            zero_bias = b.constant(
                (layer.rank,), "int32", layer.rank, "zero_bias", ARITH_CONSTANT,
                merge_as=("zero bias", layer.name),
                same_scales_as=("zero bias scales", layer.name) if weights.patched else None,
            )  # fmt: skip
            tensor = b.op(
                "CONV_2D", conv, (tensor, weights.kernels[0], zero_bias),
                (1, *out_hw, layer.rank), f"{scope}/Conv2D" + ("" if weights.patched else "1"),
                **options, relu6=False,
            )  # fmt: skip
            conv_name = "Conv2D_1"
            conv = b.node(f"{scope}/Conv2D_1", conv, weights.kernel_nodes[1])
    last = b.node(f"{scope}/add", conv, weights.bias_node)
    fused = [f"{scope}/add", f"{scope}/{conv_name}"]
    if layer.act:
        last = b.node(f"{scope}/Relu6", last)
        fused.insert(0, f"{scope}/Relu6")
    if folded_pad:
        fused.append(f";{scope}/Pad")
    same_data = None
    if weights.patched:
        bias_name = ARITH_CONSTANT
        with_bias = folded_pad or layer.name != "stem"
        out_name = ";".join(fused) + (f";{CAPTURED_CONSTANT}" if with_bias else "")
        # Every patch quantizes this bias with its input's scale, which the exporter makes
        # one per layer over all patches: the quantized biases are equal and the converter
        # keeps one buffer.
        same_data = ("patched bias", layer.name)
    else:
        bias_name = ";".join([*fused, CAPTURED_CONSTANT])
        out_name = bias_name + "1"
    bias = b.constant(
        (c_out,), "int32", c_out, "bias", bias_name, merge_as=("bias", layer.name),
        same_data_as=same_data,
        same_scales_as=("bias scales", layer.name) if weights.patched else None,
    )  # fmt: skip
    opcode = "DEPTHWISE_CONV_2D" if layer.op == "depthwise_conv2d" else "CONV_2D"
    return last, b.op(
        opcode, last, (tensor, weights.kernels[-1], bias), (1, *out_hw, c_out), out_name,
        **options, relu6=bool(layer.act),
    )  # fmt: skip


def _strided_slice(b: GraphBuilder, scope: str, x: Value, region: tuple[int, ...]) -> Value:
    """``x[:, y0:y1, x0:x1, :]`` (the exporter's ``_crop``), or ``x`` when that is all of it."""
    node, tensor = x
    y0, y1, x0, x1 = region
    if (y0, x0) == (0, 0) and (y1, x1) == tensor.shape[1:3]:
        return x
    name = f"{scope}/strided_slice"
    consts = [b.node(f"{name}/stack"), b.node(f"{name}/stack_1"), b.node(f"{name}/stack_2")]
    node = b.node(name, node, *consts)
    begin = b.index_constant((0, y0, x0, 0), (4,), f"{name}/stack")
    end = b.index_constant((0, y1, x1, 0), (4,), f"{name}/stack_1")
    strides = b.index_constant((1, 1, 1, 1), (4,))
    shape = (1, y1 - y0, x1 - x0, tensor.shape[3])
    return node, b.op("STRIDED_SLICE", node, (tensor, begin, end, strides), shape, name)


def _pad_is_same(size: tuple[int, ...], layer: CnnLayer, pads: tuple[int, ...]) -> bool:
    """Whether PAD + VALID conv is exactly a SAME conv of the unpadded input (the converter
    then folds the PAD away)."""
    for axis in range(2):
        _, before, after = same_padding(size[axis], layer.kernel, layer.stride)
        if (before, after) != (pads[2 * axis], pads[2 * axis + 1]):
            return False
    return True


def _concat(b: GraphBuilder, scope: str, parts: list[Value], axis: int) -> Value:
    node = b.node(f"{scope}/concat", *(p[0] for p in parts), b.node(f"{scope}/concat/axis"))
    shape = list(parts[0][1].shape)
    shape[axis] = sum(p[1].shape[axis] for p in parts)
    return node, b.op(
        "CONCATENATION", node, tuple(p[1] for p in parts), tuple(shape), node, axis=axis
    )


def cnn_patched(b: GraphBuilder, image: Value, cfg: TinyCnnConfig) -> Value:
    """The patched first stages (``edgekit.export.tiny_cnn._run_patches``)."""
    plan = patch_plan(cfg)
    assert plan is not None
    return patched_layers(b, image, layer_plan(cfg)[: plan.num_layers], plan)


def patched_layers(
    b: GraphBuilder, image: Value, layers: tuple[CnnLayer, ...], plan: PatchPlan
) -> Value:
    """``layers`` run patch by patch as ``plan`` says, then concatenated."""
    weights = {layer.name: _cnn_weights(b, layer, True) for layer in layers}
    rows: list[Value] = []
    previous: str | None = None
    for i in range(plan.grid):
        row: list[Value] = []
        for j in range(plan.grid):
            steps = plan.patches[i * plan.grid + j]
            patch = f"patch{i}_{j}"
            entry = image
            if previous is not None:  # the exporter's control input: patches run in turn
                entry = b.node(f"{patch}/input/Identity", image[0], previous), image[1]
            row.append(_patch_layers(b, patch, entry, layers, steps, weights))
            previous = row[-1][0]
        rows.append(_concat(b, f"patch_row{i}", row, axis=2))
    return _concat(b, "patch_merge", rows, axis=1)


def _patch_layers(
    b: GraphBuilder,
    patch: str,
    image: Value,
    layers: tuple[CnnLayer, ...],
    steps: tuple[PatchStep, ...],
    weights: dict[str, _ConvConstants],
) -> Value:
    """Every patched layer of one patch."""
    x = _strided_slice(b, f"{patch}/input", image, steps[0].in_region)
    skip_sources = {layer.residual_from for layer in layers if layer.residual_from}
    skips: dict[str, tuple[Value, tuple[int, ...]]] = {}
    for layer, step in zip(layers, steps, strict=True):
        if layer.name in skip_sources:
            skips[layer.name] = (x, step.in_region)
        skip = skips.pop(layer.residual_from) if layer.residual_from else None
        x = _patch_layer(b, patch, layer, step, x, weights[layer.name], skip)
    return x


def _patch_layer(
    b: GraphBuilder,
    patch: str,
    layer: CnnLayer,
    step: PatchStep,
    x: Value,
    weights: _ConvConstants,
    skip: tuple[Value, tuple[int, ...]] | None,
) -> Value:
    """One layer of one patch; ``skip``: a residual's (skip tensor, its region)."""
    scope = f"{patch}/{layer.name}"
    node, tensor = x
    size = tensor.shape[1:3]
    folded = False
    if any(step.pads):
        node = b.node(f"{scope}/Pad", node, b.node(f"{scope}/Pad/paddings"))
        if _pad_is_same(size, layer, step.pads):
            folded = True  # the conv reads the unpadded input with SAME padding
        else:
            top, bottom, left, right = step.pads
            paddings = b.index_constant(
                (0, 0, top, bottom, left, right, 0, 0), (4, 2), f"{scope}/Pad/paddings",
            )  # fmt: skip
            padded = (1, size[0] + top + bottom, size[1] + left + right, tensor.shape[3])
            tensor = b.op("PAD", node, (tensor, paddings), padded, f"{scope}/Pad")
    oy0, oy1, ox0, ox1 = step.out_region
    y = _cnn_conv(b, scope, layer, (node, tensor), weights, (oy1 - oy0, ox1 - ox0), folded)
    if skip is not None:
        skip_value, (sy, _, sx, _) = skip
        crop = (oy0 - sy, oy1 - sy, ox0 - sx, ox1 - sx)
        skip_node, skip_tensor = _strided_slice(b, scope, skip_value, crop)
        add = b.node(f"{scope}/add_1", y[0], skip_node)
        y = add, b.op("ADD", add, (y[1], skip_tensor), y[1].shape, add)
    return y


PATCH_NAME = "patch0_0"  # every patch's names are as long: patch units are built as this one


def cnn_patch_slice(b: GraphBuilder, image: Value, region: tuple[int, ...]) -> Value:
    """The part of the image one patch reads (built on its own)."""
    return _strided_slice(b, f"{PATCH_NAME}/input", image, region)


def cnn_patch_unit(b: GraphBuilder, x: Value, skip: Value | None, key: tuple) -> Value:
    """One layer of one patch built on its own (``skip``: its residual's skip tensor). Keys:
    (layer, step); regions relative to the skip tensor (residuals) or to the input. The
    weights, shared by every patch, are marked to be counted once per graph."""
    layer_fields, step_fields = key
    layer, step = CnnLayer(*layer_fields), PatchStep(*step_fields)
    weights = _cnn_weights(b, layer, True, shared=True)
    skip_region = None if skip is None else (skip, (0, 0, 0, 0))
    return _patch_layer(b, PATCH_NAME, layer, step, x, weights, skip_region)


def cnn_layers(b: GraphBuilder, x: Value, layers: tuple[CnnLayer, ...]) -> Value:
    """Whole-image conv layers (a residual's skip source among them)."""
    skips: dict[str, Value] = {}
    sources = {layer.residual_from for layer in layers}
    for layer in layers:
        if layer.name in sources:
            skips[layer.name] = x
        x = _cnn_conv(b, layer.name, layer, x, _cnn_weights(b, layer, False), layer.out_shape[:2])
        if layer.residual_from:
            skip_node, skip_tensor = skips.pop(layer.residual_from)
            add = b.node(f"{layer.name}/add_1", x[0], skip_node)
            x = add, b.op("ADD", add, (x[1], skip_tensor), x[1].shape, add)
    return x


def cnn_head(b: GraphBuilder, x: Value, channels: int, num_classes: int) -> Value:
    """Global mean and the classifier."""
    node, tensor = x
    mean = b.node("pool/Mean", node, b.node("pool/Mean/reduction_indices"))
    axes = b.index_constant((1, 2), (2,), "pool/Mean/reduction_indices")
    pooled = b.op("MEAN", mean, (tensor, axes), (1, channels), mean, keep_dims=False)
    matmul = b.node("classifier/MatMul", mean, b.capture("classifier/MatMul/b"))
    add = b.node("classifier/add", matmul, b.capture("classifier/add/y"))
    weight = b.constant((num_classes, channels), "int8", num_classes, "weight", matmul)
    bias = b.constant((num_classes,), "int32", num_classes, "bias", add)
    return add, b.op(
        "FULLY_CONNECTED", add, (pooled, weight, bias), (1, num_classes), _OUTPUT_NAME
    )


def patched_key(cfg: TinyCnnConfig) -> TinyCnnConfig:
    """``cfg`` with every knob that does not shape the patched stages set to a fixed value."""
    plan_blocks = cfg.depths[0] if cfg.patch_stages >= 2 else 0
    keep = range(plan_blocks)
    return dataclasses.replace(
        cfg,
        num_classes=2,
        depths=(plan_blocks or 1, 1, 1, 1),
        fused_stages=min(cfg.fused_stages, 1 if plan_blocks else 0),
        kernel_sizes=tuple(k if i in keep else 3 for i, k in enumerate(cfg.kernel_sizes)),
        expand_ratios=tuple(e if i in keep else 2 for i, e in enumerate(cfg.expand_ratios)),
    )


def cnn_pieces(cfg: TinyCnnConfig) -> list[tuple[str, object]]:
    """The pieces of ``cfg``'s graph, in order, as (kind, hashable key)."""
    layers = layer_plan(cfg)
    patched = [] if cfg.patch_grid == 1 else [("cnn patched", patched_key(cfg))]
    # A block (expand, dw, project or fused, project) is one piece: its skip stays inside.
    # The stem and the first block make one piece too (fewer pieces to assemble per config).
    # (The patch plan is made when the patched piece is built: it takes longer than this.)
    return _layer_pieces(
        cfg, layers, patched_layer_count(cfg, layers), patched,
        (".expand", ".dw", ".fused", "stem"),
    )  # fmt: skip


def resnet_pieces(cfg: TinyResnetConfig) -> list[tuple[str, object]]:
    """The pieces of a tiny-resnet config's graph: the patched part (keyed by the fields that
    shape it), then one piece per basic block (its skip stays inside), the stem and the head."""
    plan = resnet_patch_plan(cfg)
    patched = []
    if plan is not None:
        widths, depths = (*cfg.widths[:2], STAGE_WIDTHS[2][0]), (cfg.depths[0], 1, 1)
        key = dataclasses.replace(cfg, num_classes=2, widths=widths, depths=depths)
        patched = [("cnn resnet patched", key)]
    num_layers = 0 if plan is None else plan.num_layers
    return _layer_pieces(cfg, resnet_layer_plan(cfg), num_layers, patched, (".conv1",))


def _layer_pieces(
    cfg: TinyCnnConfig | TinyResnetConfig,
    layers: tuple[CnnLayer, ...],
    patched_layers: int,
    pieces: list[tuple[str, object]],
    continued: tuple[str, ...],
) -> list[tuple[str, object]]:
    """``pieces`` (the patched part, if any), then the whole-image conv layers after the
    first ``patched_layers`` grouped into pieces that end at every layer whose name does not
    end with one of ``continued``, then the head."""
    group: list[CnnLayer] = []
    for layer in layers[patched_layers:]:
        if not layer.is_conv:
            break
        group.append(layer)
        if not layer.name.endswith(continued):
            pieces.append(("cnn layers", tuple(layer_key(layer) for layer in group)))
            group = []
    assert not group
    pieces.append(("cnn head", (layers[-2].in_shape, cfg.num_classes)))
    return pieces


def layer_key(layer: CnnLayer) -> tuple:
    """A layer as a plain tuple (hashes and compares faster than the dataclass)."""
    return (
        layer.name, layer.op, layer.in_shape, layer.out_shape, layer.kernel, layer.stride,
        layer.groups, layer.pads, layer.rank, layer.act, layer.residual_from,
    )  # fmt: skip


def build_cnn_piece(b: GraphBuilder, kind: str, key: object, x: Value) -> Value:
    if kind == "cnn patched":
        assert isinstance(key, TinyCnnConfig)
        return cnn_patched(b, x, key)
    if kind == "cnn layers":
        assert isinstance(key, tuple)
        return cnn_layers(b, x, tuple(CnnLayer(*layer) for layer in key))
    if kind == "cnn resnet patched":
        assert isinstance(key, TinyResnetConfig)
        plan = resnet_patch_plan(key)
        assert plan is not None
        return patched_layers(b, x, resnet_layer_plan(key)[: plan.num_layers], plan)
    in_shape, num_classes = key  # type: ignore[misc]
    return cnn_head(b, x, in_shape[2], num_classes)


def cnn_entry_shape(cfg: TinyCnnConfig | TinyResnetConfig) -> tuple[int, ...]:
    return (1, cfg.resolution, cfg.resolution, cfg.in_channels)


# --- tiny-vit -------------------------------------------------------------------------------
def _linear(
    b: GraphBuilder,
    name: str,
    x: Value,
    in_f: int,
    out_f: int,
    *,
    bias: bool = True,
    folded_norm: str = "",
    out_name: str = "",
) -> Value:
    """``x @ W + b`` -> FULLY_CONNECTED; ``folded_norm`` names the LayerNorm folded into it."""
    node, tensor = x
    node = b.node(f"{name}/MatMul", node, b.capture(f"{name}/MatMul/b"))
    fused = f"{name}/MatMul;{name}/add"
    prefix = f"{folded_norm}/mul_2;{folded_norm}/add_1;" if folded_norm else ""
    if bias:
        node = b.node(f"{name}/add", node, b.capture(f"{name}/add/y"))
    weight_name = prefix + fused if prefix else f"{name}/MatMul"
    weight = b.constant((out_f, in_f), "int8", out_f, "weight", weight_name)
    bias_tensor = None
    if bias:
        bias_name = fused if prefix else f"{name}/add"
        bias_tensor = b.constant((out_f,), "int32", out_f, "bias", bias_name)
    if not out_name:
        out_name = (prefix + fused + ("1" if prefix else "")) if bias else f"{name}/MatMul1"
    shape = (*tensor.shape[:-1], out_f)
    return node, b.op("FULLY_CONNECTED", node, (tensor, weight, bias_tensor), shape, out_name)


def _factorised(ratio: float, in_f: int, out_f: int) -> int:
    """Rank of the projection when it is stored as two layers, else 0."""
    rank = projection_rank(ratio, in_f, out_f)
    return rank if is_factorised(rank, in_f, out_f) else 0


def _projection(
    b: GraphBuilder, name: str, x: Value, in_f: int, out_f: int, ratio: float, folded_norm: str
) -> Value:
    rank = _factorised(ratio, in_f, out_f)
    if not rank:
        return _linear(b, name, x, in_f, out_f, folded_norm=folded_norm)
    x = _linear(b, f"{name}.0", x, in_f, rank, bias=False)
    return _linear(b, f"{name}.1", x, rank, out_f)


def _layer_norm(b: GraphBuilder, scope: str, x: Value, fold_affine: bool) -> Value:
    """MEAN / SUB / MUL / MEAN / ADD / RSQRT / MUL (/ MUL / ADD unless folded into the
    FULLY_CONNECTED layers that read it)."""
    node, tensor = x
    shape = tensor.shape
    reduced = (*shape[:-1], 1)
    axis = b.index_constant((-1,), ())
    eps = b.constant((), "int8", 1, "other", ARITH_CONSTANT, merge_key=("layer-norm eps",))
    mean_node = b.node(f"{scope}/Mean", node, b.node(f"{scope}/Mean/reduction_indices"))
    mean = b.op("MEAN", mean_node, (tensor, axis), reduced, mean_node, keep_dims=True)
    sub_node = b.node(f"{scope}/sub", node, mean_node)
    centred = b.op("SUB", sub_node, (tensor, mean), shape, sub_node)
    square_node = b.node(f"{scope}/mul", sub_node, sub_node)
    square = b.op("MUL", square_node, (centred, centred), shape, square_node)
    variance_node = b.node(
        f"{scope}/Mean_1", square_node, b.node(f"{scope}/Mean_1/reduction_indices")
    )
    variance = b.op(
        "MEAN", variance_node, (square, axis), reduced, variance_node, keep_dims=True
    )
    add_node = b.node(f"{scope}/add", variance_node, b.node(f"{scope}/add/y"))
    shifted = b.op("ADD", add_node, (variance, eps), reduced, add_node)
    rsqrt_node = b.node(f"{scope}/Rsqrt", add_node)
    rsqrt = b.op("RSQRT", rsqrt_node, (shifted,), reduced, rsqrt_node)
    norm_node = b.node(f"{scope}/mul_1", sub_node, rsqrt_node)
    out = b.op("MUL", norm_node, (centred, rsqrt), shape, norm_node)
    gamma_node = b.node(f"{scope}/mul_2", norm_node, b.capture(f"{scope}/mul_2/y"))
    beta_node = b.node(f"{scope}/add_1", gamma_node, b.capture(f"{scope}/add_1/y"))
    if not fold_affine:
        width = shape[-1]
        gamma = b.constant((width,), "int8", 1, "other", CAPTURED_CONSTANT)
        beta = b.constant((width,), "int8", 1, "other", CAPTURED_CONSTANT)
        out = b.op("MUL", gamma_node, (out, gamma), shape, gamma_node)
        out = b.op("ADD", beta_node, (out, beta), shape, beta_node)
    return beta_node, out


def _attention(
    b: GraphBuilder, prefix: str, x: Value, embed: int, heads: int, ratio: float, norm: str
) -> Value:
    t = x[1].shape[-2]
    width = heads * HEAD_DIM
    rank = _factorised(ratio, embed, width)
    shared: dict[str, Value] = {}
    if rank:
        for which in ("q", "k", "v"):
            shared[which] = _linear(b, f"{prefix}.{which}.0", x, embed, rank, bias=False)
    contexts: list[Value] = []
    for h in range(heads):
        per_head = {}
        for which in ("q", "k", "v"):
            name = f"{prefix}.{which}" + (".1" if rank else "") + f".head{h}"
            per_head[which] = _linear(
                b, name, shared.get(which, x), rank or embed, HEAD_DIM,
                folded_norm="" if rank else norm,
            )  # fmt: skip
        (q_node, q), (k_node, k), (v_node, v) = (per_head[w] for w in ("q", "k", "v"))
        scope = f"{prefix}.head{h}"
        scores_node = b.node(f"{scope}/MatMul", q_node, k_node)
        scores = b.op(
            "BATCH_MATMUL", scores_node, (q, k), (1, t, t), scores_node, adj_x=False, adj_y=True
        )
        softmax_node = b.node(f"{scope}/Softmax", scores_node)
        softmax = b.op("SOFTMAX", softmax_node, (scores,), (1, t, t), softmax_node)
        context_node = b.node(f"{scope}/MatMul_1", softmax_node, v_node)
        context = b.op(
            "BATCH_MATMUL", context_node, (softmax, v), (1, t, HEAD_DIM), context_node,
            adj_x=False, adj_y=False,
        )  # fmt: skip
        contexts.append((context_node, context))
    merged = _concat(b, f"{prefix}.merge", contexts, axis=2) if heads > 1 else contexts[0]
    return _projection(b, f"{prefix}.proj", merged, width, embed, ratio, "")


def _add(b: GraphBuilder, name: str, x: Value, y: Value) -> Value:
    node = b.node(name, x[0], y[0])
    return node, b.op("ADD", node, (x[1], y[1]), x[1].shape, name)


def vit_prologue(b: GraphBuilder, image: Value, cfg: TinyVitConfig) -> Value:
    """Patch embedding (conv + reshape) and the position embedding."""
    e, t, p, c = cfg.embed_dim, cfg.num_tokens, cfg.patch_size, cfg.in_channels
    conv_node = b.node("patch_embed/Conv2D", image[0], b.capture("patch_embed/Conv2D/filter"))
    conv_node = b.node("patch_embed/add", conv_node, b.capture("patch_embed/add/y"))
    kernel = b.constant((e, p, p, c), "int8", e, "weight", "patch_embed/Conv2D")
    bias_name = f"patch_embed/add;patch_embed/Conv2D;{CAPTURED_CONSTANT}"
    kernel_bias = b.constant((e,), "int32", e, "bias", bias_name)
    tokens = b.op(
        "CONV_2D", conv_node, (image[1], kernel, kernel_bias), (1, cfg.grid, cfg.grid, e),
        bias_name + "1", padding="VALID", stride=p, relu6=False,
    )  # fmt: skip
    reshape_node = b.node(
        "patch_embed/Reshape", conv_node, b.node("patch_embed/Reshape/shape")
    )
    shape = b.index_constant((1, t, e), (3,))
    tokens = b.op("RESHAPE", reshape_node, (tokens, shape), (1, t, e), reshape_node)
    position_node = b.node("pos_embed/add", reshape_node, b.capture("pos_embed/add/y"))
    position = b.constant((t, e), "int8", 1, "other", CAPTURED_CONSTANT)
    return position_node, b.op(
        "ADD", position_node, (tokens, position), (1, t, e), position_node
    )


def vit_block(
    b: GraphBuilder, x: Value, index: int, heads: int, hidden: int, ratio: float
) -> Value:
    """One pre-norm transformer block."""
    block = f"blocks.{index}"
    embed = x[1].shape[-1]
    qkv_dense = not _factorised(ratio, embed, heads * HEAD_DIM)
    norm = f"{block}.norm1"
    normed = _layer_norm(b, norm, x, fold_affine=qkv_dense)
    attended = _attention(
        b, f"{block}.attn", normed, embed, heads, ratio, norm if qkv_dense else ""
    )
    x = _add(b, f"{block}.add1/add", x, attended)
    fc1_dense = not _factorised(ratio, embed, hidden)
    norm = f"{block}.norm2"
    normed = _layer_norm(b, norm, x, fc1_dense)
    h = _projection(b, f"{block}.mlp.fc1", normed, embed, hidden, ratio,
                    norm if fc1_dense else "")  # fmt: skip
    scope = f"{block}.mlp.act"
    shifted = b.node(f"{scope}/add", h[0], b.node(f"{scope}/add/y"))
    product = b.node(f"{scope}/mul", h[0], b.node(f"{scope}/Relu6", shifted))
    act_node = b.node(f"{scope}/mul_1", product, b.node(f"{scope}/mul_1/y"))
    act_name = ";".join([act_node, "" if fc1_dense else f"{scope}/add/y", f"{scope}/Relu6",
                         shifted, product])  # fmt: skip
    h = act_node, b.op("HARD_SWISH", act_node, (h[1],), h[1].shape, act_name)
    h = _projection(b, f"{block}.mlp.fc2", h, hidden, embed, ratio, "")
    return _add(b, f"{block}.add2/add", x, h)


def vit_epilogue(b: GraphBuilder, x: Value, num_classes: int) -> Value:
    """Mean over tokens, the final LayerNorm (folded into the head) and the head."""
    embed = x[1].shape[-1]
    pool_node = b.node("pool/Mean", x[0], b.node("pool/Mean/reduction_indices"))
    axis = b.index_constant((1,), (), "pool/Mean/reduction_indices")
    pooled = pool_node, b.op(
        "MEAN", pool_node, (x[1], axis), (1, embed), pool_node, keep_dims=False
    )
    normed = _layer_norm(b, "norm", pooled, fold_affine=True)
    return _linear(b, "head", normed, embed, num_classes, folded_norm="norm",
                   out_name=_OUTPUT_NAME)  # fmt: skip


def vit_pieces(cfg: TinyVitConfig) -> list[tuple[str, object]]:
    pieces: list[tuple[str, object]] = [("vit prologue", _prologue_key(cfg))]
    t, e = cfg.num_tokens, cfg.embed_dim
    for i in range(cfg.depth):
        # Names differ between blocks only in the block number, one digit: build block 0.
        pieces.append(
            ("vit block", (t, e, cfg.num_heads[i], cfg.mlp_ratio[i] * e, cfg.rank_ratio))
        )
    pieces.append(("vit epilogue", (t, e, cfg.num_classes)))
    return pieces


def _prologue_key(cfg: TinyVitConfig) -> tuple[int, ...]:
    return (cfg.resolution, cfg.patch_size, cfg.embed_dim, cfg.in_channels)


def build_vit_piece(b: GraphBuilder, kind: str, key: object, x: Value, index: int = 0) -> Value:
    if kind == "vit prologue":
        resolution, patch, embed, channels = key  # type: ignore[misc]
        cfg = _prologue_config(resolution, patch, embed, channels)
        return vit_prologue(b, x, cfg)
    if kind == "vit block":
        _, _, heads, hidden, ratio = key  # type: ignore[misc]
        return vit_block(b, x, index, heads, hidden, ratio)
    _, _, num_classes = key  # type: ignore[misc]
    return vit_epilogue(b, x, num_classes)


def _prologue_config(resolution: int, patch: int, embed: int, channels: int) -> TinyVitConfig:
    return TinyVitConfig(
        num_classes=2, in_channels=channels, resolution=resolution, patch_size=patch,
        embed_dim=embed, depth=1, num_heads=(1,) * 4, mlp_ratio=(1,) * 4, rank_ratio=1.0,
    )  # fmt: skip


def vit_entry_shape(kind: str, key: object) -> tuple[int, ...]:
    if kind == "vit prologue":
        resolution, _, _, channels = key  # type: ignore[misc]
        return (1, resolution, resolution, channels)
    t, e = key[:2]  # type: ignore[index]
    return (1, t, e)


# --- whole graphs ---------------------------------------------------------------------------
SpaceConfig = TinyCnnConfig | TinyResnetConfig | TinyVitConfig


def pieces_of(cfg: SpaceConfig) -> list[tuple[str, object]]:
    if isinstance(cfg, TinyCnnConfig):
        return cnn_pieces(cfg)
    if isinstance(cfg, TinyResnetConfig):
        return resnet_pieces(cfg)
    return vit_pieces(cfg)


def build_piece(b: GraphBuilder, kind: str, key: object, x: Value, index: int = 0) -> Value:
    if kind.startswith("cnn"):
        return build_cnn_piece(b, kind, key, x)
    return build_vit_piece(b, kind, key, x, index)


def piece_entry_shape(kind: str, key: object) -> tuple[int, ...]:
    """The shape of the tensor a piece reads (for building it on its own)."""
    if kind in ("cnn patched", "cnn resnet patched"):
        return cnn_entry_shape(key)  # type: ignore[arg-type]
    if kind == "cnn layers":
        return (1, *key[0][2])  # type: ignore[index]
    if kind == "cnn head":
        return (1, *key[0])  # type: ignore[index]
    return vit_entry_shape(kind, key)


def build_graph(cfg: SpaceConfig) -> GraphBuilder:
    """The whole converted graph of ``cfg`` on one builder (the reference synthesis)."""
    b = GraphBuilder()
    pieces = pieces_of(cfg)
    x = start(b, piece_entry_shape(*pieces[0]))
    block = 0
    for kind, key in pieces:
        x = build_piece(b, kind, key, x, block)
        block += kind == "vit block"
    return b


__all__ = ["build_graph", "build_piece", "layer_key", "piece_entry_shape", "pieces_of", "start"]
