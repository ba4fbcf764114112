"""Video ViT in the VideoMAE / VideoMAEv2 layout, used as a detection backbone.

Parameter names follow the official ``modeling_finetune.VisionTransformer`` (``patch_embed.proj``,
``blocks.N.attn.qkv`` with separate ``q_bias``/``v_bias``, ``blocks.N.mlp.fc1``...) so that
official checkpoints load strictly after :func:`stad.models.checkpoints.filter_videomae`.
The final LayerNorm is called ``norm`` and is applied per token (official fine-tuned checkpoints
call it ``fc_norm``; pretrained encoders call it ``norm``); the classifier head is dropped.

Input ``[B, 3, T, H, W]``; output ``[[B, C, T/tubelet, H/patch, W/patch]]`` (a one-element list,
like every backbone here). Position embeddings (fixed sin-cos as in VideoMAE, or learned) are
resampled on the fly when the input grid differs from the one the model was built for.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as activation_checkpoint

from stad.models.registry import register_model

Grid = tuple[int, int, int]


def sincos_table(num_positions: int, dim: int) -> torch.Tensor:
    """VideoMAE's 1-D sinusoid table over the flattened (t, h, w) token index: [1, L, C]."""
    position = torch.arange(num_positions, dtype=torch.float64)[:, None]
    exponent = 2 * (torch.arange(dim) // 2).to(torch.float64) / dim
    angles = position / torch.pow(10000.0, exponent)[None]
    table = torch.empty_like(angles)
    table[:, 0::2] = torch.sin(angles[:, 0::2])
    table[:, 1::2] = torch.cos(angles[:, 1::2])
    return table.float().unsqueeze(0)


def resample_pos_embed(pos: torch.Tensor, old_grid: Grid, new_grid: Grid) -> torch.Tensor:
    """[1, T*H*W, C] -> [1, T'*H'*W', C]: bicubic in space, linear in time (VideoMAE's recipe)."""
    if tuple(old_grid) == tuple(new_grid):
        return pos
    (t, h, w), (nt, nh, nw) = old_grid, new_grid
    if pos.shape[1] != t * h * w:
        raise ValueError(f"pos_embed has {pos.shape[1]} tokens, grid {old_grid} needs {t * h * w}")
    channels = pos.shape[-1]
    x = pos.reshape(t, h, w, channels).float()
    if (h, w) != (nh, nw):
        x = F.interpolate(x.permute(0, 3, 1, 2), size=(nh, nw), mode="bicubic", align_corners=False)
        x = x.permute(0, 2, 3, 1)
    if t != nt:
        x = x.permute(1, 2, 3, 0).reshape(nh * nw, channels, t)
        x = F.interpolate(x, size=nt, mode="linear", align_corners=False)
        x = x.reshape(nh, nw, channels, nt).permute(3, 0, 1, 2)
    return x.reshape(1, nt * nh * nw, channels).to(pos.dtype)


class PatchEmbed(nn.Module):
    """Tubelet embedding: Conv3d with kernel = stride = (tubelet, patch, patch)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int, tubelet_size: int):
        super().__init__()
        self.patch_size, self.tubelet_size = patch_size, tubelet_size
        kernel = (tubelet_size, patch_size, patch_size)
        self.proj = nn.Conv3d(in_chans, embed_dim, kernel_size=kernel, stride=kernel)

    def forward(self, clip: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """[B, 3, T, H, W] -> tokens [B, L, C] and grid (T', H', W')."""
        _, _, t, h, w = clip.shape
        if t % self.tubelet_size or h % self.patch_size or w % self.patch_size:
            raise ValueError(f"clip {tuple(clip.shape)} not divisible by tubelet {self.tubelet_size} "
                             f"x patch {self.patch_size}")
        x = self.proj(clip)
        grid = tuple(x.shape[2:])
        return x.flatten(2).transpose(1, 2), grid


class Attention(nn.Module):
    """Multi-head self-attention with VideoMAE's q/v biases (no k bias), via SDPA."""

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True, attn_drop: float = 0.0,
                 proj_drop: float = 0.0):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.attn_drop = attn_drop
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        self.q_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.v_bias = nn.Parameter(torch.zeros(dim)) if qkv_bias else None
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, L, C] -> [B, L, C]."""
        b, n, c = x.shape
        qkv = self.qkv(x)  # goes through self.qkv so LoRA wrappers apply
        if self.q_bias is not None:
            qkv = qkv + torch.cat([self.q_bias, torch.zeros_like(self.q_bias), self.v_bias])
        q, k, v = qkv.reshape(b, n, 3, self.num_heads, c // self.num_heads).permute(2, 0, 3, 1, 4)
        drop = self.attn_drop if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, dropout_p=drop)
        return self.proj_drop(self.proj(out.transpose(1, 2).reshape(b, n, c)))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, drop: float = 0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.act(self.fc1(x))))


class DropPath(nn.Module):
    """Stochastic depth: drop the whole residual branch per sample while training."""

    def __init__(self, prob: float):
        super().__init__()
        self.prob = prob

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.prob == 0.0:
            return x
        keep = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(1 - self.prob)
        return x * keep / (1 - self.prob)


class Block(nn.Module):
    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, qkv_bias: bool, drop: float,
                 attn_drop: float, drop_path: float, norm_eps: float):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qkv_bias, attn_drop, drop)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        return x + self.drop_path(self.mlp(self.norm2(x)))


class VisionTransformer3D(nn.Module):
    """VideoMAE-layout ViT returning a spatio-temporal feature map.

    Args:
        img_size, num_frames: input size the position embedding is built for (other sizes are
            handled by resampling it).
        patch_size, tubelet_size: token size (16 and 2 for S/B/L/H, 14 and 2 for VideoMAEv2 ViT-g).
        embed_dim, depth, num_heads, mlp_ratio: transformer size.
        qkv_bias: learn q and v biases (official models: True).
        learned_pos_embed: learned ``pos_embed`` parameter instead of the fixed sin-cos table.
        drop_path_rate: stochastic depth, linearly increasing over blocks.
        grad_checkpointing: recompute block activations in backward to save memory.
        final_norm: apply the final per-token LayerNorm ``norm``. ``False``: the map is the last
            block's output as it is and the model has no ``norm`` parameters (the Chaotic World
            reference's VideoMAEv2 stream returns its tokens so; docs/models.md).
    """

    def __init__(self, *, img_size: int = 224, num_frames: int = 16, patch_size: int = 16,
                 tubelet_size: int = 2, in_chans: int = 3, embed_dim: int = 768, depth: int = 12,
                 num_heads: int = 12, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 learned_pos_embed: bool = False, drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, norm_eps: float = 1e-6, grad_checkpointing: bool = False,
                 final_norm: bool = True):
        super().__init__()
        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size, tubelet_size)
        self.grid: Grid = (num_frames // tubelet_size, img_size // patch_size, img_size // patch_size)
        num_tokens = math.prod(self.grid)
        if learned_pos_embed:
            self.pos_embed = nn.Parameter(torch.zeros(1, num_tokens, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        else:
            # Fixed table: not in the state dict, like the official (plain tensor attribute).
            self.register_buffer("pos_embed", sincos_table(num_tokens, embed_dim), persistent=False)
        self.learned_pos_embed = learned_pos_embed
        self.pos_drop = nn.Dropout(drop_rate)
        rates = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        self.blocks = nn.ModuleList(
            Block(embed_dim, num_heads, mlp_ratio, qkv_bias, drop_rate, attn_drop_rate, rates[i], norm_eps)
            for i in range(depth))
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if final_norm else nn.Identity()
        self.final_norm = final_norm
        self.grad_checkpointing = grad_checkpointing
        self.embed_dim = embed_dim
        self.out_channels = [embed_dim]
        self.feature_stride = patch_size
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(m: nn.Module) -> None:
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def pos_embed_for(self, grid: Grid) -> torch.Tensor:
        """Position embedding [1, L, C] for a token grid, resampled if needed."""
        return resample_pos_embed(self.pos_embed, self.grid, grid)

    def forward_tokens(self, clip: torch.Tensor) -> tuple[torch.Tensor, Grid]:
        """clip [B, 3, T, H, W] -> tokens [B, L, C] (normed unless ``final_norm=False``) and their grid (T', H', W')."""
        x, grid = self.patch_embed(clip)
        pos = self.pos_embed_for(grid)
        if not self.learned_pos_embed:
            pos = pos.detach()
        x = self.pos_drop(x + pos.to(x.dtype))
        for block in self.blocks:
            if self.grad_checkpointing and self.training and torch.is_grad_enabled():
                x = activation_checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return self.norm(x), grid

    def forward_features(self, clip: torch.Tensor) -> torch.Tensor:
        """clip [B, 3, T, H, W] -> feature map [B, C, T/tubelet, H/patch, W/patch]."""
        if clip.ndim != 5:
            raise ValueError(f"ViT expects [B, 3, T, H, W], got {tuple(clip.shape)}")
        tokens, grid = self.forward_tokens(clip)
        b, _, c = tokens.shape
        return tokens.transpose(1, 2).reshape(b, c, *grid)

    def forward(self, clip: torch.Tensor) -> list[torch.Tensor]:
        """clip [B, 3, T, H, W] -> [feature map] (a list, like every backbone here)."""
        return [self.forward_features(clip)]


# name: (embed_dim, depth, num_heads, mlp_ratio, patch_size); VideoMAE / VideoMAEv2 sizes.
VIT_SIZES: dict[str, tuple[int, int, int, float, int]] = {
    "vit_tiny": (64, 2, 4, 4.0, 16),  # ours: CPU tests and the toy demo
    "vit_small": (384, 12, 6, 4.0, 16),
    "vit_base": (768, 12, 12, 4.0, 16),
    "vit_large": (1024, 24, 16, 4.0, 16),
    "vit_huge": (1280, 32, 16, 4.0, 16),
    "vit_giant": (1408, 40, 16, 48 / 11, 14),  # VideoMAEv2 vit_giant_patch14_224
}


def _vit_factory(name: str):
    dim, depth, heads, ratio, patch = VIT_SIZES[name]

    def factory(**kwargs) -> VisionTransformer3D:
        defaults = dict(embed_dim=dim, depth=depth, num_heads=heads, mlp_ratio=ratio, patch_size=patch)
        if name == "vit_tiny":
            defaults.update(img_size=112, num_frames=8)
        return VisionTransformer3D(**{**defaults, **kwargs})

    factory.__name__ = name
    factory.__doc__ = (f"ViT ({dim} wide, {depth} blocks, {heads} heads, mlp {ratio:.3g}, "
                       f"patch {patch}, tubelet 2) in the VideoMAE layout.")
    return factory


for _name in VIT_SIZES:
    register_model(_name, kind="backbone")(_vit_factory(_name))
