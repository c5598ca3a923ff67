"""Quantized linear layers, swapped in place (ANDESVL.md §4: QAT, frozen PTQ encodings).

`quantize_model(model, "w4a8")` turns every eligible `nn.Linear` into a `QuantLinear` by changing its class:
the parameters, their names and the state dict stay exactly as they were, so checkpoints and PEFT adapters
load unchanged. A `QuantLinear` runs in one of three modes:

- `"qat"`: weight encodings recomputed from the current weight at every forward (min-max), STE gradients;
- `"observe"`: floating-point forward that records activation statistics for PTQ calibration;
- `"frozen"`: the weight is fake-quantized with the frozen PTQ encodings held in buffers (`w_scale`, `w_zero`,
  `a_clip`), which no optimizer sees and no forward changes (QALFT trains adapters on top of this).
Activations are fake-quantized per token in `"qat"` and `"frozen"` (int8 or int16, dynamic, as on the NPU),
bounded by the calibrated clip in `"frozen"`. PEFT's LoRA wraps a `QuantLinear` like any `nn.Linear`: the LoRA
branch itself stays floating point (our choice; the paper does not say).
"""

from __future__ import annotations

import re
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .fake import Encoding, fake_quantize_per_token, fake_quantize_weight, weight_encoding
from .scheme import QuantScheme, parse_scheme

MODES = ("qat", "observe", "frozen")
# Linear layers of the AndesVL model (vision tower, projector, LLM) and of a plain causal LM; the LM head is
# tied to the embeddings and stays floating point, as do LoRA's own matrices.
DEFAULT_SCOPE = r".*(vision_tower|projector|language_model|layers)\..*"
_SKIP = re.compile(r"(^|\.)(lm_head|lora_[AB]|lora_embedding_[AB])(\.|$)")


class QuantLinear(nn.Linear):
    """An `nn.Linear` with fake-quantized weight and input (set up by `quantize_model`, never built directly)."""

    qscheme: QuantScheme
    mode: str

    def setup(self, scheme: QuantScheme, mode: str = "qat") -> None:
        self.qscheme = scheme
        self.set_mode(mode)
        self.obs_absmax: list[torch.Tensor] = []
        self.obs_sq: torch.Tensor | None = None
        self.obs_n = 0
        for name in ("w_scale", "w_zero", "a_clip"):
            if name not in self._buffers:
                self.register_buffer(name, None, persistent=False)

    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown QuantLinear mode {mode!r}; use one of {MODES}")
        if mode == "frozen" and getattr(self, "w_scale", None) is None:
            raise RuntimeError("no frozen encodings: run calibrate(...) or load_encodings(...) first")
        self.mode = mode
        self._cache_key, self._cached_weight = None, None

    @property
    def frozen_encoding(self) -> Encoding:
        return Encoding(self.w_scale, self.w_zero, self.qscheme.w_bits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.qscheme
        if self.mode == "observe":
            flat = x.detach().float().reshape(-1, x.shape[-1])
            self.obs_absmax.append(flat.abs().amax(-1))
            self.obs_sq = flat.pow(2).sum(0) + (0 if self.obs_sq is None else self.obs_sq)
            self.obs_n += flat.shape[0]
            return F.linear(x, self.weight, self.bias)
        if self.mode == "frozen":
            w, clip = self._frozen_weight(), self.a_clip
        else:
            enc, clip = weight_encoding(self.weight, s.w_bits, s.group_size, s.w_symmetric), None
            w = fake_quantize_weight(self.weight, enc)
        if s.a_bits:
            x = fake_quantize_per_token(x, s.a_bits, s.a_symmetric, clip)
        return F.linear(x, w, self.bias)

    def _frozen_weight(self) -> torch.Tensor:
        """The weight on its frozen grid; cached while neither the weight (its version counter) nor the encodings
        change and no gradient is wanted for it (QALFT and evaluation), recomputed with STE otherwise."""
        if self.weight.requires_grad and torch.is_grad_enabled():
            return fake_quantize_weight(self.weight, self.frozen_encoding)
        key = (self.weight._version, self.weight.data_ptr(), self.w_scale.data_ptr(), self.w_scale._version)
        if getattr(self, "_cache_key", None) != key:
            with torch.no_grad():
                self._cached_weight = fake_quantize_weight(self.weight, self.frozen_encoding)
            self._cache_key = key
        return self._cached_weight

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, scheme={self.qscheme.name}, mode={self.mode}"


def canonical_name(name: str) -> str:
    """A module name without PEFT's wrappers (`base_model.model.` prefix, `.base_layer` suffix)."""
    name = name.removeprefix("base_model.model.")
    return name.replace(".base_layer", "")


def eligible_linears(model: nn.Module, scope: str = DEFAULT_SCOPE) -> Iterator[tuple[str, nn.Linear]]:
    """(canonical name, module) of every plain or quantized `nn.Linear` in scope (LM head and LoRA excluded)."""
    pattern = re.compile(scope)
    for name, module in model.named_modules():
        if type(module) not in (nn.Linear, QuantLinear):
            continue
        key = canonical_name(name)
        if _SKIP.search(key) or not pattern.fullmatch(key):
            continue
        yield key, module


def quant_layers(model: nn.Module) -> dict[str, QuantLinear]:
    """Canonical name -> `QuantLinear` of a quantized model."""
    return {canonical_name(n): m for n, m in model.named_modules() if isinstance(m, QuantLinear)}


def quantize_model(model: nn.Module, scheme: str | QuantScheme, mode: str = "qat",
                   scope: str = DEFAULT_SCOPE) -> nn.Module:
    """Swap every eligible Linear of `model` to a `QuantLinear` in `mode` (in place; returns the model)."""
    s = parse_scheme(scheme)
    if s.is_fp:
        return model
    count = 0
    for _, module in eligible_linears(model, scope):
        if s.group_size and module.in_features % s.group_size:
            continue  # a group that does not divide the row: this layer stays floating point
        module.__class__ = QuantLinear
        module.setup(s, mode)
        count += 1
    if count == 0:
        raise ValueError(f"no Linear layer of {type(model).__name__} matches the quantization scope {scope!r}")
    return model


def set_mode(model: nn.Module, mode: str) -> None:
    """Put every `QuantLinear` of `model` in `mode`."""
    layers = quant_layers(model)
    if not layers:
        raise ValueError("the model has no QuantLinear layers: call quantize_model first")
    for layer in layers.values():
        layer.set_mode(mode)


def dequantize_model(model: nn.Module) -> nn.Module:
    """Turn every `QuantLinear` back into a plain `nn.Linear` (weights untouched, encodings dropped)."""
    for layer in quant_layers(model).values():
        for name in ("w_scale", "w_zero", "a_clip"):
            layer._buffers.pop(name, None)
        for name in ("_cache_key", "_cached_weight", "obs_absmax", "obs_sq", "obs_n", "qscheme", "mode"):
            layer.__dict__.pop(name, None)
        layer.__class__ = nn.Linear
    return model
