"""KV-cache eviction: OKV (our re-creation) against StreamingLLM, H2O and SnapKV (report §4)."""

from .evict import cache_bytes, evict, generate_evicted, kept_positions, stack_caches
from .policies import POLICIES, check_policy, check_ratio, keep_count, select
from .prefill import Prefill, PromptLayout, attention_modules, make_layout, prefill
from .tasks import TASKS, Sample, fact_recall, make_samples

__all__ = [
    "POLICIES", "TASKS", "Prefill", "PromptLayout", "Sample", "attention_modules", "cache_bytes", "check_policy",
    "check_ratio", "evict", "fact_recall", "generate_evicted", "keep_count", "kept_positions", "make_layout",
    "make_samples", "prefill", "select", "stack_caches",
]
