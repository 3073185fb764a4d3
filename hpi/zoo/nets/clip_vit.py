"""The CLIP ViT image encoder (Radford et al., 2021) with a linear ImageNet-1k head, as PaddleClas builds it for
``CLIP_vit_base_patch16_224`` and ``CLIP_vit_large_patch14_224``.

Patch embedding by a bias-free strided convolution, a class token and learned position embeddings, a LayerNorm
before the encoder ("ln_pre"), pre-norm transformer blocks (qkv with bias, exact GELU MLP of ratio 4), a final
LayerNorm on one token and a linear classifier. CLIP's text tower and projection matrix are not part of the
classifier graph.

Which token feeds the head follows PaddleClas: the class token for ViT-L/14; for ViT-B/16 PaddleClas drops the
class token after the encoder and then takes the first remaining token, i.e. token 1.
"""

from __future__ import annotations

import paddle
import paddle.nn.functional as F
from paddle import nn


class Attention(nn.Layer):
    """Multi-head self-attention written with matmul / reshape / transpose (exports to plain ONNX ops)."""

    def __init__(self, dim: int, num_heads: int, tokens: int) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.tokens = dim, num_heads, tokens
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        n, c, h = self.tokens, self.dim, self.num_heads
        # 0 copies the dynamic batch dim (see hpi.zoo.nets.swin: -1 trips Paddle Inference's oneDNN shape check).
        qkv = self.qkv(x).reshape([0, 0, 3, h, c // h]).transpose([2, 0, 3, 1, 4])
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = F.softmax(paddle.matmul(q, k, transpose_y=True) * self.scale, axis=-1)
        return self.proj(paddle.matmul(attn, v).transpose([0, 2, 1, 3]).reshape([0, n, c]))


class Block(nn.Layer):
    """Pre-norm attention and MLP, each with a residual connection."""

    def __init__(self, dim: int, num_heads: int, tokens: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, epsilon=1e-5)
        self.attn = Attention(dim, num_heads, tokens)
        self.norm2 = nn.LayerNorm(dim, epsilon=1e-5)
        self.fc1 = nn.Linear(dim, 4 * dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(4 * dim, dim)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.fc2(self.act(self.fc1(self.norm2(x))))


class ClipVisionTransformer(nn.Layer):
    """CLIP ViT classifier; returns logits.

    Args:
        img_size: input side.
        patch_size: patch side (16 for ViT-B/16, 14 for ViT-L/14).
        dim: token width.
        depth: transformer blocks.
        num_heads: attention heads.
        head_token: index of the token the classifier reads (see the module docstring).
        num_classes: classifier outputs.
    """

    def __init__(
        self,
        img_size: int,
        patch_size: int,
        dim: int,
        depth: int,
        num_heads: int,
        head_token: int = 0,
        num_classes: int = 1000,
    ) -> None:
        super().__init__()
        if img_size % patch_size:
            raise ValueError(f"input side {img_size} is not a multiple of the patch size {patch_size}")
        tokens = (img_size // patch_size) ** 2 + 1
        self.head_token = head_token
        self.patch_embed = nn.Conv2D(3, dim, patch_size, stride=patch_size, bias_attr=False)
        trunc_normal = nn.initializer.TruncatedNormal(std=0.02)
        self.cls_token = self.create_parameter([1, 1, dim], default_initializer=trunc_normal)
        self.pos_embed = self.create_parameter([1, tokens, dim], default_initializer=trunc_normal)
        self.ln_pre = nn.LayerNorm(dim, epsilon=1e-5)
        self.blocks = nn.Sequential(*[Block(dim, num_heads, tokens) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim, epsilon=1e-5)
        self.classifier = nn.Linear(dim, num_classes)

    def forward(self, x: paddle.Tensor) -> paddle.Tensor:
        x = self.patch_embed(x).flatten(2).transpose([0, 2, 1])
        # expand to the runtime batch; paddle2onnx mis-exports expand_as with a dynamic batch (Expand to -1)
        cls = paddle.expand(self.cls_token, [paddle.shape(x)[0], 1, self.cls_token.shape[-1]])
        x = self.ln_pre(paddle.concat([cls, x], axis=1) + self.pos_embed)
        x = self.blocks(x)
        return self.classifier(self.norm(x[:, self.head_token]))
