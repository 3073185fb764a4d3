"""Swin Transformer (Liu et al., "Hierarchical Vision Transformer using Shifted Windows", 2021), as PaddleClas
exports it for a fixed input resolution.

A 4x4/4 patch embedding with LayerNorm, four stages of pre-norm transformer blocks whose self-attention runs inside
non-overlapping windows (every second block on windows shifted by half a window, with ``paddle.roll`` and an
additive mask), a learned relative-position bias per head, patch merging (2x2 neighbourhood concat, LayerNorm,
linear 4C -> 2C) between stages, then LayerNorm, token average and a linear classifier.

As in PaddleClas (and unlike the reference implementation, which drops the shift once a stage is a single window),
odd blocks shift in every stage, including the last one where the feature map is exactly one window wide.

The input resolution is fixed at construction: the shift masks and relative-position indices are constants of
the graph, which keeps the export to ONNX free of shape arithmetic. The batch dimension stays dynamic.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import paddle
import paddle.nn.functional as F
from paddle import nn

_MASKED = -100.0  # additive attention bias between tokens of different regions of a shifted window


def relative_position_index(window: int) -> np.ndarray:
    """For each (query, key) token pair of a window, the row of the relative-position bias table: (N, N) int64."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij")).reshape(2, -1)
    rel = coords[:, :, None] - coords[:, None, :] + (window - 1)  # (2, N, N), both offsets in [0, 2w-2]
    return (rel[0] * (2 * window - 1) + rel[1]).astype("int64")


def window_partition_ids(ids: np.ndarray, window: int) -> np.ndarray:
    """(H, W) array -> (num_windows, window * window), windows in row-major order."""
    h, w = ids.shape
    return (
        ids.reshape(h // window, window, w // window, window)
        .transpose(0, 2, 1, 3)
        .reshape(-1, window * window)
    )


def shifted_window_mask(resolution: int, window: int, shift: int) -> np.ndarray:
    """Additive mask (num_windows, N, N) that keeps attention inside the regions a cyclic shift brings together."""
    ids = np.zeros((resolution, resolution), dtype="int64")
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    region = 0
    for rows in bounds:
        for cols in bounds:
            ids[rows, cols] = region
            region += 1
    windows = window_partition_ids(ids, window)
    same = windows[:, :, None] == windows[:, None, :]
    return np.where(same, 0.0, _MASKED).astype("float32")


class Mlp(nn.Layer):
    """Linear -> GELU -> Linear."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class WindowAttention(nn.Layer):
    """Multi-head self-attention over the tokens of each window, with a learned relative-position bias."""

    def __init__(self, dim: int, window: int, num_heads: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim = dim
        self.num_heads = num_heads
        self.tokens = window * window
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.relative_position_bias_table = self.create_parameter(
            [(2 * window - 1) ** 2, num_heads], default_initializer=nn.initializer.TruncatedNormal(std=0.02)
        )
        self.register_buffer(
            "relative_position_index", paddle.to_tensor(relative_position_index(window).reshape(-1))
        )

    def forward(self, x: paddle.Tensor, mask: paddle.Tensor | None) -> paddle.Tensor:
        n, c, h = self.tokens, self.dim, self.num_heads
        # 0 copies the (dynamic) leading dims: with -1 here, Paddle Inference's oneDNN path mis-infers the shape of
        # the qkv matmul (fed by the window-partition transpose) and refuses to create the predictor.
        qkv = self.qkv(x).reshape([0, 0, 3, h, c // h]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = paddle.matmul(q * self.scale, k, transpose_y=True)  # (B * nW, heads, N, N)
        bias = paddle.index_select(self.relative_position_bias_table, self.relative_position_index)
        attn = attn + bias.reshape([n, n, h]).transpose([2, 0, 1]).unsqueeze(0)
        if mask is not None:
            num_windows = mask.shape[0]
            attn = attn.reshape([-1, num_windows, h, n, n]) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.reshape([-1, h, n, n])
        out = paddle.matmul(F.softmax(attn, axis=-1), v)  # (B * nW, heads, N, head_dim)
        return self.proj(out.transpose([0, 2, 1, 3]).reshape([-1, n, c]))


class SwinBlock(nn.Layer):
    """Pre-norm (shifted) window attention and MLP, each with a residual connection. Tokens in, tokens out."""

    def __init__(self, dim: int, resolution: int, num_heads: int, window: int, shift: int) -> None:
        super().__init__()
        if resolution % window:
            raise ValueError(f"feature map side {resolution} is not a multiple of the window {window}")
        self.dim, self.resolution, self.window, self.shift = dim, resolution, window, shift
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window, num_heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, 4 * dim)
        if shift:
            self.register_buffer(
                "attn_mask", paddle.to_tensor(shifted_window_mask(resolution, window, shift))
            )
        else:
            self.attn_mask = None

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        r, w, c = self.resolution, self.window, self.dim
        y = self.norm1(x).reshape([-1, r, r, c])
        if self.shift:
            y = paddle.roll(y, shifts=(-self.shift, -self.shift), axis=(1, 2))
        windows = (
            y.reshape([-1, r // w, w, r // w, w, c]).transpose([0, 1, 3, 2, 4, 5]).reshape([-1, w * w, c])
        )
        windows = self.attn(windows, self.attn_mask)
        y = (
            windows.reshape([-1, r // w, r // w, w, w, c])
            .transpose([0, 1, 3, 2, 4, 5])
            .reshape([-1, r, r, c])
        )
        if self.shift:
            y = paddle.roll(y, shifts=(self.shift, self.shift), axis=(1, 2))
        x = x + y.reshape([-1, r * r, c])
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Layer):
    """Concatenate each 2x2 neighbourhood (C -> 4C), LayerNorm, project to 2C: halves the resolution."""

    def __init__(self, dim: int, resolution: int) -> None:
        super().__init__()
        self.dim, self.resolution = dim, resolution
        self.norm = nn.LayerNorm(4 * dim)
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias_attr=False)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        r, c = self.resolution, self.dim
        x = x.reshape([-1, r, r, c])
        x = paddle.concat(
            [x[:, 0::2, 0::2, :], x[:, 1::2, 0::2, :], x[:, 0::2, 1::2, :], x[:, 1::2, 1::2, :]], -1
        )
        return self.reduction(self.norm(x.reshape([-1, (r // 2) * (r // 2), 4 * c])))


class SwinTransformer(nn.Layer):
    """The Swin classifier for one input resolution; returns logits.

    Args:
        img_size: input side (224 or 384 for the PaddleX models).
        embed_dim: channels of the first stage (doubles every stage).
        depths: blocks per stage.
        num_heads: attention heads per stage.
        window: window side in tokens (7 at 224, 12 at 384).
        num_classes: classifier outputs.
    """

    def __init__(
        self,
        img_size: int,
        embed_dim: int,
        depths: Sequence[int],
        num_heads: Sequence[int],
        window: int,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        if len(depths) != len(num_heads):
            raise ValueError(f"depths {list(depths)} and num_heads {list(num_heads)} differ in length")
        self.patch_embed = nn.Conv2D(3, embed_dim, 4, stride=4)
        self.patch_norm = nn.LayerNorm(embed_dim)
        layers: list[nn.Layer] = []
        resolution, dim = img_size // 4, embed_dim
        for stage, (depth, heads) in enumerate(zip(depths, num_heads, strict=True)):
            for i in range(depth):
                layers.append(SwinBlock(dim, resolution, heads, window, shift=window // 2 if i % 2 else 0))
            if stage < len(depths) - 1:
                layers.append(PatchMerging(dim, resolution))
                resolution, dim = resolution // 2, dim * 2
        self.layers = nn.Sequential(*layers)
        self.norm = nn.LayerNorm(dim)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.patch_embed(x).flatten(2).transpose([0, 2, 1])
        x = self.layers(self.patch_norm(x))
        return self.classifier(self.norm(x).mean(axis=1))
