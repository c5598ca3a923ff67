"""1+N LoRA (ANDESVL.md §4): one shared base, N named task adapters, switched per request or mixed per row.

`tasks` (the skills and their strict scores) -> `lora` (attach and train adapters with PEFT) -> `registry`
(safetensors adapters + checksums in the run directory) -> `serve` (switching, mixed batches, memory).
"""

from .lora import TARGETS, FitResult, activate, attach_adapters, fit, lora_config, train_adapter
from .registry import BASE_NAME, AdapterError, AdapterRegistry
from .serve import evaluate_task, generate_mixed, memory_table, mixed_logits, using
from .tasks import TASKS, AdapterTask, get_tasks, rows, task_data

__all__ = [
    "TARGETS", "FitResult", "activate", "attach_adapters", "fit", "lora_config", "train_adapter", "BASE_NAME",
    "AdapterError", "AdapterRegistry", "evaluate_task", "generate_mixed", "memory_table", "mixed_logits", "using",
    "TASKS", "AdapterTask", "get_tasks", "rows", "task_data",
]
