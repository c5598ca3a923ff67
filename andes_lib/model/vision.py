"""Native-resolution vision encoder in the AIMv2 or SigLIP2 style (ANDESVL.md §1, SPEC §1.3).

All images of a batch arrive as ONE packed sequence of patches (NaViT style). Each patch row is one
image's `3*p*p` pixels, and rows are serialised so that every 2x2 patch neighbourhood is contiguous
(SPEC §2.3), so the projector's pixel shuffle is a plain view. Attention is block-diagonal: a patch only
attends to patches of its own image (images of one size are laid side by side and attend as one batch). Positions
enter twice, as in the release: a learned position table resized (bicubic) to each patch grid and added once, plus
2D rotary embeddings in every layer.
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


def same_size_runs(lengths: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """Images reordered so that equal lengths are adjacent (first-seen length first, stable inside a length), and
    the (images, length) of each run.

    Attention must stay inside each image. Rather than one (N, N) block-diagonal mask, whose cost grows with the
    square of the whole batch, the images of one run attend as one batch (a view of a contiguous slice, no copy).
    """
    by_len: dict[int, list[int]] = {}
    for i, n in enumerate(lengths):
        by_len.setdefault(n, []).append(i)
    return [i for idx in by_len.values() for i in idx], [(len(idx), n) for n, idx in by_len.items()]


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

    def forward(self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                runs: list[tuple[int, int]]) -> torch.Tensor:
        n = x.shape[0]
        q, k, v = (p(x).view(n, self.num_heads, self.head_dim) for p in (self.q_proj, self.k_proj, self.v_proj))
        cos, sin = cos[:, None, :], sin[:, None, :]
        q, k = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
        sizes = [images * length for images, length in runs]
        out = []
        # same-sized images, contiguous: one batched attention per run, no cross-image mask (split, whose backward is
        # one concatenation, rather than slices, whose backward writes each slice into a zero tensor)
        for (images, length), qi, ki, vi in zip(runs, *(t.split(sizes) for t in (q, k, v)), strict=True):
            qi, ki, vi = (t.view(images, length, self.num_heads, self.head_dim).transpose(1, 2) for t in (qi, ki, vi))
            out.append(F.scaled_dot_product_attention(qi, ki, vi).transpose(1, 2).reshape(images * length, -1))
        out = out[0] if len(out) == 1 else torch.cat(out)
        return self.out_proj(out.to(x.dtype))  # sdpa's output is bf16 under autocast


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

    def forward(self, x, cos, sin, runs):
        x = x + self.attn(self.norm1(x), cos, sin, runs)
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
        order, runs = same_size_runs([h * w for h, w in grid])
        starts = [0]
        for h, w in grid:
            starts.append(starts[-1] + h * w)
        sorted_tokens = order != sorted(order)
        if sorted_tokens:  # equal-sized images side by side; the output returns to the input's order at the end
            perm = torch.cat([torch.arange(starts[i], starts[i + 1], device=device) for i in order])
            pixel_values = pixel_values[perm]
        x = self.patch_norm(self.patch_embed(pixel_values.to(self.patch_embed.weight.dtype)))
        coords = {g: block_order_coords(*g, device) for g in dict.fromkeys(grid)}  # once per distinct grid
        positions = {g: self.resized_positions(*g)[r, c] for g, (r, c) in coords.items()}
        x = x + torch.cat([positions[grid[i]] for i in order])
        rows, cols = (torch.cat([coords[grid[i]][j] for i in order]) for j in (0, 1))
        cos, sin = self.rotary(rows.float(), cols.float())
        cos, sin = cos.to(x.dtype), sin.to(x.dtype)
        for block in self.blocks:
            x = block(x, cos, sin, runs)
        x = self.post_norm(x)
        if sorted_tokens:
            x = x[torch.empty_like(perm).scatter_(0, perm, torch.arange(len(perm), device=device))]
        return BaseModelOutput(last_hidden_state=x)
