"""Shared checks for the zoo family tests: parameter counts without initialising weights, and export parity.

The parity check takes the path hpi takes with a zoo model: ``paddle.jit.save`` with a dynamic batch, Paddle
Inference on the saved ``inference.json`` (plain CPU kernels, and oneDNN), ``paddle2onnx`` at opset 17 (returning
bytes, so its optimiser never pip-installs anything), ONNX Runtime on the result; every engine gets the same batch
of two inputs and is compared with the eager (dygraph) output.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PARAM_REL_TOL = 0.005  # published counts are rounded: allow 0.5% ...
PARAM_ABS_TOL_M = 0.05  # ... or half a unit of the 0.1M figures papers quote, whichever is larger


def count_params_lazily(model) -> int:
    """Trainable weights of a zoo model from parameter shapes alone: under ``paddle.LazyGuard`` nothing is
    allocated or initialised, so even the 300M-parameter models count in milliseconds.

    :func:`hpi.zoo.nets.fidelity.count_params` convention: BatchNorm running statistics (frozen parameters in Paddle)
    are left out, as in the published figures.
    """
    import paddle

    from hpi.zoo.nets.fidelity import count_params

    with paddle.LazyGuard():
        net = model.build()
    return count_params(net)


def assert_published_params(model) -> None:
    """The build's parameter count is the published one (``extra["published_params_m"]``) within tolerance."""
    published = model.extra["published_params_m"]
    got = count_params_lazily(model) / 1e6
    tolerance = max(PARAM_REL_TOL * published, PARAM_ABS_TOL_M)
    assert abs(got - published) <= tolerance, f"{model.name}: {got:.3f}M parameters, published {published}M"


def make_decisive(net, seed: int = 0) -> None:
    """Perturb a freshly built net so that every block matters and the outputs are far from uniform.

    Layer scales start near zero (1e-6 in ConvNeXt, 1e-5 in MobileNetV4-hybrid), which would hide a broken block
    from a parity check; batch-norm statistics start at mean 0 / variance 1. Both are randomised here, and the
    classifier is scaled so that the logits spread over several units.
    """
    from paddle import nn

    rng = np.random.default_rng(seed)

    def fill(tensor, low: float, high: float) -> None:
        tensor.set_value(rng.uniform(low, high, tensor.shape).astype("float32"))

    for name, param in net.named_parameters():
        if name.endswith("layer_scale"):
            fill(param, 0.5, 1.0)
    for layer in net.sublayers(include_self=True):
        if isinstance(layer, nn.BatchNorm2D | nn.BatchNorm):
            fill(layer.weight, 0.5, 1.5)
            fill(layer.bias, -0.2, 0.2)
            fill(layer._mean, -0.2, 0.2)
            fill(layer._variance, 0.5, 1.5)
    classifier = getattr(net, "classifier", None)
    if classifier is not None:
        fan_in = classifier.weight.shape[0]
        classifier.weight.set_value(
            rng.normal(0.0, 3.0 / np.sqrt(fan_in), classifier.weight.shape).astype("float32")
        )


def _paddle_inference(model_file: Path, params_file: Path, x: np.ndarray, *, onednn: bool) -> np.ndarray:
    from paddle.inference import Config, create_predictor

    config = Config(str(model_file), str(params_file))
    config.disable_gpu()
    config.set_cpu_math_library_num_threads(2)
    config.disable_glog_info()
    if onednn:
        config.enable_mkldnn()
    else:
        config.disable_mkldnn()
    predictor = create_predictor(config)
    handle = predictor.get_input_handle(predictor.get_input_names()[0])
    handle.reshape(list(x.shape))
    handle.copy_from_cpu(x)
    predictor.run()
    return predictor.get_output_handle(predictor.get_output_names()[0]).copy_to_cpu()


def export_parity(
    net, input_size: int, workdir: Path, *, batch: int = 2, channels: int = 3, onednn: bool = True
) -> dict[str, float]:
    """Export ``net`` and compare the engines on one batch of ``batch`` random inputs.

    Returns max absolute differences against the eager (dygraph) output: ``paddle`` (Paddle Inference, plain CPU
    kernels), ``onednn`` (Paddle Inference with oneDNN, when asked), ``onnxruntime``; plus ``logit_range`` of the
    eager output and ``top1_agree`` (ONNX Runtime against eager).
    """
    import onnxruntime as ort
    import paddle
    from paddle.static import InputSpec

    net.eval()
    x = np.random.default_rng(1).standard_normal((batch, channels, input_size, input_size)).astype("float32")
    eager = net(paddle.to_tensor(x)).numpy()
    prefix = workdir / "inference"
    spec = InputSpec([None, channels, input_size, input_size], "float32", "x")
    paddle.jit.save(net, str(prefix), input_spec=[spec])
    model_file = prefix.with_suffix(".json")
    params_file = prefix.with_suffix(".pdiparams")

    result: dict[str, float] = {"logit_range": float(eager.max() - eager.min())}
    result["paddle"] = float(
        np.abs(_paddle_inference(model_file, params_file, x, onednn=False) - eager).max()
    )
    if onednn:
        result["onednn"] = float(
            np.abs(_paddle_inference(model_file, params_file, x, onednn=True) - eager).max()
        )

    onnx_bytes = paddle_to_onnx(model_file, params_file)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3  # paddle2onnx leaves unused shape initialisers; ORT warns about each
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    assert got.shape == eager.shape, f"ONNX Runtime output shape {got.shape}, eager {eager.shape}"
    result["onnxruntime"] = float(np.abs(got - eager).max())
    result["top1_agree"] = float((got.argmax(-1) == eager.argmax(-1)).all())
    return result


def paddle_to_onnx(model_file, params_file) -> bytes:
    """The model's ONNX export as hpi makes it (paddle2onnx's Python API, opset 17, no run-time pip installs)."""
    import paddle2onnx

    return paddle2onnx.export(str(model_file), str(params_file), save_file=None, opset_version=17,
                              enable_onnx_checker=True, enable_optimize=True, optimize_tool="None")


def assert_parity(result: dict[str, float], engines: tuple[str, ...] = ("paddle", "onnxruntime")) -> None:
    """Each engine within 1e-5 of the eager output, relative to the logit range (at least 1), and the same top-1."""
    scale = max(1.0, result["logit_range"])
    for engine in engines:
        assert result[engine] <= 1e-5 * scale, (
            f"{engine}: max abs diff {result[engine]:.3g} against eager, logit range {result['logit_range']:.3g}"
        )
    assert result["top1_agree"] == 1.0


def check_classifier_output(model) -> None:
    """Build ``model`` as registered (softmax included) and run one image: shape [1, 1000], rows sum to 1."""
    import paddle

    paddle.seed(0)
    net = model.build()
    x = np.random.default_rng(0).standard_normal((1, 3, model.input_size, model.input_size)).astype("float32")
    with paddle.no_grad():
        y = net(paddle.to_tensor(x)).numpy()
    assert y.shape == (1, 1000), f"{model.name}: output shape {y.shape}"
    np.testing.assert_allclose(y.sum(-1), 1.0, rtol=1e-4)
