"""Device profiling (ANDESVL.md §4): latency, tokens/s, peak memory, this machine's bandwidth and decode roofline,
and a phone-SoC projection of the paper presets."""

from .bandwidth import copy_bandwidth, read_bandwidth, roofline_bandwidth
from .device import (PAPER_DECODE_TOKENS_PER_S, PAPER_MEMORY_REDUCTION, PHONE_SOC, LLMShape, SoC, preset_llm_shape,
                     project)
from .latency import DecodeProfile, PeakMemory, greedy_decode, measure_decode
from .lean import LeanDecoder
from .roofline import decode_bytes_per_token, kv_bytes_per_token, roofline_tokens_per_s, weight_bytes

__all__ = [
    "copy_bandwidth", "read_bandwidth", "roofline_bandwidth", "LeanDecoder", "PAPER_DECODE_TOKENS_PER_S",
    "PAPER_MEMORY_REDUCTION", "PHONE_SOC", "LLMShape", "SoC",
    "preset_llm_shape", "project", "DecodeProfile", "PeakMemory", "greedy_decode", "measure_decode",
    "decode_bytes_per_token", "kv_bytes_per_token", "roofline_tokens_per_s", "weight_bytes",
]
