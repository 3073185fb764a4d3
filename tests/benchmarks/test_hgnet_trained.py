"""benchmarks/hgnet_trained.py: reading a .pdiparams stream, and naming tensors from Paddle's name-sorted order.

The real input (113 MB of PP-DocLayoutV2 shards) is not downloaded here; the reader is checked against a file
Paddle wrote, and the naming against orders built the way ``paddle.jit.save`` sorts generated names.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.benchmarks.scripts import load_script


@pytest.fixture(scope="module")
def hgnet_trained():
    return load_script("hgnet_trained")


def test_the_reader_returns_paddles_parameters_in_name_order_and_stops_at_a_truncation(hgnet_trained, tmp_path):
    import paddle
    from paddle import nn

    with paddle.utils.unique_name.guard():
        paddle.seed(3)
        layer = nn.Sequential(nn.Conv2D(3, 4, 3, bias_attr=False), nn.BatchNorm2D(4), nn.Conv2D(4, 2, 1))
        layer.eval()
        paddle.jit.save(layer, str(tmp_path / "inference"),
                        input_spec=[paddle.static.InputSpec([None, 3, 8, 8], "float32", "x")])
    params = {p.name: p.numpy() for p in layer.parameters()} | {
        b.name: b.numpy() for b in layer.buffers() if b.name.startswith("batch_norm")}
    data = (tmp_path / "inference.pdiparams").read_bytes()
    tensors = hgnet_trained.read_tensors(data)
    assert len(tensors) == len(params) == 7
    for tensor, name in zip(tensors, sorted(params), strict=True):
        np.testing.assert_array_equal(tensor, params[name])
    assert len(hgnet_trained.read_tensors(data[:-10])) == 6  # a cut tensor is left out, the whole ones kept


def name_sorted(prefix: str, numbered: dict[int, list[np.ndarray]]) -> list[np.ndarray]:
    """Tensors in the order ``paddle.jit.save`` writes them: sorted by ``<prefix>_<n>.<suffix>``."""
    return [t for n in sorted(numbered, key=lambda n: f"{prefix}_{n}.") for t in numbered[n]]


def test_batchnorms_are_named_by_the_offset_that_reproduces_the_widths(hgnet_trained):
    rng = np.random.default_rng(0)
    widths = [int(w) for w in rng.choice([8, 16, 24, 32], size=30)]
    offset, others = 12, [48] * 9  # 12 norms made before the backbone's, 9 after it
    numbered = {offset + j: [np.full(w, float(j) + k / 10, np.float32) for k in range(4)]
                for j, w in enumerate(widths + others)}
    norms, count = hgnet_trained.name_batchnorms(name_sorted("batch_norm2d", numbered) + [np.zeros((3, 3))],
                                                 widths)
    assert count == 39
    assert [float(g[0][0]) for g in norms] == [float(j) for j in range(30)]
    assert [float(g[2][0]) for g in norms] == pytest.approx([j + 0.2 for j in range(30)])


def test_convolutions_are_placed_by_walking_the_sorted_numbers(hgnet_trained):
    rng = np.random.default_rng(1)
    shapes = [(int(rng.choice([4, 8, 16])), int(rng.choice([3, 4, 8])), 1, 1) for _ in range(25)]
    numbered = {j: [np.full(s, float(j), np.float32)] for j, s in enumerate(shapes)}
    for n in range(25, 40):  # the detector's own convolutions; some numbers have no weight in the file
        if n % 4:
            numbered[n] = [np.zeros((5, 5, 3, 3), np.float32)]
    weights = hgnet_trained.name_convolutions(name_sorted("conv2d", numbered), shapes)
    assert [float(w.flat[0]) for w in weights] == [float(j) for j in range(25)]


def test_a_naming_that_does_not_fit_is_refused(hgnet_trained):
    numbered = {j: [np.zeros((4, 4, 1, 1), np.float32)] for j in range(10)}
    with pytest.raises(SystemExit, match="no numbering"):
        hgnet_trained.name_convolutions(name_sorted("conv2d", numbered), [(8, 8, 1, 1)] * 10)
