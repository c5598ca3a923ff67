"""Native-resolution vision encoder in the AIMv2 or SigLIP2 style (ANDESVL.md §1, SPEC §1.3).

All images of a batch arrive as ONE packed sequence of patches (NaViT style). Each patch row is one
image's `3*p*p` pixels, and rows are serialised so that every 2x2 patch neighbourhood is contiguous
(SPEC §2.3), so the projector's pixel shuffle is a plain view. Attention is block-diagonal: a patch only
attends to patches of its own image. Positions enter twice, as in the release: a learned position table
resized (bicubic) to each image's patch grid and added once, plus 2D rotary embeddings in every layer.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel
from transformers import initialization as init
from transformers.modeling_outputs import BaseModelOutput

from ..config import AndesVisionConfig


def block_order_coords(h: int, w: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Row and column of each patch in 2x2-block serialisation order (block row, block col, dy, dx)."""
    if h % 2 or w % 2:
        raise ValueError(f"patch grid must have even sides for the 2x2 merge, got {h}x{w}")
    by, bx, dy, dx = torch.meshgrid(
        torch.arange(h // 2, device=device), torch.arange(w // 2, device=device),
        torch.arange(2, device=device), torch.arange(2, device=device), indexing="ij",
    )
    return (2 * by + dy).flatten(), (2 * bx + dx).flatten()


def same_size_groups(lengths: list[int], device: torch.device | None = None) -> list[torch.Tensor]:
    """Token indices of the packed sequence, grouped by image length: one (images, length) tensor per size.

    Attention must stay inside each image. Rather than one (N, N) block-diagonal mask, whose cost grows with the
    square of the whole batch, images of equal length attend as one batch, and each size is its own call.
    """
    starts = torch.tensor([0, *lengths[:-1]], device=device).cumsum(0)
    by_len: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_len.setdefault(n, []).append(i)
    return [starts[idx][:, None] + torch.arange(n, device=device) for n, idx in by_len.items()]


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


class VisionRotaryEmbedding2D(nn.Module):
    """2D RoPE: a quarter of the head dim rotates with the patch row, a quarter with the column (SPEC §1.3)."""

    def __init__(self, head_dim: int, theta: float):
        super().__init__()
        self.head_dim, self.theta = head_dim, theta
        self.register_buffer("inv_freq", self.compute_inv_freq(), persistent=False)

    def compute_inv_freq(self) -> torch.Tensor:
        dim = self.head_dim // 2
        return 1.0 / self.theta ** (torch.arange(0, dim, 2, dtype=torch.float) / dim)

    def forward(self, rows: torch.Tensor, cols: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        freqs = torch.cat([rows[:, None] * self.inv_freq, cols[:, None] * self.inv_freq], dim=-1)
        emb = torch.cat([freqs, freqs], dim=-1)  # (N, head_dim), rotate-half convention
        return emb.cos(), emb.sin()


class VisionAttention(nn.Module):
    def __init__(self, config: AndesVisionConfig):
        super().__init__()
        bias = config.style == "siglip2"
        c = config.hidden_size
        self.num_heads, self.head_dim = config.num_attention_heads, config.head_dim
        self.q_proj, self.k_proj, self.v_proj = (nn.Linear(c, c, bias=bias) for _ in range(3))
        self.out_proj = nn.Linear(c, c, bias=bias)

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, groups: list[torch.Tensor]) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = (p(x).view(n, self.num_heads, self.head_dim) for p in (self.q_proj, self.k_proj, self.v_proj))
        cos, sin = cos[:, None, :], sin[:, None, :]
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        out = torch.empty_like(q)
        for idx in groups:  # (images, patches) of same-sized images: one batched attention, no cross-image mask
            qi, ki, vi = (t[idx].transpose(1, 2) for t in (q, k, v))  # (images, heads, patches, head_dim)
            out[idx] = F.scaled_dot_product_attention(qi, ki, vi).transpose(1, 2).to(out.dtype)  # bf16 under autocast
        return self.out_proj(out.reshape(n, -1))


class VisionMLP(nn.Module):
    """SwiGLU (fc1 gate, fc3 up, fc2 down) for AIMv2; fc1 -> GELU(tanh) -> fc2 for SigLIP2."""

    def __init__(self, config: AndesVisionConfig):
        super().__init__()
        c, f = config.hidden_size, config.intermediate_size
        self.swiglu = config.style == "aimv2"
        self.fc1 = nn.Linear(c, f, bias=not self.swiglu)
        self.fc2 = nn.Linear(f, c, bias=not self.swiglu)
        self.fc3 = nn.Linear(c, f, bias=False) if self.swiglu else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.swiglu:
            return self.fc2(F.silu(self.fc1(x)) * self.fc3(x))
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


def make_norm(config: AndesVisionConfig) -> nn.Module:
    if config.style == "aimv2":
        return nn.RMSNorm(config.hidden_size, eps=config.norm_eps)
    return nn.LayerNorm(config.hidden_size, eps=config.norm_eps)


class VisionBlock(nn.Module):
    def __init__(self, config: AndesVisionConfig):
        super().__init__()
        self.norm1, self.attn = make_norm(config), VisionAttention(config)
        self.norm2, self.mlp = make_norm(config), VisionMLP(config)

    def forward(self, x, cos, sin, groups):
        x = x + self.attn(self.norm1(x), cos, sin, groups)
        return x + self.mlp(self.norm2(x))


def init_vision_weights(model: PreTrainedModel, module: nn.Module) -> None:
    """Default init, plus the RoPE frequencies: a non-persistent buffer that `from_pretrained` must recompute."""
    PreTrainedModel._init_weights(model, module)
    if isinstance(module, VisionRotaryEmbedding2D):
        init.copy_(module.inv_freq, module.compute_inv_freq())


class AndesVisionModel(PreTrainedModel):
    """Packed native-resolution ViT. Input: `pixel_values` (N, 3*p*p) and `image_grid_hw` (n_images, 2) in patches."""

    config_class = AndesVisionConfig
    base_model_prefix = "vision_tower"
    main_input_name = "pixel_values"
    input_modalities = ("image",)
    _no_split_modules = ["VisionBlock"]
    _supports_sdpa = True

    def _init_weights(self, module: nn.Module) -> None:
        init_vision_weights(self, module)

    def __init__(self, config: AndesVisionConfig):
        super().__init__(config)
        patch_dim = config.num_channels * config.patch_size**2
        self.patch_embed = nn.Linear(patch_dim, config.hidden_size, bias=config.style == "siglip2")
        self.patch_norm = make_norm(config) if config.style == "aimv2" else nn.Identity()
        self.position_embedding = nn.Embedding(config.position_grid**2, config.hidden_size)
        self.rotary = VisionRotaryEmbedding2D(config.head_dim, config.rope_theta)
        self.blocks = nn.ModuleList(VisionBlock(config) for _ in range(config.num_hidden_layers))
        self.post_norm = make_norm(config)
        self.post_init()

    def resized_positions(self, h: int, w: int) -> torch.Tensor:
        """The learned (G, G) position table resampled bicubically to an (h, w) patch grid, as (h, w, C)."""
        g = self.config.position_grid
        table = self.position_embedding.weight.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        if (h, w) != (g, g):
            table = F.interpolate(table.float(), size=(h, w), mode="bicubic", align_corners=False).to(table.dtype)
        return table[0].permute(1, 2, 0)

    def forward(self, pixel_values: torch.Tensor, image_grid_hw: torch.Tensor, **kwargs) -> BaseModelOutput:
        grid = [(int(h), int(w)) for h, w in image_grid_hw.tolist()]
        expected = sum(h * w for h, w in grid)
        if pixel_values.dim() != 2 or pixel_values.shape[0] != expected:
            raise ValueError(
                f"pixel_values must be packed patches of shape (sum of h*w = {expected}, "
                f"{self.patch_embed.in_features}), got {tuple(pixel_values.shape)} for grids {grid}"
            )
        device = pixel_values.device
        x = self.patch_norm(self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype)))
        rows, cols, pos = [], [], []
        for h, w in grid:
            r, c = block_order_coords(h, w, device)
            rows.append(r)
            cols.append(c)
            pos.append(self.resized_positions(h, w)[r, c])
        x = x + torch.cat(pos)
        cos, sin = self.rotary(torch.cat(rows).float(), torch.cat(cols).float())
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        groups = same_size_groups([h * w for h, w in grid], device)
        for block in self.blocks:
            x = block(x, cos, sin, groups)
        return BaseModelOutput(last_hidden_state=self.post_norm(x))
