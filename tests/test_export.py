"""Int8 export: fp32 parity, conversion, TFLite Micro / LiteRT verification, bundles, QAT,
patch-based execution, unsupported ops and the ``export_from_path`` contract."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from edgekit.data import Split, load_dataset
from edgekit.errors import CheckpointError, ConfigError, DatasetError
from edgekit.export import (
    ExportError,
    TfGraph,
    UnsupportedOpError,
    build_tf_graph,
    c_array,
    check_ops,
    convert_int8,
    export_from_path,
    export_model,
    io_specs,
    read_manifest,
    run_litert_reference,
    run_tflm,
)
from edgekit.export.from_path import resolve_source
from edgekit.spaces import config_from_dict, get_space
from edgekit.training import prepare_input, save_checkpoint, to_nchw
from edgekit.training.checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION

torch.set_num_threads(1)

# Small configs that still have low-rank 1x1 convs, a residual and a 5x5 kernel (tiny-cnn),
# and factorised projections with two heads (tiny-vit).
CNN_GENOME = "r24-w0.35-rk0.5-p1-k3.35.3.3-e2.22.2.2"
VIT_GENOME = "r16-p8-e32-d1-h2-m2-rk0.25"
PATCH_GENOME = "r24-w0.5-rk1-p2s2-k3.3.3.3-e6.2.2.2"


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def _randomize(net: torch.nn.Module) -> torch.nn.Module:
    """Random weights and BatchNorm statistics (fresh ones are the identity), in eval mode."""
    torch.manual_seed(0)
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.normal_(0.0, 0.2)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.normal_(0.0, 0.2)
            elif isinstance(module, torch.nn.Linear):
                module.weight.normal_(0.0, 0.3)
    return net.eval()


def _train(space, cfg, splits, epochs: int, lr: float = 1e-2) -> torch.nn.Module:
    """A supernet whose subnet ``cfg`` alone is trained (quick, and enough for int8 checks)."""
    torch.manual_seed(0)
    net = space.build_supernet()
    net.set_active(cfg)
    x = prepare_input(space, to_nchw(splits.train.x), cfg)
    y = torch.from_numpy(splits.train.y)
    steps = epochs * -(-len(y) // 64)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, lr, total_steps=steps)
    net.train()
    for _ in range(epochs):
        for index in torch.randperm(len(y)).split(64):
            loss = F.cross_entropy(net(x[index]), y[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
    return net.eval()


@pytest.fixture(scope="module")
def trained_cnn(digits):
    space = get_space("tiny-cnn", num_classes=10, in_channels=1)
    cfg = space.decode(CNN_GENOME)
    return space, _train(space, cfg, digits, epochs=4), cfg


@pytest.fixture(scope="module")
def trained_vit(digits):
    space = get_space("tiny-vit", num_classes=10, in_channels=1)
    cfg = space.decode(VIT_GENOME)
    return space, _train(space, cfg, digits, epochs=20), cfg


def _op_names(model: bytes, graph: TfGraph) -> set[str]:
    return {record.op for record in check_ops(model, graph.layers)}


# --- fp32 parity ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("space_name", "genome"),
    [
        ("tiny-cnn", CNN_GENOME),
        ("tiny-cnn", "r28-w0.5-rk0.5-p2s2-k35.357.3.77-e34.346.6.22"),
        ("tiny-cnn", "r32-w0.35-rk1-p3s1-k7.3.5.3-e6.2.3.4"),
        ("tiny-resnet", "r24-c16-w16.24.32-d2.1.2-p1"),
        ("tiny-resnet", "r24-c8-w16.16.24-d2.1.1-p3"),
        ("tiny-vit", VIT_GENOME),
        ("tiny-vit", "r24-p4-e48-d2-h4.1-m3.1-rk0.5"),
    ],
)
def test_tensorflow_graph_matches_pytorch_in_fp32(space_name, genome):
    space = get_space(space_name, num_classes=10, in_channels=1)
    cfg = space.decode(genome)
    module = space.extract(_randomize(space.build_supernet()), cfg).eval()
    images = np.random.default_rng(0).random((4, cfg.resolution, cfg.resolution, 1), np.float32)
    with torch.no_grad():
        expected = module(to_nchw(images)).numpy()
    graph = build_tf_graph(space, module, cfg)
    assert np.abs(expected).max() > 0.1  # a real comparison, not of near-zero logits
    assert np.abs(graph.predict(images) - expected).max() <= 1e-4


# --- end to end -------------------------------------------------------------------------------
def _c_array_bytes(source: str) -> bytes:
    body = source.split("{", 1)[1].split("}", 1)[0]
    return bytes(int(value, 16) for value in re.findall(r"0x([0-9a-f]{2})", body))


def _save_supernet(space, supernet, path):
    save_checkpoint(
        {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, "space": space.name,
         "num_classes": 10, "in_channels": 1, "supernet": supernet.state_dict(),
         "settings": {"seed": 0}, "data": {"name": "digits"}},
        path,
    )  # fmt: skip
    return path


def test_cnn_export_from_checkpoint_writes_a_verified_bundle(trained_cnn, digits, tmp_path):
    space, supernet, cfg = trained_cnn
    checkpoint = _save_supernet(space, supernet, tmp_path / "supernet.pt")
    calls = []
    result = export_from_path(
        checkpoint, "stm32f746g-disco", tmp_path / "bundle", config=CNN_GENOME, qat="never",
        progress=lambda done, total, status: calls.append((done, total)),
    )  # fmt: skip

    # Accuracy and runtime agreement.
    assert result.fp32_accuracy > 0.7
    assert result.accuracy_drop <= 0.01
    assert result.quantization == "ptq" and result.qat_int8_accuracy is None
    assert result.agreement.images == len(digits.test)
    assert result.agreement.top1_agreement >= 0.99 and result.agreement.max_abs_diff <= 2
    assert result.fp32_parity_max_abs_diff <= 1e-4
    assert calls[-1][0] == calls[-1][1]

    # The files.
    files = result.files
    model = files["model"].read_bytes()
    source, header = files["source"].read_text(), files["header"].read_text()
    assert _c_array_bytes(source) == model
    assert "alignas(16) const unsigned char g_model_data[]" in source
    assert f"g_model_data_len = {len(model)};" in source
    assert "extern const unsigned char g_model_data[];" in header
    assert f"#define MODEL_DATA_ARENA_BYTES {-(-result.arena_measured_bytes // 16) * 16}" in header

    manifest = read_manifest(tmp_path / "bundle")
    assert manifest == result.manifest
    assert manifest["input"]["shape"] == [1, 24, 24, 1] and manifest["input"]["dtype"] == "int8"
    assert manifest["output"]["shape"] == [1, 10] and manifest["output"]["dtype"] == "int8"
    assert 0 < manifest["input"]["scale"] < 0.01 and manifest["input"]["zero_point"] == -128
    assert manifest["labels"] == list(digits.classes)
    assert set(manifest["op_counts"]) == {"CONV_2D", "DEPTHWISE_CONV_2D", "ADD", "MEAN",
                                          "FULLY_CONNECTED"}  # fmt: skip
    assert len(manifest["ops"]) == sum(manifest["op_counts"].values())
    assert manifest["arena"]["measured_host_bytes"] == result.arena_measured_bytes > 0
    assert manifest["arena"]["estimated_firmware_bytes"] > 0
    assert manifest["model"]["flash_bytes"] == len(model) == result.flash_bytes
    # The board never reads tensor names (named after layers, "stages.0.0.dw/..."): none ship.
    assert b"stages." not in model
    assert len(manifest["op_layers"]) == len(manifest["ops"])
    assert "stages.0.0.dw" in manifest["op_layers"]
    assert manifest["model"]["sha256"] == hashlib.sha256(model).hexdigest()
    assert config_from_dict(manifest["source"]["config"]) == cfg
    assert manifest["source"]["genome"] == CNN_GENOME
    assert (
        manifest["source"]["checkpoint_sha256"]
        == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
    )
    assert manifest["board"]["name"] == "stm32f746g-disco" and manifest["board"]["fits"]
    assert manifest["verification"]["int8_accuracy"] == result.int8_accuracy
    assert CNN_GENOME in files["report"].read_text()

    # The bundled file itself runs in TFLite Micro like in LiteRT's reference kernels.
    input_spec, _ = io_specs(model)
    images = prepare_input(space, to_nchw(digits.test.x[:8]), cfg).numpy().transpose(0, 2, 3, 1)
    inputs = input_spec.quantization.quantize(images)
    tflm = run_tflm(model, inputs, arena_size=result.arena_measured_bytes + 256)
    assert np.abs(tflm.astype(int) - run_litert_reference(model, inputs)).max() <= 2


def test_cli_export_int8_and_sparse(trained_cnn, digits, tmp_path, capsys):
    from edgekit.cli import main

    space, supernet, _ = trained_cnn
    checkpoint = _save_supernet(space, supernet, tmp_path / "supernet.pt")
    common = [str(checkpoint), "--config", CNN_GENOME, "--board", "stm32f746g-disco"]
    assert main(["-q", "export", *common, "--out", str(tmp_path / "int8"), "--qat", "never"]) == 0
    printed = capsys.readouterr().out
    assert "int8 test accuracy" in printed and "arena" in printed
    manifest = read_manifest(tmp_path / "int8")
    assert manifest["source"]["genome"] == CNN_GENOME and manifest["board"]["fits"]
    assert (tmp_path / "int8" / "model_data.cc").is_file()

    argv = ["-q", "export", *common, "--out", str(tmp_path / "sparse"), "--sparse",
            "--sparsity", "0.75", "--sparse-block", "1x4"]  # fmt: skip
    assert main(argv) == 0
    assert "XNNPACK sparse" in capsys.readouterr().out
    manifest = json.loads((tmp_path / "sparse" / "manifest.json").read_text())
    assert manifest["sparsity"]["block"] == [1, 4]
    assert manifest["sparsity"]["pointwise_zero_fraction"] > 2 / 3
    assert manifest["finetune"]["epochs"] * -(-len(digits.train) // 64) >= 1000


def test_vit_export_is_all_int8_without_transposes(trained_vit, digits, tmp_path):
    space, supernet, cfg = trained_vit
    result = export_model(space, supernet, cfg, digits, tmp_path, qat="never")
    assert result.fp32_accuracy > 0.85
    assert result.accuracy_drop <= 0.02
    assert result.agreement.top1_agreement >= 0.98
    assert result.fp32_parity_max_abs_diff <= 1e-4
    ops = set(result.op_counts)
    assert {"FULLY_CONNECTED", "BATCH_MATMUL", "SOFTMAX", "HARD_SWISH", "RSQRT",
            "CONCATENATION"} <= ops  # fmt: skip
    assert not ops & {"TRANSPOSE", "PAD", "DEQUANTIZE", "QUANTIZE"}
    # Without QAT there is no decision to make: the validation split is not run in int8.
    assert result.manifest["verification"]["validation"]["images"] == 0


def test_qat_runs_when_forced_and_the_better_model_is_bundled(trained_cnn, digits, tmp_path):
    space, supernet, cfg = trained_cnn
    few = dataclasses.replace(digits, train=Split(digits.train.x[:256], digits.train.y[:256]))
    result = export_model(
        space, supernet, cfg, few, tmp_path, qat="always", qat_epochs=1,
        representative_images=50, max_test_images=120,
    )  # fmt: skip
    assert result.qat_int8_accuracy is not None and result.qat_fp32_accuracy is not None
    # The choice looks at the validation split, never at the test split it reports.
    val = result.manifest["verification"]["validation"]
    assert val["images"] == len(digits.val)
    expected = "qat" if val["int8_accuracy_qat"] > val["int8_accuracy_ptq"] else "ptq"
    assert result.quantization == expected == result.manifest["quantization"]["method"]
    final = result.qat_int8_accuracy if expected == "qat" else result.ptq_int8_accuracy
    assert result.int8_accuracy == final
    assert result.manifest["verification"]["int8_accuracy_qat"] == result.qat_int8_accuracy
    assert result.manifest["verification"]["test_images"] == 120


# --- patch-based execution --------------------------------------------------------------------
def test_patch_based_export_uses_plain_ops_and_less_activation_memory():
    from edgekit.estimate import measure_tflm

    space = get_space("tiny-cnn", num_classes=10, in_channels=1)
    patched = space.decode(PATCH_GENOME)
    whole = dataclasses.replace(patched, patch_grid=1, patch_stages=1)
    supernet = _randomize(space.build_supernet())
    images = np.random.default_rng(1).random((20, 24, 24, 1), np.float32)
    graphs, models = {}, {}
    for cfg in (patched, whole):
        graphs[cfg] = build_tf_graph(space, space.extract(supernet, cfg).eval(), cfg)
        models[cfg] = convert_int8(graphs[cfg], images)
    # Patches change how the network runs, not what it computes.
    assert (
        np.abs(graphs[patched].predict(images[:2]) - graphs[whole].predict(images[:2])).max()
        < 1e-5
    )
    assert {"STRIDED_SLICE", "PAD", "CONCATENATION"} <= _op_names(models[patched], graphs[patched])
    assert "PAD" not in _op_names(models[whole], graphs[whole])
    # Activations (the arena's head) shrink; TFLM keeps per-op data for every patch's ops.
    patched_arena, whole_arena = measure_tflm(models[patched]), measure_tflm(models[whole])
    assert patched_arena.head_bytes < 0.7 * whole_arena.head_bytes
    inputs = io_specs(models[patched])[0].quantization.quantize(images[:4])
    tflm = run_tflm(models[patched], inputs, patched_arena.arena_bytes + 256)
    assert np.abs(tflm.astype(int) - run_litert_reference(models[patched], inputs)).max() <= 2
    # One int8 range per layer over all patches: every patch's copy of a tensor has the same
    # scale and zero point, and the copies of a layer's bias share one buffer.
    from tensorflow.lite.python import schema_py_generated as schema

    from edgekit.export.tiny_cnn import PATCH_SCOPE

    model = schema.Model.GetRootAsModel(models[patched], 0)
    subgraph = model.Subgraphs(0)
    params: dict[str, set] = {}
    for index in range(subgraph.TensorsLength()):
        tensor = subgraph.Tensors(index)
        quantization = tensor.Quantization()
        name = tensor.Name().decode()
        if re.search(PATCH_SCOPE, name) and tensor.Type() == schema.TensorType.INT8:
            layer = re.sub(PATCH_SCOPE, "", name)
            params.setdefault(layer, set()).add((quantization.Scale(0), quantization.ZeroPoint(0)))
    bias_buffers: dict[str, set] = {}
    for index in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(index)
        output = subgraph.Tensors(op.Outputs(0)).Name().decode()
        if re.search(PATCH_SCOPE, output) and op.InputsLength() == 3:  # a conv with its bias
            layer = re.sub(PATCH_SCOPE, "", output)
            bias_buffers.setdefault(layer, set()).add(subgraph.Tensors(op.Inputs(2)).Buffer())
    assert params and all(len(found) == 1 for found in params.values()), params
    assert bias_buffers and all(len(found) == 1 for found in bias_buffers.values())


# --- failures ---------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("activation", "op"),
    # An int8 TFLite op TFLM lacks; a TF op without a TFLite op; a product of two activations
    # that the converter makes a FULLY_CONNECTED, which int8 kernels get wrong.
    [("gelu", "GELU"), ("cumprod", "Cumprod"), ("outer", "FULLY_CONNECTED")],
)
def test_unsupported_op_fails_naming_op_and_layer(activation, op):
    import tensorflow as tf

    weight = tf.constant(np.ones((16, 10), np.float32))

    def outer(x):
        square = tf.reshape(x, (4, 4))
        return tf.reshape(tf.matmul(square, square, transpose_b=True), (1, 16))

    act = {
        "gelu": tf.nn.gelu,
        "cumprod": lambda x: tf.math.cumprod(x, axis=1),
        "outer": outer,
    }[activation]

    def forward(image):
        with tf.name_scope("patch_tokens"):
            x = tf.reshape(image, (1, 16))
        with tf.name_scope("blocks.0.mlp.act"):
            x = act(x)
        with tf.name_scope("head"):
            return tf.matmul(x, weight)

    graph = TfGraph(forward, (4, 4, 1), 10, ("patch_tokens", "blocks.0.mlp.act", "head"))
    images = np.random.default_rng(0).random((4, 4, 4, 1), np.float32)
    with pytest.raises(UnsupportedOpError, match=rf"{op}.*'blocks\.0\.mlp\.act'") as error:
        check_ops(convert_int8(graph, images), graph.layers)
    assert (error.value.op, error.value.layer) == (op, "blocks.0.mlp.act")


def test_export_rejects_bad_requests(digits, tmp_path):
    space = get_space("tiny-vit", num_classes=10, in_channels=1)
    supernet, cfg = space.build_supernet().eval(), space.decode(VIT_GENOME)
    # XNNPACK's sparse path is for convolutional networks only.
    with pytest.raises(ExportError, match="supports the tiny-cnn space, not 'tiny-vit'"):
        export_model(space, supernet, cfg, digits, tmp_path, sparse=True)
    with pytest.raises(ConfigError, match="qat="):
        export_model(space, supernet, cfg, digits, tmp_path, qat="sometimes")
    other = get_space("tiny-vit", num_classes=4, in_channels=1)
    with pytest.raises(DatasetError, match="classes"):
        export_model(other, other.build_supernet(), other.decode(VIT_GENOME), digits, tmp_path)


def test_source_resolution(tmp_path):
    checkpoint = tmp_path / "runs" / "supernet.pt"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"\x80\x02not json")
    genome = "r16-p8-e32-d1-h1-m1-rk1.0"
    assert resolve_source(checkpoint, config=genome) == (checkpoint, genome)
    with pytest.raises(ConfigError, match="needs --config"):
        resolve_source(checkpoint)
    with pytest.raises(CheckpointError, match="does not exist"):
        resolve_source(tmp_path / "missing.pt", config=genome)

    record = tmp_path / "best.json"
    record.write_text(json.dumps({"config": genome, "checkpoint": "runs/supernet.pt"}))
    assert resolve_source(record) == (checkpoint, genome)
    config_only = tmp_path / "config.json"
    config_only.write_text(json.dumps({"space": "tiny-vit"}))
    with pytest.raises(CheckpointError, match="--checkpoint"):
        resolve_source(config_only)
    assert resolve_source(config_only, checkpoint=checkpoint) == (
        checkpoint,
        {"space": "tiny-vit"},
    )


def test_c_array_is_aligned_and_round_trips():
    data = bytes(range(256)) * 3 + b"\x07"
    source, header = c_array(data, "g_net", header_name="net.h", arena_bytes=4096)
    assert _c_array_bytes(source) == data
    assert source.startswith("// Generated by edgekit") and '#include "net.h"' in source
    assert "alignas(16) const unsigned char g_net[]" in source
    assert "const unsigned int g_net_len = 769;" in source
    assert "#define NET_ARENA_BYTES 4096" in header and "#ifndef NET_H_" in header
    with pytest.raises(ExportError, match="C identifier"):
        c_array(data, "2bad")


def test_qat_layer_norm_follows_the_int8_decomposition():
    from edgekit.export.qat import _LayerNormHook

    torch.manual_seed(0)
    norm = torch.nn.LayerNorm(8)
    torch.nn.init.normal_(norm.weight)
    torch.nn.init.normal_(norm.bias)
    x = torch.randn(2, 5, 8)
    x[0, 0] = 0.01 * torch.randn(8)  # a token whose variance int8 cannot resolve
    hook = _LayerNormHook()
    # Observing (calibration): exactly LayerNorm.
    torch.testing.assert_close(hook(norm, (x,), norm(x)), norm(x), atol=1e-5, rtol=1e-5)
    for quantizer in hook.quantizers:
        quantizer.observing = False
    quantized = hook(norm, (x,), norm(x))
    assert torch.isfinite(quantized).all()
    errors = (quantized - norm(x)).abs().amax(dim=-1)
    assert errors[0, 0] > 5 * errors[1].max()  # the low-variance token breaks, as in TFLM
