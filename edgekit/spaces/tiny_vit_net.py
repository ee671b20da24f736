"""Torch side of the ``tiny-vit`` space: weight-shared supernet, subnet extraction, resizing.

The supernet holds every weight at its largest size; the active config picks a subnet by

* slicing: first ``e`` embedding channels (every weight, LayerNorm affine and the position
  embedding), first ``heads * HEAD_DIM`` q/k/v outputs and proj inputs, first
  ``mlp_ratio * e`` MLP hidden units, first ``r`` rows / columns of each low-rank factor;
* depth truncation: the first ``depth`` blocks;
* patch-embedding resizing: the kernel is held at the largest patch size ``P`` and mapped to
  a smaller patch ``p`` with FlexiViT's pseudo-inverse resize (PI-resize), the least-squares
  ``w_p = pinv(B^T) w_P`` where ``B`` bilinearly resizes a ``P x P`` patch to ``p x p``: a token
  of a ``p x p`` patch then matches the token of the ``P x P`` patch it was resized from. For
  ``P = 2p`` this is exact 2 x 2 sum pooling of the kernel, so smooth (e.g. constant) images
  give the same token embedding at every patch size, where a plain bilinear kernel resize
  would shrink it 4x;
* position embedding: held on the largest token grid and bilinearly resampled (antialiased)
  to the active grid.

Low-rank projections are always run as their two factors here; the extracted network stores
each as one dense ``nn.Linear`` (the factors' product) when that is smaller (see
:func:`edgekit.spaces.tiny_vit.is_factorised`), else as ``nn.Sequential(Linear, Linear)``.
"""

from __future__ import annotations

import functools
import logging

import torch
import torch.nn as nn
import torch.nn.functional as F

from edgekit.errors import ConfigError
from edgekit.spaces.tiny_vit import (
    EMBED_DIMS,
    HEAD_DIM,
    LAYER_NORM_EPS,
    MAX_DEPTH,
    MLP_RATIOS,
    NUM_HEADS,
    PATCH_SIZES,
    RESOLUTIONS,
    TinyVitConfig,
    TinyVitSpace,
    is_factorised,
    projection_rank,
)

logger = logging.getLogger(__name__)

ATTENTION_SCALE = HEAD_DIM**-0.5


def prepare_input(x: torch.Tensor, cfg: TinyVitConfig) -> torch.Tensor:
    """Resize an NCHW batch to ``cfg.resolution`` (bilinear, align_corners=False)."""
    size = (cfg.resolution, cfg.resolution)
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


@functools.cache
def _pi_resize_matrix(src: int, dst: int) -> torch.Tensor:
    """``pinv(B^T)`` of shape (dst^2, src^2), ``B`` the bilinear src x src -> dst x dst resize."""
    basis = torch.eye(src * src, dtype=torch.float64).reshape(src * src, 1, src, src)
    resized = F.interpolate(basis, size=(dst, dst), mode="bilinear", align_corners=False)
    resize = resized.reshape(src * src, dst * dst).T  # B: column j = resize of basis image j
    return torch.linalg.pinv(resize.T)


def pi_resize(kernel: torch.Tensor, patch: int) -> torch.Tensor:
    """PI-resize a (out, in, P, P) patch-embedding kernel to (out, in, patch, patch)."""
    out_ch, in_ch, src, _ = kernel.shape
    if patch == src:
        return kernel
    matrix = _pi_resize_matrix(src, patch).to(kernel)
    return (kernel.reshape(out_ch, in_ch, src * src) @ matrix.T).reshape(
        out_ch, in_ch, patch, patch
    )


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, heads: int) -> torch.Tensor:
    """Softmax attention of (N, T, heads * HEAD_DIM) tensors, heads as a batch dim; q scaled."""
    n, t, width = q.shape

    def split(z: torch.Tensor) -> torch.Tensor:
        return z.reshape(n, t, heads, HEAD_DIM).transpose(1, 2)

    scores = split(q) @ split(k).transpose(-2, -1)
    context = scores.softmax(dim=-1) @ split(v)
    return context.transpose(1, 2).reshape(n, t, width)


# --- supernet -------------------------------------------------------------------------------
class LowRankSuperLinear(nn.Module):
    """``in_max -> out_max`` projection held as factors ``expand @ reduce`` of full rank.

    The factors start as the SVD of a dense init (largest singular values first), so the
    leading ranks that small subnets use carry the most of the map from the start.
    """

    def __init__(self, in_max: int, out_max: int) -> None:
        super().__init__()
        dense = nn.init.trunc_normal_(torch.empty(out_max, in_max), std=0.02)
        left, singular, right = torch.linalg.svd(dense, full_matrices=False)
        root = singular.sqrt()
        self.reduce = nn.Parameter(root[:, None] * right)  # (rank_max, in_max)
        self.expand = nn.Parameter(left * root)  # (out_max, rank_max)
        self.bias = nn.Parameter(torch.zeros(out_max))

    def factors(
        self, in_f: int, out_f: int, rank_ratio: float
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rank = projection_rank(rank_ratio, in_f, out_f)
        return self.reduce[:rank, :in_f], self.expand[:out_f, :rank], self.bias[:out_f]

    def forward(self, x: torch.Tensor, out_f: int, rank_ratio: float) -> torch.Tensor:
        reduce, expand, bias = self.factors(x.shape[-1], out_f, rank_ratio)
        return F.linear(F.linear(x, reduce), expand, bias)


def _layer_norm(x: torch.Tensor, norm: nn.LayerNorm, width: int) -> torch.Tensor:
    return F.layer_norm(x, (width,), norm.weight[:width], norm.bias[:width], LAYER_NORM_EPS)


class _SuperBlock(nn.Module):
    def __init__(self, embed_max: int, attn_max: int, hidden_max: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_max, eps=LAYER_NORM_EPS)
        self.attn = nn.ModuleDict(
            {
                "q": LowRankSuperLinear(embed_max, attn_max),
                "k": LowRankSuperLinear(embed_max, attn_max),
                "v": LowRankSuperLinear(embed_max, attn_max),
                "proj": LowRankSuperLinear(attn_max, embed_max),
            }
        )
        self.norm2 = nn.LayerNorm(embed_max, eps=LAYER_NORM_EPS)
        self.mlp = nn.ModuleDict(
            {
                "fc1": LowRankSuperLinear(embed_max, hidden_max),
                "fc2": LowRankSuperLinear(hidden_max, embed_max),
            }
        )

    def forward(
        self, x: torch.Tensor, heads: int, mlp_ratio: int, rank_ratio: float
    ) -> torch.Tensor:
        embed, width = x.shape[-1], heads * HEAD_DIM
        h = _layer_norm(x, self.norm1, embed)
        q = self.attn["q"](h, width, rank_ratio) * ATTENTION_SCALE
        k = self.attn["k"](h, width, rank_ratio)
        v = self.attn["v"](h, width, rank_ratio)
        x = x + self.attn["proj"](attend(q, k, v, heads), embed, rank_ratio)
        h = _layer_norm(x, self.norm2, embed)
        h = F.hardswish(self.mlp["fc1"](h, mlp_ratio * embed, rank_ratio))
        return x + self.mlp["fc2"](h, embed, rank_ratio)


class TinyVitSupernet(nn.Module):
    """Weight-shared tiny-vit supernet; ``set_active(cfg)`` then ``forward(x)`` -> logits.

    ``x`` is NCHW at the active resolution (see :func:`prepare_input`).
    """

    def __init__(self, space: TinyVitSpace) -> None:
        super().__init__()
        self.space = space
        embed_max = EMBED_DIMS[-1]
        self.max_patch = PATCH_SIZES[-1]
        self.max_grid = RESOLUTIONS[-1] // PATCH_SIZES[0]
        self.patch_embed = nn.Conv2d(
            space.in_channels, embed_max, self.max_patch, stride=self.max_patch
        )
        self.pos_embed = nn.Parameter(
            nn.init.trunc_normal_(torch.empty(embed_max, self.max_grid, self.max_grid), std=0.02)
        )
        self.blocks = nn.ModuleList(
            _SuperBlock(embed_max, NUM_HEADS[-1] * HEAD_DIM, MLP_RATIOS[-1] * embed_max)
            for _ in range(MAX_DEPTH)
        )
        self.norm = nn.LayerNorm(embed_max, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(embed_max, space.num_classes)
        nn.init.trunc_normal_(self.head.weight, std=0.02)
        nn.init.zeros_(self.head.bias)
        self._active = space.largest()

    @property
    def active(self) -> TinyVitConfig:
        return self._active

    def set_active(self, cfg: TinyVitConfig) -> None:
        self.space.validate(cfg)
        self._active = cfg

    def patch_embedding(self, cfg: TinyVitConfig) -> tuple[torch.Tensor, torch.Tensor]:
        """Active (kernel, bias) of the patch embedding: PI-resized, channel-sliced."""
        kernel = pi_resize(self.patch_embed.weight[: cfg.embed_dim], cfg.patch_size)
        return kernel, self.patch_embed.bias[: cfg.embed_dim]

    def position_embedding(self, cfg: TinyVitConfig) -> torch.Tensor:
        """Active position embedding, (1, tokens, embed_dim), tokens in row-major order."""
        pos = self.pos_embed[: cfg.embed_dim]
        if cfg.grid != self.max_grid:
            pos = F.interpolate(
                pos[None], size=(cfg.grid, cfg.grid), mode="bilinear", align_corners=False,
                antialias=True,
            )[0]  # fmt: skip
        return pos.flatten(1).T[None]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        cfg = self._active
        r = cfg.resolution
        if x.dim() != 4 or tuple(x.shape[1:]) != (cfg.in_channels, r, r):
            raise ConfigError(
                f"input of shape {tuple(x.shape)}: expected (N, {cfg.in_channels}, {r}, {r}) "
                "for the active config (resize with prepare_input)"
            )
        kernel, bias = self.patch_embedding(cfg)
        x = F.conv2d(x, kernel, bias, stride=cfg.patch_size).flatten(2).transpose(1, 2)
        x = x + self.position_embedding(cfg)
        for i in range(cfg.depth):
            x = self.blocks[i](x, cfg.num_heads[i], cfg.mlp_ratio[i], cfg.rank_ratio)
        x = _layer_norm(x.mean(dim=1), self.norm, cfg.embed_dim)
        return F.linear(x, self.head.weight[:, : cfg.embed_dim], self.head.bias)


# --- standalone subnet ----------------------------------------------------------------------
def _projection(in_f: int, out_f: int, rank_ratio: float) -> nn.Module:
    rank = projection_rank(rank_ratio, in_f, out_f)
    if is_factorised(rank, in_f, out_f):
        return nn.Sequential(nn.Linear(in_f, rank, bias=False), nn.Linear(rank, out_f))
    return nn.Linear(in_f, out_f)


class TinyVitAttention(nn.Module):
    """Multi-head self-attention; ``q`` has the ``HEAD_DIM ** -0.5`` scale folded in."""

    def __init__(self, embed: int, heads: int, rank_ratio: float) -> None:
        super().__init__()
        self.heads = heads
        width = heads * HEAD_DIM
        self.q = _projection(embed, width, rank_ratio)
        self.k = _projection(embed, width, rank_ratio)
        self.v = _projection(embed, width, rank_ratio)
        self.proj = _projection(width, embed, rank_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(attend(self.q(x), self.k(x), self.v(x), self.heads))


class TinyVitMlp(nn.Module):
    def __init__(self, embed: int, hidden: int, rank_ratio: float) -> None:
        super().__init__()
        self.fc1 = _projection(embed, hidden, rank_ratio)
        self.act = nn.Hardswish()
        self.fc2 = _projection(hidden, embed, rank_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class TinyVitBlock(nn.Module):
    def __init__(self, embed: int, heads: int, mlp_ratio: int, rank_ratio: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(embed, eps=LAYER_NORM_EPS)
        self.attn = TinyVitAttention(embed, heads, rank_ratio)
        self.norm2 = nn.LayerNorm(embed, eps=LAYER_NORM_EPS)
        self.mlp = TinyVitMlp(embed, mlp_ratio * embed, rank_ratio)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class TinyVitNet(nn.Module):
    """A standalone tiny-vit network of plain torch layers, laid out by ``cfg``.

    Module names match :func:`edgekit.spaces.tiny_vit.layer_plan`: ``patch_embed`` (Conv2d),
    ``pos_embed`` (parameter, (1, T, e)), ``blocks.{i}.norm1``, ``blocks.{i}.attn.{q,k,v,proj}``,
    ``blocks.{i}.norm2``, ``blocks.{i}.mlp.{fc1,act,fc2}``, ``norm``, ``head``. A projection
    is an ``nn.Linear`` or, when factorised, ``nn.Sequential(Linear(bias=False), Linear)``.
    """

    def __init__(self, cfg: TinyVitConfig) -> None:
        super().__init__()
        self.cfg = cfg
        e = cfg.embed_dim
        self.patch_embed = nn.Conv2d(cfg.in_channels, e, cfg.patch_size, stride=cfg.patch_size)
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.num_tokens, e))
        self.blocks = nn.ModuleList(
            TinyVitBlock(e, cfg.num_heads[i], cfg.mlp_ratio[i], cfg.rank_ratio)
            for i in range(cfg.depth)
        )
        self.norm = nn.LayerNorm(e, eps=LAYER_NORM_EPS)
        self.head = nn.Linear(e, cfg.num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.patch_embed(x).flatten(2).transpose(1, 2) + self.pos_embed
        for block in self.blocks:
            x = block(x)
        return self.head(self.norm(x.mean(dim=1)))


@torch.no_grad()
def _copy_projection(
    target: nn.Module,
    source: LowRankSuperLinear,
    in_f: int,
    out_f: int,
    rank_ratio: float,
    scale: float = 1.0,
) -> None:
    reduce, expand, bias = source.factors(in_f, out_f, rank_ratio)
    if isinstance(target, nn.Linear):
        target.weight.copy_((expand.double() @ reduce.double()) * scale)
        target.bias.copy_(bias * scale)
    else:
        target[0].weight.copy_(reduce)
        target[1].weight.copy_(expand * scale)
        target[1].bias.copy_(bias * scale)


@torch.no_grad()
def extract(supernet: nn.Module, cfg: TinyVitConfig) -> TinyVitNet:
    """A :class:`TinyVitNet` holding copies of ``supernet``'s weights for ``cfg``."""
    if not isinstance(supernet, TinyVitSupernet):
        raise ConfigError(f"expected a tiny-vit supernet, got {type(supernet).__name__}")
    supernet.space.validate(cfg)
    reference = supernet.patch_embed.weight
    net = TinyVitNet(cfg).to(device=reference.device, dtype=reference.dtype)
    e = cfg.embed_dim
    kernel, bias = supernet.patch_embedding(cfg)
    net.patch_embed.weight.copy_(kernel)
    net.patch_embed.bias.copy_(bias)
    net.pos_embed.copy_(supernet.position_embedding(cfg))
    for i, block in enumerate(net.blocks):
        source = supernet.blocks[i]
        width, hidden = cfg.num_heads[i] * HEAD_DIM, cfg.mlp_ratio[i] * e
        for norm in ("norm1", "norm2"):
            getattr(block, norm).weight.copy_(getattr(source, norm).weight[:e])
            getattr(block, norm).bias.copy_(getattr(source, norm).bias[:e])
        attn, ratio = source.attn, cfg.rank_ratio
        _copy_projection(block.attn.q, attn["q"], e, width, ratio, scale=ATTENTION_SCALE)
        _copy_projection(block.attn.k, attn["k"], e, width, ratio)
        _copy_projection(block.attn.v, attn["v"], e, width, ratio)
        _copy_projection(block.attn.proj, attn["proj"], width, e, ratio)
        _copy_projection(block.mlp.fc1, source.mlp["fc1"], e, hidden, ratio)
        _copy_projection(block.mlp.fc2, source.mlp["fc2"], hidden, e, ratio)
    net.norm.weight.copy_(supernet.norm.weight[:e])
    net.norm.bias.copy_(supernet.norm.bias[:e])
    net.head.weight.copy_(supernet.head.weight[:, :e])
    net.head.bias.copy_(supernet.head.bias)
    return net.train(supernet.training)
